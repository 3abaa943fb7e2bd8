"""Workloads: the list a user may see, and each workload's call graph (fragments coloured by the
device class they run on, calls labelled with bytes per call) with its p99, TTFT and TPOT against
its SLA over the last 30 complete minutes."""

from datetime import timedelta

import plotly.graph_objects as go
from fastapi import APIRouter, Request
from fastapi.responses import Response
from sqlalchemy import func
from sqlmodel import Session, select

from controlplane.api.common import Id
from controlplane.api.workloads import visible_workload
from controlplane.auth import Principal
from controlplane.models import Fragment, Sla, Tenant, Workload
from controlplane.models._common import minute_of
from controlplane.profiles import Profile, graph_of, profiles_of
from controlplane.queries import placement_in_force, priced_items, requests_within_sla
from web.deps import Console, SignedIn, render
from web.figures import layout, to_json
from web.workload_graph import graph_figure

WINDOW_MINUTES = 30
PROFILE_ROWS = 100  # the busiest (fragment, class) rows the page lists; the API pages through all
GRAPH_FRAGMENTS = 100  # the busiest fragments the call graph draws: past that a drawing is not read


def latency_figure(profiles: list[Profile], sla: Sla | None) -> str | None:
    """p99 latency, TTFT and TPOT per fragment and class, with the SLA's bounds as dashed lines."""
    rows = [p for p in profiles if p.latency_ms.p99 is not None or p.ttft_ms.p99 is not None]
    if not rows:
        return None
    labels = [f"{p.fragment_key} · {p.device_class or '?'}" for p in rows]
    figure = go.Figure(layout=layout(barmode="group", yaxis={"title": {"text": "ms"}, "gridcolor": "#e2e8f0"},
                                     xaxis={"automargin": True}))
    for name, series, bound, colour in (
        ("p99 latency", [p.latency_ms.p99 for p in rows], sla.p99_ms if sla else None, "#2563eb"),
        ("TTFT p99", [p.ttft_ms.p99 for p in rows], sla.ttft_ms if sla else None, "#d97706"),
        ("TPOT p99", [p.tpot_ms.p99 for p in rows], sla.tpot_ms if sla else None, "#059669"),
    ):
        if all(v is None for v in series):
            continue
        figure.add_trace(go.Bar(x=labels, y=[round(v, 1) if v is not None else None for v in series], name=name,
                                marker={"color": colour}, hovertemplate="%{x}: %{y:,.1f} ms<extra>" + name + "</extra>"))
        if bound is not None:
            figure.add_hline(y=bound, line={"color": colour, "dash": "dash", "width": 1.5},
                             annotation_text=f"SLA {name.split()[0]} {bound:,.0f} ms", annotation_position="top left")
    return to_json(figure)


def routes(console: Console) -> APIRouter:
    router = console.router()

    def visible(session: Session, principal: Principal):
        statement = select(Workload, Tenant.name).join(Tenant, Tenant.id == Workload.tenant_id)
        if principal.tenant_id is not None:
            statement = statement.where(Workload.tenant_id == principal.tenant_id)
        return session.exec(statement.order_by(Tenant.name, Workload.name)).all()

    @router.get("/workloads")
    def workloads_page(request: Request, user: SignedIn) -> Response:
        until = minute_of(console.clock())
        with console.session() as session:
            rows = visible(session, user.principal)
            ids = [w.id for w, _ in rows]
            slas = {s.workload_id: s for s in session.exec(select(Sla).where(Sla.workload_id.in_(ids))).all()}
            shares = requests_within_sla(session, ids, until - timedelta(minutes=WINDOW_MINUTES), until)
            current = placement_in_force(session)
            cost: dict[int, float] = {}
            for item in priced_items(session, current.id, user.principal.tenant_id) if current else []:
                cost[item.workload_id] = cost.get(item.workload_id, 0.0) + item.usd_per_hour
            fragments = dict(session.exec(
                select(Fragment.workload_id, func.count()).where(Fragment.workload_id.in_(ids)).group_by(Fragment.workload_id)
            ).all())
        return render(request, "workloads.html", {
            "user": user, "active": "Workloads", "rows": rows, "slas": slas, "shares": shares, "cost": cost,
            "fragments": fragments, "window": WINDOW_MINUTES,
        })

    @router.get("/workloads/{workload_id}")
    def workload_page(request: Request, workload_id: Id, user: SignedIn) -> Response:
        now = console.clock()
        until = minute_of(now)
        with console.session() as session:
            workload = visible_workload(session, user.principal, workload_id)  # 404 for another tenant's
            tenant = session.get(Tenant, workload.tenant_id).name
            graph = graph_of(session, workload_id, GRAPH_FRAGMENTS)
            sla = session.exec(select(Sla).where(Sla.workload_id == workload_id)).first()
            # Up to, not into, the minute in progress: its profiles are partial.
            profiles = profiles_of(session, workload_id, until - timedelta(microseconds=1), WINDOW_MINUTES, PROFILE_ROWS)
            share = requests_within_sla(session, [workload_id], until - timedelta(minutes=WINDOW_MINUTES), until).get(workload_id)
            current = placement_in_force(session)
            items = [i for i in priced_items(session, current.id, workload.tenant_id) if i.workload_id == workload_id] \
                if current is not None else []
        placed_on: dict[int, str] = {}
        held: dict[int, float] = {}
        for item in items:  # the class holding most of a fragment's devices colours it
            if item.replicas and item.devices > held.get(item.fragment_id, -1.0):
                placed_on[item.fragment_id], held[item.fragment_id] = item.device_class, item.devices
        return render(request, "workload.html", {
            "user": user, "active": "Workloads", "workload": workload, "tenant": tenant, "sla": sla,
            "graph": graph_figure(graph.fragments, graph.edges, placed_on), "latency": latency_figure(profiles.items, sla),
            "profiles": profiles.items, "profiles_total": profiles.total, "shown": len(graph.fragments),
            "fragments_total": graph.fragments_total, "truncated": graph.truncated, "share": share, "items": items, "edges": graph.edges,
            "keys": {f.id: f.key for f in graph.fragments}, "window": WINDOW_MINUTES,
        })

    return router
