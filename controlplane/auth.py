"""API tokens: minted once, stored as SHA-256, resolved to a `Principal` with a role and an optional tenant."""

import hashlib
import logging
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.engine import Engine
from sqlalchemy.exc import OperationalError
from sqlmodel import Session, select

from collectors import otlp_codec as otlp
from controlplane.db import session_scope
from controlplane.models import ApiToken, Role, Tenant
from controlplane.models._common import utcnow

log = logging.getLogger(__name__)

TOKEN_PREFIX = "hp_"
_RANK = {Role.viewer: 0, Role.operator: 1, Role.admin: 2}


@dataclass(frozen=True)
class Principal:
    """Who is calling: the token's identity, its role and, for tenant-scoped tokens, the tenant."""

    token_id: int
    name: str
    role: Role
    tenant_id: int | None

    def has_role(self, required: Role) -> bool:
        return _RANK[self.role] >= _RANK[required]

    def can_see_tenant(self, tenant_id: int) -> bool:
        return self.tenant_id is None or self.tenant_id == tenant_id

    @property
    def actor(self) -> str:
        """How the audit trail names this principal (never the secret)."""
        return f"token:{self.token_id}:{self.name}"


def hash_token(raw: str) -> str:
    """Tokens are 256-bit random secrets, so an unsalted SHA-256 is enough to make a leaked table useless."""
    return hashlib.sha256(raw.encode()).hexdigest()


def mint_token(
    session: Session,
    name: str,
    role: Role,
    tenant_id: int | None = None,
    expires_at: datetime | None = None,
) -> tuple[ApiToken, str]:
    """Create a token; returns the stored row and the raw secret, which is never stored or shown again."""
    raw = TOKEN_PREFIX + secrets.token_urlsafe(32)
    row = ApiToken(
        name=name,
        prefix=raw[:10],
        token_hash=hash_token(raw),
        role=role,
        tenant_id=tenant_id,
        expires_at=expires_at,
    )
    session.add(row)
    session.flush()
    return row, raw


def authenticate(session: Session, raw_token: str, now: datetime | None = None) -> Principal | None:
    """The principal behind `raw_token`, or None if it is unknown, revoked or expired."""
    if not raw_token or len(raw_token) > 200:
        return None
    row = session.exec(select(ApiToken).where(ApiToken.token_hash == hash_token(raw_token))).first()
    return None if row is None else principal_of(row, now or utcnow())


def principal_of(row: ApiToken, now: datetime) -> Principal | None:
    """The principal a stored token stands for at `now`, or None once it is revoked or expired."""
    if row.revoked_at is not None or (row.expires_at is not None and row.expires_at <= now):
        return None
    return Principal(token_id=row.id, name=row.name, role=Role(row.role), tenant_id=row.tenant_id)


def otlp_authoriser(engine: Engine) -> Callable[[str | None], str | None]:
    """The OTLP receiver's `authorise` (collectors.receiver.Authorise): a bearer API token of role
    operator or admin; the name of its tenant when it is tenant-scoped, else None. A token store that
    cannot answer (locked, unreachable) asks the exporter to retry (503 after Retry-After)."""

    def authorise(authorization: str | None) -> str | None:
        scheme, _, token = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise otlp.Unauthorized("send an API token as `Authorization: Bearer <token>`")
        try:
            with session_scope(engine) as session:
                principal = authenticate(session, token.strip())
                if principal is None:
                    raise otlp.Unauthorized("the API token is unknown, revoked or expired")
                if principal.role == Role.viewer:
                    raise otlp.Forbidden("a viewer token cannot send telemetry; use an operator or admin token")
                if principal.tenant_id is None:
                    return None
                tenant = session.get(Tenant, principal.tenant_id)
                if tenant is None:
                    raise otlp.Unauthorized("the API token's tenant no longer exists")
                return tenant.name
        except OperationalError as exc:
            log.warning("OTLP export refused, asking the exporter to retry: %s", type(exc).__name__)
            raise otlp.Unavailable("the token store is unavailable; retry later") from None

    return authorise
