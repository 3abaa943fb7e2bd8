"""Fleet: per device class, nodes and devices (counted in GPUs or CPU sockets, never slices) and how
many are usable; for fleet-wide users, every node and device with its health as each owner sets it
(actuator readiness, DCGM XID, operator cordon) and its latest DCGM reading (utilisation, memory,
power).

The node inventory is no tenant's business (the API answers a tenant-scoped token 403 for /nodes),
so a tenant-scoped user sees the per-class capacity only, as on the overview."""

from collections import defaultdict
from datetime import timedelta

import plotly.graph_objects as go
from fastapi import APIRouter, Request
from fastapi.responses import Response

from controlplane.calibration import public_by_class
from controlplane.models._common import minute_of
from controlplane.queries import DeviceState, device_states, fleet_by_class
from web.deps import Console, SignedIn, render
from web.figures import layout, to_json

# A DCGM reading older than this is not shown: the device has stopped reporting.
READING_MAX_AGE = timedelta(minutes=5)


def utilisation_figure(devices: list[DeviceState]) -> str | None:
    """Mean utilisation per node (of the devices that reported), one bar each; None without readings."""
    busy: dict[str, list[float]] = defaultdict(list)
    for d in devices:
        if d.utilisation is not None:
            busy[d.node].append(d.utilisation)
    if not busy:
        return None
    nodes = sorted(busy)
    figure = go.Figure(
        go.Bar(x=nodes, y=[round(100 * sum(busy[n]) / len(busy[n]), 1) for n in nodes], marker={"color": "#2563eb"},
               hovertemplate="%{x}: %{y:.1f}% busy<extra></extra>"),
        layout=layout(yaxis={"range": [0, 105], "ticksuffix": "%", "gridcolor": "#e2e8f0", "title": {"text": "busy %"}},
                      showlegend=False),
    )
    return to_json(figure)


def routes(console: Console) -> APIRouter:
    router = console.router()

    @router.get("/fleet")
    def fleet_page(request: Request, user: SignedIn) -> Response:
        since = minute_of(console.clock()) - READING_MAX_AGE
        with console.session() as session:
            classes = fleet_by_class(session)
            calibrations = public_by_class(session, (c.device_class_id for c in classes))
            devices = device_states(session, since) if user.principal.tenant_id is None else []
        nodes: dict[str, list[DeviceState]] = defaultdict(list)
        for d in devices:
            nodes[d.node].append(d)
        return render(request, "fleet.html", {
            "user": user, "active": "Fleet", "classes": classes, "calibrations": calibrations, "nodes": nodes,
            "utilisation": utilisation_figure(devices),
        })

    return router
