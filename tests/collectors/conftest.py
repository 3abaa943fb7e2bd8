"""Fixtures of the collector tests: settings, tokens and a receiver client.

The database is the shared `engine` fixture (tests/conftest.py): each test that
touches it runs on SQLite and on PostgreSQL.
"""

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.engine import Engine

from collectors.pipeline import Ingest
from collectors.receiver import create_receiver_app
from controlplane.auth import mint_token, otlp_authoriser
from controlplane.collected import database_sink
from controlplane.db import session_scope
from controlplane.models import Role, Tenant
from controlplane.settings import Settings


@pytest.fixture
def settings(tmp_path) -> Settings:
    return Settings(data_dir=tmp_path, otlp_max_body_bytes=64 * 1024)


def _token(engine: Engine, role: Role, tenant_id: int | None = None) -> str:
    with session_scope(engine) as session:
        _, raw = mint_token(session, f"{role.value}-test", role, tenant_id=tenant_id)
    return raw


@pytest.fixture
def admin_token(engine) -> str:
    return _token(engine, Role.admin)


@pytest.fixture
def viewer_token(engine) -> str:
    return _token(engine, Role.viewer)


@pytest.fixture
def scoped_tenant(engine) -> Tenant:
    with session_scope(engine) as session:
        tenant = Tenant(name="globex")
        session.add(tenant)
    return tenant


@pytest.fixture
def scoped_token(engine, scoped_tenant) -> str:
    """An operator token that may only write into the tenant `globex`."""
    return _token(engine, Role.operator, tenant_id=scoped_tenant.id)


@pytest.fixture
def ingest(engine) -> Ingest:
    """An ingest queue with no worker: a test calls `flush()` to write what the receiver queued."""
    return Ingest(database_sink(engine))


@pytest.fixture
def client(engine, settings, ingest) -> Iterator[TestClient]:
    with TestClient(create_receiver_app(otlp_authoriser(engine), ingest, settings.otlp_max_body_bytes)) as test_client:
        yield test_client
