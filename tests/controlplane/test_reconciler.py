"""The reconciler end to end over a real database and the in-memory actuator."""

from dataclasses import replace
from datetime import timedelta

import pytest
from sqlmodel import Session, select

from controlplane.actuators.base import NodeInventory
from controlplane.actuators.memory import InMemoryActuator
from controlplane.models import (
    Fragment,
    FragmentKind,
    FragmentProfile,
    Migration,
    MigrationPolicy,
    MigrationState,
    Placement,
    PlacementItem,
    PlacementState,
    Tenant,
    UsageRecord,
    Workload,
)
from controlplane.models._common import minute_of, utcnow
from controlplane.policy import Action
from controlplane.reconciler import Reconciler
from controlplane.seed import seed_catalog
from controlplane.settings import Settings
from optimizer.catalog import CATALOG, by_name
from optimizer.types import Phase

NOW = minute_of(utcnow()) + timedelta(seconds=30)
NODES = (
    NodeInventory("h100-0", "H100-SXM", devices=8, healthy_devices=8),
    NodeInventory("l40s-0", "L40S", devices=4, healthy_devices=4),
    NodeInventory("cpu-0", "CPU-EPYC-64C", devices=2, healthy_devices=2),
)


def _seeded_workload(session: Session, name: str) -> Workload:
    """The catalog, tenant acme and its workload `name`, flushed."""
    seed_catalog(session)
    tenant = Tenant(name="acme")
    session.add(tenant)
    session.flush()
    workload = Workload(name=name, tenant_id=tenant.id)
    session.add(workload)
    session.flush()
    return workload


@pytest.fixture
def graph(engine):
    """A RAG-like workload whose fragments were seen 600 times in the last 30 s."""
    with Session(engine) as session:
        workload = _seeded_workload(session, "rag")
        for kind, name, model, tin, tout in [
            (FragmentKind.llm, "llama-3.1-8b-instruct", "llama-3.1-8b-instruct", 500, 100),
            (FragmentKind.embedding, "bge-large-en", "bge-large-en", 200, 0),
            (FragmentKind.tool, "search", "", 0, 0),
        ]:
            fragment = Fragment(workload_id=workload.id, key=f"{kind.value}:{name}", kind=kind, name=name, model=model,
                                first_seen=NOW - timedelta(minutes=10))
            session.add(fragment)
            session.flush()
            session.add(FragmentProfile(fragment_id=fragment.id, minute=minute_of(NOW), visits=600,
                                        latency_ms_sum=600 * 50.0, tokens_in=600 * tin, tokens_out=600 * tout))
        session.commit()
        return workload.id


def reconciler(engine, actuator, now=NOW) -> Reconciler:
    return Reconciler(engine, actuator, Settings(solver_time_limit_s=2), clock=lambda: now)


def test_first_cycle_places_every_fragment_and_meters_it(engine, graph):
    actuator = InMemoryActuator(NODES)
    report = reconciler(engine, actuator).run_once()
    assert report.action is Action.apply and report.version == 1
    with Session(engine) as session:
        placement = session.exec(select(Placement)).one()
        assert placement.state == PlacementState.applied
        migrations = session.exec(select(Migration)).all()
        assert migrations and all(m.state == MigrationState.succeeded for m in migrations)
    placed = {rs.fragment_key: rs for rs in actuator.observe().replica_sets}
    assert set(placed) == {"llm:llama-3.1-8b-instruct", "embedding:bge-large-en", "tool:search"}
    assert placed["tool:search"].device_class == "CPU-EPYC-64C"  # tools run on CPU only


def test_usage_accrues_while_a_placement_is_in_force(engine, graph):
    actuator = InMemoryActuator(NODES)
    reconciler(engine, actuator, now=NOW).run_once()
    reconciler(engine, actuator, now=NOW + timedelta(seconds=20)).run_once()
    with Session(engine) as session:
        usage = session.exec(select(UsageRecord)).all()
    # In force for 20 s: allocated device-seconds = 20 x replicas x slices / slices_per_device per replica set.
    expected = {
        rs.fragment_key: 20 * rs.replicas * rs.slices / by_name(rs.device_class).slices_per_device
        for rs in actuator.observe().replica_sets
    }
    assert len(usage) == len(expected) == 3
    assert sum(u.device_seconds_allocated for u in usage) == pytest.approx(sum(expected.values()))
    assert all(0 < u.device_seconds_busy <= u.device_seconds_allocated and u.cost_usd > 0 for u in usage)
    assert sum(u.tokens for u in usage) == 600 * (500 + 100) + 600 * 200  # llm in+out, embedding in


def test_unchanged_world_changes_nothing(engine, graph):
    actuator = InMemoryActuator(NODES)
    reconciler(engine, actuator).run_once()
    again = reconciler(engine, actuator).run_once()
    assert again.action is Action.keep and again.version is None
    with Session(engine) as session:
        assert len(session.exec(select(Placement)).all()) == 1
    assert len(actuator.applied) == 1


def test_dry_run_policy_records_but_never_actuates(engine, graph):
    with Session(engine) as session:
        session.add(MigrationPolicy(name="look-only", dry_run=True))
        session.commit()
    actuator = InMemoryActuator(NODES)
    report = reconciler(engine, actuator).run_once()
    assert report.action is Action.record
    assert actuator.applied == []
    with Session(engine) as session:
        assert session.exec(select(Placement)).one().state == PlacementState.recorded
        assert {m.state for m in session.exec(select(Migration)).all()} == {MigrationState.skipped}


def test_actuator_failure_is_recorded_not_raised(engine, graph):
    actuator = InMemoryActuator(NODES, fail_with="quota exceeded")
    reconciler(engine, actuator).run_once()
    with Session(engine) as session:
        assert session.exec(select(Placement)).one().state == PlacementState.failed
        migrations = session.exec(select(Migration)).all()
    assert {m.state for m in migrations} == {MigrationState.failed}
    assert all(m.error == "quota exceeded" for m in migrations)


def test_a_placement_left_applying_by_a_crash_is_resumed(engine, graph):
    actuator = InMemoryActuator(NODES, fail_with="boom")
    reconciler(engine, actuator).run_once()
    with Session(engine) as session:  # as if the process died between recording and actuating
        placement = session.exec(select(Placement)).one()
        placement.state = PlacementState.applying
        for migration in session.exec(select(Migration)).all():
            migration.state = MigrationState.pending
        session.commit()
    actuator.fail_with = None
    reconciler(engine, actuator).run_once()
    assert actuator.observe().version == 1
    with Session(engine) as session:
        assert session.exec(select(Placement).where(Placement.version == 1)).one().state == PlacementState.applied
        assert {m.state for m in session.exec(select(Migration)).all()} == {MigrationState.succeeded}


def test_unhealthy_capacity_is_not_planned_on(engine, graph):
    nodes = (
        NodeInventory("h100-0", "H100-SXM", devices=8, healthy_devices=0),
        NodeInventory("l40s-0", "L40S", devices=4, healthy_devices=4),
        NodeInventory("cpu-0", "CPU-EPYC-64C", devices=2, healthy_devices=2),
    )
    actuator = InMemoryActuator(nodes)
    reconciler(engine, actuator).run_once()
    assert actuator.applied and all(rs.device_class != "H100-SXM" for rs in actuator.observe().replica_sets)


SPLIT_NODES = (
    NodeInventory("h100-0", "H100-SXM", devices=16, healthy_devices=16),
    NodeInventory("l40s-0", "L40S", devices=16, healthy_devices=16),
    NodeInventory("gaudi2-0", "Gaudi2", devices=16, healthy_devices=16),
)


def test_a_busy_large_llm_is_split_into_prefill_and_decode_pools(engine):
    """~9 rps of a 70B chat model: pools on the classes cheapest for each phase beat whole replicas."""
    with Session(engine) as session:
        workload = _seeded_workload(session, "chat")
        llm = Fragment(workload_id=workload.id, key="llm:llama-3.1-70b-instruct", kind=FragmentKind.llm,
                       name="llama-3.1-70b-instruct", model="llama-3.1-70b-instruct",
                       first_seen=NOW - timedelta(minutes=10))
        session.add(llm)
        session.flush()
        session.add(FragmentProfile(fragment_id=llm.id, minute=minute_of(NOW), visits=2400,
                                    latency_ms_sum=2400 * 5000.0, tokens_in=2400 * 1155, tokens_out=2400 * 211))
        session.commit()
        llm_id = llm.id

    actuator = InMemoryActuator(SPLIT_NODES)
    report = reconciler(engine, actuator).run_once()
    assert report.action is Action.apply
    with Session(engine) as session:
        phases = {item.phase for item in session.exec(select(PlacementItem)).all()}
        migrations = session.exec(select(Migration)).all()
    assert phases == {"prefill", "decode"}
    assert {m.phase for m in migrations} == {"prefill", "decode"} and all(m.fragment_id == llm_id for m in migrations)
    sent = actuator.observe().replica_sets
    assert {rs.phase for rs in sent} == {Phase.prefill, Phase.decode}
    assert all(rs.fragment_key == "llm:llama-3.1-70b-instruct" for rs in sent)

    # The next cycle reads the pools back as what runs now: nothing to change.
    again = reconciler(engine, actuator, now=NOW + timedelta(seconds=5)).run_once()
    assert again.action is Action.keep, again.reason


# --- the migration policy's cooldown and move limit -----------------------------------------------------------

NO_GAUDI = (
    NodeInventory("l40s-0", "L40S", devices=4, healthy_devices=4),
    NodeInventory("cpu-0", "CPU-EPYC-64C", devices=2, healthy_devices=2),
)
WITH_GAUDI = (*NO_GAUDI, NodeInventory("gaudi2-0", "Gaudi2", devices=4, healthy_devices=4))


def _policy(engine, **limits) -> None:
    with Session(engine) as session:
        session.add(MigrationPolicy(name="limits", min_improvement_pct=0, **limits))
        session.commit()


def _classes(actuator) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for rs in actuator.observe().replica_sets:
        out.setdefault(rs.fragment_key, set()).add(rs.device_class)
    return out


def test_a_fragment_stays_on_its_classes_while_it_cools_down(engine, graph):
    _policy(engine, cooldown_s=30)
    actuator = InMemoryActuator(NO_GAUDI)
    reconciler(engine, actuator).run_once()
    assert _classes(actuator)["llm:llama-3.1-8b-instruct"] == {"L40S"}
    actuator.nodes = WITH_GAUDI  # cheaper for the LLM, but it moved 10 s ago
    reconciler(engine, actuator, now=NOW + timedelta(seconds=10)).run_once()
    assert _classes(actuator)["llm:llama-3.1-8b-instruct"] == {"L40S"}
    reconciler(engine, actuator, now=NOW + timedelta(seconds=40)).run_once()  # cooled down
    assert _classes(actuator)["llm:llama-3.1-8b-instruct"] == {"Gaudi2"}


def test_no_more_running_fragments_change_per_cycle_than_the_policy_allows(engine, graph):
    _policy(engine, cooldown_s=0, max_moves_per_cycle=0)
    actuator = InMemoryActuator(NO_GAUDI)
    first = reconciler(engine, actuator).run_once()
    assert first.action is Action.apply  # placing fragments new to the fleet is not limited
    before = _classes(actuator)
    actuator.nodes = WITH_GAUDI
    held = reconciler(engine, actuator, now=NOW + timedelta(seconds=10)).run_once()
    assert held.action is Action.keep and _classes(actuator) == before
    with Session(engine) as session:
        session.exec(select(MigrationPolicy)).one().max_moves_per_cycle = 1
        session.commit()
    moved = reconciler(engine, actuator, now=NOW + timedelta(seconds=20)).run_once()
    assert moved.action is Action.apply
    after = _classes(actuator)
    assert sum(after[key] != before[key] for key in before) == 1


def test_losing_the_classes_a_cooling_fragment_runs_on_lifts_the_limits(engine, graph):
    _policy(engine, cooldown_s=300, max_moves_per_cycle=0)
    actuator = InMemoryActuator(WITH_GAUDI)
    reconciler(engine, actuator).run_once()
    llm_on = _classes(actuator)["llm:llama-3.1-8b-instruct"]
    actuator.nodes = tuple(replace(n, healthy_devices=0) if n.device_class in llm_on else n for n in WITH_GAUDI)
    report = reconciler(engine, actuator, now=NOW + timedelta(seconds=10)).run_once()
    assert report.action is Action.apply and "move limits lifted" in report.reason
    assert not _classes(actuator)["llm:llama-3.1-8b-instruct"] & llm_on


def test_the_log_names_the_placement_version_and_the_workloads_it_moves(engine, graph, caplog):
    with caplog.at_level("INFO", logger="controlplane.reconciler"):
        reconciler(engine, InMemoryActuator(NODES)).run_once()
    line = next(r.getMessage() for r in caplog.records if r.getMessage().startswith("reconcile:"))
    assert line.startswith("reconcile: apply v1 (") and line.endswith(" in acme/rag"), line


def test_a_placement_coming_up_is_asked_about_each_cycle_and_nothing_new_is_planned_meanwhile(engine, graph):
    """An actuator that answers pending (Kubernetes, while new replicas start) leaves the placement
    applying: each cycle asks again, and no other placement is written until it is in force."""
    actuator = InMemoryActuator(NODES, pending_for=2)
    first = reconciler(engine, actuator).run_once()
    assert first.action is Action.apply and first.version == 1

    def states() -> tuple[list[PlacementState], set[MigrationState]]:
        with Session(engine) as session:
            return ([p.state for p in session.exec(select(Placement).order_by(Placement.version)).all()],
                    {m.state for m in session.exec(select(Migration)).all()})

    assert states() == ([PlacementState.applying], {MigrationState.applying})
    second = reconciler(engine, actuator, now=NOW + timedelta(seconds=20)).run_once()
    assert second.action is Action.keep and "v1 is still being applied" in second.reason
    assert states() == ([PlacementState.applying], {MigrationState.applying})  # asked again: pending still
    reconciler(engine, actuator, now=NOW + timedelta(seconds=40)).run_once()
    assert states() == ([PlacementState.applied], {MigrationState.succeeded})
    assert [d.version for d in actuator.applied] == [1]


def test_each_fragment_placed_as_planned_says_why_it_is_there(engine, graph):
    """The optimizer's explanation is kept per fragment (PlacementChoice) and GET /placements/{v}
    shows it: to an operator all of it, to another tenant's token none of it."""
    from fastapi.testclient import TestClient

    from controlplane.app import create_app
    from controlplane.auth import mint_token
    from controlplane.models import PlacementChoice, Role

    reconciler(engine, InMemoryActuator(NODES)).run_once()
    with Session(engine) as session:
        choices = {session.get(Fragment, c.fragment_id).key: c.model_copy() for c in session.exec(select(PlacementChoice))}
        placed = {session.get(Fragment, i.fragment_id).key for i in session.exec(select(PlacementItem))}
        acme = session.exec(select(Tenant).where(Tenant.name == "acme")).one()
        other = Tenant(name="globex")
        session.add(other)
        session.flush()
        operator = mint_token(session, "ops", Role.operator)[1]
        outsider = mint_token(session, "globex", Role.viewer, tenant_id=other.id)[1]
        own = mint_token(session, "acme", Role.viewer, tenant_id=acme.id)[1]
        session.commit()
    assert set(choices) == placed == {"llm:llama-3.1-8b-instruct", "embedding:bge-large-en", "tool:search"}
    catalog = {c.name for c in CATALOG}
    for choice in choices.values():
        assert choice.binding
        assert choice.runner_up is None or (choice.runner_up in catalog and choice.runner_up_delta_usd_per_hour
                                            is not None)
        if choice.binding == "cheapest per throughput" and choice.runner_up is not None:
            assert choice.runner_up_delta_usd_per_hour >= -1e-9  # nothing cheaper was left out
    with TestClient(create_app(engine, Settings())) as api:
        def seen(token: str) -> list[dict]:
            answer = api.get("/api/v1/placements/1", headers={"Authorization": f"Bearer {token}"})
            assert answer.status_code == 200, answer.text
            return answer.json()["choices"]

        assert {c["fragment_key"] for c in seen(operator)} == set(choices)
        assert {c["fragment_key"] for c in seen(own)} == set(choices)
        assert seen(outsider) == []


def test_time_per_visit_is_kept_per_phase_so_a_pool_never_overwrites_the_whole_replica():
    from controlplane.reconciler import busy_per_visit
    from optimizer.perfmodel import TARGET_UTILISATION
    from optimizer.types import ClassCapacity, FragmentDemand, Problem, ServiceProfile

    profiles = (ServiceProfile("H100-SXM", throughput_rps=10.0, latency_ms=100),
                ServiceProfile("H100-SXM", throughput_rps=40.0, latency_ms=20, phase=Phase.prefill),
                ServiceProfile("H100-SXM", throughput_rps=20.0, latency_ms=80, phase=Phase.decode))
    problem = Problem((ClassCapacity("H100-SXM", 7.0, 8, 7),), (FragmentDemand("7", "rag", 5.0, profiles),))
    # One visit keeps a replica of each phase busy TARGET_UTILISATION / its own throughput.
    assert busy_per_visit(problem) == {
        (7, "H100-SXM", ""): TARGET_UTILISATION / 10.0,
        (7, "H100-SXM", "prefill"): TARGET_UTILISATION / 40.0,
        (7, "H100-SXM", "decode"): TARGET_UTILISATION / 20.0,
    }
