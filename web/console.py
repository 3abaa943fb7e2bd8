"""The operator console at /ui: token login, the overview page, its live JSON and its static assets.

Signing in with an API token opens a server-side session (web/sessions.py): the HttpOnly,
SameSite=Strict cookie holds only that session's random id, never the token. Every request
resolves the id on the server, so logout, revoking or expiring the token, and the session's own
expiry end it at once. Failed sign-ins count against the client in the same FailureLimiter as
failed bearer tokens, so guessing through the console is as slow as through the API. Every form
carries a double-submit CSRF token: a random value in a cookie and the same value in a hidden
field, compared in constant time. With the database unreachable a page answers a 503 error page
with Retry-After, and the data route 503 problem+json (controlplane.errors).
"""

import functools
import hmac
import secrets
from collections.abc import Callable
from datetime import datetime
from functools import cache
from pathlib import Path
from typing import Annotated

import plotly
import plotly.offline
from fastapi import APIRouter, FastAPI, Form, Request
from fastapi.responses import FileResponse, JSONResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates
from sqlalchemy.engine import Engine
from sqlmodel import Session

from controlplane.auth import Principal, authenticate
from controlplane.db import session_scope
from controlplane.errors import DATABASE_RETRY_AFTER_S, DATABASE_UNAVAILABLE, database_state, problem
from controlplane.models._common import utcnow
from controlplane.ratelimit import FailureLimiter, client_of
from web import sessions
from web.overview import overview
from web.sessions import SESSION_MAX_AGE_S

SESSION_COOKIE = "hp_console"
CSRF_COOKIE = "hp_csrf"
CSRF_FIELD = "csrf_token"
POLL_MS = 3000

_HERE = Path(__file__).resolve().parent
STATIC_DIR = _HERE / "static"
# Plotly injects <style> elements, hence 'unsafe-inline' for styles only; scripts come from 'self' alone.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
_PAGE_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
}


@cache
def _plotly_js() -> bytes:
    return plotly.offline.get_plotlyjs().encode()


def _static_files() -> dict[str, Path]:
    """Only files shipped in web/static are served, by exact name, so no path can escape the folder."""
    return {p.name: p for p in STATIC_DIR.iterdir() if p.is_file()}


def _csrf_ok(request: Request, submitted: str) -> bool:
    cookie = request.cookies.get(CSRF_COOKIE, "")
    return bool(cookie) and hmac.compare_digest(cookie.encode(), submitted.encode())


def _set_cookie(request: Request, response: Response, name: str, value: str, max_age: int | None = None) -> None:
    response.set_cookie(
        name,
        value,
        max_age=max_age,
        path="/ui",
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )


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
    router = APIRouter(prefix="/ui", include_in_schema=False)
    templates = Jinja2Templates(directory=_HERE / "templates")
    static_files = _static_files()
    asset_version = plotly.__version__

    def signed_in(request: Request) -> Principal | None:
        raw_id = request.cookies.get(SESSION_COOKIE)
        if not raw_id:
            return None
        with Session(engine) as session:
            return sessions.resolve(session, raw_id, clock())

    def page(request: Request, name: str, context: dict, status: int = 200) -> Response:
        """Render a page whose forms carry the CSRF token, issuing the CSRF cookie if it is missing."""
        token = request.cookies.get(CSRF_COOKIE) or secrets.token_urlsafe(32)
        response = templates.TemplateResponse(
            request,
            name,
            {"csrf_field": CSRF_FIELD, "csrf_token": token, "asset_version": asset_version, **context},
            status_code=status,
            headers=_PAGE_HEADERS,
        )
        if request.cookies.get(CSRF_COOKIE) != token:
            _set_cookie(request, response, CSRF_COOKIE, token)
        return response

    def to_login() -> RedirectResponse:
        response = RedirectResponse("/ui/login", status_code=303)
        response.delete_cookie(SESSION_COOKIE, path="/ui")
        return response

    def or_unavailable_page(route: Callable[..., Response]) -> Callable[..., Response]:
        """Wrap a page's route so that an unreachable database answers a readable 503 page with
        Retry-After, where the app-wide handler would answer JSON (the data route keeps that: its
        reader is a script)."""

        @functools.wraps(route)  # FastAPI reads the wrapped route's parameters
        def guarded(**params) -> Response:
            try:
                return route(**params)
            except DATABASE_UNAVAILABLE as exc:
                database_state(up=False, why=type(exc).__name__)
                response = page(
                    params["request"],
                    "error.html",
                    {
                        "heading": "Console unavailable",
                        "error": f"The database is unavailable or busy. Try again in {DATABASE_RETRY_AFTER_S} s.",
                    },
                    status=503,
                )
                response.headers["Retry-After"] = str(DATABASE_RETRY_AFTER_S)
                return response

        return guarded

    @router.get("/login")
    @or_unavailable_page
    def login_form(request: Request) -> Response:
        if signed_in(request) is not None:
            return RedirectResponse("/ui", status_code=303)
        return page(request, "login.html", {})

    @router.post("/login")
    @or_unavailable_page
    def login(
        request: Request,
        token: Annotated[str, Form(max_length=200)] = "",
        csrf_token: Annotated[str, Form(max_length=200)] = "",
    ) -> Response:
        client = client_of(request)
        # Checked before the token, so that during a lockout even the right token is refused.
        if (wait := failures.retry_after(client)) is not None:
            response = page(
                request,
                "login.html",
                {"error": f"Too many failed sign-ins from this address. Try again in {wait} s."},
                status=429,
            )
            response.headers["Retry-After"] = str(wait)
            return response
        if not _csrf_ok(request, csrf_token):
            return page(
                request,
                "login.html",
                {"error": "The form's security check failed (CSRF). Reload this page and sign in again."},
                status=403,
            )
        now = clock()
        with session_scope(engine) as session:
            principal = authenticate(session, token.strip(), now=now)
            if principal is not None:
                # Signing in again replaces this browser's session, so a copy of its old cookie ends too.
                sessions.end(session, request.cookies.get(SESSION_COOKIE, ""))
                session_id = sessions.start(session, principal.token_id, now)
        if principal is None:
            failures.failed(client)
            return page(
                request,
                "login.html",
                {"error": "That API token is unknown, revoked or expired. Paste a valid token (hp_…)."},
                status=401,
            )
        response = RedirectResponse("/ui", status_code=303)
        _set_cookie(request, response, SESSION_COOKIE, session_id, max_age=SESSION_MAX_AGE_S)
        # A fresh CSRF token per session, so one seen before login is worthless after it.
        _set_cookie(request, response, CSRF_COOKIE, secrets.token_urlsafe(32))
        return response

    @router.post("/logout")
    @or_unavailable_page
    def logout(request: Request, csrf_token: Annotated[str, Form(max_length=200)] = "") -> Response:
        if not _csrf_ok(request, csrf_token):
            return page(
                request,
                "error.html",
                {"error": "Sign-out refused: the form's security check failed (CSRF). Reload the page and try again."},
                status=403,
            )
        # Deleting the row, not just the cookie, is what makes a copy of the cookie worthless.
        with session_scope(engine) as session:
            sessions.end(session, request.cookies.get(SESSION_COOKIE, ""))
        response = to_login()
        response.delete_cookie(CSRF_COOKIE, path="/ui")
        return response

    @router.get("")
    @or_unavailable_page
    def overview_page(request: Request) -> Response:
        principal = signed_in(request)
        if principal is None:
            return to_login()
        with Session(engine) as session:
            data = overview(session, principal, clock())
        return page(
            request,
            "overview.html",
            {"principal": principal, "data": data, "poll_ms": poll_ms},
        )

    @router.get("/data/overview")
    def overview_data(request: Request) -> Response:
        principal = signed_in(request)
        if principal is None:
            return problem(401, "Unauthorized", "sign in to the console first", request.url.path)
        with Session(engine) as session:
            data = overview(session, principal, clock())
        # The body is `OverviewData` (web/overview.py).
        return JSONResponse(data.model_dump(mode="json"), headers={"Cache-Control": "no-store"})

    @router.get("/static/plotly.min.js")
    def plotly_js() -> Response:
        # Versioned by ?v=<plotly version> in the page, so it may be cached for a year.
        return Response(
            _plotly_js(),
            media_type="text/javascript",
            headers={"Cache-Control": "public, max-age=31536000, immutable", "X-Content-Type-Options": "nosniff"},
        )

    @router.get("/static/{name}")
    def static(name: str) -> Response:
        path = static_files.get(name)
        if path is None:
            return problem(404, "Not found", f"no console asset named {name!r}", f"/ui/static/{name}")
        return FileResponse(path, headers={"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"})

    return router
