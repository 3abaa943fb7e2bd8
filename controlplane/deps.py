"""FastAPI dependencies shared by every router: the session, the caller, and role checks."""

import time
from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.engine import Engine
from sqlmodel import Session

from controlplane.auth import Principal, authenticate, hash_token
from controlplane.errors import Forbidden, NotFound, TooManyRequests, Unauthorized, database_state
from controlplane.models import Role
from controlplane.ratelimit import client_of

_bearer = HTTPBearer(auto_error=False, description="An API token: `Authorization: Bearer hp_…`")


def get_engine(request: Request) -> Engine:
    return request.app.state.engine


def get_session(engine: Annotated[Engine, Depends(get_engine)]) -> Iterator[Session]:
    """One session per request; committed by the route, rolled back on any error. A request that
    completes says the database answered, unless its route caught the database's absence and
    answered anyway (/health), which it marks in `session.info["database_unavailable"]`."""
    with Session(engine, expire_on_commit=False) as session:
        try:
            yield session
        except BaseException:
            session.rollback()
            raise
        if not session.info.get("database_unavailable"):
            database_state(up=True)


SessionDep = Annotated[Session, Depends(get_session)]


TOKEN_CACHE_S = 5.0  # a verified token is trusted this long without a query (revoked here: at once)
TOKEN_CACHE_MAX = 10_000


def verified(request: Request, session: Session, raw_token: str) -> Principal | None:
    """The principal behind `raw_token`, from this process's short-lived cache of verified tokens or
    the database. A token revoked through this process leaves the cache at once (controlplane.api.
    tokens); one revoked elsewhere stops working within TOKEN_CACHE_S."""
    cache: dict[str, tuple[Principal, float]] = request.app.state.token_cache
    key = hash_token(raw_token) if raw_token and len(raw_token) <= 200 else ""
    hit = cache.get(key)
    if hit is not None and hit[1] > time.monotonic():
        return hit[0]
    principal = authenticate(session, raw_token)
    # End the read's transaction: its connection goes back to the pool while the request waits for a
    # worker thread to run its route (holding it across that wait is how a pool deadlocks).
    session.rollback()
    if principal is not None:
        if len(cache) >= TOKEN_CACHE_MAX:
            cache.clear()
        cache[key] = (principal, time.monotonic() + TOKEN_CACHE_S)
    return principal


def get_principal(
    request: Request,
    session: SessionDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise Unauthorized("send an API token as `Authorization: Bearer <token>`")  # no guess: not counted
    client = client_of(request)
    limiter = request.app.state.auth_failures
    if (wait := limiter.retry_after(client)) is not None:
        raise TooManyRequests(f"too many failed tokens from this client; retry in {wait} s", retry_after_s=wait)
    principal = verified(request, session, credentials.credentials)
    if principal is None:
        limiter.failed(client)
        raise Unauthorized("the API token is unknown, revoked or expired")
    return principal


CurrentPrincipal = Annotated[Principal, Depends(get_principal)]


def get_optional_principal(
    request: Request,
    session: SessionDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal | None:
    """The caller when it sent a valid token, else None (for routes open to anyone, such as /health,
    that show more to a caller allowed to see it)."""
    if credentials is None or credentials.scheme.lower() != "bearer":
        return None
    return verified(request, session, credentials.credentials)


OptionalPrincipal = Annotated[Principal | None, Depends(get_optional_principal)]


def require(role: Role):
    """A dependency that admits principals holding at least `role`."""

    def _check(principal: CurrentPrincipal) -> Principal:
        if not principal.has_role(role):
            raise Forbidden(f"this action needs the {role.value} role; the token has {principal.role.value}")
        return principal

    return _check


Viewer = Annotated[Principal, Depends(require(Role.viewer))]
Operator = Annotated[Principal, Depends(require(Role.operator))]
Admin = Annotated[Principal, Depends(require(Role.admin))]


def fleet_writer(principal: Principal) -> None:
    """Fleet-wide objects (device classes, nodes, fleet policies) are not a tenant's to change."""
    if principal.tenant_id is not None:
        raise Forbidden("a tenant-scoped token cannot change fleet-wide objects")


def fleet_reader(principal: Principal, what: str) -> None:
    """Fleet-wide inventory that is no tenant's business (nodes and their devices) is read by fleet-wide
    tokens only; the priced device catalog and placement summaries stay readable to every tenant."""
    if principal.tenant_id is not None:
        raise Forbidden(f"{what} is fleet-wide; a tenant-scoped token cannot read it")


def check_tenant(principal: Principal, tenant_id: int, what: str = "resource") -> None:
    """Hide other tenants' objects as if they did not exist (404, not 403), so ids leak nothing."""
    if not principal.can_see_tenant(tenant_id):
        raise NotFound(f"{what} not found")
