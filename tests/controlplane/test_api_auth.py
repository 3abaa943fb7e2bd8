"""Who may do what through the REST API: roles, tenant isolation, and what a bad token gets."""

import re
from datetime import timedelta

import pytest
from sqlmodel import Session, select

from controlplane.auth import hash_token, mint_token
from controlplane.models import ApiToken, DeviceClass, Role
from controlplane.models._common import utcnow
from tests.controlplane.conftest import auth


def test_unauthenticated_call_gets_401_problem(client):
    response = client.get("/api/v1/workloads")
    assert response.status_code == 401
    assert response.headers["content-type"] == "application/problem+json"
    assert response.headers["www-authenticate"] == "Bearer"
    assert "Authorization: Bearer" in response.json()["detail"]


def test_unknown_and_malformed_tokens_get_401(client, callers):
    assert client.get("/api/v1/workloads", headers=auth("hp_not-a-real-token")).status_code == 401
    assert client.get("/api/v1/workloads", headers={"Authorization": "Basic abc"}).status_code == 401


def test_revoked_and_expired_tokens_get_401(client, callers, engine):
    with Session(engine) as session:
        _, expired = mint_token(session, "old", Role.admin, expires_at=utcnow() - timedelta(seconds=1))
        session.commit()
    assert client.get("/api/v1/tenants", headers=auth(expired)).status_code == 401
    created = client.post("/api/v1/tokens", json={"name": "tmp", "role": "viewer"}, headers=auth(callers.admin))
    assert created.status_code == 201
    raw = created.json()["token"]
    assert client.get("/api/v1/tenants", headers=auth(raw)).status_code == 200
    assert client.delete(f"/api/v1/tokens/{created.json()['id']}", headers=auth(callers.admin)).status_code == 204
    assert client.get("/api/v1/tenants", headers=auth(raw)).status_code == 401


def test_tokens_are_stored_hashed_and_never_listed(client, callers, engine):
    created = client.post("/api/v1/tokens", json={"name": "ci", "role": "operator"}, headers=auth(callers.admin)).json()
    with Session(engine) as session:
        row = session.exec(select(ApiToken).where(ApiToken.id == created["id"])).one()
    assert row.token_hash == hash_token(created["token"]) and created["token"] not in row.token_hash
    listing = client.get("/api/v1/tokens", headers=auth(callers.admin))
    assert created["token"] not in listing.text and "token_hash" not in listing.text


def test_viewer_cannot_write(client, callers):
    for method, path, body in [
        ("post", "/api/v1/tenants", {"name": "initech"}),
        ("post", "/api/v1/workloads", {"name": "w", "tenant_id": callers.acme_id}),
        ("post", "/api/v1/migration-policies", {"name": "p"}),
        ("delete", f"/api/v1/tenants/{callers.acme_id}", None),
    ]:
        response = client.request(method, path, json=body, headers=auth(callers.viewer))
        assert response.status_code == 403, (method, path, response.text)
        assert "role" in response.json()["detail"]
    assert client.get("/api/v1/tenants", headers=auth(callers.viewer)).status_code == 200


def test_operator_cannot_do_admin_work(client, callers):
    response = client.post("/api/v1/tokens", json={"name": "x", "role": "admin"}, headers=auth(callers.operator))
    assert response.status_code == 403


def _workload(client, callers, tenant_id: int, name: str) -> int:
    response = client.post("/api/v1/workloads", json={"name": name, "tenant_id": tenant_id}, headers=auth(callers.admin))
    assert response.status_code == 201, response.text
    return response.json()["id"]


def test_tenant_token_cannot_read_or_list_another_tenants_workloads(client, callers):
    acme_w = _workload(client, callers, callers.acme_id, "rag")
    globex_w = _workload(client, callers, callers.globex_id, "docs")

    listed = client.get("/api/v1/workloads", headers=auth(callers.acme_operator)).json()
    assert [w["id"] for w in listed["items"]] == [acme_w] and listed["total"] == 1
    # Another tenant's workload is indistinguishable from a missing one.
    assert client.get(f"/api/v1/workloads/{globex_w}", headers=auth(callers.acme_operator)).status_code == 404
    assert client.get(f"/api/v1/workloads/{globex_w}/fragments", headers=auth(callers.acme_operator)).status_code == 404
    # Asking explicitly for the other tenant's list still yields nothing of theirs.
    other = client.get(f"/api/v1/workloads?tenant_id={callers.globex_id}", headers=auth(callers.acme_operator)).json()
    assert other["items"] == []
    # ... nor can it create there.
    response = client.post(
        "/api/v1/workloads", json={"name": "sneaky", "tenant_id": callers.globex_id}, headers=auth(callers.acme_operator)
    )
    assert response.status_code == 404
    assert client.get("/api/v1/tenants", headers=auth(callers.acme_operator)).json()["total"] == 1


def test_tenant_token_cannot_touch_fleet_wide_objects(client, callers):
    response = client.post(
        "/api/v1/migration-policies", json={"name": "fleet-wide"}, headers=auth(callers.acme_operator)
    )
    assert response.status_code == 403
    own = client.post(
        "/api/v1/migration-policies",
        json={"name": "acme-policy", "tenant_id": callers.acme_id},
        headers=auth(callers.acme_operator),
    )
    assert own.status_code == 201
    assert client.get(f"/api/v1/migration-policies/{own.json()['id']}", headers=auth(callers.globex_viewer)).status_code == 404


def test_tenant_token_sees_only_its_own_costs_and_placements(client, callers, engine):
    from controlplane.models import (
        Fragment,
        FragmentKind,
        Placement,
        PlacementItem,
        PlacementState,
        UsageRecord,
        Workload,
    )
    from controlplane.models._common import minute_of
    from controlplane.seed import seed_catalog

    with Session(engine) as session:
        seed_catalog(session)
        session.flush()
        h100 = session.exec(select(DeviceClass).where(DeviceClass.name == "H100-SXM")).one()
        h100_price = h100.usd_per_hour
        placement = Placement(version=1, state=PlacementState.applied, usd_per_hour=2 * h100.usd_per_hour)
        session.add(placement)
        session.flush()
        for tenant_id, name in [(callers.acme_id, "acme-bot"), (callers.globex_id, "globex-bot")]:
            workload = Workload(tenant_id=tenant_id, name=name)
            session.add(workload)
            session.flush()
            fragment = Fragment(workload_id=workload.id, key="llm:m", kind=FragmentKind.llm, name="m", model="m")
            session.add(fragment)
            session.flush()
            if tenant_id == callers.acme_id:  # acme's model runs split: both pools on H100
                for phase, replicas in (("prefill", 3), ("decode", 4)):
                    session.add(PlacementItem(placement_id=placement.id, fragment_id=fragment.id,
                                              device_class_id=h100.id, phase=phase, replicas=replicas, slices=1))
            else:
                session.add(PlacementItem(placement_id=placement.id, fragment_id=fragment.id,
                                          device_class_id=h100.id, replicas=14, slices=1))
            session.add(UsageRecord(minute=minute_of(utcnow()) - timedelta(minutes=2), tenant_id=tenant_id, workload_id=workload.id,
                                    fragment_id=fragment.id, device_class_id=h100.id, device_seconds_allocated=60, tokens=1000,
                                    cost_usd=1.0 if tenant_id == callers.acme_id else 5.0))
        session.commit()

    acme = auth(callers.acme_operator)
    costs = client.get("/api/v1/costs?group_by=tenant", headers=acme).json()
    assert [(line["name"], line["cost_usd"]) for line in costs["items"]] == [("acme", 1.0)]
    assert costs["total_cost_usd"] == 1.0
    assert {line["name"] for line in client.get("/api/v1/costs?group_by=workload", headers=acme).json()["items"]} == {"acme-bot"}

    current = client.get("/api/v1/placements/current", headers=acme).json()
    assert [(item["phase"], item["replicas"]) for item in current["items"]] == [("decode", 4), ("prefill", 3)]
    # 3 + 4 replicas of 1 slice = 1 H100 device: a tenant's headline cost is its own share, not the fleet's.
    assert current["usd_per_hour"] == pytest.approx(h100_price)
    history = client.get("/api/v1/placements", headers=acme).json()["items"]
    assert history[0]["usd_per_hour"] == pytest.approx(h100_price)
    # The admin sees both tenants.
    assert client.get("/api/v1/costs?group_by=tenant", headers=auth(callers.admin)).json()["total_cost_usd"] == 6.0


def test_failed_tokens_are_rate_limited_per_client_and_revocation_ends_a_cached_token(client, callers):
    from controlplane.ratelimit import MAX_FAILURES

    for _ in range(MAX_FAILURES):
        assert client.get("/api/v1/workloads", headers=auth("hp_wrong")).status_code == 401
    limited = client.get("/api/v1/workloads", headers=auth(callers.viewer))  # even a good token waits now
    assert limited.status_code == 429 and int(limited.headers["retry-after"]) >= 1
    assert limited.headers["content-type"] == "application/problem+json"
    client.app.state.auth_failures = type(client.app.state.auth_failures)()  # the window has passed

    # A verified token is cached; revoking it through the API ends it at once all the same.
    assert client.get("/api/v1/workloads", headers=auth(callers.viewer)).status_code == 200
    tokens = client.get("/api/v1/tokens", headers=auth(callers.admin)).json()["items"]
    viewer_id = next(t["id"] for t in tokens if callers.viewer.startswith(t["prefix"]))
    assert client.delete(f"/api/v1/tokens/{viewer_id}", headers=auth(callers.admin)).status_code == 204
    assert client.get("/api/v1/workloads", headers=auth(callers.viewer)).status_code == 401


def test_tenant_token_reads_the_device_catalog_but_not_the_node_inventory(client, callers):
    catalog = {"name": "L40S", "vendor": "nvidia", "bf16_tflops": 362, "memory_gib": 48, "memory_gbps": 864,
               "fabric": "pcie", "usd_per_hour": 1.861}
    device_class = client.post("/api/v1/device-classes", json=catalog, headers=auth(callers.admin)).json()
    node = client.post("/api/v1/nodes", json={"name": "l40s-0", "device_class_id": device_class["id"], "device_count": 2},
                       headers=auth(callers.operator)).json()
    for token in (callers.acme_operator, callers.globex_viewer):
        # The price list a tenant is billed at is no tenant's data: every token reads it.
        listed = client.get("/api/v1/device-classes", headers=auth(token))
        assert listed.status_code == 200 and [c["name"] for c in listed.json()["items"]] == ["L40S"]
        one = client.get(f"/api/v1/device-classes/{device_class['id']}", headers=auth(token))
        assert one.status_code == 200 and one.json()["usd_per_hour"] == 1.861
        # Nodes and devices are the fleet's inventory: refused alike whether the node exists or not.
        for path in ("/api/v1/nodes", f"/api/v1/nodes/{node['id']}", f"/api/v1/nodes/{node['id']}/devices",
                     "/api/v1/nodes/999999"):
            refused = client.get(path, headers=auth(token))
            assert refused.status_code == 403 and refused.headers["content-type"] == "application/problem+json"
            assert refused.json()["detail"] == "node inventory is fleet-wide; a tenant-scoped token cannot read it"
    assert [n["name"] for n in client.get("/api/v1/nodes", headers=auth(callers.viewer)).json()["items"]] == ["l40s-0"]
    assert len(client.get(f"/api/v1/nodes/{node['id']}/devices", headers=auth(callers.viewer)).json()) == 2


def test_policy_names_are_unique_per_tenant_and_a_conflict_names_nothing_of_another(client, callers):
    acme_w = _workload(client, callers, callers.acme_id, "rag")
    globex_w = _workload(client, callers, callers.globex_id, "docs")
    admin, acme = auth(callers.admin), auth(callers.acme_operator)

    def create(body, headers=admin):
        return client.post("/api/v1/migration-policies", json=body, headers=headers)

    # Both tenants (and the fleet) may call a policy "nightly": a name tells no tenant what another has.
    globex_policy = create({"name": "nightly", "tenant_id": callers.globex_id})
    assert globex_policy.status_code == 201
    assert create({"name": "nightly", "workload_id": globex_w}).status_code == 409  # the same tenant's scope
    assert create({"name": "nightly", "tenant_id": callers.acme_id}, acme).status_code == 201
    assert create({"name": "nightly"}).status_code == 201
    # A workload's policy records its workload's tenant and shares that tenant's names.
    workload_policy = create({"name": "weekend", "workload_id": acme_w}, acme)
    assert workload_policy.status_code == 201 and workload_policy.json()["tenant_id"] == callers.acme_id

    again = create({"name": "nightly", "workload_id": acme_w}, acme)
    assert again.status_code == 409 and again.json()["field"] == "name"
    assert again.json()["detail"] == f"a migration policy named 'nightly' already exists for tenant {callers.acme_id}"
    assert "globex" not in again.text and str(globex_w) not in again.text
    fleet_again = create({"name": "nightly"})
    assert fleet_again.status_code == 409 and "fleet-wide" in fleet_again.json()["detail"]
    # Only a scope of its own, or its own workloads': the other tenant's answer 404 as missing ones do.
    assert create({"name": "x", "tenant_id": callers.globex_id}, acme).status_code == 404
    assert create({"name": "x", "workload_id": globex_w}, acme).status_code == 404
    names = {(p["name"], p["tenant_id"]) for p in client.get("/api/v1/migration-policies", headers=acme).json()["items"]}
    assert names == {("nightly", callers.acme_id), ("weekend", callers.acme_id), ("nightly", None)}


def test_another_tenants_policy_or_pin_answers_as_a_missing_one_does(client, callers, engine):
    from controlplane.models import Fragment, FragmentKind, FragmentPin

    globex_w = _workload(client, callers, callers.globex_id, "docs")
    tenant_policy = client.post("/api/v1/migration-policies", json={"name": "p", "tenant_id": callers.globex_id},
                                headers=auth(callers.admin)).json()["id"]
    workload_policy = client.post("/api/v1/migration-policies", json={"name": "q", "workload_id": globex_w},
                                  headers=auth(callers.admin)).json()["id"]
    with Session(engine) as session:
        fragment = Fragment(workload_id=globex_w, key="llm:m", kind=FragmentKind.llm, name="m", model="m")
        session.add(fragment)
        session.flush()
        session.add(FragmentPin(fragment_id=fragment.id, device_classes=["L40S"], created_by="reconciler"))
        session.commit()
        pinned = fragment.id

    def answer(method, path, row_id, body=None):
        response = client.request(method, f"{path}/{row_id}", json=body, headers=auth(callers.acme_operator))
        return response.status_code, re.sub(rf"(?<!\w){row_id}(?!\w)", "<id>", response.text)

    for method, body in (("GET", None), ("PATCH", {"enabled": False}), ("DELETE", None)):
        for policy in (tenant_policy, workload_policy):  # neither the tenant nor the workload is named
            assert answer(method, "/api/v1/migration-policies", policy, body) == \
                answer(method, "/api/v1/migration-policies", 999999, body)
            assert answer(method, "/api/v1/migration-policies", policy, body)[0] == 404
    for method in ("GET", "DELETE"):  # whether another tenant's fragment has a pin is not told
        assert answer(method, "/api/v1/pins", pinned) == answer(method, "/api/v1/pins", 999999)
    with Session(engine) as session:
        assert session.exec(select(FragmentPin).where(FragmentPin.fragment_id == pinned)).one()
    assert client.get(f"/api/v1/migration-policies/{tenant_policy}", headers=auth(callers.admin)).json()["enabled"]


def test_health_shows_the_ingest_error_in_full_to_fleet_wide_tokens_only(client, callers):
    from collectors.pipeline import IngestStats

    error = ('IntegrityError: duplicate key value violates unique constraint "uq_fragment_workload_key" DETAIL: '
             'Key (workload_id, key)=(7, llm:globex-secret-model) already exists.')

    class FailingIngest:  # a pipeline whose last flush failed
        def stats(self) -> IngestStats:
            return IngestStats(0, 1, 0, 0, 0, 0, 0, error)

    client.app.state.ingest = FailingIngest()
    for headers in ({}, auth(callers.acme_operator)):  # anyone, and a tenant: the kind of error only
        body = client.get("/api/v1/health", headers=headers).json()
        assert body["components"]["ingest"] == "degraded: IntegrityError"
        assert body["ingest"]["last_error"] == "IntegrityError" and body["ingest"]["accepted_batches"] == 1
    fleet = client.get("/api/v1/health", headers=auth(callers.viewer)).json()
    assert fleet["components"]["ingest"] == f"degraded: {error}" and fleet["ingest"]["last_error"] == error
