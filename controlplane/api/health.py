"""Liveness and readiness: is the database reachable, when did the reconciler last finish a cycle."""

from datetime import datetime

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from sqlalchemy import text
from sqlmodel import select

from controlplane.deps import SessionDep
from controlplane.models import Placement

router = APIRouter(tags=["health"])


class Health(BaseModel):
    status: str
    database: str
    last_placement_at: datetime | None
    components: dict[str, str]


@router.get("/health", response_model=Health, summary="Health of the service (no token needed)")
def health(session: SessionDep, request: Request):
    components = dict(getattr(request.app.state, "components", {}))
    try:
        session.exec(text("SELECT 1"))
        last = session.exec(select(Placement.created_at).order_by(Placement.version.desc())).first()
        database = "ok"
    except Exception as exc:  # the point of a health check is to report, not raise
        last, database = None, f"error: {type(exc).__name__}"
    ok = database == "ok" and all(v == "ok" for v in components.values())
    body = Health(status="ok" if ok else "degraded", database=database, last_placement_at=last, components=components)
    return JSONResponse(body.model_dump(mode="json"), status_code=200 if ok else 503)
