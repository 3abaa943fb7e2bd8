"""Signing in (an API token opens a server-side session) and out."""

import secrets
from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import RedirectResponse, Response

from controlplane.auth import authenticate
from controlplane.db import session_scope
from controlplane.ratelimit import FailureLimiter, client_of
from web import sessions
from web.deps import (
    CSRF_COOKIE,
    SESSION_COOKIE,
    Console,
    CsrfChecked,
    csrf_ok,
    current_user,
    render,
    set_cookie,
    to_login,
)
from web.sessions import SESSION_MAX_AGE_S


def routes(console: Console, failures: FailureLimiter) -> APIRouter:
    router = console.router()

    @router.get("/login")
    def login_form(request: Request) -> Response:
        if current_user(request) is not None:
            return RedirectResponse("/ui", status_code=303)
        return render(request, "login.html", {})

    @router.post("/login")
    def login(
        request: Request,
        token: Annotated[str, Form(max_length=200)] = "",
        csrf_token: Annotated[str, Form(max_length=200)] = "",
    ) -> Response:
        client = client_of(request)
        # Checked before the token, so that during a lockout even the right token is refused.
        if (wait := failures.retry_after(client)) is not None:
            response = render(
                request, "login.html",
                {"error": f"Too many failed sign-ins from this address. Try again in {wait} s."}, status=429,
            )
            response.headers["Retry-After"] = str(wait)
            return response
        if not csrf_ok(request, csrf_token):
            return render(
                request, "login.html",
                {"error": "The form's security check failed (CSRF). Reload this page and sign in again."}, status=403,
            )
        now = console.clock()
        with session_scope(console.engine) as session:
            principal = authenticate(session, token.strip(), now=now)
            if principal is not None:
                # Signing in again replaces this browser's session, so a copy of its old cookie ends too.
                sessions.end(session, request.cookies.get(SESSION_COOKIE, ""))
                session_id = sessions.start(session, principal.token_id, now)
        if principal is None:
            failures.failed(client)
            return render(
                request, "login.html",
                {"error": "That API token is unknown, revoked or expired. Paste a valid token (hp_…)."}, status=401,
            )
        response = RedirectResponse("/ui", status_code=303)
        set_cookie(request, response, SESSION_COOKIE, session_id, max_age=SESSION_MAX_AGE_S)
        # A fresh CSRF token per session, so one seen before login is worthless after it.
        set_cookie(request, response, CSRF_COOKIE, secrets.token_urlsafe(32))
        return response

    @router.post("/logout", dependencies=[CsrfChecked])
    def logout(request: Request) -> Response:
        # Deleting the row, not just the cookie, is what makes a copy of the cookie worthless.
        with session_scope(console.engine) as session:
            sessions.end(session, request.cookies.get(SESSION_COOKIE, ""))
        response = to_login()
        response.delete_cookie(CSRF_COOKIE, path="/ui")
        return response

    return router
