"""The FastAPI application: REST API under /api/v1, /metrics, the API's documentation at /docs and
/redoc (controlplane.docs), problem+json errors. The console
(web/, under /ui) is mounted on it by the composition root (controlplane.composition.service_app)."""

from fastapi import APIRouter, Depends, FastAPI
from sqlalchemy.engine import Engine

from collectors.pipeline import Ingest
from controlplane.admission import Admission
from controlplane.api import (
    costs,
    fleet,
    health,
    metrics,
    pins,
    placements,
    policies,
    runtime_templates,
    tenants,
    tokens,
    workloads,
)
from controlplane.compression import CompressedAssets
from controlplane.docs import install_docs
from controlplane.errors import install_problem_handlers
from controlplane.inputs import InputGuard, known_query_parameters
from controlplane.openapi import document_errors
from controlplane.ratelimit import FailureLimiter
from controlplane.settings import Settings
from controlplane.telemetry import Telemetry, database_registry


def create_app(
    engine: Engine, settings: Settings, ingest: Ingest | None = None, components: dict[str, str] | None = None,
    telemetry: Telemetry | None = None,
) -> FastAPI:
    """The API and console over `engine`; `ingest` is this process's OTLP pipeline and `components`
    the state of its loops, both reported by /health; `telemetry` their metrics, served at /metrics
    (by default a new one over `ingest`: give the same one to the process's reconciler)."""
    app = FastAPI(
        title="heteroplane",
        version="0.1.0",
        description="Observability-driven autoscaling control plane for agentic AI on heterogeneous fleets.",
        docs_url=None,  # controlplane.docs serves both pages from local assets instead of a CDN
        redoc_url=None,
    )
    app.state.engine = engine
    app.state.settings = settings
    app.state.components = components if components is not None else {}
    app.state.ingest = ingest
    app.state.telemetry = telemetry if telemetry is not None else Telemetry(ingest)
    app.state.database_metrics = database_registry(engine)
    app.state.token_cache = {}  # controlplane.deps.verified
    app.state.auth_failures = FailureLimiter()
    install_problem_handlers(app)
    app.add_middleware(CompressedAssets)  # innermost: compresses what the routes answer
    app.add_middleware(InputGuard)
    app.add_middleware(Admission, concurrency=settings.api_concurrency)  # outermost: sheds before reading bodies

    api = APIRouter(prefix="/api/v1", dependencies=[Depends(known_query_parameters)])
    for module in (fleet, tenants, workloads, runtime_templates, policies, placements, pins, costs, tokens, health):
        api.include_router(module.router)
    app.include_router(api)
    app.include_router(metrics.router)
    install_docs(app)

    document_errors(app)
    return app
