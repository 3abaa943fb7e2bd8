"""A class's recorded calibration reaches the plan: a class measured slow loses the fragments it served."""

from datetime import timedelta

import pytest
from sqlmodel import Session, select

from controlplane.actuators.base import NodeInventory
from controlplane.actuators.memory import InMemoryActuator
from controlplane.calibration import Measured, calibrations, datasheet, device_class_named, record_calibration
from controlplane.inventory import sync_inventory
from controlplane.models import (
    DeviceClass,
    Fragment,
    FragmentKind,
    FragmentProfile,
    KernelSelection,
    PlacementItem,
    Sla,
    Tenant,
    Workload,
)
from controlplane.models._common import minute_of, utcnow
from controlplane.planning import build_problem, take_snapshot
from controlplane.queries import placement_in_force
from controlplane.reconciler import Reconciler
from controlplane.seed import seed_catalog
from controlplane.settings import Settings
from optimizer.calibration import E_B_ASSUMED, E_C_ASSUMED
from optimizer.solver import solve
from tests.controlplane.conftest import auth

NOW = minute_of(utcnow()) + timedelta(seconds=30)
FLEET = tuple(NodeInventory(f"{cls.lower()}-{i}", cls, 8, 8) for cls in ("L40S", "L4") for i in range(4))


def llm_workload(session: Session) -> int:
    """An 8B chat model at ~10 visits/s of 200 prompt and 50 answer tokens; returns its fragment id."""
    seed_catalog(session)
    sync_inventory(session, FLEET)
    tenant = Tenant(name="acme")
    session.add(tenant)
    session.flush()
    workload = Workload(tenant_id=tenant.id, name="chat")
    session.add(workload)
    session.flush()
    # Seen since the minute began: 300 visits over 30 s, whatever the wall clock's second.
    llm = Fragment(workload_id=workload.id, key="llm:m-8b", kind=FragmentKind.llm, name="m-8b", model="m-8b",
                   first_seen=minute_of(NOW), last_seen=NOW)
    session.add(llm)
    session.flush()
    session.add(FragmentProfile(fragment_id=llm.id, minute=minute_of(NOW), visits=300, latency_ms_sum=300 * 2000.0,
                                tokens_in=300 * 200, tokens_out=300 * 50))
    session.add(Sla(workload_id=workload.id, p99_ms=30_000))
    session.commit()
    return llm.id


def measured_at(session: Session, name: str, compute: float, memory: float) -> Measured:
    """Figures that are `compute` and `memory` of the class's datasheet on one thread."""
    peaks, bandwidth = datasheet(device_class_named(session, name), 1)
    return Measured({d: compute * p for d, p in peaks.items()}, memory * bandwidth, 1, "test bench")


def classes_of(session: Session, kernel_speedups=None) -> set[str]:
    problem = build_problem(take_snapshot(session, NOW, kernel_speedups=kernel_speedups), 1.2, 5.0)
    plan = solve(problem)
    assert plan.feasible
    return {a.device_class for a in plan.assignments if a.replicas}


def test_a_class_measured_at_20_percent_loses_the_llm_to_the_other_class(engine):
    with Session(engine, expire_on_commit=False) as session:
        llm_workload(session)
        # From datasheets, the L40S serves an 8B model cheaper per visit (864 GB/s for $1.86/h against the
        # L4's 300 for $0.81), so it takes most replicas; the L4 only rounds the count up.
        before = classes_of(session)
        assert "L40S" in before
        # Calibrated exactly at what an uncalibrated class is assumed to reach: the same plan.
        record_calibration(session, "L40S", measured_at(session, "L40S", E_C_ASSUMED, E_B_ASSUMED), NOW)
        assert classes_of(session) == before
        # Measured at 20% of its datasheet, compute and memory: 0.2 / 0.8 of the bandwidth the model
        # assumed, 216 GB/s per $1.86/h, worse than the L4's; the LLM moves off it.
        record_calibration(session, "L40S", measured_at(session, "L40S", 0.2, 0.2), NOW)
        assert calibrations(session)["L40S"].compute_efficiency == pytest.approx(0.2)
        assert classes_of(session) == {"L4"}


def test_kernel_speedups_given_to_the_snapshot_reach_the_estimates(engine):
    with Session(engine, expire_on_commit=False) as session:
        fid = llm_workload(session)
        plain = build_problem(take_snapshot(session, NOW), 1.2, 5.0)
        faster = build_problem(take_snapshot(session, NOW, kernel_speedups={"L4": {"attention_decode": 3.0}}), 1.2, 5.0)

    def whole(problem, cls):
        (fragment,) = [f for f in problem.fragments if f.fragment == str(fid)]
        return next(p for p in fragment.profiles if p.device_class == cls and p.phase.value == "")

    assert whole(faster, "L4").throughput_rps > whole(plain, "L4").throughput_rps
    assert whole(faster, "L40S") == whole(plain, "L40S")


def test_the_snapshot_takes_the_kernel_registrys_speedups_unless_given_others(engine):
    """What `heteroplane kernels bench` stored for a class reaches the estimates the reconciler plans
    with: per op the geometric mean over its (dtype, bucket) rows; ops the model has no share for are
    dropped instead of stopping planning."""
    with Session(engine, expire_on_commit=False) as session:
        fid = llm_workload(session)
        plain = build_problem(take_snapshot(session, NOW), 1.2, 5.0)
        # attention_decode at 2.0 and 4.5 in two buckets (geomean 3.0), and an op the planner does not know.
        for op, bucket, speedup in (("attention_decode", 10, 2.0), ("attention_decode", 14, 4.5),
                                    ("an_op_from_the_future", 3, 9.0)):
            session.add(KernelSelection(op=op, device_class="L4", dtype="float32", shape_bucket=bucket, shape="1x1",
                                        chosen="c", speedup=speedup, spread=0.01, reference_s=1e-3, atol=1e-5,
                                        rtol=1e-4, seeds="0", torch_version="t", device="cpu", measured_at=NOW))
        session.commit()
        snapshot = take_snapshot(session, NOW)
        stored = build_problem(snapshot, 1.2, 5.0)
        given = build_problem(take_snapshot(session, NOW, kernel_speedups={"L4": {"attention_decode": 3.0}}), 1.2, 5.0)
        unset = build_problem(take_snapshot(session, NOW, kernel_speedups={}), 1.2, 5.0)

    def whole(problem, cls):
        (fragment,) = [f for f in problem.fragments if f.fragment == str(fid)]
        return next(p for p in fragment.profiles if p.device_class == cls and p.phase.value == "")

    assert snapshot.kernel_speedups == {"L4": {"attention_decode": pytest.approx(3.0)}}
    assert whole(stored, "L4").throughput_rps == pytest.approx(whole(given, "L4").throughput_rps)
    assert whole(stored, "L4").throughput_rps > whole(plain, "L4").throughput_rps
    assert whole(unset, "L4") == whole(plain, "L4")


def test_the_reconciler_moves_the_llm_off_a_class_recorded_slow(engine):
    with Session(engine, expire_on_commit=False) as session:
        llm_workload(session)
    actuator = InMemoryActuator(FLEET)
    clock = [NOW]
    reconciler = Reconciler(engine, actuator, Settings(solver_time_limit_s=10), clock=lambda: clock[0])
    reconciler.run_once()

    def running() -> set[str]:
        with Session(engine) as session:
            placement = placement_in_force(session)
            return set(session.exec(
                select(DeviceClass.name).join(PlacementItem, PlacementItem.device_class_id == DeviceClass.id)
                .where(PlacementItem.placement_id == placement.id, PlacementItem.replicas > 0)).all())

    assert "L40S" in running()
    with Session(engine, expire_on_commit=False) as session:
        record_calibration(session, "L40S", measured_at(session, "L40S", 0.2, 0.2), NOW)
    clock[0] = NOW + timedelta(seconds=20)
    report = reconciler.run_once()
    assert running() == {"L4"}, report


def test_the_api_shows_a_class_calibration_with_its_source_and_date_and_null_before(client, callers, engine):
    with Session(engine, expire_on_commit=False) as session:
        seed_catalog(session)
        session.commit()
        l4 = device_class_named(session, "L4")
        record_calibration(session, "L4", measured_at(session, "L4", 0.5, 0.25), NOW)
        h100 = device_class_named(session, "H100-SXM")
    h = auth(callers.viewer)
    shown = client.get(f"/api/v1/device-classes/{l4.id}", headers=h).json()["calibration"]
    # On one thread of an accelerator class the datasheet is the whole device's: 121 TFLOP/s bf16, 300 GB/s.
    assert shown["bfloat16_gflops"] == pytest.approx(0.5 * 121e3) and shown["copy_gbps"] == pytest.approx(75.0)
    assert shown["bfloat16_efficiency"] == pytest.approx(0.5) and shown["float16_efficiency"] == pytest.approx(0.5)
    assert shown["float32_efficiency"] == pytest.approx(0.5) and shown["memory_efficiency"] == pytest.approx(0.25)
    assert shown["source"] == "test bench" and shown["measured_at"].startswith(NOW.strftime("%Y-%m-%dT%H:%M:%S"))
    assert client.get(f"/api/v1/device-classes/{h100.id}", headers=h).json()["calibration"] is None
    listed = {c["name"]: c["calibration"] for c in client.get("/api/v1/device-classes", headers=h).json()["items"]}
    assert listed["L4"] == shown and listed["H100-SXM"] is None
    # An edit of the class keeps showing what was measured on it.
    patched = client.patch(f"/api/v1/device-classes/{l4.id}", json={"usd_per_hour": 0.9}, headers=auth(callers.admin))
    assert patched.status_code == 200 and patched.json()["calibration"] == shown


def test_a_cpu_class_is_held_against_the_share_of_its_cores_measured(engine):
    with Session(engine, expire_on_commit=False) as session:
        seed_catalog(session)
        session.commit()
        cpu = device_class_named(session, "CPU-EPYC-64C")  # 12.7 TFLOP/s bf16, 307 GB/s over 64 cores
        assert datasheet(cpu, 16) == ({"float32": 12.7e3 / 8, "bfloat16": 12.7e3 / 4, "float16": 12.7e3 / 4},
                                      307 / 4)
        assert datasheet(cpu, 128)[1] == 307  # more threads than cores: the whole socket
        with pytest.raises(ValueError, match="needs GFLOP/s for exactly float32, bfloat16, float16"):
            record_calibration(session, "CPU-EPYC-64C", Measured({"bfloat16": 1.0}, 1.0, 1, "x"), NOW)
        with pytest.raises(ValueError, match="unknown device class 'cpu'; known classes: A100-80GB"):
            record_calibration(session, "cpu", measured_at(session, "L4", 0.5, 0.5), NOW)
        assert calibrations(session) == {}


def test_deleting_a_class_deletes_its_calibration(client, callers, engine):
    h = auth(callers.admin)
    created = client.post("/api/v1/device-classes", headers=h, json={
        "name": "TestGPU-1", "vendor": "nvidia", "bf16_tflops": 100.0, "memory_gib": 24, "memory_gbps": 900,
        "fabric": "pcie", "usd_per_hour": 1.5}).json()
    with Session(engine, expire_on_commit=False) as session:
        record_calibration(session, "TestGPU-1", measured_at(session, "TestGPU-1", 0.5, 0.5), NOW)
    assert client.delete(f"/api/v1/device-classes/{created['id']}", headers=h).status_code == 204
    with Session(engine) as session:
        assert calibrations(session) == {}


@pytest.mark.parametrize(("column", "value"), [("bf16_tflops", 1e308), ("memory_gbps", 1e-320), ("bf16_tflops", 1e-320)])
def test_a_datasheet_figure_that_makes_an_efficiency_zero_or_infinite_is_refused_and_planning_keeps_working(
        engine, column, value):
    # The API takes any finite datasheet figure; 1e308 TFLOP/s overflows the GFLOP/s peak to inf and a
    # figure's efficiency to 0, which, once stored, made calibrations() (every planning cycle) raise.
    with Session(engine, expire_on_commit=False) as session:
        seed_catalog(session)
        l4 = device_class_named(session, "L4")
        figures_ = measured_at(session, "L4", 0.5, 0.5)
        record_calibration(session, "L4", figures_, NOW)
        kept = calibrations(session)
        setattr(l4, column, value)
        session.add(l4)
        session.commit()
        with pytest.raises(ValueError, match=f"L4.*{column}.*nothing was recorded"):
            record_calibration(session, "L4", figures_, NOW)
        session.rollback()
        assert calibrations(session) == kept
