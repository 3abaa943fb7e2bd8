"""`heteroplane serve` with several API worker processes, from outside: a real serve on PostgreSQL,
its workers found in /proc, killed and counted; and the status file that carries the main process's
state to their /health."""

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlmodel import create_engine

from controlplane.runtime import check_connection_budget
from controlplane.settings import Settings
from controlplane.workers import STALE_AFTER_S, MainStatus, PublishedStatus, StatusBoard, connections_needed
from optimizer.types import Priority, Shortfall, ShortfallCause, ShortfallKind
from tests.conftest import fresh_postgres_database
from tests.support import wait_until


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def children(pid: int) -> set[int]:
    """Live processes whose parent is `pid` and that run multiprocessing's spawn entry point."""
    found = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[1]) == pid and fields[0] != "Z" and b"spawn_main" in cmdline:
            found.add(int(entry.name))
    return found




def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


@pytest.fixture
def serve_env():
    with fresh_postgres_database() as url:
        port = free_port()
        yield {**os.environ, "HETEROPLANE_DATABASE_URL": url, "HETEROPLANE_API_PORT": str(port),
               "HETEROPLANE_OTLP_PORT": str(free_port()), "HETEROPLANE_API_WORKERS": "2",
               "HETEROPLANE_API_CONCURRENCY": "4", "HETEROPLANE_PROMETHEUS_URL": "http://127.0.0.1:1",
               "HETEROPLANE_PROMETHEUS_INTERVAL_S": "1", "HETEROPLANE_LOG_LEVEL": "WARNING"}, port


def test_serve_runs_workers_that_show_the_main_process_state_are_replaced_and_die_with_it(serve_env):
    env, port = serve_env
    server = subprocess.Popen([sys.executable, "-m", "controlplane.cli", "serve"],
                              env={**env, "HETEROPLANE_METRICS_PUBLIC": "true"},
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    seen: set[int] = set()
    try:
        base = f"http://127.0.0.1:{port}/api/v1/health"
        workers = wait_until(lambda: len(children(server.pid)) == 2 and children(server.pid), "two workers", polls=300,
                             interval=0.2)
        seen |= workers

        def prometheus_state() -> str | None:
            try:
                return httpx.get(base, timeout=5).json()["components"].get("prometheus")
            except httpx.HTTPError:
                return None

        # The puller runs in the main process; a worker's /health shows its state, from the status file.
        state = wait_until(prometheus_state, "the main process's Prometheus state in a worker's /health", polls=150,
                           interval=0.2)
        assert state.startswith(("down", "degraded")), state

        # A worker's /metrics: the main process's families (its ingest) once each, then its own database reads.
        scraped = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10)
        families = [f.name for f in text_string_to_metric_families(scraped.text)]
        assert len(families) == len(set(families)), families
        assert {"heteroplane_ingest_spans", "heteroplane_leader", "heteroplane_placements"} <= set(families)
        assert "heteroplane_main_status_stale 0.0" in scraped.text

        killed = sorted(workers)[0]
        os.kill(killed, signal.SIGKILL)
        replaced = wait_until(lambda: len(now := children(server.pid)) == 2 and killed not in now and now,
                              "a new worker in place of the killed one", polls=150, interval=0.2)
        seen |= replaced
        assert replaced & workers == workers - {killed}
        for _ in range(6):  # the kernel spreads new connections over both; each one answers
            assert httpx.get(base, timeout=10).status_code in (200, 503)

        server.kill()  # SIGKILL: the main process gets no chance to stop its workers
        server.wait(10)
        wait_until(lambda: not any(alive(pid) for pid in replaced), "workers gone with the main process", polls=75,
                   interval=0.2)
    finally:
        if server.poll() is None:
            server.kill()
            server.wait(10)
        for pid in seen:  # should they have outlived it (the failure this test looks for)
            if alive(pid):
                os.kill(pid, signal.SIGKILL)


def test_serve_refuses_a_configuration_postgresql_cannot_connect(serve_env):
    env, _ = serve_env
    env = {**env, "HETEROPLANE_API_WORKERS": "16", "HETEROPLANE_API_CONCURRENCY": "256"}
    done = subprocess.run([sys.executable, "-m", "controlplane.cli", "serve"], env=env, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 2
    said = " ".join(done.stdout.split())
    assert "max_connections" in said and "HETEROPLANE_API_WORKERS" in said, said
    assert f"may open {16 * 257 + 4 + 256}" in said, said


def test_connections_needed_counts_every_pool():
    assert connections_needed(Settings(api_workers=1, api_concurrency=16)) == 16 + 4
    assert connections_needed(Settings(api_workers=3, api_concurrency=10)) == 3 * 11 + 4 + 10


def test_the_connection_budget_check_passes_what_fits(postgres_url):
    engine = create_engine(postgres_url)
    try:
        check_connection_budget(engine, 5)
        with pytest.raises(RuntimeError, match="max_connections"):
            check_connection_budget(engine, 1_000_000)
    finally:
        engine.dispose()


class FakeIngest:
    def __init__(self, stats):
        self._stats = stats

    def stats(self):
        return self._stats


def test_published_status_round_trips_and_goes_stale(tmp_path):
    from collectors.pipeline import IngestStats

    stats = IngestStats(queued_batches=1, accepted_batches=2, refused_batches=3, open_traces=4, evicted_traces=5,
                        orphan_spans=6, cross_workload_calls=7, last_error="OperationalError: gone")
    path = tmp_path / "status.json"
    components = {"prometheus": "ok"}
    board = StatusBoard(path, components, FakeIngest(stats))
    board.publish()
    written = json.loads(path.read_text())["at"]
    assert PublishedStatus(path, now=lambda: written + 1).read() == MainStatus({"prometheus": "ok"}, stats, ())

    components["prometheus"] = "down: refused"  # the board reads the live mapping at each publish
    board.publish()
    assert PublishedStatus(path, now=lambda: written + 1).read().components == {"prometheus": "down: refused"}

    stale = PublishedStatus(path, now=lambda: written + STALE_AFTER_S + 5).read().components
    assert stale["serve"].startswith("error: the main process has not reported for")
    assert not list(tmp_path.glob("*.partial"))

    missing = PublishedStatus(tmp_path / "absent.json").read()
    assert missing == MainStatus({"serve": "error: the main process has published no status"})


def test_published_status_without_ingest(tmp_path):
    path = tmp_path / "status.json"
    StatusBoard(path, {}, None).publish()
    assert PublishedStatus(path).read() == MainStatus({})


def test_published_status_carries_the_latest_cycles_unmet_slas(tmp_path):
    """A worker's /health names the SLAs the main process's reconciler could not meet: every field of
    each shortfall, enums included, survives the file."""
    shortfall = Shortfall(workload="7", priority=Priority.batch, kind=ShortfallKind.demand,
                          cause=ShortfallCause.capacity, demand_rps=3.5, served_rps=1.25, device_class="h100",
                          devices_needed=9, devices_healthy=8, extra_usd_per_hour=4.5)
    reconciler = SimpleNamespace(last=SimpleNamespace(shortfalls=(shortfall,)))
    path = tmp_path / "status.json"
    StatusBoard(path, {}, None, reconciler=reconciler).publish()
    assert PublishedStatus(path).read().shortfalls == (shortfall,)
