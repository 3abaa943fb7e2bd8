"""An API client over the parametrised database, with a token for every kind of caller."""

from dataclasses import dataclass

import pytest
from fastapi.testclient import TestClient
from sqlmodel import Session

from controlplane.app import create_app
from controlplane.auth import mint_token
from controlplane.models import Role, Tenant
from controlplane.settings import Settings


@dataclass
class Callers:
    """Raw tokens, and the two tenants the tenant-scoped ones belong to."""

    admin: str
    operator: str
    viewer: str
    acme_operator: str
    globex_viewer: str
    acme_id: int
    globex_id: int


@pytest.fixture
def callers(engine) -> Callers:
    with Session(engine) as session:
        acme, globex = Tenant(name="acme"), Tenant(name="globex")
        session.add_all([acme, globex])
        session.flush()
        raws = {
            "admin": mint_token(session, "admin", Role.admin)[1],
            "operator": mint_token(session, "ops", Role.operator)[1],
            "viewer": mint_token(session, "view", Role.viewer)[1],
            "acme_operator": mint_token(session, "acme-ops", Role.operator, tenant_id=acme.id)[1],
            "globex_viewer": mint_token(session, "globex-view", Role.viewer, tenant_id=globex.id)[1],
        }
        ids = {"acme_id": acme.id, "globex_id": globex.id}
        session.commit()
    return Callers(**raws, **ids)


@pytest.fixture
def client(engine) -> TestClient:
    with TestClient(create_app(engine, Settings())) as client:
        yield client


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}
