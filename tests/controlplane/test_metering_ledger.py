"""The metering ledger over a real database: forward from its watermark, each minute once, idle
capacity per class, tokens by type (issue 14's defects, each reproduced)."""

from datetime import UTC, datetime, timedelta

import pytest
from sqlmodel import Session, select

from controlplane.metering import final_until, meter
from controlplane.models import (
    Device,
    DeviceClass,
    Fragment,
    FragmentKind,
    FragmentProfile,
    IdleRecord,
    MeteringWatermark,
    Node,
    Observation,
    ObservationItem,
    Tenant,
    UsageRecord,
    Workload,
)

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
MIN = timedelta(minutes=1)


@pytest.fixture
def fleet(engine):
    """H100 (7 slices, $7/h) with 2 healthy devices, L4 ($0.80/h) with 3 healthy of 4; tenant acme's
    rag workload with an LLM, an embedding model and a reranker; from T0, 1 replica of the LLM on
    1 H100 slice, 1 embedding replica and 1 reranker replica on L4."""
    with Session(engine) as session:
        h100 = DeviceClass(name="H100", vendor="nvidia", bf16_tflops=989, memory_gib=80, memory_gbps=3350,
                           fabric="nvlink", usd_per_hour=7.0, slices_per_device=7)
        l4 = DeviceClass(name="L4", vendor="nvidia", bf16_tflops=121, memory_gib=24, memory_gbps=300,
                         fabric="pcie", usd_per_hour=0.8)
        acme = Tenant(name="acme")
        session.add_all([h100, l4, acme])
        session.flush()
        for name, cls, count in (("h100-0", h100, 2), ("l4-0", l4, 4)):
            node = Node(name=name, device_class_id=cls.id, device_count=count)
            session.add(node)
            session.flush()
            session.add_all(Device(node_id=node.id, index=i, healthy=not (cls is l4 and i == 0)) for i in range(count))
        rag = Workload(name="rag", tenant_id=acme.id)
        session.add(rag)
        session.flush()
        fragments = {}
        for kind, name in ((FragmentKind.llm, "llama"), (FragmentKind.embedding, "bge"), (FragmentKind.rerank, "rr")):
            fragments[kind] = Fragment(workload_id=rag.id, key=f"{kind.value}:{name}", kind=kind, name=name)
            session.add(fragments[kind])
        session.flush()
        observation = Observation(observed_at=T0, version=1)
        session.add(observation)
        session.flush()
        for kind, cls, slices in ((FragmentKind.llm, h100, 1), (FragmentKind.embedding, l4, 1),
                                  (FragmentKind.rerank, l4, 1)):
            session.add(ObservationItem(observation_id=observation.id, fragment_id=fragments[kind].id,
                                        device_class_id=cls.id, replicas=1, slices=slices))
        session.commit()
        return {"h100": h100.id, "l4": l4.id, **{k.value: f.id for k, f in fragments.items()}}


def run_meter(engine, at: datetime, busy=None, **kwargs) -> int:
    with Session(engine) as session:
        written = meter(session, at, busy or {}, **kwargs)
        session.commit()
        return written


def usage(engine) -> list[UsageRecord]:
    with Session(engine) as session:
        return list(session.exec(select(UsageRecord).order_by(UsageRecord.minute, UsageRecord.fragment_id)).all())


def test_a_gap_between_cycles_is_metered_minute_by_minute_exactly_once(engine, fleet):
    # Issue 14: meter() rewrote only the current and previous minute, so a restart or a cycle longer
    # than a minute lost the minutes in between for good.
    run_meter(engine, T0 + timedelta(seconds=30))
    run_meter(engine, T0 + 10 * MIN + timedelta(seconds=30))  # ten minutes later: a restart
    run_meter(engine, T0 + 10 * MIN + timedelta(seconds=30))  # and the same cycle again
    rows = [u for u in usage(engine) if u.fragment_id == fleet["llm"]]
    assert [u.minute for u in rows] == [T0 + k * MIN for k in range(11)]  # one row per minute, none lost
    # The closed minutes hold 60 s of 1/7 of an H100; the open one the 30 s so far.
    assert [round(u.device_seconds_allocated * 7, 9) for u in rows] == [60.0] * 10 + [30.0]
    with Session(engine) as session:
        assert session.get(MeteringWatermark, 1).last_closed_minute == T0 + 9 * MIN
        assert final_until(session) == T0 + 10 * MIN


def test_the_open_minute_is_provisional_and_written_for_good_once_it_closes(engine, fleet):
    run_meter(engine, T0 + timedelta(seconds=20))
    assert [round(u.device_seconds_allocated * 7) for u in usage(engine) if u.fragment_id == fleet["llm"]] == [20]
    run_meter(engine, T0 + MIN + timedelta(seconds=5))
    rows = [u for u in usage(engine) if u.fragment_id == fleet["llm"]]
    assert [(u.minute, round(u.device_seconds_allocated * 7)) for u in rows] == [(T0, 60), (T0 + MIN, 5)]


def test_a_long_gap_is_caught_up_a_bounded_number_of_minutes_per_call(engine, fleet):
    run_meter(engine, T0 + timedelta(seconds=1))
    later = T0 + 100 * MIN + timedelta(seconds=30)
    run_meter(engine, later, max_minutes=40)
    minutes = sorted({u.minute for u in usage(engine)})
    assert minutes == [T0 + k * MIN for k in range(40)]  # 0..39: the open minute waits until caught up
    run_meter(engine, later, max_minutes=40)
    run_meter(engine, later, max_minutes=40)
    minutes = sorted({u.minute for u in usage(engine)})
    assert minutes == [T0 + k * MIN for k in range(101)]  # caught up, then the open minute
    llm = [u for u in usage(engine) if u.fragment_id == fleet["llm"]]
    assert len(llm) == 101


def test_a_new_ledger_starts_at_the_first_observation(engine, fleet):
    run_meter(engine, T0 + 3 * MIN + timedelta(seconds=10))  # first call, three minutes after it
    minutes = sorted({u.minute for u in usage(engine)})
    assert minutes == [T0, T0 + MIN, T0 + 2 * MIN, T0 + 3 * MIN]


def test_idle_capacity_is_one_line_per_class_and_minute_with_no_tenant(engine, fleet):
    # Issue 14: capacity no replica held was never recorded.
    run_meter(engine, T0 + MIN + timedelta(seconds=30))
    with Session(engine) as session:
        idle = {(i.minute, i.device_class_id): i for i in session.exec(select(IdleRecord)).all()}
    assert set(idle) == {(T0, fleet["h100"]), (T0, fleet["l4"]), (T0 + MIN, fleet["h100"]), (T0 + MIN, fleet["l4"])}
    h100, l4 = idle[(T0, fleet["h100"])], idle[(T0, fleet["l4"])]
    # H100: 2 healthy devices x 60 s, 1/7 of one held; L4: 3 healthy (one device is not) x 60 s, 2 held.
    assert h100.device_seconds_healthy == 120 and abs(h100.device_seconds_idle - (120 - 60 / 7)) < 1e-9
    assert abs(h100.cost_usd - (120 - 60 / 7) / 3600 * 7.0) < 1e-12
    assert (l4.device_seconds_healthy, l4.device_seconds_allocated, l4.device_seconds_idle) == (180, 120, 60)
    assert not hasattr(IdleRecord, "tenant_id")
    assert idle[(T0 + MIN, fleet["l4"])].device_seconds_healthy == 90  # the open minute, 30 s in


def test_tokens_are_stored_by_type_and_busy_in_device_seconds(engine, fleet):
    with Session(engine) as session:
        for kind, cls, visits, tin, tout in (("llm", "H100", 30, 15_000, 3_000), ("embedding", "L4", 50, 5_000, 0),
                                             ("rerank", "L4", 20, 40_000, 0)):
            session.add(FragmentProfile(fragment_id=fleet[kind], device_class=cls, minute=T0, visits=visits,
                                        tokens_in=tin, tokens_out=tout))
        session.commit()
        names = dict(session.exec(select(Fragment.id, Fragment.kind)).all())
    busy = {(fleet["llm"], "H100", ""): 1.0, (fleet["embedding"], "L4", ""): 0.5}
    run_meter(engine, T0 + MIN + timedelta(seconds=1), busy)
    rows = {names[u.fragment_id]: u for u in usage(engine) if u.minute == T0}
    llm, emb, rr = rows["llm"], rows["embedding"], rows["rerank"]
    assert (llm.tokens, llm.llm_input_tokens, llm.llm_output_tokens, llm.embedding_tokens) == (18_000, 15_000, 3_000, 0)
    assert (emb.tokens, emb.embedding_tokens, emb.llm_input_tokens) == (5_000, 5_000, 0)
    assert (rr.tokens, rr.rerank_tokens) == (40_000, 40_000)
    # 30 visits x 1 s on a 1-slice replica: 30/7 device-seconds of 60/7 allocated (50%, not 350%).
    assert abs(llm.device_seconds_busy - 30 / 7) < 1e-9 and abs(llm.device_seconds_allocated - 60 / 7) < 1e-9
    assert emb.device_seconds_busy == 25.0
