"""Create/read/update/delete through the REST API, errors as problem+json, and pagination."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlmodel import Session, SQLModel, select

from controlplane.api.common import Window, paginate
from controlplane.db import make_engine
from controlplane.models import Tenant
from tests.controlplane.conftest import auth

DEVICE_CLASS = {
    "name": "TestGPU-1",
    "vendor": "nvidia",
    "bf16_tflops": 100.0,
    "memory_gib": 24,
    "memory_gbps": 900,
    "fabric": "pcie",
    "usd_per_hour": 1.5,
    "slices_per_device": 1,
}


def test_device_class_and_node_lifecycle(client, callers):
    h = auth(callers.admin)
    created = client.post("/api/v1/device-classes", json=DEVICE_CLASS, headers=h)
    assert created.status_code == 201, created.text
    dc = created.json()
    node = client.post("/api/v1/nodes", json={"name": "gpu-0", "device_class_id": dc["id"], "device_count": 4}, headers=h)
    assert node.status_code == 201, node.text
    node_id = node.json()["id"]
    assert len(client.get(f"/api/v1/nodes/{node_id}/devices", headers=h).json()) == 4

    patched = client.patch(f"/api/v1/nodes/{node_id}", json={"device_count": 2, "healthy": False}, headers=h)
    assert patched.json()["device_count"] == 2 and patched.json()["healthy"] is False
    assert [d["index"] for d in client.get(f"/api/v1/nodes/{node_id}/devices", headers=h).json()] == [0, 1]

    # A class still used by a node cannot go; the error names the field and the fix.
    blocked = client.delete(f"/api/v1/device-classes/{dc['id']}", headers=h)
    assert blocked.status_code == 409 and blocked.json()["field"] == "device_class_id"
    assert client.delete(f"/api/v1/nodes/{node_id}", headers=h).status_code == 204
    assert client.get(f"/api/v1/nodes/{node_id}", headers=h).status_code == 404
    price = client.patch(f"/api/v1/device-classes/{dc['id']}", json={"usd_per_hour": 2.25}, headers=h)
    assert price.json()["usd_per_hour"] == 2.25
    assert client.delete(f"/api/v1/device-classes/{dc['id']}", headers=h).status_code == 204


def test_tenant_workload_sla_policy_lifecycle(client, callers):
    h = auth(callers.operator)
    admin = auth(callers.admin)
    tenant = client.post("/api/v1/tenants", json={"name": "initech", "display_name": "Initech"}, headers=admin).json()
    workload = client.post("/api/v1/workloads", json={"name": "triage-bot", "tenant_id": tenant["id"]}, headers=h)
    assert workload.status_code == 201
    wid = workload.json()["id"]
    assert client.patch(f"/api/v1/workloads/{wid}", json={"description": "L1 support"}, headers=h).json()[
        "description"
    ] == "L1 support"
    # Realtime unless said otherwise; batch is queued and shed first when no plan meets every SLA.
    assert workload.json()["priority"] == "realtime"
    assert client.patch(f"/api/v1/workloads/{wid}", json={"priority": "batch"}, headers=h).json()["priority"] == "batch"
    assert client.get(f"/api/v1/workloads/{wid}", headers=h).json()["priority"] == "batch"
    for body in ({"priority": None}, {"priority": "urgent"}):
        refused = client.patch(f"/api/v1/workloads/{wid}", json=body, headers=h)
        assert refused.status_code == 422 and refused.json()["field"] == "priority", refused.text

    sla = client.post("/api/v1/slas", json={"workload_id": wid, "p99_ms": 2500, "ttft_ms": 400}, headers=h)
    assert sla.status_code == 201
    assert client.post("/api/v1/slas", json={"workload_id": wid, "p99_ms": 100}, headers=h).status_code == 409
    sid = sla.json()["id"]
    assert client.patch(f"/api/v1/slas/{sid}", json={"p99_ms": 2000}, headers=h).json()["p99_ms"] == 2000

    policy = client.post(
        "/api/v1/migration-policies",
        json={"name": "careful", "workload_id": wid, "approval_required": True, "max_moves_per_cycle": 2},
        headers=h,
    )
    assert policy.status_code == 201 and policy.json()["approval_required"] is True
    pid = policy.json()["id"]
    assert client.patch(f"/api/v1/migration-policies/{pid}", json={"dry_run": True}, headers=h).json()["dry_run"]

    assert client.delete(f"/api/v1/workloads/{wid}", headers=h).status_code == 204
    # The workload's SLA and policy went with it.
    assert client.get(f"/api/v1/slas/{sid}", headers=h).status_code == 404
    assert client.get(f"/api/v1/migration-policies/{pid}", headers=h).status_code == 404
    assert client.delete(f"/api/v1/tenants/{tenant['id']}", headers=admin).status_code == 204


def test_a_device_class_says_whether_it_is_sold_by_the_slice(client, callers):
    h = auth(callers.admin)
    dc = client.post("/api/v1/device-classes", json=DEVICE_CLASS, headers=h).json()
    assert dc["sold_by_slice"] is False  # by default a device with any replica on it costs its whole price
    patched = client.patch(f"/api/v1/device-classes/{dc['id']}", json={"sold_by_slice": True}, headers=h)
    assert patched.status_code == 200 and patched.json()["sold_by_slice"] is True
    assert client.get(f"/api/v1/device-classes/{dc['id']}", headers=h).json()["sold_by_slice"] is True
    for body in ({"sold_by_slice": None}, {"sold_by_slice": "sometimes"}):
        refused = client.patch(f"/api/v1/device-classes/{dc['id']}", json=body, headers=h)
        assert refused.status_code == 422 and refused.json()["field"] == "sold_by_slice", refused.text
    created = client.post("/api/v1/device-classes", json={**DEVICE_CLASS, "name": "TestCPU", "sold_by_slice": True},
                          headers=h)
    assert created.status_code == 201 and created.json()["sold_by_slice"] is True


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        ("/api/v1/tenants", {"name": "Not Valid!"}, "name"),
        ("/api/v1/device-classes", {**DEVICE_CLASS, "usd_per_hour": -1}, "usd_per_hour"),
        ("/api/v1/device-classes", {k: v for k, v in DEVICE_CLASS.items() if k != "vendor"}, "vendor"),
        ("/api/v1/device-classes", {**DEVICE_CLASS, "sold_by_slice": "by the hour"}, "sold_by_slice"),
        ("/api/v1/slas", {"workload_id": 1, "p99_ms": 0}, "p99_ms"),
        ("/api/v1/workloads", {"name": "w", "tenant_id": 1, "priority": "soon"}, "priority"),
        ("/api/v1/migration-policies", {"name": "p", "min_improvement_pct": 150}, "min_improvement_pct"),
    ],
)
def test_bad_input_is_a_problem_naming_the_field(client, callers, path, body, field):
    response = client.post(path, json=body, headers=auth(callers.admin))
    assert response.status_code == 422
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert problem["status"] == 422 and problem["field"] == field and field in problem["detail"]


def test_duplicates_and_missing_references_are_clear(client, callers):
    h = auth(callers.admin)
    duplicate = client.post("/api/v1/tenants", json={"name": "acme"}, headers=h)
    assert duplicate.status_code == 409 and duplicate.json()["field"] == "name"
    missing = client.post("/api/v1/workloads", json={"name": "w", "tenant_id": 9999}, headers=h)
    assert missing.status_code == 404 and "tenant 9999" in missing.json()["detail"]
    unknown = client.get("/api/v1/no-such-thing", headers=h)
    assert unknown.status_code == 404 and unknown.headers["content-type"] == "application/problem+json"


def test_lists_paginate(client, callers):
    h = auth(callers.admin)
    for i in range(7):
        client.post("/api/v1/workloads", json={"name": f"w{i}", "tenant_id": callers.acme_id}, headers=h)
    first = client.get("/api/v1/workloads?limit=3", headers=h).json()
    second = client.get("/api/v1/workloads?limit=3&offset=3", headers=h).json()
    last = client.get("/api/v1/workloads?limit=3&offset=6", headers=h).json()
    assert first["total"] == second["total"] == last["total"] == 7
    names = [w["name"] for page in (first, second, last) for w in page["items"]]
    assert names == [f"w{i}" for i in range(7)]
    too_big = client.get("/api/v1/workloads?limit=100000", headers=h)
    assert too_big.status_code == 422 and too_big.json()["field"] == "limit"


def test_openapi_documents_every_resource(client):
    paths = client.get("/openapi.json").json()["paths"]
    for path in [
        "/api/v1/device-classes",
        "/api/v1/nodes",
        "/api/v1/tenants",
        "/api/v1/workloads",
        "/api/v1/workloads/{workload_id}/fragments",
        "/api/v1/workloads/{workload_id}/edges",
        "/api/v1/slas",
        "/api/v1/migration-policies",
        "/api/v1/placements/current",
        "/api/v1/placements",
        "/api/v1/migrations",
        "/api/v1/costs",
    ]:
        assert path in paths, path


def test_every_change_is_audited_with_its_actor_and_never_a_secret(client, callers, engine):
    from sqlmodel import Session, select

    from controlplane.models import AuditEvent

    h = auth(callers.operator)
    wid = client.post("/api/v1/workloads", json={"name": "audited", "tenant_id": callers.acme_id}, headers=h).json()["id"]
    client.patch(f"/api/v1/workloads/{wid}", json={"description": "v2"}, headers=h)
    client.delete(f"/api/v1/workloads/{wid}", headers=h)
    minted = client.post("/api/v1/tokens", json={"name": "bot", "role": "viewer"}, headers=auth(callers.admin)).json()
    with Session(engine) as session:
        events = session.exec(select(AuditEvent).order_by(AuditEvent.id)).all()
    trail = [(e.action, e.target_id, e.tenant_id) for e in events]
    assert trail == [
        ("workload.create", str(wid), callers.acme_id),
        ("workload.update", str(wid), callers.acme_id),
        ("workload.delete", str(wid), callers.acme_id),
        ("token.create", str(minted["id"]), None),
    ]
    assert events[1].detail == {"description": "v2"} and events[0].actor.endswith(":ops")
    assert all(minted["token"] not in str(e.detail) and minted["token"] not in e.actor for e in events)


def test_maintenance_windows_are_checked_when_a_policy_is_written(client, callers):
    h = auth(callers.operator)
    created = client.post("/api/v1/migration-policies", json={
        "name": "weekend", "maintenance_windows": ["Sat 02:00-04:00 UTC", "Mon-Fri 22:00-02:00"]}, headers=h)
    assert created.status_code == 201 and created.json()["maintenance_windows"] == [
        "Sat 02:00-04:00 UTC", "Mon-Fri 22:00-02:00"]
    pid = created.json()["id"]
    for bad, says in (["Caturday 02:00-04:00", "'caturday' is not a day"], ["Sat 24:30-02:00", "not a time of day"],
                      ["Sat 25:00-26:00", "not a time of day"], ["x" * 70, "longer than 64"]):
        response = client.patch(f"/api/v1/migration-policies/{pid}", json={"maintenance_windows": [bad]}, headers=h)
        assert response.status_code == 422 and says in response.text, (bad, response.text)
    too_many = client.patch(f"/api/v1/migration-policies/{pid}", json={"maintenance_windows": ["daily 01:00-02:00"] * 17},
                            headers=h)
    assert too_many.status_code == 422
    null = client.patch(f"/api/v1/migration-policies/{pid}", json={"maintenance_windows": None}, headers=h)
    assert null.status_code == 422 and "send []" in null.text
    cleared = client.patch(f"/api/v1/migration-policies/{pid}", json={"maintenance_windows": []}, headers=h)
    assert cleared.status_code == 200 and cleared.json()["maintenance_windows"] == []


def test_ids_past_64_bits_and_nulled_policy_settings_are_bad_input_not_server_faults(client, callers):
    h = auth(callers.operator)
    huge = 10**23
    for method, path, field in (("get", f"/api/v1/placements/{huge}", "version"),
                                ("post", f"/api/v1/placements/{huge}/rollback", "version"),
                                ("get", f"/api/v1/pins/{huge}", "fragment_id"), ("delete", f"/api/v1/pins/{huge}", "fragment_id"),
                                ("get", f"/api/v1/pins?workload_id={huge}", "workload_id")):
        response = getattr(client, method)(path, headers=h)
        assert response.status_code == 422 and response.json()["field"] == field, (path, response.text)
        assert "2147483647" in response.json()["detail"]
    pid = client.post("/api/v1/migration-policies", json={"name": "nulls"}, headers=h).json()["id"]
    for field in ("proposal_ttl_s", "demand_margin_pct", "min_improvement_pct", "dry_run"):
        response = client.patch(f"/api/v1/migration-policies/{pid}", json={field: None}, headers=h)
        assert response.status_code == 422 and field in response.text and "cannot be null" in response.text


def test_hostile_values_are_422_problem_json_naming_the_field_and_405_says_what_is_allowed(client, callers):
    h = auth(callers.admin)
    tenant = client.post("/api/v1/tenants", json={"name": "hostile", "display_name": "H"}, headers=h).json()
    workload = client.post("/api/v1/workloads", json={"name": "w", "tenant_id": tenant["id"]}, headers=h).json()
    for method, path, body, field in (
        ("get", "/api/v1/workloads/2147483648", None, "workload_id"),
        ("get", "/api/v1/workloads/0", None, "workload_id"),
        ("get", "/api/v1/workloads?offset=9223372036854775808", None, "offset"),
        ("get", "/api/v1/workloads?tenant_id=-1", None, "tenant_id"),
        ("post", "/api/v1/migration-policies", {"name": "big", "cooldown_s": 2147483648}, "cooldown_s"),
        ("post", "/api/v1/migration-policies", {"name": "big", "workload_id": 2**63}, "workload_id"),
        ("get", "/api/v1/costs?until=0001-01-01T00:00:00Z", None, "until"),
        ("get", "/api/v1/costs?since=9999-12-31T23:59:59-01:00", None, "since"),
        ("get", f"/api/v1/workloads/{workload['id']}/profiles?until=1999-12-31T23:00:00-02:00", None, "until"),
        ("post", "/api/v1/workloads", {"name": "nul", "tenant_id": tenant["id"], "description": "a\u0000b"}, "description"),
        ("post", "/api/v1/migration-policies", {"name": "w", "maintenance_windows": ["daily\u000001:00-02:00"]},
         "maintenance_windows.0"),
        ("get", "/api/v1/workloads?tenant_id=1&x=%00", None, "x"),
        # Not JSON numbers, but Python's parser reads them (as it reads 1e999 as inf).
        ("post", "/api/v1/slas", f'{{"workload_id": {workload["id"]}, "p99_ms": Infinity}}', "p99_ms"),
        ("post", "/api/v1/slas", f'{{"workload_id": {workload["id"]}, "p99_ms": 100, "ttft_ms": NaN}}', "ttft_ms"),
        ("post", "/api/v1/slas", f'{{"workload_id": {workload["id"]}, "p99_ms": 1e999}}', "p99_ms"),
        ("post", "/api/v1/device-classes", '{"name": "x", "vendor": "v", "bf16_tflops": 1, "memory_gib": 1, '
                                           '"memory_gbps": 1, "fabric": "f", "usd_per_hour": -Infinity}', "usd_per_hour"),
        # Finite but absurd datasheet figures: a calibration's efficiency against 1e308 would be 0.
        ("post", "/api/v1/device-classes", {"name": "x", "vendor": "v", "bf16_tflops": 1e308, "memory_gib": 1,
                                            "memory_gbps": 1, "fabric": "f", "usd_per_hour": 1}, "bf16_tflops"),
        ("post", "/api/v1/device-classes", {"name": "x", "vendor": "v", "bf16_tflops": 0, "memory_gib": 1,
                                            "memory_gbps": 1, "fabric": "f", "usd_per_hour": 1}, "bf16_tflops"),
        ("patch", "/api/v1/device-classes/1", {"memory_gbps": 1e30}, "memory_gbps"),
        ("patch", "/api/v1/device-classes/1", {"usd_per_hour": None}, "usd_per_hour"),
        ("patch", "/api/v1/device-classes/1", {"vendor": None}, "vendor"),
    ):
        sent = {} if body is None else {"json": body} if isinstance(body, dict) else \
            {"content": body, "headers": {**h, "content-type": "application/json"}}
        response = getattr(client, method)(path, **({"headers": h} | sent))
        assert response.status_code == 422, (path, body, response.status_code, response.text)
        assert response.headers["content-type"] == "application/problem+json"
        assert response.json()["field"] == field, (path, body, response.text)
    too_large = client.post("/api/v1/tenants", content=b"{" + b" " * (1024 * 1024) + b"}",
                            headers={**h, "content-type": "application/json"})
    assert too_large.status_code == 413 and too_large.headers["content-type"] == "application/problem+json"
    not_allowed = client.put("/api/v1/workloads", headers=h)
    assert not_allowed.status_code == 405 and "GET" in not_allowed.headers["allow"]
    assert client.get(f"/api/v1/workloads/{workload['id']}", headers=h).json()["description"] == ""  # nothing half-written


_PAGINATED = {}


@settings(max_examples=60, deadline=None)
@given(rows=st.integers(0, 9), limit=st.integers(1, 6), offset=st.integers(0, 12))
def test_a_page_and_its_total_match_a_slice_of_every_row(tmp_path_factory, rows, limit, offset):
    """paginate counts only when the page cannot tell the total; either way the total is every row
    and the items are the slice [offset, offset + limit) of the rows in id order."""
    if rows not in _PAGINATED:
        engine = make_engine(f"sqlite:///{tmp_path_factory.mktemp('pages') / 'pages.db'}")
        SQLModel.metadata.create_all(engine)
        with Session(engine) as session:
            session.add_all(Tenant(name=f"t{i}") for i in range(rows))
            session.commit()
        _PAGINATED[rows] = engine
    with Session(_PAGINATED[rows]) as session:
        ids = sorted(session.exec(select(Tenant.id)).all())
        items, total = paginate(session, select(Tenant), Window(limit=limit, offset=offset), Tenant.id)
    assert total == len(ids) == rows
    assert [t.id for t in items] == ids[offset:offset + limit]


def test_ready_says_whether_this_process_reaches_its_database_and_nothing_more(client):
    """/ready ignores what /health weighs (components, unmet SLAs): a degraded component is not a
    reason to take a replica out of service. No token is needed."""
    client.app.state.components["prometheus"] = "down: refused"
    assert client.get("/api/v1/health").status_code == 503
    ready = client.get("/api/v1/ready")
    assert (ready.status_code, ready.json()) == (200, {"ready": True, "database": "ok"})
