"""GET /metrics: heteroplane's own metrics (controlplane.telemetry) in the Prometheus text format, on
the API port and outside /api/v1 and the OpenAPI document, as scrapers expect."""

from fastapi import APIRouter, Depends, Request, Response
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

from controlplane.deps import metrics_reader
from controlplane.telemetry import main_status

router = APIRouter()


@router.get("/metrics", include_in_schema=False, dependencies=[Depends(metrics_reader)])
def metrics(request: Request) -> Response:
    """This process's metrics, or, in an API worker process (controlplane.workers), the main process's as
    it last published them; then what this process reads from the database."""
    state = request.app.state
    published = getattr(state, "published", None)
    if published is None:
        head = state.telemetry.exposition()
    else:
        main = published.metrics()
        head = (main or b"") + main_status(stale=main is None)
    return Response(head + generate_latest(state.database_metrics), media_type=CONTENT_TYPE_LATEST)
