"""The REST API under open-loop load on PostgreSQL (issue 12, point 2; a first version).

    PYTHONPATH=. python bench/api_load.py [--rates 50 100 200] [--seconds 10] [--concurrency 16]

Method. A fresh PostgreSQL database (127.0.0.1:5432, trust auth) gets the schema, the catalog, two
tenants with a workload and a migration policy each, and a viewer token. `heteroplane serve` runs
in its own process (`HETEROPLANE_API_CONCURRENCY` as given), so that the generator's threads do
not share its interpreter. For each rate
the generator sends requests at fixed, evenly spaced times (open loop: a slow answer does not delay
the next send), cycling through list and read routes, from a pool of sender threads large enough
never to be the bottleneck. Latency is measured from each request's scheduled time, so time spent
queued behind a slow server counts. Printed per rate: answered per status, p50 / p95 / p99 ms; last,
p99 at the highest rate against the issue's 50 ms goal.
"""

import argparse
import os
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import httpx  # noqa: E402
from sqlalchemy import create_engine, text  # noqa: E402
from sqlmodel import Session  # noqa: E402

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
    """Send `rate` requests a second for `seconds`, open loop; (count per status, latencies in ms)."""
    local = threading.local()
    statuses: dict[int, int] = {}
    latencies: list[float] = []
    lock = threading.Lock()

    def send(i: int, due: float) -> None:
        client = getattr(local, "client", None)
        if client is None:
            client = local.client = httpx.Client(base_url=base, headers={"Authorization": f"Bearer {token}"},
                                                 timeout=30)
        delay = due - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        try:
            status = client.get(ROUTES[i % len(ROUTES)]).status_code
        except httpx.HTTPError:
            status = 0
        ms = (time.perf_counter() - due) * 1000
        with lock:
            statuses[status] = statuses.get(status, 0) + 1
            latencies.append(ms)

    count = int(rate * seconds)
    start = time.perf_counter() + 0.5
    with ThreadPoolExecutor(max_workers=min(256, int(rate) + 16)) as pool:
        for i in range(count):
            pool.submit(send, i, start + i / rate)
    return statuses, latencies


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rates", type=float, nargs="+", default=[50, 100, 200])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--concurrency", type=int, default=16)
    args = parser.parse_args()
    url = fresh_database()
    server = None
    try:
        upgrade(url)
        engine = make_engine(url)
        token = seed(engine)
        engine.dispose()
        port, otlp = free_port(), free_port()
        env = {**os.environ, "HETEROPLANE_DATABASE_URL": url, "HETEROPLANE_API_PORT": str(port),
               "HETEROPLANE_OTLP_PORT": str(otlp), "HETEROPLANE_API_CONCURRENCY": str(args.concurrency),
               "HETEROPLANE_LOG_LEVEL": "WARNING"}
        server = subprocess.Popen([sys.executable, "-m", "controlplane.cli", "serve"], env=env,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        base = f"http://127.0.0.1:{port}"
        wait_until_up(base)
        p99s = {}
        for rate in args.rates:
            statuses, latencies = run_rate(base, token, rate, args.seconds)
            p99s[rate] = percentile(latencies, 0.99)
            print(f"{rate:6.0f} req/s  {dict(sorted(statuses.items()))}  p50 {statistics.median(latencies):7.1f} ms  "
                  f"p95 {percentile(latencies, 0.95):7.1f} ms  p99 {p99s[rate]:7.1f} ms", flush=True)
        top = max(args.rates)
        print(f"p99 at {top:g} req/s: {p99s[top]:.1f} ms = {p99s[top] / 50:.2f}x the 50 ms goal")
    finally:
        if server is not None:
            server.send_signal(signal.SIGINT)
            server.wait(timeout=30)
        drop_database(url)


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
