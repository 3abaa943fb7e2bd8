"""Ingest throughput, memory and HTTP latency of the OTLP trace path.

    .venv/bin/python bench/ingest.py [--spans 1000000] [--seconds 20]

1. Throughput, one core: OTLP protobuf batches of 512 GenAI spans (agent traces: an
   invoke_agent root, chats, embeddings, tool calls, a database call) go through
   decode -> normalise -> window -> aggregate (the pipeline with no database), against a
   raw `ParseFromString` of the same batches in the same run.
2. Memory: resident set size after 10% and after 100% of `--spans` spans through the same
   path; it must stay flat (the trace window and the per-flush aggregates are bounded).
3. HTTP: the real receiver under uvicorn in a child process, a loopback load generator
   sending 10,000 spans/s as 512-span protobuf requests for `--seconds`; p99 latency of
   /v1/traces against /healthz at the same request rate.

The figure printed last is end-to-end spans/s as a ratio of the raw decode rate.
"""

import argparse
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest  # noqa: E402
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue  # noqa: E402
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span  # noqa: E402

from collectors.normalise import normalise_request  # noqa: E402
from collectors.pipeline import Ingest  # noqa: E402

BATCH = 512
T0_NS = time.time_ns() - 3600 * 10**9


def _kv(key, value):
    if isinstance(value, int):
        return KeyValue(key=key, value=AnyValue(int_value=value))
    return KeyValue(key=key, value=AnyValue(string_value=value))


def _span(trace: bytes, span: int, parent: int | None, name: str, start_ns: int, ms: float, attrs: dict) -> Span:
    return Span(
        trace_id=trace,
        span_id=span.to_bytes(8, "big"),
        parent_span_id=parent.to_bytes(8, "big") if parent else b"",
        name=name,
        kind=Span.SPAN_KIND_CLIENT,
        start_time_unix_nano=start_ns,
        end_time_unix_nano=start_ns + int(ms * 1e6),
        attributes=[_kv(k, v) for k, v in attrs.items()],
    )


def agent_trace(rng: random.Random, n: int) -> list[Span]:
    """One agent request of about 16 spans, as GenAI-instrumented apps emit it."""
    trace = rng.getrandbits(128).to_bytes(16, "big")
    start = T0_NS + n * 1_000_000
    spans = [_span(trace, 1, None, "invoke_agent coder", start, 900,
                   {"gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": "coder"})]
    sid = 2
    for turn in range(rng.randint(3, 6)):
        spans.append(_span(trace, sid, 1, "chat qwen2.5-coder-32b", start + turn, rng.uniform(50, 400), {
            "gen_ai.operation.name": "chat", "gen_ai.provider.name": "vllm",
            "gen_ai.request.model": "qwen2.5-coder-32b", "gen_ai.usage.input_tokens": rng.randint(50, 3000),
            "gen_ai.usage.output_tokens": rng.randint(5, 500), "heteroplane.device_class": "H100-SXM"}))
        spans.append(_span(trace, sid + 1, 1, "execute_tool run_tests", start + turn, rng.uniform(5, 80), {
            "gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": "run_tests"}))
        sid += 2
    spans.append(_span(trace, sid, 1, "embeddings bge", start, 8, {
        "gen_ai.operation.name": "embeddings", "gen_ai.request.model": "bge-large-en",
        "gen_ai.usage.input_tokens": 200}))
    spans.append(_span(trace, sid + 1, 1, "SELECT", start, 3, {"db.system.name": "postgresql"}))
    return spans


def batches(count: int, seed: int = 1) -> list[bytes]:
    """`count` serialised requests of BATCH spans each (whole traces, as a batch processor sends them)."""
    rng = random.Random(seed)
    out, pending, n = [], [], 0
    resource_ = [_kv("service.name", "coding-agent"), _kv("heteroplane.tenant", "acme")]
    while len(out) < count:
        while len(pending) < BATCH:
            pending += agent_trace(rng, n)
            n += 1
        chunk, pending = pending[:BATCH], pending[BATCH:]
        request = ExportTraceServiceRequest(resource_spans=[
            ResourceSpans(resource={"attributes": resource_}, scope_spans=[ScopeSpans(spans=chunk)])
        ])
        out.append(request.SerializeToString())
    return out


def raw_decode_rate(bodies: list[bytes]) -> float:
    start = time.process_time()
    for body in bodies:
        ExportTraceServiceRequest().ParseFromString(body)
    return len(bodies) * BATCH / (time.process_time() - start)


def pipeline_rate(bodies: list[bytes], ingest: Ingest, flush_every: int = 20) -> float:
    """decode -> normalise -> window -> aggregate, CPU time of this thread only."""
    start = time.process_time()
    for i, body in enumerate(bodies, 1):
        request = ExportTraceServiceRequest()
        request.ParseFromString(body)
        ingest.submit(normalise_request(request).records)
        if i % flush_every == 0:
            ingest.flush()
    ingest.flush()
    return len(bodies) * BATCH / (time.process_time() - start)


def rss_mib() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def memory(spans: int) -> tuple[float, float]:
    """RSS after 10% and after 100% of `spans` spans through the pipeline, every trace a new one."""
    ingest = Ingest(None, max_queued_batches=64)
    total = spans // BATCH
    at_tenth = 0.0
    for i in range(total):
        request = ExportTraceServiceRequest()
        request.ParseFromString(batches(1, seed=1000 + i)[0])
        ingest.submit(normalise_request(request).records)
        if i % 20 == 19:
            ingest.flush()
        if i == total // 10:
            at_tenth = rss_mib()
    ingest.flush()
    return at_tenth, rss_mib()


_SERVER = """
import sys, uvicorn
from collectors.receiver import create_receiver_app
from controlplane.auth import mint_token
from controlplane.db import make_engine
from controlplane.runtime import prepare_database
from controlplane.settings import Settings
from sqlmodel import Session
from controlplane.models import Role
from controlplane.auth import otlp_authoriser
from controlplane.collected import database_sink
from collectors.pipeline import Ingest
settings = Settings(data_dir=sys.argv[1])
engine = make_engine(settings.effective_database_url)
prepare_database(engine, settings)
with Session(engine) as session:
    _, token = mint_token(session, "bench", Role.operator)
    session.commit()
print(token, flush=True)
uvicorn.run(create_receiver_app(otlp_authoriser(engine), Ingest(database_sink(engine)), settings.otlp_max_body_bytes,
                                owns_ingest=True), host="127.0.0.1", port=int(sys.argv[2]), log_level="warning")
"""


def _p99(latencies: list[float]) -> float:
    return statistics.quantiles(latencies, n=100)[98]


def _load(url: str, body: bytes | None, headers: dict, rate_per_s: float, seconds: float) -> tuple[list[float], int]:
    """Open-loop load: requests start on schedule whatever the previous ones do; returns latencies (ms)."""
    import httpx

    latencies: list[float] = []
    errors = 0
    lock = threading.Lock()
    client = httpx.Client(timeout=10, limits=httpx.Limits(max_connections=32))

    def one() -> None:
        nonlocal errors
        start = time.perf_counter()
        try:
            response = client.post(url, content=body, headers=headers) if body is not None else client.get(url)
            ok = response.status_code == 200
        except httpx.HTTPError:
            ok = False
        with lock:
            latencies.append((time.perf_counter() - start) * 1000)
            errors += not ok

    threads = []
    begin = time.perf_counter()
    for i in range(int(rate_per_s * seconds)):
        delay = begin + i / rate_per_s - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        thread = threading.Thread(target=one)
        thread.start()
        threads.append(thread)
    for thread in threads:
        thread.join()
    client.close()
    return latencies, errors


def http_latency(seconds: float, spans_per_s: float = 10_000) -> tuple[float, float, float]:
    """p99 of /v1/traces at `spans_per_s` and of /healthz at the same request rate, real server, loopback."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with tempfile.TemporaryDirectory() as data:
        server = subprocess.Popen(
            [sys.executable, "-c", _SERVER, data, str(port)],
            stdout=subprocess.PIPE, text=True, cwd=Path(__file__).resolve().parents[1],
        )
        try:
            token = server.stdout.readline().strip()
            base = f"http://127.0.0.1:{port}"
            import httpx

            for _ in range(100):
                try:
                    httpx.get(f"{base}/healthz", timeout=1)
                    break
                except httpx.HTTPError:
                    time.sleep(0.1)
            bodies = batches(50, seed=3)
            rate = spans_per_s / BATCH
            headers = {"Content-Type": "application/x-protobuf", "Authorization": f"Bearer {token}"}
            _load(f"{base}/v1/traces", bodies[0], headers, rate, 2)  # warm up
            traces, errors = _load(f"{base}/v1/traces", bodies[1], headers, rate, seconds)
            health, _ = _load(f"{base}/healthz", None, {}, rate, seconds)
            if errors:
                print(f"  {errors} of {len(traces)} trace exports failed")
            return _p99(traces), _p99(health), len(traces) * BATCH / seconds
        finally:
            server.terminate()
            server.wait(timeout=30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batches", type=int, default=200, help="distinct 512-span batches for the throughput run")
    parser.add_argument("--spans", type=int, default=1_000_000, help="spans for the memory run")
    parser.add_argument("--seconds", type=float, default=20.0, help="duration of the HTTP load run")
    parser.add_argument("--skip-http", action="store_true")
    args = parser.parse_args()

    bodies = batches(args.batches)
    raw = statistics.median(raw_decode_rate(bodies) for _ in range(3))
    end_to_end = statistics.median(pipeline_rate(bodies, Ingest(None, max_queued_batches=64)) for _ in range(3))
    print(f"raw ParseFromString        {raw:>12,.0f} spans/s per core")
    print(f"decode→normalise→aggregate {end_to_end:>12,.0f} spans/s per core (target >= 50,000)")

    tenth, full = memory(args.spans)
    print(f"RSS after {args.spans // 10:,} spans: {tenth:.0f} MiB; after {args.spans:,}: {full:.0f} MiB "
          f"(growth {full - tenth:+.0f} MiB)")

    if not args.skip_http:
        traces_p99, health_p99, achieved = http_latency(args.seconds)
        print(f"HTTP at {achieved:,.0f} spans/s: p99 /v1/traces {traces_p99:.1f} ms, p99 /healthz {health_p99:.1f} ms "
              f"(ratio {traces_p99 / health_p99:.1f}x)")

    print(f"end-to-end / raw decode: {end_to_end / raw:.3f}x (target >= 0.5x)")


if __name__ == "__main__":
    main()
