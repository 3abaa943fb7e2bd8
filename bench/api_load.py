"""The REST API under open-loop load on PostgreSQL (issue 12, point 2).

    PYTHONPATH=. python bench/api_load.py [--rates 50 100 200 400] [--seconds 10] [--concurrency 16]
                                          [--workers 1 2]

Method. A fresh PostgreSQL database (127.0.0.1:5432, trust auth) gets the schema, the catalog, two
tenants with a workload and a migration policy each, and a viewer token. `heteroplane serve` runs
in its own processes (`HETEROPLANE_API_CONCURRENCY` and `HETEROPLANE_API_WORKERS` as given), so
that the generator's threads do not share its interpreter; each worker count in turn, the baseline
(one process, as before issue 12's workers) first. For each rate
the generator sends requests at fixed, evenly spaced times (open loop: a slow answer does not delay
the next send), cycling through list and read routes, from a pool of sender threads large enough
never to be the bottleneck. Latency is measured from each request's scheduled time, so time spent
queued behind a slow server counts. Printed per worker count and rate: answered per status, p50 /
p95 / p99 ms; last, p99 at 200 req/s with the most workers against the issue's 50 ms goal, and at
the highest rate against one worker's in the same run.
"""

import argparse
import asyncio
import os
import signal
import socket
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import httpx  # noqa: E402
from sqlalchemy import create_engine, text  # noqa: E402
from sqlmodel import Session  # noqa: E402

from bench.openloop import open_loop  # noqa: E402
from controlplane.auth import mint_token  # noqa: E402
from controlplane.db import make_engine, upgrade  # noqa: E402
from controlplane.models import MigrationPolicy, Role, Tenant, Workload  # noqa: E402
from controlplane.seed import seed_catalog  # noqa: E402

ADMIN_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
ROUTES = ("/api/v1/workloads", "/api/v1/placements", "/api/v1/migration-policies", "/api/v1/device-classes",
          "/api/v1/pins", "/api/v1/nodes")


def fresh_database() -> str:
    name = f"heteroplane_load_{uuid.uuid4().hex[:10]}"
    admin = create_engine(ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    return f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"


def drop_database(url: str) -> None:
    admin = create_engine(ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{url.rsplit("/", 1)[1]}" WITH (FORCE)'))
    admin.dispose()


def seed(engine) -> str:
    with Session(engine) as session:
        seed_catalog(session)
        for name in ("acme", "globex"):
            tenant = Tenant(name=name, display_name=name.title())
            session.add(tenant)
            session.flush()
            workload = Workload(tenant_id=tenant.id, name=f"{name}-agent")
            session.add(workload)
            session.flush()
            session.add(MigrationPolicy(name=f"{name}-policy", tenant_id=tenant.id))
        _, token = mint_token(session, "load", Role.viewer)
        session.commit()
    return token


def run_rate(base: str, token: str, rate: float, seconds: float) -> tuple[dict[int, int], list[float]]:
    """Send `rate` requests a second for `seconds`, open loop, cycling through ROUTES; (count per status,
    latencies in ms)."""

    def get(host: str, i: int) -> bytes:
        route = ROUTES[i % len(ROUTES)]
        return f"GET {route} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {token}\r\n\r\n".encode()

    result = asyncio.run(open_loop(base, get, rate, seconds))
    return result.statuses, result.latencies_ms


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rates", type=float, nargs="+", default=[50, 100, 200, 400])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    args = parser.parse_args()
    url = fresh_database()
    try:
        upgrade(url)
        engine = make_engine(url)
        token = seed(engine)
        engine.dispose()
        p99s = {}
        for workers in args.workers:
            for rate, p99 in measure(url, token, workers, args).items():
                p99s[workers, rate] = p99
    finally:
        drop_database(url)
    goal = 200.0 if 200 in args.rates else max(args.rates)
    top, most, least = max(args.rates), max(args.workers), min(args.workers)
    print(f"p99 at {goal:g} req/s, {most} worker(s): {p99s[most, goal]:.1f} ms = {p99s[most, goal] / 50:.2f}x the "
          f"50 ms goal; at {top:g} req/s {most} worker(s)' p99 is {p99s[most, top] / p99s[least, top]:.2f}x "
          f"{least} worker(s)'")


def measure(url: str, token: str, workers: int, args) -> dict[float, float]:
    """Start serve with `workers` API processes, load it at each rate; p99 ms per rate."""
    port, otlp = free_port(), free_port()
    env = {**os.environ, "HETEROPLANE_DATABASE_URL": url, "HETEROPLANE_API_PORT": str(port),
           "HETEROPLANE_OTLP_PORT": str(otlp), "HETEROPLANE_API_CONCURRENCY": str(args.concurrency),
           "HETEROPLANE_API_WORKERS": str(workers), "HETEROPLANE_LOG_LEVEL": "WARNING"}
    server = subprocess.Popen([sys.executable, "-m", "controlplane.cli", "serve"], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    p99s = {}
    try:
        base = f"http://127.0.0.1:{port}"
        wait_until_up(base)
        run_rate(base, token, 20, 2)  # warm: every worker's connections and caches
        for rate in args.rates:
            statuses, latencies = run_rate(base, token, rate, args.seconds)
            p99s[rate] = percentile(latencies, 0.99)
            print(f"{workers} worker(s) {rate:6.0f} req/s  {dict(sorted(statuses.items()))}  "
                  f"p50 {statistics.median(latencies):7.1f} ms  p95 {percentile(latencies, 0.95):7.1f} ms  "
                  f"p99 {p99s[rate]:7.1f} ms", flush=True)
    finally:
        server.send_signal(signal.SIGINT)
        server.wait(timeout=30)
    return p99s


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until_up(base: str, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{base}/api/v1/health", timeout=2).status_code in (200, 503):
                return
        except httpx.HTTPError:
            time.sleep(0.2)
    raise RuntimeError(f"heteroplane serve did not answer at {base} within {timeout_s:g} s")


if __name__ == "__main__":
    main()
