"""Chargeback: what the fleet cost and for whom over a picked range, drilled down tenant → workload
→ fragment, with the capacity no one held as its own idle row (or shared to tenants on the switch,
as OpenCost shares it), and the range's charges downloadable as CSV or FOCUS 1.0.

Every figure is GET /costs' (controlplane.api.costs.costs, called as the API calls it, with the
user's principal) and every file GET /costs/export's (charge_lines), so the page, the API and a
bill built from either agree to the cent. A tenant-scoped user sees its own tenant only: the
report it is handed holds nothing else, and a link to another tenant's rows shows no line."""

from datetime import datetime, timedelta
from enum import StrEnum
from typing import Annotated

import plotly.graph_objects as go
from fastapi import APIRouter, Query, Request
from fastapi.responses import Response

from controlplane.api.common import IdFilter
from controlplane.api.costs import CSV_MEDIA_TYPE, CostLine, CostReport, ExportFormat, Step, charge_lines, costs
from controlplane.chargeback import GroupBy, ShareIdle
from controlplane.focus import write_csv
from controlplane.models._common import minute_of
from web.deps import Console, SignedIn, render
from web.figures import colour_of, layout, to_json


class Span(StrEnum):
    """The page's range, ending at the last complete minute."""

    h6 = "6h"
    h24 = "24h"
    d7 = "7d"
    d30 = "30d"


SPANS = {Span.h6: (timedelta(hours=6), Step.hour), Span.h24: (timedelta(hours=24), Step.hour),
         Span.d7: (timedelta(days=7), Step.day), Span.d30: (timedelta(days=30), Step.day)}
SPAN_LABELS = {Span.h6: "6 h", Span.h24: "24 h", Span.d7: "7 d", Span.d30: "30 d"}
SHARE_LABELS = {ShareIdle.none: "idle apart", ShareIdle.weighted: "idle shared by cost",
                ShareIdle.even: "idle shared evenly"}

SpanQuery = Annotated[Span, Query(alias="range", description="Window: 6h, 24h, 7d or 30d.")]
ShareQuery = Annotated[ShareIdle, Query(description="none, weighted or even (as GET /costs).")]


def window(now: datetime, span: Span) -> tuple[datetime, datetime]:
    """[since, until): the span up to the last complete minute (the open one is provisional)."""
    until = minute_of(now)
    return until - SPANS[span][0], until


def level_of(tenant: int | None, workload: int | None) -> tuple[GroupBy, ...]:
    """The group keys of the level shown: tenants; one tenant's workloads; one workload's fragments."""
    if workload is not None:
        return GroupBy.tenant, GroupBy.workload, GroupBy.fragment
    if tenant is not None:
        return GroupBy.tenant, GroupBy.workload
    return (GroupBy.tenant,)


def lines_shown(report: CostReport, tenant: int | None, workload: int | None) -> list[CostLine]:
    """The report's lines of the level: at the top, every tenant and the idle line; below it, those of
    the picked tenant or workload (an id the user may not see picks nothing)."""
    if workload is not None:
        return [i for i in report.items if not i.idle and i.group["workload"].id == workload]
    if tenant is not None:
        return [i for i in report.items if not i.idle and i.group["tenant"].id == tenant]
    return report.items


def series_figure(lines: list[CostLine], step: Step) -> str | None:
    """Cost per period, stacked by line (the idle line grey); None when nothing was metered."""
    if not any(line.series for line in lines):
        return None
    names = [line.name for line in lines]
    colours = colour_of([n for n in names if n != "idle"])
    figure = go.Figure(layout=layout(
        barmode="stack", xaxis={"type": "date", "gridcolor": "#e2e8f0"},
        yaxis={"gridcolor": "#e2e8f0", "tickprefix": "$", "title": {"text": f"$ per {'hour' if step is Step.hour else 'day'}"}},
    ))
    for line in lines:
        points = line.series or []
        figure.add_trace(go.Bar(
            x=[p.start.strftime("%Y-%m-%d %H:%M") for p in points], y=[round(p.cost_usd, 4) for p in points],
            name=line.name, marker={"color": "#94a3b8" if line.idle else colours[line.name]},
            hovertemplate="%{x}: %{y:$,.2f}<extra>" + line.name.replace("<", "&lt;") + "</extra>",
        ))
    return to_json(figure)


def routes(console: Console) -> APIRouter:
    router = console.router()

    @router.get("/chargeback")
    def chargeback_page(request: Request, user: SignedIn, span: SpanQuery = Span.h24,
                        share_idle: ShareQuery = ShareIdle.none, tenant: IdFilter = None,
                        workload: IdFilter = None) -> Response:
        since, until = window(console.clock(), span)
        step = SPANS[span][1]
        keys = level_of(tenant, workload)
        with console.session() as session:
            report = costs(session=session, principal=user.principal, group_by=list(keys), share_idle_as=share_idle,
                           step=step, since=since, until=until)
        lines = lines_shown(report, tenant, workload)
        crumbs = []
        if (tenant is not None or workload is not None) and lines:
            first = lines[0].group
            if "tenant" in first and first["tenant"] is not None:
                crumbs.append(("tenant", first["tenant"]))
            if workload is not None:
                crumbs.append(("workload", first["workload"]))
        return render(request, "chargeback.html", {
            "user": user, "active": "Chargeback", "report": report, "lines": lines, "keys": [k.value for k in keys],
            "span": span, "spans": SPAN_LABELS, "share_idle": share_idle, "shares": SHARE_LABELS,
            "tenant": tenant, "workload": workload, "crumbs": crumbs, "since": since, "until": until,
            "chart": series_figure(lines, step), "total": sum(line.cost_usd for line in lines),
        })

    @router.get("/chargeback/export")
    def chargeback_export(user: SignedIn, format: Annotated[ExportFormat, Query()] = ExportFormat.csv,  # noqa: A002
                          span: SpanQuery = Span.h24, share_idle: ShareQuery = ShareIdle.none) -> Response:
        """The range's charges as GET /costs/export writes them, in the page's periods (so idle is shared
        as on the page and the file sums to its total), for this user's tenant when it has one."""
        since, until = window(console.clock(), span)
        with console.session() as session:
            lines = charge_lines(session, user.principal.tenant_id, since, until, SPANS[span][1], share_idle)
        name = f"heteroplane-{format.value}-{since:%Y%m%dT%H%MZ}-{until:%Y%m%dT%H%MZ}.csv"
        return Response(write_csv(lines, focus=format is ExportFormat.focus), media_type=CSV_MEDIA_TYPE,
                        headers={"Content-Disposition": f'attachment; filename="{name}"', "Cache-Control": "no-store"})

    return router
