"""Liveness and readiness: is the database reachable, when did the reconciler last finish a cycle."""

from datetime import datetime

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from sqlalchemy import text
from sqlmodel import select

from collectors.pipeline import IngestStats
from controlplane.deps import SessionDep
from controlplane.models import Placement

router = APIRouter(tags=["health"])


class Health(BaseModel):
    status: str
    database: str
    last_placement_at: datetime | None
    components: dict[str, str]
    ingest: IngestStats | None = None


@router.get("/health", response_model=Health, summary="Health of the service (no token needed)")
def health(session: SessionDep, request: Request):
    components = dict(getattr(request.app.state, "components", {}))
    try:
        session.exec(text("SELECT 1"))
        last = session.exec(select(Placement.created_at).order_by(Placement.version.desc())).first()
        database = "ok"
    except Exception as exc:  # the point of a health check is to report, not raise
        last, database = None, f"error: {type(exc).__name__}"
    ingest = getattr(request.app.state, "ingest", None)
    stats = ingest.stats() if ingest is not None else None
    if stats is not None and stats.last_error:
        components["ingest"] = f"degraded: {stats.last_error}"
    ok = database == "ok" and all(v == "ok" for v in components.values())
    body = Health(
        status="ok" if ok else "degraded", database=database, last_placement_at=last, components=components, ingest=stats
    )
    return JSONResponse(body.model_dump(mode="json"), status_code=200 if ok else 503)
