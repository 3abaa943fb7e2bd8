"""Running heteroplane's servers and loops in one process, and stopping them cleanly on Ctrl-C."""

import logging
import signal
import socket
import threading
import time
from collections.abc import Callable, Mapping, MutableMapping
from typing import TYPE_CHECKING

import uvicorn
from fastapi import FastAPI
from sqlalchemy import text
from sqlalchemy.engine import Engine
from sqlmodel import Session

from controlplane.db import upgrade
from controlplane.seed import seed_catalog
from controlplane.settings import Settings

if TYPE_CHECKING:
    from controlplane.reconciler import Reconciler

log = logging.getLogger(__name__)


def report_cycles(reconciler: "Reconciler", components: MutableMapping[str, str], stop: threading.Event,
                  should_continue: Callable[[], bool] = lambda: True) -> None:
    """Run the reconciler until `stop` (or until `should_continue()` is False: leadership lost),
    keeping `components["reconciler"]` (what /health shows) on the latest cycle's outcome: an error
    while cycles fail, ok again as soon as one succeeds."""
    components["reconciler"] = "ok"

    def failed(exc: Exception) -> None:
        components["reconciler"] = f"error: {type(exc).__name__}"

    def succeeded(_report: object) -> None:
        components["reconciler"] = "ok"

    reconciler.run_forever(stop, on_error=failed, on_success=succeeded, should_continue=should_continue)


class ServerThread:
    """A uvicorn server on a background thread; signals stay with the main thread, which calls `stop`."""

    def __init__(self, app: FastAPI, host: str, port: int, name: str) -> None:
        config = uvicorn.Config(app, host=host, port=port, log_level="warning", access_log=False, lifespan="on")
        self.server = uvicorn.Server(config)
        self.name = name
        self.thread = threading.Thread(target=self.server.run, name=name, daemon=True)

    def start(self, timeout_s: float = 15.0) -> None:
        self.thread.start()
        deadline = time.monotonic() + timeout_s
        while not self.server.started:
            if not self.thread.is_alive():
                raise RuntimeError(f"{self.name} failed to start on port {self.server.config.port} (is it in use?)")
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.name} did not start within {timeout_s:g}s")
            time.sleep(0.05)

    @property
    def port(self) -> int:
        """The bound port (useful when started on port 0)."""
        return self.server.servers[0].sockets[0].getsockname()[1]

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


def prepare_database(engine: Engine, settings: Settings) -> None:
    """Bring the schema to head and seed the device catalog: what every process does on start."""
    upgrade(settings.effective_database_url)
    with Session(engine) as session:
        added = seed_catalog(session)
        session.commit()
    if added:
        log.info("seeded %d device classes from the catalog", added)


def port_is_free(host: str, port: int) -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def check_connection_budget(engine: Engine, needed: int) -> None:
    """Refuse to start (RuntimeError naming the settings) when PostgreSQL's max_connections is below
    what this server may open at once: past it, requests would fail instead of waiting. Connections
    other clients hold now only earn a warning: they come and go."""
    if engine.dialect.name != "postgresql":
        return
    with engine.connect() as conn:
        limit = int(conn.execute(text("SHOW max_connections")).scalar_one())
        reserved = int(conn.execute(text("SHOW superuser_reserved_connections")).scalar_one())
        others = int(conn.execute(text("SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend'"
                                       " AND pid <> pg_backend_pid()")).scalar_one())
    if needed > limit - reserved:
        raise RuntimeError(
            f"PostgreSQL accepts {limit - reserved} connections (max_connections {limit}, {reserved} reserved) but "
            f"this server may open {needed}: lower HETEROPLANE_API_WORKERS or HETEROPLANE_API_CONCURRENCY, or "
            "raise max_connections")
    if needed > limit - reserved - others:
        log.warning("PostgreSQL has %d connections free now (%d in use by others); this server may open %d",
                    limit - reserved - others, others, needed)


def run_until_interrupted(stoppers: list[Callable[[], None]], watch: Callable[[], None] | None = None) -> None:
    """Block until SIGINT (Ctrl-C) or SIGTERM (e.g. Kubernetes), then run `stoppers` in reverse order;
    meanwhile call `watch` (if any) twice a second, e.g. to restart a worker process that exited.

    Handlers are installed here, in the main thread, so the shutdown path does not depend on
    whatever SIGINT disposition the process inherited or a library left behind.
    """
    stop = threading.Event()

    def _request_stop(signum, _frame) -> None:
        log.info("received %s, stopping", signal.Signals(signum).name)
        stop.set()

    previous = {sig: signal.signal(sig, _request_stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        while not stop.wait(0.5):
            if watch is not None:
                watch()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        for stop_one in reversed(stoppers):
            try:
                stop_one()
            except Exception:  # keep stopping the rest
                log.exception("error while stopping")


def with_staleness(components: Mapping[str, str], reconciler: "Reconciler | None") -> dict[str, str]:
    """`components`, the reconciler's marked stale where its loop looks stuck (Reconciler.stale)."""
    out = dict(components)
    judge = getattr(reconciler, "stale", None)  # None for no reconciler (or a stand-in without a loop)
    stale = judge() if judge is not None else None
    if stale is not None and out.get("reconciler", "ok") == "ok":
        out["reconciler"] = f"stale: {stale}"
    return out
