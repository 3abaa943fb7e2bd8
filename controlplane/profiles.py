"""Reading a workload's graph and profiles back from the additive tables (queries only, no writes)."""

from collections import defaultdict
from collections.abc import Sequence
from datetime import datetime, timedelta

from pydantic import BaseModel, Field
from sqlalchemy import func, literal, union_all
from sqlmodel import Session, select

from collectors.fanout import calls_percentile, is_concurrent
from collectors.records import Series
from collectors.sketch import TOKEN_EDGES, quantiles
from controlplane.db import int_sum
from controlplane.models import Edge, EdgeVisitCalls, Fragment, FragmentProfile, MeasuredCapacity, ProfileBucket
from controlplane.models._common import minute_of, to_utc
from controlplane.models.workloads import EdgePublic, FragmentPublic

QUANTILES = (0.5, 0.95, 0.99)

GRAPH_FRAGMENTS_DEFAULT = 100
"""Fragments a graph shows unless asked for more (at most 500): a drawing past that is not read."""
EDGES_PER_FRAGMENT = 4
"""A bounded graph holds at most this many edges per fragment it shows, the busiest."""


def fragment_views(session: Session, fragments: Sequence[Fragment]) -> list[FragmentPublic]:
    """Fragments with their total visits, mean latency and queue wait, and measured replica capacity."""
    ids = [f.id for f in fragments]
    totals = {
        fid: (int(visits or 0), float(latency or 0.0), int(queued or 0), float(queue_ms or 0.0))
        for fid, visits, latency, queued, queue_ms in session.exec(
            select(FragmentProfile.fragment_id, int_sum(FragmentProfile.visits), func.sum(FragmentProfile.latency_ms_sum),
                   int_sum(FragmentProfile.queue_visits), func.sum(FragmentProfile.queue_ms_sum))
            .where(FragmentProfile.fragment_id.in_(ids))
            .group_by(FragmentProfile.fragment_id)
        ).all()
    }
    capacity: dict[int, dict[str, float]] = defaultdict(dict)
    for row in session.exec(select(MeasuredCapacity).where(MeasuredCapacity.fragment_id.in_(ids))).all():
        capacity[row.fragment_id][row.device_class] = row.visits_per_s
    views = []
    for fragment in fragments:
        visits, latency, queued, queue_ms = totals.get(fragment.id, (0, 0.0, 0, 0.0))
        view = FragmentPublic.model_validate(fragment, update={"visits": visits})
        view.mean_latency_ms = latency / visits if visits else None
        view.mean_queue_ms = queue_ms / queued if queued else None
        view.capacity_per_replica = dict(sorted(capacity[fragment.id].items()))
        views.append(view)
    return views


def edge_views(session: Session, edges: Sequence[Edge]) -> list[EdgePublic]:
    """Edges with calls and bytes per call of the parent fragment, whether their calls run
    concurrently, and calls per parent visit at p99 (collectors.fanout)."""
    parent_visits = dict(
        session.exec(
            select(FragmentProfile.fragment_id, int_sum(FragmentProfile.visits))
            .where(FragmentProfile.fragment_id.in_([e.parent_id for e in edges]))
            .group_by(FragmentProfile.fragment_id)
        ).all()
    )
    tallies = visits_by_calls(session, [e.id for e in edges])
    views = []
    for edge in edges:
        visits = int(parent_visits.get(edge.parent_id) or 0)
        view = EdgePublic.model_validate(edge)
        view.calls_per_parent_call = edge.calls / visits if visits else None
        view.bytes_per_call = edge.bytes_total / edge.calls if edge.calls and edge.bytes_total else None
        view.concurrent = is_concurrent(edge.calls, edge.calls_overlapping)
        view.calls_p99 = calls_percentile(tallies.get(edge.id, {}), visits)
        views.append(view)
    return views


def visits_by_calls(session: Session, edge_ids: Sequence[int] | None = None) -> dict[int, dict[int, int]]:
    """Per edge id: calls made -> parent visits that made exactly that many (of `edge_ids`, or all edges)."""
    statement = select(EdgeVisitCalls.edge_id, EdgeVisitCalls.calls, EdgeVisitCalls.visits)
    if edge_ids is not None:
        statement = statement.where(EdgeVisitCalls.edge_id.in_(edge_ids))
    out: dict[int, dict[int, int]] = defaultdict(dict)
    for edge_id, calls, visits in session.exec(statement).all():
        out[edge_id][calls] = int(visits)
    return dict(out)


class Graph(BaseModel):
    """A workload's data-flow graph as observed, bounded: its busiest fragments and the edges among them."""

    workload_id: int
    fragments: list[FragmentPublic] = Field(description="The `limit` fragments of most visits (ties: lowest id), "
                                                        "busiest first.")
    edges: list[EdgePublic] = Field(description="Edges between those fragments, most calls first, at most "
                                                f"{EDGES_PER_FRAGMENT} × `limit`.")
    fragments_total: int = Field(description="Fragments the workload has in all.")
    edges_total: int = Field(description="Edges the workload has in all.")
    truncated: bool = Field(description="Whether fragments or edges were left out; the full lists page through "
                                        "`/fragments` and `/edges`.")


def graph_of(session: Session, workload_id: int, limit: int = GRAPH_FRAGMENTS_DEFAULT) -> Graph:
    """The `limit` fragments of most visits and the busiest edges among them (at most EDGES_PER_FRAGMENT · limit),
    with the workload's totals: a graph a console can draw and a client can read, whatever its size."""
    visits = (
        select(FragmentProfile.fragment_id, int_sum(FragmentProfile.visits).label("visits"))
        .join(Fragment, Fragment.id == FragmentProfile.fragment_id)
        .where(Fragment.workload_id == workload_id)
        .group_by(FragmentProfile.fragment_id)
        .subquery()
    )
    fragments = session.exec(
        select(Fragment)
        .outerjoin(visits, visits.c.fragment_id == Fragment.id)
        .where(Fragment.workload_id == workload_id)
        .order_by(func.coalesce(visits.c.visits, 0).desc(), Fragment.id)
        .limit(limit)
    ).all()
    ids = [f.id for f in fragments]
    edges = session.exec(
        select(Edge)
        .where(Edge.workload_id == workload_id, Edge.parent_id.in_(ids), Edge.child_id.in_(ids))
        .order_by(Edge.calls.desc(), Edge.id)
        .limit(EDGES_PER_FRAGMENT * limit)
    ).all() if ids else []
    fragments_total = session.exec(select(func.count()).where(Fragment.workload_id == workload_id)).one()
    edges_total = session.exec(select(func.count()).where(Edge.workload_id == workload_id)).one()
    return Graph(
        workload_id=workload_id,
        fragments=fragment_views(session, fragments),
        edges=edge_views(session, edges),
        fragments_total=fragments_total,
        edges_total=edges_total,
        truncated=len(fragments) < fragments_total or len(edges) < edges_total,
    )


class Distribution(BaseModel):
    """Quantiles of a latency series (ms), from a sketch within 1% relative error."""

    count: int
    p50: float | None
    p95: float | None
    p99: float | None


class TokenHistogram(BaseModel):
    """Counts per token bucket; bucket i holds [edges[i], edges[i+1]), the last is open-ended."""

    edges: list[int]
    counts: list[int]


class Profile(BaseModel):
    """What one fragment does on one device class ('' when telemetry did not say) over the window."""

    fragment_id: int
    fragment_key: str
    device_class: str
    visits: int
    arrival_rate_rps: float
    mean_latency_ms: float | None
    mean_tokens_in: float | None
    mean_tokens_out: float | None
    latency_ms: Distribution
    ttft_ms: Distribution
    tpot_ms: Distribution
    tokens_in: TokenHistogram
    tokens_out: TokenHistogram


class Profiles(BaseModel):
    """One page of a workload's profiles over a window, busiest first, as `Page` pages a list."""

    workload_id: int
    since: datetime
    until: datetime
    items: list[Profile] = Field(description="Per (fragment, device class): most visits in the window first, "
                                             "then by fragment id and class.")
    total: int = Field(description="(fragment, device class) pairs with observations in the window.")
    limit: int
    offset: int


def profiles_of(session: Session, workload_id: int, now: datetime, minutes: int,
                limit: int = 50, offset: int = 0) -> Profiles:
    """Per (fragment, device class) profiles over the last `minutes` whole minutes plus the open one:
    the page `offset`, `limit` of the pairs observed, most visits first. Only the page's pairs are read
    in full, so a page costs the same however many fragments the workload has."""
    until = to_utc(now)
    since = minute_of(until) - timedelta(minutes=minutes - 1)
    seconds = max(1.0, (until - since).total_seconds())
    last = minute_of(until)
    in_workload = select(Fragment.id).where(Fragment.workload_id == workload_id)
    # Pairs with visits, and pairs with only distributions (metrics), visits counted from the first.
    observed = union_all(
        select(FragmentProfile.fragment_id.label("fid"), FragmentProfile.device_class.label("cls"),
               FragmentProfile.visits.label("visits"))
        .where(FragmentProfile.fragment_id.in_(in_workload), FragmentProfile.minute >= since, FragmentProfile.minute <= last),
        select(ProfileBucket.fragment_id, ProfileBucket.device_class, literal(0))
        .where(ProfileBucket.fragment_id.in_(in_workload), ProfileBucket.minute >= since, ProfileBucket.minute <= last),
    ).subquery()
    pairs = select(observed.c.fid, observed.c.cls, int_sum(observed.c.visits).label("visits")).group_by(observed.c.fid, observed.c.cls)
    page = [(fid, cls) for fid, cls, _ in session.exec(
        pairs.order_by(func.coalesce(int_sum(observed.c.visits), 0).desc(), observed.c.fid, observed.c.cls)
        .offset(offset).limit(limit)
    ).all()]
    if 0 < len(page) < limit or (not page and offset == 0):
        total = offset + len(page)
    else:
        total = session.exec(select(func.count()).select_from(pairs.subquery())).one()
    if not page:
        return Profiles(workload_id=workload_id, since=since, until=until, items=[], total=total, limit=limit, offset=offset)
    fids = sorted({fid for fid, _ in page})
    keys = dict(session.exec(select(Fragment.id, Fragment.key).where(Fragment.id.in_(fids))).all())
    sums = {
        (fid, cls): (int(v or 0), float(lat or 0.0), int(tin or 0), int(tout or 0))
        for fid, cls, v, lat, tin, tout in session.exec(
            select(
                FragmentProfile.fragment_id,
                FragmentProfile.device_class,
                int_sum(FragmentProfile.visits),
                func.sum(FragmentProfile.latency_ms_sum),
                int_sum(FragmentProfile.tokens_in),
                int_sum(FragmentProfile.tokens_out),
            )
            .where(
                FragmentProfile.fragment_id.in_(fids),
                FragmentProfile.minute >= since,
                FragmentProfile.minute <= last,
            )
            .group_by(FragmentProfile.fragment_id, FragmentProfile.device_class)
        ).all()
    }
    buckets: dict[tuple[int, str], dict[str, dict[int, int]]] = defaultdict(lambda: defaultdict(dict))
    for fid, cls, series, bucket, count in session.exec(
        select(
            ProfileBucket.fragment_id,
            ProfileBucket.device_class,
            ProfileBucket.series,
            ProfileBucket.bucket,
            int_sum(ProfileBucket.count),
        )
        .where(
            ProfileBucket.fragment_id.in_(fids),
            ProfileBucket.minute >= since,
            ProfileBucket.minute <= last,
        )
        .group_by(ProfileBucket.fragment_id, ProfileBucket.device_class, ProfileBucket.series, ProfileBucket.bucket)
    ).all():
        buckets[(fid, cls)][series][bucket] = int(count)
    items = []
    for fid, cls in page:
        visits, latency, tokens_in, tokens_out = sums.get((fid, cls), (0, 0.0, 0, 0))
        series = buckets.get((fid, cls), {})
        items.append(
            Profile(
                fragment_id=fid,
                fragment_key=keys[fid],
                device_class=cls,
                visits=visits,
                arrival_rate_rps=visits / seconds,
                mean_latency_ms=latency / visits if visits else None,
                mean_tokens_in=tokens_in / visits if visits else None,
                mean_tokens_out=tokens_out / visits if visits else None,
                latency_ms=_distribution(series.get(Series.latency_ms, {})),
                ttft_ms=_distribution(series.get(Series.ttft_ms, {})),
                tpot_ms=_distribution(series.get(Series.tpot_ms, {})),
                tokens_in=_histogram(series.get(Series.tokens_in, {})),
                tokens_out=_histogram(series.get(Series.tokens_out, {})),
            )
        )
    return Profiles(workload_id=workload_id, since=since, until=until, items=items, total=total, limit=limit, offset=offset)


def _distribution(counts: dict[int, int]) -> Distribution:
    q = quantiles(counts, QUANTILES)
    return Distribution(count=sum(counts.values()), p50=q[0.5], p95=q[0.95], p99=q[0.99])


def _histogram(counts: dict[int, int]) -> TokenHistogram:
    return TokenHistogram(edges=list(TOKEN_EDGES), counts=[counts.get(i, 0) for i in range(len(TOKEN_EDGES))])
