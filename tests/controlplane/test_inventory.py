"""Health with one owner per source: the actuator (ready), telemetry (XID), the operator (cordon).

None of them overwrites another, the effective health is what all of them allow, and it is the
failed device, by index, that shows as unhealthy.
"""

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlmodel import Session, select

from collectors.prometheus import DeviceSample
from controlplane.actuators.base import NodeInventory
from controlplane.actuators.memory import InMemoryActuator
from controlplane.collected import store_samples
from controlplane.db import session_scope
from controlplane.inventory import sync_inventory
from controlplane.models import Device, Node
from controlplane.planning import take_snapshot
from controlplane.reconciler import Reconciler
from controlplane.seed import seed_catalog
from controlplane.settings import Settings
from controlplane.simfleet import SimulatedFleet
from tests.controlplane.conftest import auth

T0 = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
NODES = (
    NodeInventory("h100-0", "H100-SXM", devices=8, healthy_devices=8),
    NodeInventory("h100-1", "H100-SXM", devices=8, healthy_devices=8),
)


@pytest.fixture
def catalog(engine):
    with Session(engine) as session:
        seed_catalog(session)
        session.commit()


def nodes(engine) -> dict[str, Node]:
    with Session(engine) as session:
        return {n.name: n for n in session.exec(select(Node)).all()}


def devices(engine, node: str) -> dict[int, Device]:
    with Session(engine) as session:
        rows = session.exec(select(Device).join(Node, Node.id == Device.node_id).where(Node.name == node)).all()
        return {d.index: d for d in rows}


def h100s_planned(engine) -> int:
    with Session(engine) as session:
        return take_snapshot(session, T0).healthy_devices.get("H100-SXM", 0)


def test_an_operators_cordon_survives_many_reconciler_cycles(engine, catalog, client, callers):
    reconciler = Reconciler(engine, InMemoryActuator(NODES), Settings(solver_time_limit_s=1), clock=lambda: T0)
    reconciler.run_once()
    node_id = nodes(engine)["h100-1"].id
    patched = client.patch(f"/api/v1/nodes/{node_id}", json={"healthy": False}, headers=auth(callers.operator))
    assert patched.status_code == 200, patched.text
    assert (patched.json()["cordoned"], patched.json()["ready"], patched.json()["healthy"]) == (True, True, False)

    for _ in range(5):
        reconciler.run_once()
    node = nodes(engine)["h100-1"]
    assert (node.cordoned, node.ready, node.healthy) == (True, True, False)
    assert h100s_planned(engine) == 8  # only h100-0's

    client.patch(f"/api/v1/nodes/{node_id}", json={"cordoned": False}, headers=auth(callers.operator))
    reconciler.run_once()
    assert nodes(engine)["h100-1"].healthy and h100s_planned(engine) == 16


def test_a_cordon_in_both_spellings_is_refused_naming_the_field(engine, catalog, client, callers):
    node = client.post("/api/v1/nodes", json={"name": "n-0", "device_class_id": 1, "device_count": 2, "cordoned": True},
                       headers=auth(callers.operator))
    assert node.status_code == 201 and node.json()["healthy"] is False
    for both in ({"cordoned": True, "healthy": True}, {"cordoned": True, "healthy": False}):
        bad = client.patch(f"/api/v1/nodes/{node.json()['id']}", json=both, headers=auth(callers.operator))
        assert bad.status_code == 422 and bad.json()["field"] == "healthy" and "not both" in bad.text


def test_a_failed_sim_device_is_exactly_the_unhealthy_one(engine, catalog):
    fleet = SimulatedFleet()
    fleet.fail_device("sim-h100-0", 3)
    with session_scope(engine) as session:
        sync_inventory(session, fleet.inventory())
    by_index = devices(engine, "sim-h100-0")
    assert [i for i, d in sorted(by_index.items()) if not d.healthy] == [3]
    assert not by_index[3].ready and by_index[3].xid_errors == 0  # the actuator's word; telemetry's is its own
    assert h100s_planned(engine) == 15

    fleet.repair_device("sim-h100-0", 3)
    with session_scope(engine) as session:
        sync_inventory(session, fleet.inventory())
    assert all(d.healthy for d in devices(engine, "sim-h100-0").values())


def test_a_lost_sim_node_is_unhealthy_until_repaired(engine, catalog):
    fleet = SimulatedFleet()
    fleet.fail_node("sim-h100-1")
    with session_scope(engine) as session:
        sync_inventory(session, fleet.inventory())
    node = nodes(engine)["sim-h100-1"]
    assert (node.ready, node.healthy, node.cordoned) == (False, False, False)
    assert h100s_planned(engine) == 8
    fleet.repair_node("sim-h100-1")
    with session_scope(engine) as session:
        sync_inventory(session, fleet.inventory())
    assert nodes(engine)["sim-h100-1"].healthy and h100s_planned(engine) == 16


def test_a_node_the_actuator_stops_reporting_is_lost(engine, catalog):
    with session_scope(engine) as session:
        sync_inventory(session, NODES)
        sync_inventory(session, NODES[:1])
    assert {name: (n.ready, n.healthy) for name, n in nodes(engine).items()} == {
        "h100-0": (True, True), "h100-1": (False, False)}


def test_xid_readiness_and_cordon_never_overwrite_each_other(engine, catalog, client, callers):
    actuator = InMemoryActuator(NODES)
    with session_scope(engine) as session:
        sync_inventory(session, actuator.inventory())
    node_id = nodes(engine)["h100-0"].id

    def xid(code: int, at: datetime) -> None:
        with session_scope(engine) as session:
            store_samples(session, at, [DeviceSample("h100-0", 2, xid=code)], [])

    def report(unhealthy: tuple[int, ...]) -> None:
        actuator.nodes = (NodeInventory("h100-0", "H100-SXM", 8, 8 - len(unhealthy), unhealthy=unhealthy), NODES[1])
        with session_scope(engine) as session:
            sync_inventory(session, actuator.inventory())

    def cordon(on: bool) -> None:
        response = client.patch(f"/api/v1/nodes/{node_id}/devices/2", json={"cordoned": on},
                                headers=auth(callers.operator))
        assert response.status_code == 200, response.text

    def device() -> tuple[bool, int, bool, bool]:
        d = devices(engine, "h100-0")[2]
        return d.ready, d.xid_errors, d.cordoned, d.healthy

    xid(79, T0)  # telemetry: fallen off the bus
    report(())  # the actuator still sees it ready: that does not clear the XID
    assert device() == (True, 79, False, False)
    cordon(True)
    xid(0, T0 + timedelta(minutes=1))  # the XID clears: the cordon stays
    assert device() == (True, 0, True, False)
    report((2,))  # the actuator loses it
    cordon(False)
    assert device() == (False, 0, False, False)
    report(())
    assert device() == (True, 0, False, True)
    shown = client.get(f"/api/v1/nodes/{node_id}/devices", headers=auth(callers.viewer)).json()[2]
    assert {k: shown[k] for k in ("ready", "xid_errors", "cordoned", "healthy")} == {
        "ready": True, "xid_errors": 0, "cordoned": False, "healthy": True}
    assert shown["xid_at"].startswith("2026-12-01T12:01")


OWNER_WRITES = st.lists(
    st.one_of(
        st.tuples(st.just("ready"), st.booleans()),
        st.tuples(st.just("xid"), st.sampled_from([0, 0, 48, 79])),
        st.tuples(st.just("cordoned"), st.booleans()),
    ),
    max_size=8,
)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(writes=OWNER_WRITES)
def test_effective_health_is_what_every_owners_last_word_allows(engine, catalog, writes):
    """Whatever order the owners write in, the device is healthy exactly when the actuator's last word
    is ready, telemetry's last XID is 0 and the operator's last word is not cordoned."""
    with session_scope(engine) as session:
        sync_inventory(session, NODES[:1])
        for d in session.exec(select(Device)).all():
            d.xid_errors, d.cordoned = 0, False
            d.refresh_health()
    last = {"ready": True, "xid": 0, "cordoned": False}
    for owner, value in writes:
        with session_scope(engine) as session:
            if owner == "ready":
                sync_inventory(session, (NodeInventory("h100-0", "H100-SXM", 8, 8 - (not value),
                                                       unhealthy=() if value else (5,)),))
            elif owner == "xid":
                store_samples(session, T0, [DeviceSample("h100-0", 5, xid=value)], [])
            else:
                device = session.exec(select(Device).where(Device.index == 5)).one()
                device.cordoned = value
                device.refresh_health()
        last[owner] = value
    d = devices(engine, "h100-0")[5]
    assert (d.ready, d.xid_errors, d.cordoned) == (last["ready"], last["xid"], last["cordoned"])
    assert d.healthy == (last["ready"] and last["xid"] == 0 and not last["cordoned"])


def test_an_inventory_that_names_and_counts_different_devices_is_refused():
    with pytest.raises(ValueError, match="2 unhealthy devices named but 1 counted"):
        NodeInventory("h100-0", "H100-SXM", 8, 7, unhealthy=(1, 2))
    assert NodeInventory("h100-0", "H100-SXM", 8, 6).unhealthy_indices() == {6, 7}  # a counting actuator
