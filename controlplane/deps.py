"""FastAPI dependencies shared by every router: the session, the caller, and role checks."""

import functools
import time
from collections.abc import AsyncIterator
from typing import Annotated

from anyio import CapacityLimiter, to_thread
from anyio.lowlevel import RunVar
from fastapi import Depends, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.engine import Engine
from sqlmodel import Session

from controlplane.auth import Principal, authenticate, hash_token
from controlplane.errors import Forbidden, NotFound, TooManyRequests, Unauthorized, database_state
from controlplane.models import Role
from controlplane.ratelimit import client_of

_bearer = HTTPBearer(auto_error=False, description="An API token: `Authorization: Bearer hp_…`")


# Dependencies that do no I/O are `async def`: FastAPI runs a plain `def` one on a worker thread, and
# each such hop costs a thread switch and a turn at the GIL. A request's thread hops are its route,
# its session's close, and a token lookup when the cache does not know the token.


async def get_engine(request: Request) -> Engine:
    return request.app.state.engine


async def get_session(request: Request, engine: Annotated[Engine, Depends(get_engine)]) -> AsyncIterator[Session]:
    """One session per request; it connects when the route first queries, and is closed (its
    connection back in the pool) on a worker thread once the route is done. A read (GET, HEAD) on
    PostgreSQL runs in autocommit: under READ COMMITTED each statement sees its own snapshot anyway,
    and it saves the BEGIN and ROLLBACK round trips. A request that completes says the database
    answered, unless its route caught the database's absence and answered anyway (/health), which it
    marks in `session.info["database_unavailable"]`."""
    if request.method in ("GET", "HEAD") and engine.dialect.name == "postgresql":
        engine = reader(request.app)
    session = Session(engine, expire_on_commit=False)
    try:
        yield session
    except BaseException:
        await _release(session, failed=True)
        raise
    await _release(session, failed=False)


async def _release(session: Session, failed: bool) -> None:
    """Close `session`. A route run by OneHopRoute has closed it already, and one that never queried
    holds nothing: closing those is no I/O, done here. Otherwise its rollback is a round trip, done
    on a closer thread."""
    if session.in_transaction():
        await to_thread.run_sync(session.close if failed else functools.partial(_close, session),
                                 limiter=_closers())
    elif failed:
        session.close()
    else:
        _close(session)


CLOSER_THREADS = 4


def _closers() -> CapacityLimiter:
    """Threads that only close sessions, apart from the ones routes run on. A session closed on a
    route's thread could deadlock: with every route thread waiting for a pool connection, and every
    connection held by a finished request waiting for a thread to close it, nothing moves until the
    pool's timeout. Closing never waits for a connection, so these threads always free one.
    One limiter per event loop (anyio's RunVar), as the default thread limiter is."""
    try:
        return _CLOSERS.get()
    except LookupError:
        limiter = CapacityLimiter(CLOSER_THREADS)
        _CLOSERS.set(limiter)
        return limiter


_CLOSERS: RunVar[CapacityLimiter] = RunVar("heteroplane_session_closers")


def reader(app) -> Engine:
    """The app's engine in autocommit, over the same pool (made once per app)."""
    if getattr(app.state, "reader", None) is None:
        app.state.reader = app.state.engine.execution_options(isolation_level="AUTOCOMMIT")
    return app.state.reader


def _close(session: Session) -> None:
    session.close()
    if not session.info.get("database_unavailable"):
        database_state(up=True)


SessionDep = Annotated[Session, Depends(get_session)]


TOKEN_CACHE_S = 5.0  # a verified token is trusted this long without a query (revoked here: at once)
TOKEN_CACHE_MAX = 10_000


async def verified(request: Request, raw_token: str) -> Principal | None:
    """The principal behind `raw_token`, from this process's short-lived cache of verified tokens or
    the database. A token revoked through this process leaves the cache at once (controlplane.api.
    tokens); one revoked elsewhere (another worker process, the CLI) stops working within
    TOKEN_CACHE_S. The lookup uses its own short session, not the request's, so no connection is
    held while the request waits for its route's thread."""
    cache: dict[str, tuple[Principal, float]] = request.app.state.token_cache
    key = hash_token(raw_token) if raw_token and len(raw_token) <= 200 else ""
    hit = cache.get(key)
    if hit is not None and hit[1] > time.monotonic():
        return hit[0]
    principal = await run_in_threadpool(_lookup, request.app.state.engine, raw_token)
    if principal is not None:
        if len(cache) >= TOKEN_CACHE_MAX:
            cache.clear()
        cache[key] = (principal, time.monotonic() + TOKEN_CACHE_S)
    return principal


def _lookup(engine: Engine, raw_token: str) -> Principal | None:
    with Session(engine) as session:
        return authenticate(session, raw_token)


async def get_principal(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise Unauthorized("send an API token as `Authorization: Bearer <token>`")  # no guess: not counted
    client = client_of(request)
    limiter = request.app.state.auth_failures
    if (wait := limiter.retry_after(client)) is not None:
        raise TooManyRequests(f"too many failed tokens from this client; retry in {wait} s", retry_after_s=wait)
    principal = await verified(request, credentials.credentials)
    if principal is None:
        limiter.failed(client)
        raise Unauthorized("the API token is unknown, revoked or expired")
    return principal


CurrentPrincipal = Annotated[Principal, Depends(get_principal)]


async def get_optional_principal(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal | None:
    """The caller when it sent a valid token, else None (for routes open to anyone, such as /health,
    that show more to a caller allowed to see it)."""
    if credentials is None or credentials.scheme.lower() != "bearer":
        return None
    return await verified(request, credentials.credentials)


OptionalPrincipal = Annotated[Principal | None, Depends(get_optional_principal)]


def require(role: Role):
    """A dependency that admits principals holding at least `role`."""

    async def _check(principal: CurrentPrincipal) -> Principal:
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


async def metrics_reader(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> None:
    """GET /metrics: a fleet-wide token of any role, since the desired-replicas metric names every
    tenant's workloads; nobody's token at all when `metrics_public` (a scraper inside the cluster)."""
    if request.app.state.settings.metrics_public:
        return
    fleet_reader(await get_principal(request, credentials), "/metrics")


def check_tenant(principal: Principal, tenant_id: int, what: str = "resource") -> None:
    """Hide other tenants' objects as if they did not exist (404, not 403), so ids leak nothing."""
    if not principal.can_see_tenant(tenant_id):
        raise NotFound(f"{what} not found")
