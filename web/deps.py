"""What every console page shares: who is signed in (the dependency that sends everyone else to the
sign-in page), the CSRF check on forms, the page renderer with its navigation bar, and one place that
turns errors into pages.

A page module builds its routes with `console.router()`, whose route class (`PageRoute`) hands the
route's dependencies this console (`request.state.console`) and answers, for every page alike:

- no session, or an ended one                   303 to /ui/login (the data routes: 401 problem+json)
- a form whose CSRF token does not match        403 error page
- an `ApiError` from the API code a page reuses its status, with its text, on an error page
- a malformed query or form field               422 error page naming the field
- the database unreachable or busy              503 error page with Retry-After

so no page checks sessions, roles or outages itself.
"""

import hmac
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Form, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, RedirectResponse, Response
from fastapi.routing import APIRoute
from fastapi.templating import Jinja2Templates
from sqlalchemy.engine import Engine
from sqlmodel import Session

from controlplane.auth import Principal
from controlplane.errors import (
    DATABASE_RETRY_AFTER_S,
    DATABASE_UNAVAILABLE,
    ApiError,
    Forbidden,
    database_state,
    problem,
)
from controlplane.models import Role, Tenant
from web import sessions

SESSION_COOKIE = "hp_console"
CSRF_COOKIE = "hp_csrf"
CSRF_FIELD = "csrf_token"

# Plotly injects <style> elements, hence 'unsafe-inline' for styles only; scripts come from 'self' alone.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
PAGE_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
}

# The navigation bar: (label, path), in the order operators read them.
NAVIGATION = (
    ("Overview", "/ui"),
    ("Chargeback", "/ui/chargeback"),
    ("Proposals", "/ui/proposals"),
    ("Placements", "/ui/placements"),
    ("Workloads", "/ui/workloads"),
    ("Fleet", "/ui/fleet"),
    ("Policies", "/ui/policies"),
)


@dataclass(frozen=True)
class User:
    """Who a console session signs in: the API token's principal and, when it is tenant-scoped, the
    tenant's name."""

    principal: Principal
    tenant: str | None

    @property
    def fleet_operator(self) -> bool:
        """May act on fleet-wide objects (approve placements, edit policies): an operator or admin
        token that no tenant scopes."""
        return self.principal.tenant_id is None and self.principal.has_role(Role.operator)


class SignInRequired(Exception):
    """No session, or one that has ended: the page sends the browser to sign in."""


class CsrfRefused(Exception):
    """A form came without the CSRF token this browser was given."""


@dataclass
class Console:
    """One console over one database: what its routes and dependencies read."""

    engine: Engine
    clock: Callable[[], datetime]
    templates: Jinja2Templates
    poll_ms: int
    asset_version: str
    _route_classes: dict[bool, type[APIRoute]] = field(default_factory=dict)

    def router(self, data: bool = False) -> APIRouter:
        """A router for this console's pages under /ui (`data`: its JSON routes, whose errors are
        problem+json for a script, not pages for a person)."""
        if data not in self._route_classes:
            base = DataRoute if data else PageRoute
            self._route_classes[data] = type(base.__name__, (base,), {"console": self})
        return APIRouter(prefix="/ui", include_in_schema=False, route_class=self._route_classes[data])

    def session(self) -> Session:
        """A database session for one request; objects stay readable after a commit (as the API's do)."""
        return Session(self.engine, expire_on_commit=False)


def console_of(request: Request) -> Console:
    return request.state.console


def render(request: Request, name: str, context: dict[str, Any], status: int = 200) -> Response:
    """Render template `name`, its forms carrying the CSRF token, issuing the CSRF cookie if it is missing."""
    console = console_of(request)
    token = request.cookies.get(CSRF_COOKIE) or secrets.token_urlsafe(32)
    response = console.templates.TemplateResponse(
        request,
        name,
        {
            "csrf_field": CSRF_FIELD, "csrf_token": token, "asset_version": console.asset_version,
            "navigation": NAVIGATION, "path": request.url.path, **context,
        },
        status_code=status,
        headers=PAGE_HEADERS,
    )
    if request.cookies.get(CSRF_COOKIE) != token:
        set_cookie(request, response, CSRF_COOKIE, token)
    return response


def error_page(request: Request, status: int, error: str, heading: str = "Request refused") -> Response:
    user = getattr(request.state, "user", None)
    return render(request, "error.html", {"heading": heading, "error": error, "user": user}, status=status)


def set_cookie(request: Request, response: Response, name: str, value: str, max_age: int | None = None) -> None:
    response.set_cookie(
        name, value, max_age=max_age, path="/ui", httponly=True, samesite="strict",
        secure=request.url.scheme == "https",
    )


def csrf_ok(request: Request, submitted: str) -> bool:
    cookie = request.cookies.get(CSRF_COOKIE, "")
    return bool(cookie) and hmac.compare_digest(cookie.encode(), submitted.encode())


def to_login() -> RedirectResponse:
    response = RedirectResponse("/ui/login", status_code=303)
    response.delete_cookie(SESSION_COOKIE, path="/ui")
    return response


# ---- dependencies ----------------------------------------------------------------------------------


def current_user(request: Request) -> User | None:
    """Who this browser's session signs in, or None (no cookie, or the session has ended)."""
    raw_id = request.cookies.get(SESSION_COOKIE)
    if not raw_id:
        return None
    console = console_of(request)
    with Session(console.engine) as session:
        principal = sessions.resolve(session, raw_id, console.clock())
        if principal is None:
            return None
        tenant = session.get(Tenant, principal.tenant_id) if principal.tenant_id is not None else None
        return User(principal, tenant.name if tenant is not None else None)


def signed_in(request: Request) -> User:
    """The signed-in user; anyone else is sent to sign in (see PageRoute)."""
    user = current_user(request)
    if user is None:
        raise SignInRequired
    request.state.user = user
    return user


def csrf_checked(request: Request, csrf_token: Annotated[str, Form(max_length=200)] = "") -> None:
    """A form post carries the CSRF token of this browser's cookie (double submit)."""
    if not csrf_ok(request, csrf_token):
        raise CsrfRefused


def operator(user: User) -> None:
    """What the API's Operator dependency checks, for a page that runs an API route itself."""
    if not user.principal.has_role(Role.operator):
        raise Forbidden(f"this action needs the operator role; the token has {user.principal.role.value}")


SignedIn = Annotated[User, Depends(signed_in)]
CsrfChecked = Depends(csrf_checked)


# ---- route classes: one place for errors -----------------------------------------------------------


class PageRoute(APIRoute):
    """A console page's route: hands its dependencies the console, and answers errors as pages."""

    console: Console  # set on the class a Console makes (Console.router)

    def get_route_handler(self) -> Callable:
        handler = super().get_route_handler()
        console = self.console

        async def route(request: Request) -> Response:
            request.state.console = console
            try:
                return await handler(request)
            except Exception as exc:  # noqa: BLE001 - each kind is answered below; others re-raised
                answer = self.answer(request, exc)
                if answer is None:
                    raise
                return answer

        return route

    def answer(self, request: Request, exc: Exception) -> Response | None:
        if isinstance(exc, SignInRequired):
            return to_login()
        if isinstance(exc, CsrfRefused):
            return error_page(request, 403, "The form's security check failed (CSRF). Reload the page and try again.")
        if isinstance(exc, ApiError):
            return error_page(request, exc.status, exc.detail)
        if isinstance(exc, RequestValidationError):
            return error_page(request, 422, invalid_input(exc))
        if isinstance(exc, DATABASE_UNAVAILABLE):
            database_state(up=False, why=type(exc).__name__)
            response = error_page(
                request, 503, f"The database is unavailable or busy. Try again in {DATABASE_RETRY_AFTER_S} s.",
                heading="Console unavailable",
            )
            response.headers["Retry-After"] = str(DATABASE_RETRY_AFTER_S)
            return response
        return None


class DataRoute(PageRoute):
    """A console JSON route (what a page's script polls): errors as problem+json."""

    def answer(self, request: Request, exc: Exception) -> Response | None:
        path = request.url.path
        if isinstance(exc, SignInRequired):
            return problem(401, "Unauthorized", "sign in to the console first", path)
        if isinstance(exc, ApiError):
            return problem(exc.status, exc.title, exc.detail, path, field=exc.field)
        if isinstance(exc, RequestValidationError):
            return problem(422, "Invalid request", invalid_input(exc), path)
        if isinstance(exc, DATABASE_UNAVAILABLE):
            database_state(up=False, why=type(exc).__name__)
            response = problem(503, "Service unavailable", "the database is unavailable or busy; retry after the "
                               "seconds in Retry-After", path)
            response.headers["Retry-After"] = str(DATABASE_RETRY_AFTER_S)
            return response
        return None


def invalid_input(exc: RequestValidationError) -> str:
    """The first bad field and what is wrong with it, e.g. 'range: Input should be ...'."""
    for error in exc.errors():
        where = ".".join(str(p) for p in error.get("loc", ()) if p not in ("query", "body", "path", "form"))
        return f"{where}: {error.get('msg', 'invalid')}" if where else error.get("msg", "invalid request")
    return "invalid request"


def json_response(body: Any) -> JSONResponse:
    return JSONResponse(body, headers={"Cache-Control": "no-store"})
