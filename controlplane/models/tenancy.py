"""Who may do what: tenants, API tokens (stored hashed) and the audit trail."""

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Column, String
from sqlmodel import Field, SQLModel

from controlplane.models._common import Input, utcnow
from controlplane.roles import Role


class TenantBase(Input):
    name: str = Field(min_length=1, max_length=63, schema_extra={"pattern": r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"})
    display_name: str = Field("", max_length=200)


class Tenant(TenantBase, table=True):
    __tablename__ = "tenant"
    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(max_length=63, unique=True)
    created_at: datetime = Field(default_factory=utcnow)


class TenantCreate(TenantBase):
    pass


class TenantUpdate(Input):
    display_name: str | None = Field(None, max_length=200)


class TenantPublic(TenantBase):
    id: int
    created_at: datetime


class ApiToken(SQLModel, table=True):
    """A bearer token. Only a SHA-256 of the secret is kept; the secret is shown once at creation."""

    __tablename__ = "api_token"
    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(max_length=100)
    prefix: str = Field(max_length=16, description="First characters of the secret, to recognise it in lists.")
    token_hash: str = Field(max_length=64, unique=True)
    role: Role = Field(sa_type=String(16))
    tenant_id: int | None = Field(default=None, foreign_key="tenant.id", index=True, ondelete="CASCADE")
    created_at: datetime = Field(default_factory=utcnow)
    expires_at: datetime | None = None
    revoked_at: datetime | None = None


class ConsoleSession(SQLModel, table=True):
    """A signed-in console: the browser's cookie holds a random id, of which only a SHA-256 is kept
    here. It ends at logout (row deleted), when its token is revoked or expires, or at expires_at."""

    __tablename__ = "console_session"
    id: int | None = Field(default=None, primary_key=True)
    id_hash: str = Field(max_length=64, unique=True)
    token_id: int = Field(foreign_key="api_token.id", index=True, ondelete="CASCADE")
    created_at: datetime = Field(default_factory=utcnow)
    expires_at: datetime = Field(index=True)


class AuditEvent(SQLModel, table=True):
    """Something a principal or the reconciler changed; append-only."""

    __tablename__ = "audit_event"
    id: int | None = Field(default=None, primary_key=True)
    at: datetime = Field(default_factory=utcnow, index=True)
    actor: str = Field(max_length=120)
    action: str = Field(max_length=64)
    target_type: str = Field(max_length=64)
    target_id: str = Field(max_length=64)
    tenant_id: int | None = Field(default=None, foreign_key="tenant.id", index=True, ondelete="SET NULL")
    detail: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
