"""The fast path: replicas added between cycles where a model server's queue or KV cache fills."""

from datetime import timedelta

from sqlmodel import Session, select

from collectors.prometheus import ModelSample
from controlplane.actuators.memory import InMemoryActuator
from controlplane.collected import store_samples
from controlplane.fastpath import ModelPressure, Thresholds, scale_up
from controlplane.models import AuditEvent, Fragment, MigrationPolicy, Placement, PlacementState
from controlplane.planning import FragmentView, Snapshot
from controlplane.policy import Action
from optimizer.types import ClassCapacity, Phase
from tests.controlplane.test_reconciler import NODES, NOW, graph, reconciler  # noqa: F401  (graph: a fixture)

GPU = "GPU-A"
THRESHOLDS = Thresholds(queue_per_replica=4.0, kv_usage=0.9)


def fragment(fid: int, model: str = "m-8b") -> FragmentView:
    return FragmentView(fid, f"llm:{model}", "llm", model, 1, 1, "acme", "chat", 5.0, 500.0, 100.0, 300)


def snapshot(current, fragments=(fragment(1),)) -> Snapshot:
    return Snapshot(now=NOW, classes=(), class_ids={}, healthy_devices={}, fragments=fragments, workloads={},
                    current=current, current_version=1, latest_version=1)


def gpus(devices: int) -> tuple[ClassCapacity, ...]:
    return (ClassCapacity(GPU, 2.0, devices),)


def reading(queue: float | None = None, kv: float | None = None, model: str = "m-8b") -> ModelPressure:
    return ModelPressure(model, GPU, queue, kv)


def test_a_calm_fleet_gets_nothing():
    current = {(1, GPU, Phase.whole): (2, 1)}
    # 8 waiting on 2 replicas is 4 per replica, not over 4; 85% KV is under 90%.
    assert scale_up(snapshot(current), gpus(8), [reading(queue=8, kv=0.85)], THRESHOLDS) is None
    assert scale_up(snapshot(current), gpus(8), [], THRESHOLDS) is None
    # A queue of a model nobody runs on this class, or on a class not known, adds nothing.
    assert scale_up(snapshot(current), gpus(8), [reading(queue=50, model="other")], THRESHOLDS) is None
    assert scale_up(snapshot(current), (), [reading(queue=50)], THRESHOLDS) is None


def test_a_queue_adds_replicas_at_most_doubling():
    current = {(1, GPU, Phase.whole): (2, 1)}
    # 10 waiting on 2: ceil(10 / 4) = 3 wanted, so one more.
    got = scale_up(snapshot(current), gpus(8), [reading(queue=10)], THRESHOLDS)
    assert got.assignments == {(1, GPU, Phase.whole): (3, 1)}
    assert [(a.fragment_id, a.replicas) for a in got.additions] == [(1, 1)]
    # 40 waiting on 2: ceil(40 / 4) = 10 wanted, but one fast step at most doubles: 4.
    got = scale_up(snapshot(current), gpus(8), [reading(queue=40)], THRESHOLDS)
    assert got.assignments[1, GPU, Phase.whole] == (4, 1)


def test_a_full_kv_cache_adds_replicas():
    current = {(1, GPU, Phase.whole): (2, 1)}
    # 95% on 2 replicas: ceil(2 * 0.95 / 0.9) = 3 bring it back under 90%.
    got = scale_up(snapshot(current), gpus(8), [reading(kv=0.95)], THRESHOLDS)
    assert got.assignments[1, GPU, Phase.whole] == (3, 1)
    assert "KV cache 95% full" in got.additions[0].why


def test_additions_stop_at_the_free_healthy_capacity():
    # Three devices, two held: one replica more fits, not two.
    current = {(1, GPU, Phase.whole): (2, 1)}
    got = scale_up(snapshot(current), gpus(3), [reading(queue=40)], THRESHOLDS)
    assert got.assignments[1, GPU, Phase.whole] == (3, 1)
    # Replicas of two devices each: three devices hold one, so none more fits.
    wide = {(1, GPU, Phase.whole): (1, 2)}
    assert scale_up(snapshot(wide), gpus(3), [reading(queue=40)], THRESHOLDS) is None


def test_a_split_fragment_grows_the_pool_under_pressure():
    current = {(1, GPU, Phase.prefill): (1, 1), (1, GPU, Phase.decode): (2, 1)}
    queued = scale_up(snapshot(current), gpus(8), [reading(queue=9)], THRESHOLDS)
    assert queued.assignments[1, GPU, Phase.prefill] == (2, 1) and queued.assignments[1, GPU, Phase.decode] == (2, 1)
    full = scale_up(snapshot(current), gpus(8), [reading(kv=0.99)], THRESHOLDS)
    assert full.assignments[1, GPU, Phase.prefill] == (1, 1) and full.assignments[1, GPU, Phase.decode] == (3, 1)


def test_fragments_sharing_a_model_share_the_additions():
    # Two workloads serve m-8b on the class: 3 and 1 replicas, 36 waiting, ceil(36 / 4) = 9 wanted,
    # at most doubling: 4 more, each to the one with fewest, so 1 -> 4 and 3 -> 4.
    current = {(1, GPU, Phase.whole): (3, 1), (2, GPU, Phase.whole): (1, 1)}
    got = scale_up(snapshot(current, (fragment(1), fragment(2))), gpus(16), [reading(queue=36)], THRESHOLDS)
    assert got.assignments == {(1, GPU, Phase.whole): (4, 1), (2, GPU, Phase.whole): (4, 1)}


def test_a_building_queue_makes_run_fast_add_replicas(engine, graph):  # noqa: F811
    actuator = InMemoryActuator(NODES)
    reconciler(engine, actuator).run_once()
    llm = next(rs for rs in actuator.observe().replica_sets if rs.fragment_key.startswith("llm:"))
    later = NOW + timedelta(seconds=3)
    assert reconciler(engine, actuator, later).run_fast() is None  # no telemetry yet: nothing to act on

    def report(queue: float, kv: float, at) -> None:
        """What the Prometheus puller stores from vLLM's gauges (the minute's latest reading wins)."""
        with Session(engine) as session:
            model = session.exec(select(Fragment.model).where(Fragment.key == llm.fragment_key)).one()
            store_samples(session, at, (), (ModelSample(model, llm.device_class, queue_depth=queue, kv_cache_usage=kv),))
            session.commit()

    report(queue=50.0, kv=0.99, at=NOW - timedelta(seconds=5))  # from before the placement: not about it
    assert reconciler(engine, actuator, later).run_fast() is None
    report(queue=1.0 * llm.replicas, kv=0.3, at=later - timedelta(seconds=1))
    assert reconciler(engine, actuator, later).run_fast() is None  # calm
    report(queue=10.0 * llm.replicas, kv=0.5, at=later)
    got = reconciler(engine, actuator, later + timedelta(seconds=1)).run_fast()
    assert got is not None and got.action is Action.apply and got.version == 2
    after = next(rs for rs in actuator.observe().replica_sets if rs.fragment_key == llm.fragment_key)
    assert after.device_class == llm.device_class and after.replicas == 2 * llm.replicas
    with Session(engine) as session:
        placement = session.exec(select(Placement).where(Placement.version == 2)).one()
        assert placement.state == PlacementState.applied and placement.reason.startswith("fast path")
        assert session.exec(select(AuditEvent).where(AuditEvent.action == "fastpath.scale_up")).one()
    # The same reading, older than the placement it caused, asks for nothing more.
    assert reconciler(engine, actuator, later + timedelta(seconds=3)).run_fast() is None
    # Under a dry-run policy nothing is actuated, the fast path included.
    report(queue=50.0 * llm.replicas, kv=0.99, at=later + timedelta(seconds=4))
    with Session(engine) as session:
        session.add(MigrationPolicy(name="look-only", dry_run=True))
        session.commit()
    assert reconciler(engine, actuator, later + timedelta(seconds=5)).run_fast() is None
    assert len(actuator.applied) == 2


def test_run_forever_checks_the_fast_path_between_cycles(engine):
    import threading

    from controlplane.reconciler import Reconciler
    from controlplane.settings import Settings

    calls: list[str] = []
    stop = threading.Event()

    class Counting(Reconciler):
        def run_once(self):
            calls.append("cycle")
            if calls.count("cycle") == 2:
                stop.set()

        def run_fast(self, now=None):
            calls.append("fast")

    settings = Settings(reconcile_period_s=1.0, fast_path_period_s=0.01)
    Counting(engine, InMemoryActuator(NODES), settings).run_forever(stop)
    assert calls[0] == "cycle" and calls[-1] == "cycle" and calls.count("cycle") == 2
    assert "fast" in calls[1:-1]
