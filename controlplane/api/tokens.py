"""API tokens: minted by admins, shown once, listed without secrets, revoked, never deleted (audit)."""

from datetime import datetime, timedelta

from fastapi import APIRouter, Request, status
from pydantic import BaseModel, Field
from sqlmodel import select

from controlplane.api.common import Id, Page, WindowDep, audit, get_or_404, paginate
from controlplane.api.routing import OneHopRoute
from controlplane.auth import mint_token
from controlplane.deps import Admin, SessionDep, fleet_writer
from controlplane.errors import InvalidInput
from controlplane.models import ApiToken, Role, Tenant
from controlplane.models._common import INT32_MAX, Input, input_config, utcnow

router = APIRouter(tags=["tokens"], route_class=OneHopRoute)


class TokenCreate(Input):
    # Documented as the validator checks it: a tenant-scoped token is an operator or a viewer.
    model_config = input_config(schema={
        "if": {"properties": {"tenant_id": {"type": "integer"}}, "required": ["tenant_id"]},
        "then": {"properties": {"role": {"enum": [Role.operator.value, Role.viewer.value]}}},
    })

    name: str = Field(min_length=1, max_length=100)
    role: Role
    tenant_id: int | None = Field(None, ge=1, le=INT32_MAX, description="Limit the token to this tenant's workloads.")
    expires_in_days: int | None = Field(None, ge=1, le=3650)


class TokenPublic(BaseModel):
    id: int
    name: str
    prefix: str
    role: Role
    tenant_id: int | None
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None


class TokenCreated(TokenPublic):
    token: str = Field(description="The secret. Shown once; only its hash is stored.")


@router.post("/tokens", response_model=TokenCreated, status_code=status.HTTP_201_CREATED)
def create_token(body: TokenCreate, session: SessionDep, principal: Admin):
    fleet_writer(principal)
    if body.tenant_id is not None:
        get_or_404(session, Tenant, body.tenant_id, "tenant")
    if body.tenant_id is not None and body.role is Role.admin:
        raise InvalidInput("a tenant-scoped token cannot be admin; use operator or viewer", field="role")
    expires = utcnow() + timedelta(days=body.expires_in_days) if body.expires_in_days else None
    row, raw = mint_token(session, body.name, body.role, body.tenant_id, expires)
    audit(session, principal, "token.create", row, tenant_id=row.tenant_id, detail={"name": row.name, "role": row.role})
    session.commit()
    return TokenCreated(**TokenPublic.model_validate(row, from_attributes=True).model_dump(), token=raw)


@router.get("/tokens", response_model=Page[TokenPublic])
def list_tokens(session: SessionDep, principal: Admin, win: WindowDep):
    fleet_writer(principal)
    items, total = paginate(session, select(ApiToken), win, ApiToken.id)
    return Page(items=items, total=total, limit=win.limit, offset=win.offset)


@router.delete("/tokens/{token_id}", status_code=status.HTTP_204_NO_CONTENT, summary="Revoke a token")
def revoke_token(token_id: Id, request: Request, session: SessionDep, principal: Admin):
    fleet_writer(principal)
    row = get_or_404(session, ApiToken, token_id, "token")
    if row.revoked_at is None:
        row.revoked_at = utcnow()
        audit(session, principal, "token.revoke", row, tenant_id=row.tenant_id, detail={"name": row.name})
        session.commit()
    request.app.state.token_cache.clear()  # verified tokens this process trusts without a query
