"""End-to-end OTLP/HTTP ingest at fleet scale, on PostgreSQL (issue 15, point 7).

    PYTHONPATH=. python bench/ingest_http.py [--seconds 10] [--rates 10000 30000] [--workloads 1 1000]

Method. A fresh PostgreSQL database gets the schema, the catalog and two tenants with an operator
token each. `heteroplane serve` runs in its own process (HETEROPLANE_ACTUATOR=none, one API
process: the receiver, the ingest queue and its writer share one interpreter, so "per core"), the
generator in this one, on the machine's other core. Requests are 512-span OTLP protobuf bodies of
GenAI agent traces (bench/ingest.py's), pre-serialised; with W workloads, request i names
service.name agent-(i mod W). They are sent open loop (at fixed, evenly spaced times, whatever
earlier ones are doing) at each offered rate for --seconds; then the queue is watched (GET /health's
ingest.queued_batches) until it is empty. Printed per (workloads, rate): requests per status,
spans accepted per second of load, the drain time after the load stopped, and spans stored per
second over load + drain.

Adversarial: tenant acme sends one request of 100,000 spans with distinct names while tenant
globex sends 512-span requests at 2,000 spans/s; printed: how long acme's request took to be
stored (queue empty after it), and globex's statuses.

The figure printed last: spans stored per second with the most workloads at the highest rate, as a
ratio of the same with one workload (the cardinality's cost), and each against the 20,000 goal.
"""

import argparse
import asyncio
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import httpx  # noqa: E402
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest  # noqa: E402
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans  # noqa: E402
from sqlmodel import Session  # noqa: E402

from bench.api_load import drop_database, free_port, fresh_database, wait_until_up  # noqa: E402
from bench.ingest import BATCH, T0_NS, _kv, _span, agent_trace  # noqa: E402
from bench.openloop import open_loop  # noqa: E402
from controlplane.auth import mint_token  # noqa: E402
from controlplane.db import make_engine, upgrade  # noqa: E402
from controlplane.models import Role, Tenant  # noqa: E402
from controlplane.seed import seed_catalog  # noqa: E402


def seed(url: str) -> dict[str, str]:
    engine = make_engine(url)
    with Session(engine) as session:
        seed_catalog(session)
        tokens = {}
        for name in ("acme", "globex"):
            tenant = Tenant(name=name)
            session.add(tenant)
            session.flush()
            tokens[name] = mint_token(session, f"{name}-otlp", Role.operator, tenant_id=tenant.id)[1]
        tokens["admin"] = mint_token(session, "bench", Role.admin)[1]
        session.commit()
    engine.dispose()
    return tokens


def bodies(count: int, workloads: int, seed: int = 1) -> list[bytes]:
    """`count` requests of BATCH spans, request i from workload agent-(i mod workloads)."""
    rng = random.Random(seed)
    out, pending, n = [], [], 0
    while len(out) < count:
        while len(pending) < BATCH:
            pending += agent_trace(rng, n)
            n += 1
        chunk, pending = pending[:BATCH], pending[BATCH:]
        resource = [_kv("service.name", f"agent-{len(out) % workloads}")]
        out.append(ExportTraceServiceRequest(resource_spans=[
            ResourceSpans(resource={"attributes": resource}, scope_spans=[ScopeSpans(spans=chunk)])
        ]).SerializeToString())
    return out


def distinct_names(spans: int) -> bytes:
    """One request of `spans` root spans, each with a name of its own (a runaway instrumentation)."""
    rng = random.Random(5)
    chunk = [_span(rng.getrandbits(128).to_bytes(16, "big"), 1, None, f"execute_tool tool_{i}", T0_NS + i, 5.0,
                   {"gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": f"tool_{i}"}) for i in range(spans)]
    return ExportTraceServiceRequest(resource_spans=[
        ResourceSpans(resource={"attributes": [_kv("service.name", "runaway")]}, scope_spans=[ScopeSpans(spans=chunk)])
    ]).SerializeToString()


async def post_traces(otlp: str, token: str, payloads: list[bytes], per_second: float,
                      seconds: float) -> dict[int, int]:
    """POST payloads (cycling) to /v1/traces at `per_second` requests/s for `seconds`, open loop; count per
    status."""

    def post(host: str, i: int) -> bytes:
        body = payloads[i % len(payloads)]
        return (f"POST /v1/traces HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {token}\r\n"
                f"Content-Type: application/x-protobuf\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body)

    result = await open_loop(otlp, post, per_second, seconds, answer_timeout_s=60)
    if result.errors:
        print(f"  no answer (status 0): {result.errors}", flush=True)
    return result.statuses


def drained(api: str, admin: str, timeout_s: float = 300.0) -> float:
    """Seconds until the ingest queue is empty (and the writer idle: queued_batches 0 twice, 0.2 s apart)."""
    start = time.monotonic()
    zeros = 0
    while time.monotonic() - start < timeout_s:
        stats = httpx.get(f"{api}/api/v1/health", headers={"Authorization": f"Bearer {admin}"}, timeout=10).json()
        zeros = zeros + 1 if (stats.get("ingest") or {}).get("queued_batches", 0) == 0 else 0
        if zeros >= 2:
            return time.monotonic() - start
        time.sleep(0.2)
    return float("inf")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--rates", type=float, nargs="+", default=[10_000, 30_000], help="offered spans/s")
    parser.add_argument("--workloads", type=int, nargs="+", default=[1, 1000])
    parser.add_argument("--adversarial-spans", type=int, default=100_000)
    args = parser.parse_args()
    url = fresh_database()
    stored: dict[tuple[int, float], float] = {}
    try:
        upgrade(url)
        tokens = seed(url)
        api_port, otlp_port = free_port(), free_port()
        env = {**os.environ, "HETEROPLANE_DATABASE_URL": url, "HETEROPLANE_API_PORT": str(api_port),
               "HETEROPLANE_OTLP_PORT": str(otlp_port), "HETEROPLANE_API_WORKERS": "1",
               "HETEROPLANE_ACTUATOR": "none", "HETEROPLANE_LOG_LEVEL": "WARNING",
               "HETEROPLANE_OTLP_MAX_BODY_BYTES": str(16 * 2**20)}
        server = subprocess.Popen([sys.executable, "-m", "controlplane.cli", "serve"], env=env,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        api, otlp = f"http://127.0.0.1:{api_port}", f"http://127.0.0.1:{otlp_port}"
        try:
            wait_until_up(api)
            for workloads in args.workloads:
                payloads = bodies(max(64, min(workloads, 2000)), workloads, seed=workloads)
                asyncio.run(post_traces(otlp, tokens["acme"], payloads, 4, 1))  # warm: the workloads exist
                drained(api, tokens["admin"])
                for rate in args.rates:
                    statuses = asyncio.run(post_traces(otlp, tokens["acme"], payloads, rate / BATCH, args.seconds))
                    drain = drained(api, tokens["admin"])
                    spans = statuses.get(200, 0) * BATCH
                    stored[workloads, rate] = spans / (args.seconds + drain)
                    print(f"{workloads:5d} workload(s) offered {rate:8,.0f} spans/s  {dict(sorted(statuses.items()))}  "
                          f"accepted {spans / args.seconds:8,.0f} spans/s  drained in {drain:5.1f} s  "
                          f"stored {stored[workloads, rate]:8,.0f} spans/s", flush=True)
            runaway = distinct_names(args.adversarial_spans)
            small = bodies(64, 3, seed=99)

            async def adversarial() -> tuple[dict[int, int], dict[int, int], float]:
                start = time.monotonic()
                big = asyncio.create_task(post_traces(otlp, tokens["acme"], [runaway], 1.0, 1.0))
                others = asyncio.create_task(post_traces(otlp, tokens["globex"], small, 2_000 / BATCH, 10))
                acme = await big
                sent = time.monotonic() - start
                return acme, await others, sent

            acme, globex, sent = asyncio.run(adversarial())
            drain = drained(api, tokens["admin"])
            print(f"adversarial: {args.adversarial_spans:,} distinct names ({len(runaway) / 2**20:.1f} MiB) "
                  f"{dict(acme)}, acknowledged in {sent:.1f} s, queue empty {drain:.1f} s after the other "
                  f"tenant's 10 s; the other tenant at 2,000 spans/s: {dict(sorted(globex.items()))}", flush=True)
        finally:
            server.send_signal(signal.SIGINT)
            server.wait(timeout=60)
    finally:
        drop_database(url)
    top, most, least = max(args.rates), max(args.workloads), min(args.workloads)
    print(f"stored spans/s at {top:,.0f} offered: {most} workloads {stored[most, top]:,.0f} = "
          f"{stored[most, top] / stored[least, top]:.2f}x {least} workload(s) ({stored[least, top]:,.0f}); "
          f"{stored[most, top] / 20_000:.2f}x and {stored[least, top] / 20_000:.2f}x the 20,000 goal")


if __name__ == "__main__":
    main()
