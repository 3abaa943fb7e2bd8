"""The read model (controlplane.queries): the placement in force, priced items, fleet capacity.

Fleet counts are checked against a computation over the generated fleet itself (plain Python over
the values the test wrote), which shares no code and no query with the read model."""

from datetime import UTC, datetime, timedelta

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pytest import approx
from sqlmodel import Session, SQLModel, create_engine

from controlplane.models import (
    Device,
    DeviceClass,
    Fragment,
    FragmentKind,
    Node,
    Placement,
    PlacementItem,
    PlacementState,
    Sla,
    Tenant,
    Workload,
)
from controlplane.queries import (
    applied_between,
    fleet_by_class,
    healthy_devices_per_class,
    healthy_devices_per_node,
    newest_placement,
    open_proposals,
    placement_in_force,
    placement_of_version,
    priced_items,
    sla_targets,
)

T0 = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)


def _class(name: str, price: float, slices: int = 1) -> DeviceClass:
    return DeviceClass(name=name, vendor="v", bf16_tflops=1, memory_gib=1, memory_gbps=1, fabric="f",
                       usd_per_hour=price, slices_per_device=slices)


def _placements(session: Session) -> dict[str, int]:
    """v1 applied, v2 applied, v3 failed, v4 proposed, v5 applying; two tenants' fragments in v2 and v4."""
    h100, l4 = _class("h100", 4.0), _class("l4", 0.8, slices=4)
    acme, globex = Tenant(name="acme"), Tenant(name="globex")
    session.add_all([h100, l4, acme, globex])
    session.flush()
    bot, agent = Workload(name="bot", tenant_id=acme.id), Workload(name="agent", tenant_id=globex.id)
    session.add_all([bot, agent])
    session.flush()
    llm = Fragment(workload_id=bot.id, key="llm:a", kind=FragmentKind.llm, name="a")
    emb = Fragment(workload_id=bot.id, key="embedding:b", kind=FragmentKind.embedding, name="b")
    other = Fragment(workload_id=agent.id, key="llm:c", kind=FragmentKind.llm, name="c")
    states = [PlacementState.applied, PlacementState.applied, PlacementState.failed, PlacementState.proposed,
              PlacementState.applying]
    rows = [Placement(version=v, state=s, created_at=T0 + timedelta(minutes=v),
                      applied_at=T0 + timedelta(minutes=v) if s == PlacementState.applied else None)
            for v, s in enumerate(states, start=1)]
    session.add_all([llm, emb, other, *rows, Sla(workload_id=bot.id, p99_ms=100, attainment_target=0.95)])
    session.flush()
    v2, v4 = rows[1], rows[3]
    session.add_all([
        PlacementItem(placement_id=v2.id, fragment_id=llm.id, device_class_id=h100.id, replicas=2),
        PlacementItem(placement_id=v2.id, fragment_id=emb.id, device_class_id=l4.id, replicas=3, slices=2),
        PlacementItem(placement_id=v2.id, fragment_id=other.id, device_class_id=h100.id, phase="decode", replicas=1),
        PlacementItem(placement_id=v4.id, fragment_id=other.id, device_class_id=h100.id, replicas=5),
    ])
    session.commit()
    return {"acme": acme.id, "globex": globex.id, "bot": bot.id, "agent": agent.id, "v2": v2.id}


def test_the_placement_in_force_is_the_newest_applied(session):
    _placements(session)
    assert placement_in_force(session).version == 2  # v3 failed, v4 proposed, v5 still applying
    assert newest_placement(session).version == 5
    assert newest_placement(session, PlacementState.applying).version == 5
    assert newest_placement(session, PlacementState.applied, before_version=2).version == 1
    assert newest_placement(session, PlacementState.applied, before_version=1) is None
    assert [p.version for p in open_proposals(session)] == [4]
    assert placement_of_version(session, 3).state == PlacementState.failed
    assert placement_of_version(session, 9) is None
    # v1 came into force at 12:01 and v2 at 12:02: from 12:01:30 on, v1 was in force, then v2 arrived
    assert [p.version for p in applied_between(session, T0 + timedelta(seconds=90), T0 + timedelta(minutes=9))] == [1, 2]
    assert [p.version for p in applied_between(session, T0 + timedelta(minutes=3), T0 + timedelta(minutes=9))] == [2]


def test_priced_items_carry_names_prices_and_devices_and_filter_by_tenant(session):
    ids = _placements(session)
    items = priced_items(session, ids["v2"])
    assert [(i.workload, i.fragment_key, i.device_class, i.phase) for i in items] == [
        ("bot", "llm:a", "h100", ""), ("bot", "embedding:b", "l4", ""), ("agent", "llm:c", "h100", "decode"),
    ]
    emb = items[1]
    # 3 replicas × 2 slices of a 4-slice l4: 1.5 devices' worth, at $0.80 per device-hour
    assert emb.devices == approx(1.5) and emb.usd_per_hour == approx(1.20)
    assert (emb.tenant, emb.tenant_id, emb.workload_id) == ("acme", ids["acme"], ids["bot"])
    assert items[0].usd_per_hour == approx(8.0)  # 2 × $4.00
    assert {i.tenant for i in priced_items(session, ids["v2"], tenant_id=ids["globex"])} == {"globex"}
    assert [i.fragment_key for i in priced_items(session, ids["v2"], tenant_id=ids["acme"])] == ["llm:a", "embedding:b"]
    assert sla_targets(session, [ids["bot"], ids["agent"]]) == {ids["bot"]: 0.95}


node_spec = st.tuples(
    st.integers(0, 2),  # class index
    st.booleans(),  # node healthy
    st.lists(st.booleans(), max_size=6),  # each device's health
    st.integers(0, 2),  # device_count beyond the rows written (rows not yet synced)
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(nodes=st.lists(node_spec, max_size=7))
def test_fleet_counts_match_the_fleet_that_was_written(nodes):
    engine = create_engine("sqlite://")
    SQLModel.metadata.create_all(engine)
    names = ["a100", "cpu", "h100"]
    with Session(engine) as session:
        classes = [_class(name, 1.0) for name in names]
        session.add_all(classes)
        session.flush()
        for n, (cls, healthy, devices, unsynced) in enumerate(nodes):
            node = Node(name=f"n{n}", device_class_id=classes[cls].id, device_count=len(devices) + unsynced,
                        healthy=healthy)
            session.add(node)
            session.flush()
            session.add_all([Device(node_id=node.id, index=i, healthy=ok) for i, ok in enumerate(devices)])
        session.commit()

        expected_per_node: dict[str, list[int]] = {}
        for cls, healthy, devices, _ in nodes:  # nodes in id order, as written
            usable = sum(devices) if healthy else 0
            if usable:
                expected_per_node.setdefault(names[cls], []).append(usable)
        assert healthy_devices_per_node(session) == {k: tuple(v) for k, v in expected_per_node.items()}
        assert healthy_devices_per_class(session) == {k: sum(v) for k, v in expected_per_node.items()}

        fleet = {row.device_class: row for row in fleet_by_class(session)}
        assert list(fleet) == sorted(fleet)
        for i, name in enumerate(names):
            mine = [n for n in nodes if n[0] == i]
            if not mine:
                assert name not in fleet
                continue
            row = fleet[name]
            assert row.nodes == len(mine)
            assert row.healthy_nodes == sum(1 for n in mine if n[1])
            assert row.devices == sum(len(n[2]) + n[3] for n in mine)
            assert row.healthy_devices == sum(sum(n[2]) for n in mine if n[1])
    engine.dispose()
