"""The profile store: batches add up, concurrent writers add up, a failed batch leaves nothing."""

import threading
from datetime import UTC, datetime

import pytest
from sqlmodel import Session, func, select

from collectors.assembly import assemble
from collectors.normalise import normalise_request
from controlplane import collected as store
from controlplane.collected import store_batch
from controlplane.db import session_scope
from controlplane.models import Edge, Fragment, FragmentProfile, RequestStat, Sla, Tenant, Workload
from tests.collectors.otlp_builders import agent_loop, make_request, make_span

RESOURCE = {"heteroplane.tenant": "acme", "heteroplane.workload": "support-bot"}


def batch_of(spans, resource=RESOURCE):
    return assemble(normalise_request(make_request(spans, resource)).records)


def write(engine, batch):
    with session_scope(engine) as session:
        store_batch(session, batch)


def graph(engine):
    """{fragment key: visits} and {(parent key, child key): calls} as stored."""
    with Session(engine) as session:
        keys = {f.id: f.key for f in session.exec(select(Fragment))}
        visits: dict[str, int] = {}
        for p in session.exec(select(FragmentProfile)):
            visits[keys[p.fragment_id]] = visits.get(keys[p.fragment_id], 0) + p.visits
        edges = {(keys[e.parent_id], keys[e.child_id]): e.calls for e in session.exec(select(Edge))}
    return visits, edges


def test_first_batch_creates_tenant_workload_fragments_and_edges(engine):
    write(engine, batch_of(agent_loop(tool_calls=3)))

    with Session(engine) as session:
        tenant = session.exec(select(Tenant)).one()
        workload = session.exec(select(Workload)).one()
        assert (tenant.name, workload.name, workload.tenant_id) == ("acme", "support-bot", tenant.id)
        llm = session.exec(select(Fragment).where(Fragment.key == "llm:gpt-4o")).one()
        assert (llm.kind, llm.name, llm.model, llm.workload_id) == ("llm", "gpt-4o", "gpt-4o", workload.id)
    assert graph(engine) == (
        {"agent:triage": 1, "llm:gpt-4o": 1, "tool:search": 3},
        {("agent:triage", "llm:gpt-4o"): 1, ("agent:triage", "tool:search"): 3},
    )


def test_batches_add_up(engine):
    write(engine, batch_of(agent_loop(trace=1, tool_calls=3)))
    write(engine, batch_of(agent_loop(trace=2, tool_calls=2)))

    visits, edges = graph(engine)
    assert visits["tool:search"] == 5 and edges[("agent:triage", "tool:search")] == 5
    with Session(engine) as session:
        assert session.exec(select(func.count()).select_from(Fragment)).one() == 3
        profile = session.exec(
            select(FragmentProfile).join(Fragment).where(Fragment.key == "llm:gpt-4o")
        ).one()
        # Two chats, each 200 ms, 100 tokens in, 20 out.
        assert (profile.visits, profile.latency_ms_sum, profile.tokens_in, profile.tokens_out) == (2, 400.0, 200, 40)
        stat = session.exec(select(RequestStat)).one()
        assert (stat.requests, stat.within_sla, stat.latency_ms_sum, stat.tokens) == (2, 2, 1000.0, 240)


def test_last_seen_moves_forward_only(engine):
    late = make_span("glue", span=1, start_ms=120_000)
    early = make_span("glue", span=2, start_ms=0)
    write(engine, batch_of([late]))
    write(engine, batch_of([early]))

    with Session(engine) as session:
        fragment = session.exec(select(Fragment)).one()
    assert fragment.first_seen == datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
    assert fragment.last_seen == datetime(2026, 1, 1, 12, 2, 0, 10_000, tzinfo=UTC)


def test_requests_are_within_sla_against_the_workloads_p99(engine):
    write(engine, batch_of([make_span("warmup", span=1)]))
    with session_scope(engine) as session:
        workload = session.exec(select(Workload)).one()
        session.add(Sla(workload_id=workload.id, p99_ms=300))
    fast = make_span("handle", trace=2, span=1, duration_ms=300)
    slow = make_span("handle", trace=3, span=1, duration_ms=301)
    write(engine, batch_of([fast, slow]))

    with Session(engine) as session:
        stat = session.exec(select(RequestStat)).one()
    # warmup (10 ms, before the SLA existed: within) + fast (300 <= 300: within) + slow (301 > 300).
    assert (stat.requests, stat.within_sla) == (3, 2)


def test_a_failed_batch_writes_nothing(engine, monkeypatch):
    def explode(*args, **kwargs):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(store, "_upsert_request_stats", explode)
    with pytest.raises(RuntimeError, match="disk on fire"):
        write(engine, batch_of(agent_loop()))

    with Session(engine) as session:
        for table in (Tenant, Workload, Fragment, Edge, FragmentProfile):
            assert session.exec(select(func.count()).select_from(table)).one() == 0, table.__name__


def test_concurrent_writers_add_up(engine):
    writers, batches_each, tool_calls = 4, 5, 3

    def run(n: int) -> None:
        for i in range(batches_each):
            write(engine, batch_of(agent_loop(trace=1000 * n + i + 1, tool_calls=tool_calls)))

    threads = [threading.Thread(target=run, args=(n,)) for n in range(writers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    visits, edges = graph(engine)
    total = writers * batches_each
    assert visits == {"agent:triage": total, "llm:gpt-4o": total, "tool:search": total * tool_calls}
    assert edges[("agent:triage", "tool:search")] == total * tool_calls
    with Session(engine) as session:
        assert session.exec(select(func.count()).select_from(Tenant)).one() == 1
        assert session.exec(select(RequestStat.requests)).one() == total


def test_a_request_with_a_failed_visit_misses_its_sla_however_fast(engine):
    write(engine, batch_of([make_span("warmup", span=1)]))
    with session_scope(engine) as session:
        workload = session.exec(select(Workload)).one()
        session.add(Sla(workload_id=workload.id, p99_ms=300))
    ok = [make_span("handle", trace=2, span=1, duration_ms=100), make_span("search", trace=2, span=2, parent=1)]
    failed = [
        make_span("handle", trace=3, span=1, duration_ms=100),
        make_span("search", trace=3, span=2, parent=1, duration_ms=1, failed=True),  # no replica to serve it
    ]
    write(engine, batch_of(ok + failed))

    with Session(engine) as session:
        stat = session.exec(select(RequestStat)).one()
    # warmup (within) + ok (100 <= 300: within) + failed (fast, but a visit failed: a miss).
    assert (stat.requests, stat.within_sla) == (3, 2)
