"""Serving the REST API and console from several processes on one socket (issue 12, point 2).

One Python process runs on one core at a time, and a request costs a few ms of Python, so one
process caps the API near 200 req/s with nothing left for anything else. `heteroplane serve` with
`api_workers` > 1 binds the API socket in the main process and starts that many worker processes
(multiprocessing's spawn: no thread or connection of the main process is copied into them), each
running uvicorn on the shared socket; the kernel hands each new connection to one of them.

What stays in the main process: the OTLP receiver, the ingest writer, the Prometheus puller. What
/health shows of them (components, ingest statistics) reaches the workers through a status file the
main process rewrites every PUBLISH_PERIOD_S (`StatusBoard`, read by `PublishedStatus`); a file older
than STALE_AFTER_S says the main process stopped reporting, and /health says so. Their metrics
(controlplane.telemetry) travel the same way, as Prometheus text in a file beside it: a worker's
/metrics serves that text, or, once it is stale, heteroplane_main_status_stale 1 instead.

Workers die with the main process (Linux's parent-death signal), and the main process restarts a
worker that exits on its own, at most once per RESTART_BACKOFF_S per slot.

Per-process state, and what it means with several workers: each worker has its own verified-token
cache (a token revoked through one worker stops working in the others within deps.TOKEN_CACHE_S),
its own sign-in failure limiter (a client gets that many wrong guesses per worker before 429), and
its own admission bound and database pool (`connections_needed`).
"""

import ctypes
import json
import logging
import multiprocessing
import multiprocessing.synchronize
import os
import signal
import socket
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from collectors.pipeline import Ingest, IngestStats
from controlplane.db import BACKGROUND_CONNECTIONS, pool_size
from controlplane.runtime import with_staleness
from controlplane.settings import Settings
from controlplane.telemetry import Telemetry
from optimizer.types import Priority, Shortfall, ShortfallCause, ShortfallKind

if TYPE_CHECKING:
    from controlplane.reconciler import Reconciler

log = logging.getLogger(__name__)

PUBLISH_PERIOD_S = 1.0
STALE_AFTER_S = 10.0
RESTART_BACKOFF_S = 5.0
WORKER_CONNECTIONS_SPARE = 1  # /health's own check while every thread holds one


def connections_needed(settings: Settings) -> int:
    """PostgreSQL connections `heteroplane serve` may open at once: each worker's pool (one per
    request thread, plus a spare), the main process's (its loops' and the OTLP receiver's) and, with
    an actuator, the leadership lock's (controlplane.leadership)."""
    leader = 1 if settings.actuator != "none" else 0  # the leadership lock's own connection
    if settings.api_workers == 1:
        return pool_size(settings.api_concurrency) + leader
    return (settings.api_workers * (settings.api_concurrency + WORKER_CONNECTIONS_SPARE) + main_pool_size(settings)
            + leader)


def main_pool_size(settings: Settings) -> int:
    """The main process's pool: all of pool_size when it serves the API itself, else its loops' and
    the OTLP receiver's (which authorises each export with one short query)."""
    if settings.api_workers == 1:
        return pool_size(settings.api_concurrency)
    return BACKGROUND_CONNECTIONS + settings.api_concurrency


def metrics_path(status_path: Path) -> Path:
    """Where the main process's metrics are published, beside its status file."""
    return status_path.with_suffix(".prom")


class StatusBoard:
    """Main process: writes `components`, the ingest statistics and the latest reconciler cycle's
    unmet SLAs to `path`, and `telemetry`'s metrics beside it (`metrics_path`), every
    PUBLISH_PERIOD_S, each atomically (a worker reads a whole file or the previous one, never half
    of one)."""

    def __init__(self, path: Path, components: Mapping[str, str], ingest: Ingest | None,
                 telemetry: Telemetry | None = None, reconciler: "Reconciler | None" = None) -> None:
        self.path = path
        self.components = components
        self.ingest = ingest
        self.telemetry = telemetry
        self.reconciler = reconciler
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="status-board", daemon=True)

    def publish(self) -> None:
        stats = self.ingest.stats() if self.ingest is not None else None
        last = self.reconciler.last if self.reconciler is not None else None
        body = {"at": time.time(), "components": with_staleness(self.components, self.reconciler),
                "ingest": asdict(stats) if stats is not None else None,
                "shortfalls": [asdict(s) for s in last.shortfalls] if last is not None else []}
        _write_atomically(self.path, json.dumps(body).encode())
        if self.telemetry is not None:
            _write_atomically(metrics_path(self.path), self.telemetry.exposition())

    def _run(self) -> None:
        while not self._stop.wait(PUBLISH_PERIOD_S):
            try:
                self.publish()
            except OSError:
                log.exception("could not write the status file %s", self.path)

    def start(self) -> None:
        self.publish()
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


def _write_atomically(path: Path, body: bytes) -> None:
    partial = path.with_name(path.name + ".partial")
    partial.write_bytes(body)
    os.replace(partial, path)


class PublishedStatus:
    """Worker process: the main process's components and ingest statistics, as /health shows them, and
    its metrics, as /metrics serves them."""

    def __init__(self, path: Path, now: Callable[[], float] = time.time) -> None:
        self.path = path
        self.now = now

    def read(self) -> "MainStatus":
        try:
            body = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return MainStatus({"serve": "error: the main process has published no status"})
        components = dict(body["components"])
        age = self.now() - body["at"]
        if age > STALE_AFTER_S:
            components["serve"] = f"error: the main process has not reported for {age:.0f} s"
        stats = IngestStats(**body["ingest"]) if body["ingest"] is not None else None
        return MainStatus(components, stats, tuple(shortfall_of(s) for s in body.get("shortfalls", [])))

    def metrics(self) -> bytes | None:
        """The main process's metrics in the Prometheus text format; None when it has published none, or
        none within STALE_AFTER_S (then a scrape must not present old counters as current)."""
        path = metrics_path(self.path)
        try:
            if self.now() - path.stat().st_mtime > STALE_AFTER_S:
                return None
            return path.read_bytes()
        except OSError:
            return None


@dataclass(frozen=True)
class MainStatus:
    """The main process's state as a worker's /health shows it."""

    components: dict[str, str]
    ingest: IngestStats | None = None
    shortfalls: tuple[Shortfall, ...] = ()


def shortfall_of(fields: dict) -> Shortfall:
    return Shortfall(**{**fields, "priority": Priority(fields["priority"]), "kind": ShortfallKind(fields["kind"]),
                        "cause": ShortfallCause(fields["cause"])})

def _die_with_parent() -> None:
    """Ask Linux to SIGTERM this process when the process that started it exits (PR_SET_PDEATHSIG),
    so a killed `serve` leaves no worker holding the port and database connections."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # 1 = PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # not Linux: workers end when their socket's owner stops them
        return


def run_worker(settings_json: str, sock: socket.socket, status_path: str, ready: multiprocessing.synchronize.Event,
               parent_pid: int) -> None:
    """A worker process's body: the API app over its own engine, served by uvicorn on `sock`."""
    _die_with_parent()
    if os.getppid() != parent_pid:  # the parent died before the request above took effect
        return
    import uvicorn

    from controlplane.composition import service_app  # the composition root: imported here, in the worker
    from controlplane.db import make_engine

    settings = Settings.model_validate_json(settings_json)
    logging.basicConfig(level=settings.log_level.upper(),
                        format=f"%(asctime)s %(levelname)s %(name)s[worker {os.getpid()}]: %(message)s")
    engine = make_engine(settings.effective_database_url, settings.api_concurrency + WORKER_CONNECTIONS_SPARE)
    app = service_app(engine, settings)
    app.state.published = PublishedStatus(Path(status_path))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False, lifespan="on"))

    def _report_ready() -> None:
        while not server.started and not server.should_exit:
            time.sleep(0.05)
        ready.set()

    threading.Thread(target=_report_ready, daemon=True).start()
    try:
        server.run(sockets=[sock])
    except KeyboardInterrupt:  # Ctrl-C reaches the whole process group; uvicorn re-raises it when done
        pass
    finally:
        engine.dispose()


class WorkerPool:
    """Main process: `count` worker processes serving the API on one listening socket."""

    def __init__(self, settings: Settings, status_path: Path) -> None:
        self.settings = settings
        self.status_path = status_path
        self.context = multiprocessing.get_context("spawn")
        self.sock = socket.socket(socket.AF_INET6 if ":" in settings.api_host else socket.AF_INET)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            self.sock.bind((settings.api_host, settings.api_port))
        except OSError as exc:
            self.sock.close()
            raise RuntimeError(f"api could not listen on {settings.api_host}:{settings.api_port}: {exc.strerror}") from None
        self.sock.listen(2048)
        self.sock.set_inheritable(True)
        self.processes: list[multiprocessing.process.BaseProcess | None] = [None] * settings.api_workers
        self.started_at = [0.0] * settings.api_workers
        self.ready: list[multiprocessing.synchronize.Event | None] = [None] * settings.api_workers  # kept: a
        # child unpickles its Event after start() returns, and a collected one is gone by then
        self.stopping = False

    @property
    def port(self) -> int:
        return self.sock.getsockname()[1]

    def _spawn(self, slot: int) -> multiprocessing.synchronize.Event:
        ready = self.context.Event()
        process = self.context.Process(
            target=run_worker, name=f"api-worker-{slot}", daemon=True,
            args=(self.settings.model_dump_json(), self.sock, str(self.status_path), ready, os.getpid()),
        )
        process.start()
        self.processes[slot] = process
        self.started_at[slot] = time.monotonic()
        self.ready[slot] = ready
        return ready

    def start(self, timeout_s: float = 60.0) -> None:
        """Start every worker and wait until each serves (or raise, naming the one that did not)."""
        readies = [self._spawn(slot) for slot in range(len(self.processes))]
        deadline = time.monotonic() + timeout_s
        for slot, ready in enumerate(readies):
            while not ready.wait(0.1):
                process = self.processes[slot]
                if not process.is_alive() or time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"api worker {slot} did not start (exit code {process.exitcode}); see its log")

    def watch(self) -> None:
        """Restart any worker that exited while serve runs (called from the main loop)."""
        if self.stopping:
            return
        for slot, process in enumerate(self.processes):
            if process is None or process.is_alive():
                continue
            if time.monotonic() - self.started_at[slot] < RESTART_BACKOFF_S:
                continue
            log.warning("api worker %d (pid %s) exited with code %s; starting another", slot, process.pid,
                        process.exitcode)
            self._spawn(slot)

    def stop(self, timeout_s: float = 10.0) -> None:
        """SIGTERM every worker (uvicorn finishes the requests in flight), then SIGKILL stragglers."""
        self.stopping = True
        live = [p for p in self.processes if p is not None and p.is_alive()]
        for process in live:
            process.terminate()
        deadline = time.monotonic() + timeout_s
        for process in live:
            process.join(max(0.0, deadline - time.monotonic()))
            if process.is_alive():
                process.kill()
                process.join(1)
        self.sock.close()
