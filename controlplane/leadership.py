"""Leader election: which one of several `heteroplane serve` replicas over one database reconciles.

On PostgreSQL the leader is whoever holds a session-level advisory lock, `pg_try_advisory_lock(key)`,
on a connection of its own (not from the application's pool: a pooled connection is shared, reset
and replaced, and a session lock lives exactly as long as its connection). The key is the first
8 bytes of SHA-256 of a name, as a signed 64-bit integer: for "heteroplane.reconciler",
2457735432252548549 (`lock_key`), so `SELECT * FROM pg_locks WHERE locktype = 'advisory'` shows
the leader (objid and classid are the key's low and high 32 bits).

When the leader's connection ends, PostgreSQL drops the lock and the next replica to try gets
it. The holder learns it on its next `held()`, which `LeaderLoop` calls before every reconcile
cycle and fast-path check, and stops cycling.

Fencing. A lock says who leads now, not whether a write comes from the leader of now: a leader
whose connection died while it was solving would still write its plan when the cycle ends. So
each acquisition also increments a fencing token (the `leader_epoch` row of the lock's name,
done on the lock's connection while it holds the lock), and every transaction that writes a
placement version first runs `UPDATE leader_epoch SET epoch = epoch WHERE name = :name AND epoch
= :mine` (`fence`): no row updated means another replica has acquired since, and the write is
refused with NotLeader. The UPDATE keeps the row locked until that transaction ends, so a new
leader's increment waits for an old leader's write in flight, and once the increment commits every
later write of the old leader fails: writes are totally ordered by epoch. This was chosen over
checking `held()` under a transaction-level advisory lock because its correctness rests on the
database alone, not on the old leader's own view of its connection (which can still look alive
for a moment after the server has ended the session). A placement version written first by
another writer (a unique-version IntegrityError: the leader's snapshot predates an old leader's
last write, or an operator's rollback through the API) is reported the same way by the reconciler.

Worst-case takeover time, from the leader's failure to a follower cycling:
- leader process killed (SIGKILL, OOM): its kernel closes the socket and the server ends the
  session at once; takeover <= `leader_period_s` (the followers' next try).
- leader host or network gone: the server notices when its TCP keepalives go unanswered,
  `keepalive_s + 3 * max(1, keepalive_s // 3)` seconds (idle, then 3 probes: 19 s by default;
  `tcp_user_timeout`, 2 * keepalive_s, bounds unacknowledged sends); takeover <= that +
  `leader_period_s`. The old leader's own `held()` fails within about as long (client keepalives).
- leader process frozen (SIGSTOP, a hung cycle) while its kernel still answers keepalives: the
  server ends the session after `idle_timeout_s` without a query (`idle_session_timeout`, which
  needs PostgreSQL 14; older servers keep the lock until the connection closes); takeover <=
  `idle_timeout_s` (setting leader_idle_timeout_s) + `leader_period_s`. A cycle (between two
  `held()` checks) must therefore take less than `idle_timeout_s`, or its leader loses the lock
  and the fence refuses its write.
- PostgreSQL restarting: every session ends; whichever replica tries first after it is back leads.

SQLite (the embedded default) is one file one `serve` process uses: `SingleProcess` always leads,
and fences nothing.
"""

import hashlib
import logging
import threading
from collections.abc import Callable
from typing import Protocol

import psycopg
from sqlalchemy import update
from sqlalchemy.engine import make_url
from sqlmodel import Session

from controlplane.models import LeaderEpoch
from controlplane.settings import Settings

log = logging.getLogger(__name__)
LOCK_NAME = "heteroplane.reconciler"


class NotLeader(Exception):
    """A write refused because this process no longer leads (or another writer won the race)."""


def lock_key(name: str) -> int:
    """The advisory lock key of `name`: SHA-256's first 8 bytes as a signed 64-bit integer."""
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big", signed=True)


class Leadership(Protocol):
    """Whether this process is the one that reconciles."""

    def acquire(self) -> bool:
        """Try once, without waiting; True when this process leads (already or now)."""
        ...

    def held(self) -> bool:
        """Check with the database that this process still leads; False once it has lost it."""
        ...

    def fence(self, session: Session) -> None:
        """Inside a writing transaction: raise NotLeader unless this process still leads, and keep
        a new leader from taking over until that transaction ends."""
        ...

    def release(self) -> None:
        """Stop leading (so another replica takes over at its next try)."""
        ...


class SingleProcess:
    """SQLite: one `serve` process runs the one reconciler, so it always leads."""

    def acquire(self) -> bool:
        return True

    def held(self) -> bool:
        return True

    def fence(self, session: Session) -> None:
        return None

    def release(self) -> None:
        return None


class AdvisoryLock:
    """A PostgreSQL session-level advisory lock on a dedicated connection, with a fencing token
    (see the module docstring for the guarantees and the takeover times)."""

    def __init__(self, url: str, name: str = LOCK_NAME, *, connect_timeout_s: int = 5, keepalive_s: int = 10,
                 idle_timeout_s: float = 120.0) -> None:
        self.name = name
        self.key = lock_key(name)
        self._conninfo = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
        self._connect_timeout_s = connect_timeout_s
        self._keepalive_s = keepalive_s
        self._idle_timeout_ms = int(idle_timeout_s * 1000)
        self._lock = threading.Lock()  # held() may be asked from another thread (health) than the loop's
        self._conn: psycopg.Connection | None = None
        self._epoch: int | None = None

    @property
    def epoch(self) -> int | None:
        """The fencing token of the current tenure; None when not leading."""
        return self._epoch

    def acquire(self) -> bool:
        if self._conn is not None and self.held():
            return True
        with self._lock:
            try:
                conn = self._connect()
            except psycopg.Error as exc:
                log.warning("leader lock %s: cannot connect: %s", self.name, _first_line(exc))
                return False
            try:
                if not conn.execute("SELECT pg_try_advisory_lock(%s)", (self.key,)).fetchone()[0]:
                    conn.close()
                    return False
                # Waits for an old leader's write in flight (it holds the row), at most lock_timeout.
                epoch = conn.execute(
                    "INSERT INTO leader_epoch (name, epoch, acquired_at) VALUES (%s, 1, now()) "
                    "ON CONFLICT (name) DO UPDATE SET epoch = leader_epoch.epoch + 1, acquired_at = now() "
                    "RETURNING epoch", (self.name,)).fetchone()[0]
            except psycopg.Error as exc:
                conn.close()  # ends the session: the advisory lock goes with it
                log.warning("leader lock %s: not acquired: %s", self.name, _first_line(exc))
                return False
            self._conn, self._epoch = conn, epoch
        log.info("leader lock %s acquired (key %d, epoch %d)", self.name, self.key, epoch)
        return True

    def held(self) -> bool:
        with self._lock:
            if self._conn is None:
                return False
            try:
                row = self._conn.execute("SELECT epoch FROM leader_epoch WHERE name = %s", (self.name,)).fetchone()
            except psycopg.Error as exc:
                self._drop(f"its connection failed: {_first_line(exc)}")
                return False
            if row is None or row[0] != self._epoch:
                self._drop(f"epoch {self._epoch} superseded by {row[0] if row else 'none'}")
                return False
            return True

    def fence(self, session: Session) -> None:
        epoch = self._epoch
        if epoch is None:
            raise NotLeader(f"leader lock {self.name} is not held by this process")
        updated = session.execute(update(LeaderEpoch).where(
            LeaderEpoch.name == self.name, LeaderEpoch.epoch == epoch).values(epoch=LeaderEpoch.epoch)).rowcount
        if updated != 1:
            raise NotLeader(f"leader lock {self.name}: epoch {epoch} is no longer current, another replica leads")

    def release(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._drop("released")

    def _drop(self, why: str) -> None:
        conn, self._conn, self._epoch = self._conn, None, None
        try:
            conn.close()  # ends the session, and with it the lock if the server still had it
        except psycopg.Error:
            pass  # closing a dead connection has nothing left to release
        log.warning("leader lock %s: no longer held (%s)", self.name, why)

    def _connect(self) -> psycopg.Connection:
        k = self._keepalive_s
        conn = psycopg.connect(
            self._conninfo, autocommit=True, connect_timeout=self._connect_timeout_s,
            application_name="heteroplane-leader",
            # The client's keepalives: held() fails, not hangs, when the server is unreachable.
            keepalives=1, keepalives_idle=k, keepalives_interval=max(1, k // 3), keepalives_count=3,
            tcp_user_timeout=k * 2000,
            # The server's: it ends the session (and the lock) when this host stops answering.
            options=f"-c tcp_keepalives_idle={k} -c tcp_keepalives_interval={max(1, k // 3)} "
                    f"-c tcp_keepalives_count=3 -c tcp_user_timeout={k * 2000} "
                    f"-c lock_timeout={self._connect_timeout_s * 1000}")
        try:
            conn.execute("SELECT set_config('idle_session_timeout', %s, false)", (str(self._idle_timeout_ms),))
        except psycopg.errors.UndefinedObject:
            log.warning("PostgreSQL < 14 has no idle_session_timeout: a frozen leader keeps the lock until its "
                        "connection closes")
        return conn


class Cycles(Protocol):
    """Reconciler.run_forever with its callbacks bound: cycles until `stop` or `should_continue()` is False."""

    def __call__(self, stop: threading.Event, *, should_continue: Callable[[], bool]) -> None: ...


class LeaderLoop:
    """Campaign for leadership every `period_s` and, while leading, run reconciler cycles; report each
    change to `on_change` (for /health and metrics), and release on stop.

    serve: `leadership = leadership_for(settings)`; `Reconciler(..., fence=leadership.fence)`;
    `LeaderLoop(leadership, partial(reconciler.run_forever, on_error=..., on_success=...),
    settings.leader_period_s, on_change).run(stop)` on the reconciler's thread."""

    def __init__(self, leadership: Leadership, cycles: Cycles, period_s: float,
                 on_change: Callable[[bool], None] | None = None) -> None:
        self.leadership = leadership
        self.cycles = cycles
        self.period_s = period_s
        self.on_change = on_change
        self.is_leader = False

    def run(self, stop: threading.Event) -> None:
        try:
            while not stop.is_set():
                if self._try_acquire():
                    self._change(True)
                    self.cycles(stop, should_continue=self.leadership.held)
                    self._change(False)
                    if not stop.is_set():
                        log.warning("lost leadership; trying again every %.1f s", self.period_s)
                stop.wait(self.period_s)
        finally:
            self.leadership.release()
            self._change(False)

    def _try_acquire(self) -> bool:
        try:
            return self.leadership.acquire()
        except Exception:  # one failed attempt must not end the campaign
            log.exception("acquiring leadership failed")
            return False

    def _change(self, leader: bool) -> None:
        if leader == self.is_leader:
            return
        self.is_leader = leader
        log.info("this process %s the reconciler", "now leads" if leader else "no longer leads")
        if self.on_change is not None:
            try:
                self.on_change(leader)
            except Exception:  # reporting must not stop the loop
                log.exception("leadership change callback failed")


def leadership_for(settings: Settings) -> Leadership:
    """The reconciler's leadership under `settings`: an AdvisoryLock on PostgreSQL, SingleProcess on SQLite."""
    url = settings.effective_database_url
    if url.startswith("postgresql"):
        return AdvisoryLock(url, LOCK_NAME, idle_timeout_s=settings.leader_idle_timeout_s)
    return SingleProcess()


def _first_line(exc: Exception) -> str:
    return (str(exc).splitlines() or [type(exc).__name__])[0]
