"""Placements: the history as a timeline (each version's state, time and $/hour), the changes
between any two versions, and why each fragment of the later one is where it is (the deciding
constraint, the runner-up class and its $/hour difference, as the optimizer explained its plan). A tenant-scoped user sees each version as the API shows it to its token:
its own items and their cost, and a fixed reason."""

from typing import Annotated

import plotly.graph_objects as go
from fastapi import APIRouter, Query, Request
from fastapi.responses import Response

from controlplane.api.common import IdFilter
from controlplane.api.placements import choices_of, placement_public
from controlplane.errors import NotFound
from controlplane.models import PlacementState
from controlplane.models.placements import PlacementPublic
from controlplane.queries import placement_history, placement_in_force, placement_of_version, priced_items
from web.changes import changes
from web.deps import Console, SignedIn, render
from web.figures import colour_of, layout, to_json

PAGE = 50
Offset = Annotated[int, Query(ge=0, le=100_000, description="Versions to skip, newest first.")]


def timeline(history: list[PlacementPublic]) -> str:
    """Each version at the time it was written, at its $/hour, one trace per state."""
    colours = colour_of([s.value for s in PlacementState])
    figure = go.Figure(layout=layout(
        xaxis={"type": "date", "gridcolor": "#e2e8f0", "title": {"text": "written (UTC)"}},
        yaxis={"gridcolor": "#e2e8f0", "rangemode": "tozero", "tickprefix": "$", "title": {"text": "$ / hour"}},
    ))
    for state in PlacementState:
        mine = [p for p in reversed(history) if p.state == state]
        if mine:
            figure.add_trace(go.Scatter(
                x=[p.created_at.strftime("%Y-%m-%d %H:%M:%S") for p in mine], y=[round(p.usd_per_hour, 2) for p in mine],
                mode="markers", name=state.value, marker={"size": 10, "color": colours[state.value]},
                text=[f"v{p.version}" for p in mine], hovertemplate="%{text} · %{y:$,.2f}/h<br>%{x}",
            ))
    return to_json(figure)


def routes(console: Console) -> APIRouter:
    router = console.router()

    @router.get("/placements")
    def placements_page(request: Request, user: SignedIn, a: IdFilter = None, b: IdFilter = None,
                        offset: Offset = 0) -> Response:
        principal = user.principal
        with console.session() as session:
            history = [placement_public(session, principal, p, with_items=False)
                       for p in placement_history(session, PAGE, offset)]
            in_force = placement_in_force(session)
            compared = None
            if b is None and in_force is not None:
                b = in_force.version
            shown = placement_of_version(session, b) if b is not None else None
            why = choices_of(session, principal, shown) if shown is not None else []
            if a is not None and b is not None:
                sides = [placement_of_version(session, v) for v in (a, b)]
                for version, side in zip((a, b), sides, strict=True):
                    if side is None:
                        raise NotFound(f"placement version {version} not found")
                compared = (
                    [placement_public(session, principal, side, with_items=False) for side in sides],
                    changes(priced_items(session, sides[0].id, principal.tenant_id),
                            priced_items(session, sides[1].id, principal.tenant_id)),
                )
        return render(request, "placements.html", {
            "user": user, "active": "Placements", "history": history, "timeline": timeline(history),
            "in_force": in_force.version if in_force else None, "a": a, "b": b, "compared": compared,
            "offset": offset, "page": PAGE, "why": why,
        })

    return router
