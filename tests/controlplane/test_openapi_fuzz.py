"""Schemathesis over every operation of the OpenAPI document, with every check, on PostgreSQL.

The app runs on a fresh PostgreSQL database brought up by the real migrations and filled as a
fleet would be (the catalog, two tenants, a workload with an SLA, a policy, a reconciler cycle's
placement), and is called with an admin token, so most requests reach the code behind auth.
Fixed seed and example count: the same cases in every run. A failure prints schemathesis's
reproduction (a curl line).

Configured, and why:
- NUL characters are not generated (`allow-x00 = false`): the API refuses them by design, which the
  schema cannot say for every string (test_api_crud.py sends them and asserts the 422).
- GET /costs and /costs/export may answer 400 to schema-valid data: `since` must precede `until`, an order between two
  parameters that JSON Schema cannot express (documented as 400); and 422 to a `step` too fine for
  the range (more than 10080 buckets), a bound across parameters it cannot express either.
- Date-times are generated within the window every date-time parameter documents (2000-01-01 to
  2200-01-01 UTC): JSON Schema has no keyword for a range of dates (test_api_crud.py sends years 1
  and 9999 and asserts the 422).
- The failure limiter is set high: schemathesis sends wrong tokens on purpose, and the limiter's
  429 would otherwise answer every later request (test_api_auth.py covers the limiter).
"""

from datetime import UTC, timedelta

import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import strategies as st
from schemathesis.config import SchemathesisConfig
from schemathesis.core.parameters import ParameterLocation
from sqlmodel import Session

from controlplane.actuators.base import NodeInventory
from controlplane.actuators.memory import InMemoryActuator
from controlplane.app import create_app
from controlplane.auth import mint_token
from controlplane.db import make_engine, upgrade
from controlplane.models import Fragment, FragmentKind, FragmentProfile, MigrationPolicy, Role, Sla, Tenant, Workload
from controlplane.models._common import EARLIEST, LATEST, minute_of, utcnow
from controlplane.ratelimit import FailureLimiter
from controlplane.reconciler import Reconciler
from controlplane.seed import seed_catalog
from controlplane.settings import Settings
from tests.conftest import fresh_postgres_database

pytestmark = pytest.mark.real_component("postgresql")

SEED = 20261204
CONFIG = SchemathesisConfig.from_dict({
    "seed": SEED,
    "suppress-health-check": ["too_slow", "filter_too_much", "data_too_large"],
    "generation": {"max-examples": 12, "allow-x00": False, "database": "none"},
    "checks": {"enabled": True},
    "operations": [
        {"include-path": "/api/v1/costs",
         "checks": {"positive_data_acceptance": {"expected-statuses": ["2xx", "400", "401", "403", "404", "422"]}}},
        {"include-path": "/api/v1/costs/export",
         "checks": {"positive_data_acceptance": {"expected-statuses": ["2xx", "400", "401", "403", "404", "422"]}}},
    ],
})


schemathesis.openapi.format("date-time", st.datetimes(
    EARLIEST.replace(tzinfo=None), LATEST.replace(tzinfo=None) - timedelta(days=1), timezones=st.just(UTC),
).map(lambda at: at.isoformat().replace("+00:00", "Z")))


def populate(url: str) -> str:
    """The schema by the migrations, a small real fleet's rows and one reconciler cycle; an admin token."""
    upgrade(url)
    engine = make_engine(url)
    now = minute_of(utcnow())
    with Session(engine) as session:
        seed_catalog(session)
        acme, globex = Tenant(name="acme"), Tenant(name="globex")
        session.add_all([acme, globex])
        session.flush()
        workload = Workload(name="rag", tenant_id=acme.id)
        session.add(workload)
        session.flush()
        session.add(Sla(workload_id=workload.id, p99_ms=5000))
        session.add(MigrationPolicy(name="nightly", tenant_id=acme.id, maintenance_windows=["daily 01:00-02:00"]))
        llm = Fragment(workload_id=workload.id, key="llm:llama-3.1-8b-instruct", kind=FragmentKind.llm,
                       name="llama-3.1-8b-instruct", model="llama-3.1-8b-instruct", first_seen=now - timedelta(minutes=10))
        session.add(llm)
        session.flush()
        for k in range(10):
            session.add(FragmentProfile(fragment_id=llm.id, minute=now - timedelta(minutes=k), visits=30,
                                        latency_ms_sum=1500.0, tokens_in=15000, tokens_out=3000))
        _, token = mint_token(session, "fuzz", Role.admin)
        session.commit()
    actuator = InMemoryActuator((NodeInventory("l40s-0", "L40S", devices=8, healthy_devices=8),))
    Reconciler(engine, actuator, Settings(solver_time_limit_s=2), clock=lambda: now).run_once()
    engine.dispose()
    return token


# The document does not depend on the database: the app is built at import (as schemathesis's
# parametrisation needs), and the fixture points it at a fresh, populated database.
APP = create_app(make_engine("postgresql+psycopg://postgres@127.0.0.1:5432/postgres"), Settings())
APP.state.auth_failures = FailureLimiter(max_failures=10**9)
schema = schemathesis.openapi.from_asgi("/openapi.json", APP, config=CONFIG)


@pytest.fixture(scope="module")
def token():
    with fresh_postgres_database() as url:
        raw = populate(url)
        placeholder, APP.state.engine = APP.state.engine, make_engine(url)
        yield raw
        APP.state.engine.dispose()
        APP.state.engine = placeholder


@schema.parametrize()
def test_every_operation_conforms_to_its_document_and_never_fails(case, token):
    # The token goes with every case but those whose headers schemathesis made invalid on purpose
    # (a missing or broken Authorization): sending it there would make the case valid again, and its
    # acceptance a false finding.
    header = case.meta.components.get(ParameterLocation.HEADER) if case.meta is not None else None
    negative = header is not None and header.mode.is_negative
    case.call_and_validate(headers={} if negative else {"Authorization": f"Bearer {token}"})


def test_the_document_covers_every_operation_and_documents_problem_json():
    with TestClient(APP) as client:
        document = client.get("/openapi.json").json()
    operations = [(path, method) for path, item in document["paths"].items() for method in item]
    assert len(operations) >= 50
    for path, method in operations:
        responses = document["paths"][path][method]["responses"]
        assert responses["422"]["content"] == {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}}
        assert {"400", "503"} <= set(responses), (method, path)
    assert "HTTPValidationError" not in document["components"]["schemas"]
