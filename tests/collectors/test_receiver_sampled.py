"""End to end: the same traffic, unsampled and sampled at 10% and 1% by the OTel SDK's consistent
probability sampler, exported by the official OTLP/HTTP exporter, gives the same profiles.

The SDK's sampler is the spec's: a root span is kept iff its trace id's low 56 bits R >= T, and
it writes ``ot=th:<T>`` into the span's trace state (children follow their parent's threshold).
The experimental composable samplers are the only SDK samplers that write ``th`` (1.45); the
stable TraceIdRatioBased does not. Two gaps between the SDK's tracer and those samplers are
bridged by `SpecSampler`: the tracer does not hand a sampler its parent's trace state (a child
would lose its threshold, and count once), and the composite sampler returns only the attributes
it adds, which the tracer then gives the span instead of its own.

Tolerances come from the sampling error, not a fixed percentage. Of N unsampled visits, K ~
Binomial(N, p) are kept and counted 1/p times each, so the estimate K/p has standard error
sqrt(N (1 - p) / p); it must fall within 4 of them. A quantile of the kept latencies, q of K, is
the population's quantile at a rank q +- 4 sqrt(q (1 - q) / K); the sampled p99 must lie between
the unsampled sketch's quantiles at those ranks (each sketch within 1%).
"""

import math
import random
from collections import defaultdict

from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace._sampling_experimental import (
    composable_parent_threshold,
    composable_traceid_ratio_based,
    composite_sampler,
)
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.id_generator import IdGenerator
from opentelemetry.sdk.trace.sampling import ALWAYS_ON, Sampler, SamplingResult
from sqlmodel import Session, select

from collectors.sketch import quantiles
from controlplane.models import Edge, Fragment, FragmentProfile, ProfileBucket, RequestStat, Tenant, Workload
from tests.collectors.test_receiver_otel_exporter import receiver_url  # noqa: F401 (a fixture)

TRACES = 20_000
SPAN_SECONDS = 110  # the traffic spreads over two minutes (starting within 110 s, ending before 120 s)
T0_NS = 1_767_268_800 * 10**9  # 2026-01-01 12:00:00 UTC, on a minute
MS = 1_000_000
SPANS_PER_EXPORT = 150  # within the test receiver's 64 KiB body limit
RATES = {"shop-all": None, "shop-10pct": 0.1, "shop-1pct": 0.01}


class ReplayedIds(IdGenerator):
    """The same trace ids on every run, so every run sends the same traffic (and randomness)."""

    def __init__(self, trace_ids: list[int]) -> None:
        self._trace_ids = iter(trace_ids)
        self._span_ids = random.Random(2)

    def generate_trace_id(self) -> int:
        return next(self._trace_ids)

    def generate_span_id(self) -> int:
        return self._span_ids.getrandbits(64) | 1

    def is_trace_id_random(self) -> bool:
        return True


class SpecSampler(Sampler):
    """The SDK's consistent probability sampler at `rate` (a root decides, children follow), handed
    the parent span's trace state, and keeping the span's own attributes."""

    def __init__(self, rate: float) -> None:
        self._sampler = composite_sampler(composable_parent_threshold(composable_traceid_ratio_based(rate)))

    def should_sample(self, parent_context, trace_id, name, kind=None, attributes=None, links=None,
                      trace_state=None) -> SamplingResult:
        parent = trace.get_current_span(parent_context).get_span_context()
        result = self._sampler.should_sample(parent_context, trace_id, name, kind, attributes, links,
                                             trace_state if trace_state is not None else parent.trace_state)
        return SamplingResult(result.decision, {**(attributes or {}), **(result.attributes or {})},
                              result.trace_state)

    def get_description(self) -> str:
        return self._sampler.get_description()


def traffic() -> tuple[list[int], list[float]]:
    """Trace ids and the chat latencies (ms, log-normal: median 100 ms, a long tail) of each request."""
    rng = random.Random(1)
    return [rng.getrandbits(128) | 1 for _ in range(TRACES)], [rng.lognormvariate(math.log(100), 0.6)
                                                                for _ in range(TRACES)]


def send(url: str, token: str, service: str, sampler: Sampler, ingest) -> int:
    """Run the traffic through an SDK provider with `sampler`; export what it keeps. Returns spans sent."""
    trace_ids, latencies = traffic()
    recorded = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": service, "heteroplane.tenant": "acme"}),
                              sampler=sampler, id_generator=ReplayedIds(trace_ids))
    provider.add_span_processor(SimpleSpanProcessor(recorded))
    tracer = provider.get_tracer("shop")
    for i, latency in enumerate(latencies):
        start = T0_NS + i * SPAN_SECONDS * 10**9 // TRACES
        agent = tracer.start_span("invoke_agent shop", start_time=start, attributes={
            "gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": "shop"})
        chat = tracer.start_span("chat m", context=trace.set_span_in_context(agent), start_time=start + MS,
                                 attributes={"gen_ai.operation.name": "chat", "gen_ai.request.model": "m",
                                             "gen_ai.usage.input_tokens": 100})
        chat.end(end_time=start + MS + int(latency * MS))
        agent.end(end_time=start + 2 * MS + int(latency * MS))
    spans = recorded.get_finished_spans()
    exporter = OTLPSpanExporter(endpoint=url, headers={"authorization": f"Bearer {token}"})
    for n in range(0, len(spans), SPANS_PER_EXPORT):
        assert exporter.export(spans[n:n + SPANS_PER_EXPORT]) == SpanExportResult.SUCCESS
        if n // SPANS_PER_EXPORT % 100 == 99:
            ingest.flush()
    exporter.shutdown()
    provider.shutdown()
    ingest.flush()
    return len(spans)


def probability(rate: float) -> float:
    """The probability the SDK's sampler really keeps at `rate`: its threshold's, (2^56 - T) / 2^56."""
    threshold = 2**56 - round(rate * 2**56)
    return (2**56 - threshold) / 2**56


class Profiles:
    """What the store holds per workload: chat visits and requests per minute, edge calls, chat latency sketch."""

    def __init__(self, engine) -> None:
        self.visits: dict[str, dict] = defaultdict(lambda: defaultdict(int))
        self.requests: dict[str, dict] = defaultdict(lambda: defaultdict(int))
        self.calls: dict[str, int] = defaultdict(int)
        self.sketch: dict[str, dict[int, int]] = defaultdict(lambda: defaultdict(int))
        with Session(engine) as session:
            names = {w.id: w.name for w in session.exec(select(Workload).join(Tenant).where(Tenant.name == "acme"))}
            fragments = {f.id: (names[f.workload_id], f.key) for f in session.exec(select(Fragment))}
            for p in session.exec(select(FragmentProfile)):
                workload, key = fragments[p.fragment_id]
                if key == "llm:m":
                    self.visits[workload][p.minute] += p.visits
            for b in session.exec(select(ProfileBucket).where(ProfileBucket.series == "latency_ms")):
                workload, key = fragments[b.fragment_id]
                if key == "llm:m":
                    self.sketch[workload][b.bucket] += b.count
            for e in session.exec(select(Edge)):
                self.calls[names[e.workload_id]] += e.calls
            for r in session.exec(select(RequestStat)):
                self.requests[names[r.workload_id]][r.minute] += r.requests




def within_sampling_error(estimate: float, truth: int, p: float) -> bool:
    """|K/p - N| <= 4 sqrt(N (1 - p) / p): four binomial standard errors."""
    return abs(estimate - truth) <= 4 * math.sqrt(truth * (1 - p) / p)


def test_sampled_traffic_gives_the_unsampled_rates_and_p99(engine, ingest, receiver_url, admin_token):  # noqa: F811
    sent = {service: send(receiver_url, admin_token, service, ALWAYS_ON if rate is None else SpecSampler(rate), ingest)
            for service, rate in RATES.items()}
    stored = Profiles(engine)
    truth = stored.visits["shop-all"]
    assert sent["shop-all"] == 2 * TRACES and sum(truth.values()) == TRACES and len(truth) == 2
    for service in ("shop-10pct", "shop-1pct"):
        p = probability(RATES[service])
        assert sent[service] < 2 * TRACES * p * 1.5  # the SDK did drop most traces
        sampled = stored.visits[service]
        assert sampled.keys() == truth.keys()
        for minute, visits in truth.items():  # visits per minute: the rate the planner reads
            assert within_sampling_error(sampled[minute], visits, p), (service, minute, sampled[minute], visits)
            assert within_sampling_error(stored.requests[service][minute], stored.requests["shop-all"][minute], p)
        assert within_sampling_error(stored.calls[service], stored.calls["shop-all"], p)

        kept = sum(stored.sketch[service].values()) * p  # K: the sketch counts each kept visit 1/p times
        spread = 4 * math.sqrt(0.99 * 0.01 / kept)
        low, high = quantiles(stored.sketch["shop-all"], (0.99 - spread, min(0.99 + spread, 1.0))).values()
        p99 = quantiles(stored.sketch[service], (0.99,))[0.99]
        assert low * 0.98 <= p99 <= high * 1.02, (service, low, p99, high)
