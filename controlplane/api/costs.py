"""Costs from the metering ledger, grouped and shared the way chargeback needs them."""

from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.responses import Response
from pydantic import BaseModel, Field
from sqlmodel import Session

from controlplane.api.routing import OneHopRoute
from controlplane.chargeback import (
    GroupBy,
    Line,
    ShareIdle,
    TokenType,
    lines_of,
    share_idle,
    token_costs,
)
from controlplane.deps import SessionDep, Viewer
from controlplane.errors import ApiError, InvalidInput
from controlplane.focus import ChargeLine, write_csv
from controlplane.metering import final_until
from controlplane.models._common import Instant, to_utc, utcnow
from controlplane.queries import (
    device_class_names,
    device_classes_by_id,
    fragment_keys,
    idle_capacity,
    tenant_names,
    usage_allocations,
    workload_names,
)

router = APIRouter(tags=["costs"], route_class=OneHopRoute)


class Step(StrEnum):
    """The width of a time series' buckets, aligned to UTC (minute, hour, day)."""

    minute = "1m"
    hour = "1h"
    day = "1d"

    @property
    def seconds(self) -> int:
        return {"1m": 60, "1h": 3600, "1d": 86400}[self.value]


MAX_BUCKETS = 7 * 24 * 60
"""Buckets one series may hold: 7 days of minutes, 420 days of hours, 10080 days."""

_PHASE_NAMES = {"": "whole", "prefill": "prefill", "decode": "decode"}


class GroupValue(BaseModel):
    id: int | None = Field(description="The object's id; null for a fragment kind or a phase.")
    name: str


class TokenCounts(BaseModel):
    llm_input: int
    llm_output: int
    embedding: int
    rerank: int


class CostPoint(BaseModel):
    start: datetime = Field(description="The bucket's start (UTC, aligned to the step).")
    cost_usd: float
    allocated_cost_usd: float
    idle_cost_usd: float
    tokens: int
    device_seconds_allocated: float
    device_seconds_busy: float
    device_seconds_idle: float


class CostLine(BaseModel):
    id: int | None = Field(description="The id of the first group key's object; null on an idle line or for a "
                                       "fragment kind or a phase.")
    name: str = Field(description="The group keys' names joined by ' / '; 'idle' on an idle line.")
    group: dict[str, GroupValue | None] = Field(
        description="Each group key's value; null where an idle line has none (it belongs to no tenant).")
    idle: bool = Field(description="True on a line of unshared idle capacity (share_idle=none, fleet-wide callers).")
    cost_usd: float = Field(description="allocated_cost_usd + idle_cost_usd.")
    allocated_cost_usd: float
    idle_cost_usd: float = Field(description="Idle capacity: the line's own (an idle line) or shared to it.")
    tokens: int
    tokens_by_type: TokenCounts
    device_seconds_allocated: float
    device_seconds_busy: float
    device_seconds_idle: float
    usd_per_1m_tokens: float | None
    efficiency: float | None = Field(description="device_seconds_busy / device_seconds_allocated.")
    series: list[CostPoint] | None = Field(
        None, description="With `step`: the line's buckets that hold anything, in time order.")


class TokenTypeCost(BaseModel):
    token_type: TokenType
    tokens: int
    cost_usd: float
    usd_per_1m_tokens: float | None


class CostReport(BaseModel):
    since: datetime
    until: datetime
    group_by: list[GroupBy]
    share_idle: ShareIdle
    step: Step | None
    final_until: datetime | None = Field(
        description="Minutes before this are metered for good; later ones are provisional (the open minute).")
    total_cost_usd: float = Field(description="The sum of the items' cost_usd.")
    allocated_cost_usd: float
    idle_cost_usd: float
    total_tokens: int
    by_token_type: list[TokenTypeCost]
    items: list[CostLine]


@router.get("/costs", response_model=CostReport)
def costs(
    session: SessionDep,
    principal: Viewer,
    group_by: Annotated[list[GroupBy], Query(
        max_length=len(GroupBy), json_schema_extra={"uniqueItems": True},
        description="Keys of the report's lines. Repeat the parameter to group by several at once "
                    "(`group_by=tenant&group_by=workload`), each at most once.")] = [GroupBy.workload],  # noqa: B006
    share_idle_as: Annotated[ShareIdle, Query(
        alias="share_idle",
        description="Idle capacity: `none` shows it as its own lines (to fleet-wide callers only); `weighted` "
                    "shares each class's idle to the allocations on it by cost; `even` in equal parts to the "
                    "tenants that ran anything. Shared within each bucket (the whole range without `step`).")]
    = ShareIdle.none,
    step: Annotated[Step | None, Query(
        description=f"Add a time series to each line, in buckets of a minute, an hour or a day aligned to UTC; "
                    f"at most {MAX_BUCKETS} buckets (7 days of minutes): a longer range is refused (422).")] = None,
    since: Annotated[Instant | None, Query(description="Start (UTC, 2000-01-01 to 2200-01-01); default one hour before `until`.")] = None,
    until: Annotated[Instant | None, Query(description="End (UTC, 2000-01-01 to 2200-01-01), exclusive; default now.")] = None,
):
    """Metered cost per group of tenant, workload, device class, fragment, fragment kind and phase.

    Cost is allocated device-seconds × price; capacity no replica held is idle (see `share_idle`);
    efficiency is busy / allocated device-seconds. `by_token_type` prices LLM input, LLM output,
    embedding and rerank tokens apart. A tenant-scoped token sees only its tenant's lines, and idle
    capacity only as the share `weighted` or `even` gives its tenant.
    """
    until = to_utc(until) if until else utcnow()
    since = to_utc(since) if since else until - timedelta(hours=1)
    if since >= until:
        raise ApiError("since must be before until", field="since")
    if len(set(group_by)) < len(group_by):
        raise InvalidInput("group by each key at most once", field="group_by")
    if step is not None and (buckets := _buckets(since, until, step)) > MAX_BUCKETS:
        raise InvalidInput(f"step={step.value} holds at most {MAX_BUCKETS} buckets and this range holds {buckets}: "
                           "shorten the range or use a coarser step", field="step")
    keys = tuple(group_by)
    own = principal.tenant_id
    step_s = step.seconds if step is not None else None
    allocations = usage_allocations(session, since, until, step_s, own if share_idle_as is ShareIdle.none else None)
    idle = [] if own is not None and share_idle_as is ShareIdle.none else idle_capacity(session, since, until, step_s)
    shared, unshared = share_idle(allocations, idle, share_idle_as)
    visible = None if own is None else {own}
    lines = lines_of(allocations, shared, unshared, keys, visible)
    mine = [(a, s) for a, s in zip(allocations, shared, strict=True) if own is None or a.tenant_id == own]
    names = _names(session, lines, keys)
    items = sorted((_line(line, keys, names, step) for line in lines), key=lambda i: (-i.cost_usd, i.name))
    by_type = token_costs([a for a, _ in mine], [s for _, s in mine])
    return CostReport(
        since=since,
        until=until,
        group_by=list(keys),
        share_idle=share_idle_as,
        step=step,
        final_until=final_until(session),
        total_cost_usd=sum(i.cost_usd for i in items),
        allocated_cost_usd=sum(i.allocated_cost_usd for i in items),
        idle_cost_usd=sum(i.idle_cost_usd for i in items),
        total_tokens=sum(i.tokens for i in items),
        by_token_type=[TokenTypeCost(token_type=t, tokens=n, cost_usd=c, usd_per_1m_tokens=_per_million(c, n))
                       for t, (n, c) in by_type.items()],
        items=items,
    )


def _buckets(since: datetime, until: datetime, step: Step) -> int:
    first = int(since.timestamp()) // step.seconds
    last = (int((until - timedelta(microseconds=1)).timestamp())) // step.seconds
    return last - first + 1


def _names(session: Session, lines: list[Line], keys: tuple[GroupBy, ...]) -> dict[GroupBy, dict]:
    """The names of the objects the lines' keys hold (and only those: nothing of anyone else)."""
    lookups = {GroupBy.tenant: tenant_names, GroupBy.workload: workload_names,
               GroupBy.device_class: device_class_names, GroupBy.fragment: fragment_keys}
    names: dict[GroupBy, dict] = {}
    for position, key in enumerate(keys):
        values = {line.key[position] for line in lines if line.key[position] is not None}
        if key in lookups:
            names[key] = lookups[key](session, values)
        else:
            names[key] = {v: _PHASE_NAMES.get(v, v) if key is GroupBy.phase else v for v in values}
    return names


def _line(line: Line, keys: tuple[GroupBy, ...], names: dict[GroupBy, dict], step: Step | None) -> CostLine:
    group = {
        key.value: None if value is None else GroupValue(
            id=value if isinstance(value, int) and key not in (GroupBy.fragment_kind, GroupBy.phase) else None,
            name=names[key].get(value, f"#{value}"))
        for key, value in zip(keys, line.key, strict=True)
    }
    total = line.total()
    first = group[keys[0].value]
    return CostLine(
        id=None if line.idle or first is None else first.id,
        name="idle" if line.idle else " / ".join(v.name for v in group.values() if v is not None),
        group=group,
        idle=line.idle,
        **_figures(total),
        tokens_by_type=TokenCounts(llm_input=total.tokens.llm_input, llm_output=total.tokens.llm_output,
                                   embedding=total.tokens.embedding, rerank=total.tokens.rerank),
        usd_per_1m_tokens=_per_million(total.cost_usd, total.tokens.total),
        efficiency=total.busy_s / total.allocated_s if total.allocated_s else None,
        series=[CostPoint(start=p.bucket, **_figures(p)) for _, p in sorted(line.points.items())] if step else None,
    )


def _figures(p) -> dict:
    return {"cost_usd": p.cost_usd, "allocated_cost_usd": p.allocated_cost_usd, "idle_cost_usd": p.idle_cost_usd,
            "tokens": p.tokens.total, "device_seconds_allocated": p.allocated_s, "device_seconds_busy": p.busy_s,
            "device_seconds_idle": p.idle_s}


def _per_million(cost: float, tokens: int) -> float | None:
    return cost / tokens * 1e6 if tokens else None


class ExportFormat(StrEnum):
    csv = "csv"
    focus = "focus"


MAX_EXPORT_LINES = 250_000
CSV_MEDIA_TYPE = "text/csv; charset=utf-8"


@router.get(
    "/costs/export",
    response_class=Response,
    responses={200: {"description": "The charges as CSV: FOCUS 1.0 columns with format=focus, else heteroplane's "
                                    "chargeback columns.",
                     "content": {"text/csv": {"schema": {"type": "string"}}}}},
)
def export_costs(
    session: SessionDep,
    principal: Viewer,
    format: Annotated[ExportFormat, Query(  # noqa: A002 - the parameter's name in the URL
        description="`focus`: FinOps FOCUS 1.0 columns (BilledCost, EffectiveCost, ListCost, "
                    "ChargePeriodStart/End, ResourceId, SkuId, Tags, ...); `csv`: one column per figure.")]
    = ExportFormat.csv,
    share_idle_as: Annotated[ShareIdle, Query(
        alias="share_idle", description="As GET /costs: `none` exports idle capacity as its own rows (fleet-wide "
                                        "callers only); `weighted` or `even` give each fragment its share as a "
                                        "row of its own.")] = ShareIdle.none,
    step: Annotated[Step, Query(description="The charge period of each row: an hour or a day (or a minute), aligned "
                                            "to UTC and cut to [since, until).")] = Step.hour,
    since: Annotated[Instant | None, Query(description="Start (UTC); default the first instant of the month of `until`.")] = None,
    until: Annotated[Instant | None, Query(description="End (UTC), exclusive; default now.")] = None,
):
    """The ledger's charges in [since, until) as a file, one row per (period, fragment, device class,
    phase), idle capacity per (period, class) or per fragment as shared. Its cost column sums to
    GET /costs' `total_cost_usd` for the same since, until, share_idle and step. A tenant-scoped
    token gets only its tenant's rows."""
    until = to_utc(until) if until else utcnow()
    since = to_utc(since) if since else datetime(until.year, until.month, 1, tzinfo=UTC)
    if since >= until:
        raise ApiError("since must be before until", field="since")
    if (buckets := _buckets(since, until, step)) > MAX_BUCKETS:
        raise InvalidInput(f"step={step.value} holds at most {MAX_BUCKETS} periods and this range holds {buckets}: "
                           "shorten the range or use a coarser step", field="step")
    lines = charge_lines(session, principal.tenant_id, since, until, step, share_idle_as)
    if len(lines) > MAX_EXPORT_LINES:
        raise InvalidInput(f"the export would hold {len(lines):,} rows, more than {MAX_EXPORT_LINES:,}: shorten the "
                           "range or use a coarser step", field="since")
    text = write_csv(lines, focus=format is ExportFormat.focus)
    name = f"heteroplane-{format.value}-{since:%Y%m%dT%H%MZ}-{until:%Y%m%dT%H%MZ}.csv"
    return Response(text, media_type=CSV_MEDIA_TYPE, headers={"Content-Disposition": f'attachment; filename="{name}"'})


def charge_lines(session: Session, tenant_id: int | None, since: datetime, until: datetime, step: Step,
                 rule: ShareIdle) -> list[ChargeLine]:
    """The ledger's charges in [since, until) by `step` (the rows of an export): every allocation
    (fragment, class, phase) per period at its own cost, the idle no one was given per class and
    period, and under weighted or even each allocation's share of idle as a row of its own. With
    `tenant_id`, that tenant's rows only (and no unshared idle)."""
    idle_apart = rule is ShareIdle.none
    allocations = usage_allocations(session, since, until, step.seconds, tenant_id if idle_apart else None)
    idle = [] if tenant_id is not None and idle_apart else idle_capacity(session, since, until, step.seconds)
    shared, unshared = share_idle(allocations, idle, rule)
    mine = [(a, s) for a, s in zip(allocations, shared, strict=True) if tenant_id is None or a.tenant_id == tenant_id]
    classes = device_classes_by_id(session)
    tenants = tenant_names(session, {a.tenant_id for a, _ in mine})
    workloads = workload_names(session, {a.workload_id for a, _ in mine})
    fragments = fragment_keys(session, {a.fragment_id for a, _ in mine})

    def period(bucket: datetime) -> tuple[datetime, datetime]:
        return max(bucket, since), min(bucket + timedelta(seconds=step.seconds), until)

    def price(cost: float, seconds: float, class_id: int) -> float:
        """What the ledger charged per device-hour (the class's price when it metered)."""
        return cost / (seconds / 3600) if seconds > 0 else classes[class_id].usd_per_hour

    out = []
    for a, s in mine:
        start, end = period(a.bucket)
        fragment = fragments[a.fragment_id] + (f" ({a.phase})" if a.phase else "")
        owner = {"tenant_id": a.tenant_id, "tenant": tenants[a.tenant_id], "workload": workloads[a.workload_id],
                 "fragment": fragment}
        out.append(ChargeLine(start, end, classes[a.device_class_id].name, a.allocated_s,
                              price(a.cost_usd, a.allocated_s, a.device_class_id), a.cost_usd, **owner))
        if s.cost_usd or s.idle_s:
            out.append(ChargeLine(start, end, "idle-share", s.idle_s, None, s.cost_usd, idle_share=True, **owner))
    for item in unshared if tenant_id is None else []:
        start, end = period(item.bucket)
        out.append(ChargeLine(start, end, classes[item.device_class_id].name, item.idle_s,
                              price(item.cost_usd, item.idle_s, item.device_class_id), item.cost_usd))
    return sorted(out, key=lambda line: (line.start, line.idle, line.tenant or "", line.workload or "",
                                         line.fragment or "", line.device_class))
