"""The operator console at /ui: one module per page (web/pages/), sharing the sign-in dependency,
CSRF check, layout and error pages of web/deps.py, and the static assets served here.

Signing in with an API token opens a server-side session (web/sessions.py): the HttpOnly,
SameSite=Strict cookie holds only that session's random id, never the token. Every request
resolves the id on the server, so logout, revoking or expiring the token, and the session's own
expiry end it at once. Failed sign-ins count against the client in the same FailureLimiter as
failed bearer tokens, so guessing through the console is as slow as through the API. Every form
carries a double-submit CSRF token: a random value in a cookie and the same value in a hidden
field, compared in constant time. With the database unreachable a page answers a 503 error page
with Retry-After, and a data route 503 problem+json (controlplane.errors).
"""

from collections.abc import Callable
from datetime import datetime
from functools import cache
from pathlib import Path

import plotly
import plotly.offline
from fastapi import APIRouter, FastAPI
from fastapi.responses import FileResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates
from sqlalchemy.engine import Engine

from controlplane.errors import problem
from controlplane.models._common import utcnow
from controlplane.ratelimit import FailureLimiter
from web.deps import Console
from web.pages import chargeback, fleet, overview, placements, policies, proposals, signin, workloads

POLL_MS = 3000

_HERE = Path(__file__).resolve().parent
STATIC_DIR = _HERE / "static"


@cache
def _plotly_js() -> bytes:
    return plotly.offline.get_plotlyjs().encode()


def _static_files() -> dict[str, Path]:
    """Only files shipped in web/static are served, by exact name, so no path can escape the folder."""
    return {p.name: p for p in STATIC_DIR.iterdir() if p.is_file()}


def mount_console(app: FastAPI) -> None:
    """Serve the console on `app` (an API app: controlplane.app.create_app) at /ui, over its engine
    and counting failed sign-ins with its bearer-token failures; / redirects to /ui."""
    app.include_router(create_console_router(app.state.engine, app.state.auth_failures))

    @app.get("/", include_in_schema=False)
    def root() -> RedirectResponse:
        return RedirectResponse("/ui", status_code=307)


def create_console_router(
    engine: Engine, failures: FailureLimiter, clock: Callable[[], datetime] = utcnow, poll_ms: int = POLL_MS
) -> APIRouter:
    """The console's routes under /ui, reading `engine`; failed sign-ins count in `failures` (the
    API's limiter, so both count together); `clock` gives UTC now (tests pin it)."""
    console = Console(
        engine=engine, clock=clock, templates=Jinja2Templates(directory=_HERE / "templates"), poll_ms=poll_ms,
        asset_version=plotly.__version__,
    )
    router = APIRouter(include_in_schema=False)
    router.include_router(signin.routes(console, failures))
    for page in (overview, chargeback, proposals, placements, workloads, fleet, policies):
        router.include_router(page.routes(console))
    router.include_router(_assets())
    return router


def _assets() -> APIRouter:
    router = APIRouter(prefix="/ui/static", include_in_schema=False)
    static_files = _static_files()

    @router.get("/plotly.min.js")
    def plotly_js() -> Response:
        # Versioned by ?v=<plotly version> in the page, so it may be cached for a year.
        return Response(
            _plotly_js(),
            media_type="text/javascript",
            headers={"Cache-Control": "public, max-age=31536000, immutable", "X-Content-Type-Options": "nosniff"},
        )

    @router.get("/{name}")
    def static(name: str) -> Response:
        path = static_files.get(name)
        if path is None:
            return problem(404, "Not found", f"no console asset named {name!r}", f"/ui/static/{name}")
        return FileResponse(path, headers={"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"})

    return router
