"""The overview page: cost, utilisation, SLA attainment, the placement in force and the fleet, live
(its script polls the data route), over a picked range; a banner says when /health would answer
degraded (the planner found no plan meeting every SLA, a loop failing or silent)."""

from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response

from controlplane.api.health import health_of
from web.deps import Console, SignedIn, json_response, render
from web.overview import RANGE_LABELS, Range, overview

RangeQuery = Annotated[Range, Query(alias="range", description="Window: 30m, 6h, 24h or 7d.")]


def routes(console: Console) -> APIRouter:
    router = console.router()
    data = console.router(data=True)

    @router.get("")
    def overview_page(request: Request, user: SignedIn, window: RangeQuery = Range.m30) -> Response:
        with console.session() as session:
            body = overview(session, user.principal, console.clock(), window)
            health = health_of(session, request, user.principal)
        return render(request, "overview.html", {
            "user": user, "active": "Overview", "data": body, "poll_ms": console.poll_ms, "health": health,
            "ranges": RANGE_LABELS,
        })

    @data.get("/data/overview")
    def overview_data(user: SignedIn, window: RangeQuery = Range.m30) -> Response:
        with console.session() as session:
            body = overview(session, user.principal, console.clock(), window)
        # The body is `OverviewData` (web/overview.py).
        return json_response(body.model_dump(mode="json"))

    both = APIRouter()
    both.include_router(router)
    both.include_router(data)
    return both
