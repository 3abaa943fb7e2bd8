"""Leader election over a real PostgreSQL: one replica reconciles, a dead leader is replaced, and a leader
that lost its lock writes nothing."""

import logging
import os
import queue
import subprocess
import sys
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import timedelta
from functools import partial
from pathlib import Path

import pytest
from sqlalchemy import text, update
from sqlalchemy.engine import Engine
from sqlmodel import Session, SQLModel, select

from controlplane.actuators.memory import InMemoryActuator
from controlplane.db import make_engine
from controlplane.leadership import AdvisoryLock, LeaderLoop, NotLeader, SingleProcess, leadership_for, lock_key
from controlplane.models import (
    DeviceClass,
    Fragment,
    FragmentKind,
    FragmentProfile,
    Migration,
    Placement,
    PlacementItem,
)
from controlplane.models._common import minute_of
from controlplane.policy import diff
from controlplane.reconciler import CycleReport, Reconciler
from controlplane.settings import Settings
from optimizer.types import Phase
from tests.conftest import fresh_postgres_database
from tests.controlplane.test_reconciler import NODES, NOW, _seeded_workload
from tests.support import wait_until

ROOT = Path(__file__).resolve().parents[2]
DEADLINE_S = 60.0  # how long a condition may take on a loaded machine before the test gives up
FAST = Settings(solver_time_limit_s=1, reconcile_period_s=0.3, fast_path_period_s=0.1)


@pytest.fixture
def url() -> Iterator[str]:
    """A fresh PostgreSQL database with the schema (advisory locks are per database: tests do not meet)."""
    with fresh_postgres_database() as url:
        engine = make_engine(url)
        SQLModel.metadata.create_all(engine)
        engine.dispose()
        yield url


@pytest.fixture
def engine(url: str) -> Iterator[Engine]:
    engine = make_engine(url)
    yield engine
    engine.dispose()


def kill_holder(engine: Engine) -> int:
    """End the session holding this database's advisory lock from outside, as if its process had been
    SIGKILLed; returns its pid."""
    [pid] = holders(engine)
    with engine.connect() as conn:
        # With a timeout it returns once the backend has exited, so its locks are gone by then.
        assert conn.execute(text("SELECT pg_terminate_backend(:pid, 60000)"), {"pid": pid}).scalar_one()
        conn.commit()
    return pid


def wait_for(condition: Callable[[], bool], what: str) -> None:
    wait_until(condition, what, polls=int(DEADLINE_S / 0.05), interval=0.05)


def seed_llm(engine: Engine) -> int:
    """Tenant acme's workload with one LLM fragment seen 600 times in the current minute; its id."""
    with Session(engine) as session:
        workload = _seeded_workload(session, "rag")
        fragment = Fragment(workload_id=workload.id, key="llm:llama-3.1-8b-instruct", kind=FragmentKind.llm,
                            name="llama-3.1-8b-instruct", model="llama-3.1-8b-instruct",
                            first_seen=NOW - timedelta(minutes=10))
        session.add(fragment)
        session.flush()
        session.add(FragmentProfile(fragment_id=fragment.id, minute=minute_of(NOW), visits=600,
                                    latency_ms_sum=600 * 50.0, tokens_in=600 * 500, tokens_out=600 * 100))
        session.commit()
        return fragment.id


def set_demand(engine: Engine, visits: int) -> None:
    """600 visits a minute fit one small placement, 3600 need a bigger one: flipping makes every cycle
    write a new placement version."""
    with Session(engine) as session:
        session.execute(update(FragmentProfile).values(visits=visits, latency_ms_sum=visits * 50.0,
                                                       tokens_in=visits * 500, tokens_out=visits * 100))
        session.commit()


def test_exactly_one_lock_holder_and_a_killed_holder_is_replaced(url, engine):
    first, second = AdvisoryLock(url), AdvisoryLock(url)
    try:
        assert first.acquire() and first.epoch == 1
        assert not second.acquire()
        assert first.held() and not second.held()
        assert first.acquire()  # already leading: still leading, same tenure
        assert first.epoch == 1

        kill_holder(engine)

        assert not first.held()
        assert first.epoch is None
        assert second.acquire() and second.epoch == 2
        assert not first.acquire()
    finally:
        first.release()
        second.release()
    wait_for(lambda: holders(engine) == [], "released: nobody holds the lock")  # the server ends a closed session soon after


def holders(engine: Engine) -> list[int]:
    """The pids holding an advisory lock in this database."""
    with engine.connect() as conn:
        return list(conn.execute(text(
            "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted "
            "AND database = (SELECT oid FROM pg_database WHERE datname = current_database())")).scalars())


def test_a_lock_key_is_fixed_by_its_name():
    assert lock_key("heteroplane.reconciler") == 2457735432252548549  # the value the module docstring names
    assert lock_key("other") != lock_key("heteroplane.reconciler")


def test_postgresql_gets_an_advisory_lock_and_sqlite_a_single_process(url, tmp_path):
    lock = leadership_for(Settings(database_url=url, leader_idle_timeout_s=30))
    assert isinstance(lock, AdvisoryLock) and lock.name == "heteroplane.reconciler"
    assert isinstance(leadership_for(Settings(data_dir=tmp_path)), SingleProcess)


def test_single_process_always_leads_and_fences_nothing(engine):
    single = SingleProcess()
    assert single.acquire() and single.held()
    with Session(engine) as session:
        single.fence(session)  # raises nothing
    single.release()
    assert single.held()


def test_a_leader_that_lost_its_lock_mid_cycle_writes_no_placement(url, engine, caplog):
    seed_llm(engine)
    stale, usurper = AdvisoryLock(url), AdvisoryLock(url)
    assert stale.acquire()
    fenced = []

    def lose_the_lock_before_the_placement_is_written(session: Session) -> None:
        # The cycle's first fenced write is the rollback check; the second writes the placement. Between
        # them the lock is lost and taken by another replica, while this one has not yet noticed.
        fenced.append(1)
        if len(fenced) == 2:
            kill_holder(engine)
            assert usurper.acquire()
        stale.fence(session)

    actuator = InMemoryActuator(NODES)
    reconciler = Reconciler(engine, actuator, FAST, clock=lambda: NOW,
                            fence=lose_the_lock_before_the_placement_is_written)
    errors: list[Exception] = []
    cycles = iter([True, False])
    caplog.set_level(logging.WARNING, "controlplane.reconciler")
    try:
        reconciler.run_forever(threading.Event(), on_error=errors.append, should_continue=lambda: next(cycles))
    finally:
        stale.release()
        usurper.release()
    assert len(fenced) == 2
    assert [type(e) for e in errors] == [NotLeader]
    assert "reconcile cycle wrote nothing: leader lock heteroplane.reconciler: epoch 1 is no longer current" in caplog.text
    with Session(engine) as session:
        assert session.exec(select(Placement)).all() == []
        assert session.exec(select(Migration)).all() == []
    assert actuator.applied == []


def test_a_placement_version_written_first_by_another_writer_is_a_lost_race(url, engine):
    seed_llm(engine)
    reconciler = Reconciler(engine, InMemoryActuator(NODES), FAST, clock=lambda: NOW)
    original = reconciler._write

    def another_writer_first(version, *args):
        with Session(engine) as session:  # e.g. an old leader's last write, committed after this snapshot
            session.add(Placement(version=version, reason="written by the other replica"))
            session.commit()
        original(version, *args)

    reconciler._write = another_writer_first
    with pytest.raises(NotLeader, match="placement v1 was written by another writer first"):
        reconciler.run_once()
    with Session(engine) as session:
        assert [p.reason for p in session.exec(select(Placement)).all()] == ["written by the other replica"]
        assert session.exec(select(Migration)).all() == []


class Replica:
    """One `serve` replica's reconciler thread: a LeaderLoop over its own lock, engine and actuator."""

    def __init__(self, name: str, url: str, on_cycle: Callable[[], None]) -> None:
        self.name = name
        self.lock = AdvisoryLock(url)
        self.tries = 0
        acquire = self.lock.acquire

        def counted() -> bool:
            self.tries += 1
            return acquire()

        self.lock.acquire = counted
        self.engine = make_engine(url)
        self.written: list[int] = []
        self.changes: list[bool] = []
        self.on_cycle = on_cycle
        reconciler = Reconciler(self.engine, InMemoryActuator(NODES), FAST, clock=lambda: NOW, fence=self.lock.fence)
        self.loop = LeaderLoop(self.lock, partial(reconciler.run_forever, on_success=self._cycled), period_s=0.2,
                               on_change=self.changes.append)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.loop.run, args=(self.stop,), name=name, daemon=True)

    def _cycled(self, report: CycleReport) -> None:
        if report.version is not None:
            self.written.append(report.version)
        self.on_cycle()

    def close(self) -> None:
        self.stop.set()
        self.thread.join(DEADLINE_S)
        self.engine.dispose()


def test_two_replicas_one_writes_and_the_other_takes_over_when_it_dies(url, engine):
    seed_llm(engine)
    flips = Counter()

    def flip_demand() -> None:  # after every cycle, whoever ran it: the next cycle has something to write
        flips["n"] += 1
        set_demand(engine, 3600 if flips["n"] % 2 else 600)

    a, b = Replica("a", url, flip_demand), Replica("b", url, flip_demand)
    try:
        a.thread.start()
        wait_for(lambda: a.loop.is_leader, "a leads")
        b.thread.start()
        wait_for(lambda: len(a.written) >= 3 and b.tries >= 3, "a writes three versions while b tries to lead")
        assert b.changes == [] and b.written == []  # b campaigns, and never leads while a lives

        kill_holder(engine)

        wait_for(lambda: b.loop.is_leader, "b takes over")
        wait_for(lambda: not a.loop.is_leader, "a notices it lost the lock")
        wait_for(lambda: len(b.written) >= 3, "b writes three versions")
        assert a.changes == [True, False] and b.changes == [True]
    finally:
        a.close()
        b.close()
    assert not a.thread.is_alive() and not b.thread.is_alive()
    assert b.changes == [True, False]  # released on stop

    with Session(engine) as session:
        placements = session.exec(select(Placement).order_by(Placement.version)).all()
        class_names = dict(session.exec(select(DeviceClass.id, DeviceClass.name)).all())
        items = {p.version: {(i.fragment_id, class_names[i.device_class_id], Phase(i.phase)): (i.replicas, i.slices)
                             for i in session.exec(select(PlacementItem).where(PlacementItem.placement_id == p.id))}
                 for p in placements}
        migrations = {p.version: sorted((m.fragment_id, class_names.get(m.from_device_class_id),
                                         class_names.get(m.to_device_class_id), m.replicas, Phase(m.phase))
                                        for m in session.exec(select(Migration).where(Migration.placement_id == p.id)))
                      for p in placements}
        bases = {p.version: p.base_version for p in placements}
    versions = [p.version for p in placements]
    # Every version once, none skipped, each written by the leader of its time: a's first, then b's.
    assert versions == list(range(1, len(versions) + 1))
    assert sorted(a.written + b.written) == versions
    assert a.written and b.written and max(a.written) < min(b.written)
    # Each placement's migrations are exactly the moves from its base placement to it: none lost, none twice.
    for version in versions:
        base = items[bases[version]] if bases[version] is not None else {}
        expected = sorted((m.fragment_id, m.from_class, m.to_class, m.replicas, m.phase)
                          for m in diff(base, items[version]))
        assert migrations[version] == expected, f"v{version}"


HOLDER = """
import sys, time
from controlplane.leadership import AdvisoryLock
lock = AdvisoryLock(sys.argv[1])
said = False
while not lock.acquire():
    if not said:
        print("follower", flush=True)
        said = True
    time.sleep(0.1)
print("leader", lock.epoch, flush=True)
while lock.held():
    time.sleep(0.1)
"""


class Process:
    """A `python -c` process holding an AdvisoryLock, its stdout lines readable with a deadline."""

    def __init__(self, url: str) -> None:
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        self.proc = subprocess.Popen([sys.executable, "-c", HOLDER, url], stdout=subprocess.PIPE, text=True,
                                     env=env, cwd=ROOT)
        self.lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=lambda: [self.lines.put(line.strip()) for line in self.proc.stdout],
                         daemon=True).start()

    def said(self) -> str:
        return self.lines.get(timeout=DEADLINE_S)


def test_kill_9_of_the_holding_process_hands_the_lock_to_the_other(url):
    first = Process(url)
    second = None
    try:
        assert first.said() == "leader 1"
        second = Process(url)
        assert second.said() == "follower"
        first.proc.kill()  # SIGKILL: no release, no goodbye; PostgreSQL sees the socket close
        first.proc.wait(DEADLINE_S)
        assert second.said() == "leader 2"
    finally:
        for p in (first, second):
            if p is not None and p.proc.poll() is None:
                p.proc.kill()
                p.proc.wait(DEADLINE_S)
