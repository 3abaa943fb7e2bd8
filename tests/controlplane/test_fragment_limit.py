"""A workload holds at most limit + kinds fragments: names past the limit fold into one overflow
fragment per kind, counted; one tenant's cardinality never keeps another's batch out."""

import threading
from datetime import UTC, datetime

from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import text
from sqlmodel import Session

from collectors.assembly import AssembledBatch, EdgeCalls, FragmentSeen, FragmentVisits, WorkloadName
from controlplane.collected import fold_past_limit, store_batch
from controlplane.db import session_scope
from optimizer.vocabulary import FragmentKind
from tests.controlplane.conftest import auth

T0 = datetime(2026, 12, 5, 12, 0, tzinfo=UTC)
KINDS = ["tool", "cpu", "llm"]

keys = st.builds(lambda kind, n: f"{kind}:n{n}", st.sampled_from(KINDS), st.integers(0, 30))


@given(stored=st.sets(keys, max_size=15), named=st.sets(keys, max_size=15), limit=st.integers(0, 12))
def test_the_fold_keeps_stored_keys_and_admits_the_first_new_ones_while_room_lasts(stored, named, limit):
    folds = fold_past_limit(stored, named, limit)
    new = sorted(named - stored)
    room = max(0, limit - len(stored))  # no overflow key among these stored keys
    assert sorted(folds) == new[room:]
    for key, to in folds.items():
        assert to == key[: key.index(":")] + ":~overflow"
    after = stored | {folds.get(k, k) for k in named}
    plain = [k for k in after if not k.endswith(":~overflow")]
    assert len(plain) <= max(limit, len(stored))
    assert len(after) - len(plain) <= len(KINDS)


def test_overflow_keys_neither_count_nor_fold():
    assert fold_past_limit({"tool:~overflow", "tool:a"}, {"tool:~overflow", "tool:b"}, 2) == {}
    assert fold_past_limit({"tool:a", "tool:b"}, {"tool:c", "cpu:d"}, 2) == {"cpu:d": "cpu:~overflow",
                                                                             "tool:c": "tool:~overflow"}


def batch(workload: WorkloadName, names: list[str], kind=FragmentKind.tool, edges=()) -> AssembledBatch:
    keys = [f"{kind.value}:{n}" for n in names]
    return AssembledBatch(
        fragments=tuple(FragmentSeen(workload, k, kind, k.split(":", 1)[1], "", T0, T0) for k in keys),
        visits=tuple(FragmentVisits(workload, k, "cpu", T0, 2, 1.0, 0, 0) for k in keys),
        edges=tuple(edges), requests=(), orphan_spans=0, cross_workload_calls=0,
    )


def merged(*batches: AssembledBatch) -> AssembledBatch:
    return AssembledBatch(
        fragments=tuple(f for b in batches for f in b.fragments), visits=tuple(v for b in batches for v in b.visits),
        edges=tuple(e for b in batches for e in b.edges), requests=(), orphan_spans=0, cross_workload_calls=0,
    )


def stored(engine, tenant: str) -> dict:
    with Session(engine) as session:
        rows = session.execute(text(
            "SELECT f.key, COALESCE(SUM(p.visits), 0) FROM fragment f JOIN workload w ON w.id = f.workload_id "
            "JOIN tenant t ON t.id = w.tenant_id LEFT JOIN fragment_profile p ON p.fragment_id = f.id "
            "WHERE t.name = :tenant GROUP BY f.key"), {"tenant": tenant}).all()
        return dict(rows)


def folded(engine, tenant: str) -> tuple[int, int]:
    with Session(engine) as session:
        return tuple(session.execute(text(
            "SELECT w.fragments_folded, w.visits_folded FROM workload w JOIN tenant t ON t.id = w.tenant_id "
            "WHERE t.name = :tenant"), {"tenant": tenant}).one())


def test_a_hundred_thousand_names_fold_and_the_other_tenants_batch_is_stored_too(engine):
    noisy, quiet = WorkloadName("noisy", "bot"), WorkloadName("quiet", "bot")
    flood = merged(
        batch(noisy, [f"n{i:06d}" for i in range(100_000)]),
        batch(noisy, ["chat"], kind=FragmentKind.llm),
        batch(quiet, ["search", "fetch"]),
    )
    with session_scope(engine) as session:
        store_batch(session, flood, 50)
    noisy_rows = stored(engine, "noisy")
    assert len(noisy_rows) == 50 + 1  # 50 names (49 tools and the llm), one overflow for the tools
    assert noisy_rows["tool:~overflow"] == 2 * (100_000 - 49)
    assert sum(noisy_rows.values()) == 2 * 100_001  # no visit lost
    assert folded(engine, "noisy") == (100_000 - 49, 2 * (100_000 - 49))
    assert stored(engine, "quiet") == {"tool:search": 2, "tool:fetch": 2}
    assert folded(engine, "quiet") == (0, 0)


def test_a_name_folded_once_folds_again_and_edges_to_it_land_on_the_overflow(engine):
    w = WorkloadName("acme", "bot")
    with session_scope(engine) as session:
        store_batch(session, batch(w, ["a", "b", "c"]), 2)
    edge = EdgeCalls(w, "tool:a", "tool:c", calls=5)
    with session_scope(engine) as session:  # c was folded: an edge naming it (and only it) goes to the overflow
        store_batch(session, batch(w, ["a"], edges=[edge]), 2)
    assert stored(engine, "acme") == {"tool:a": 4, "tool:b": 2, "tool:~overflow": 2}
    with Session(engine) as session:
        assert session.execute(text(
            "SELECT p.key, c.key, e.calls FROM edge e JOIN fragment p ON p.id = e.parent_id "
            "JOIN fragment c ON c.id = e.child_id")).all() == [("tool:a", "tool:~overflow", 5)]
    assert folded(engine, "acme") == (1, 2)


def test_racing_flushes_never_exceed_the_limit(engine):
    w = WorkloadName("acme", "bot")
    with session_scope(engine) as session:
        store_batch(session, batch(w, ["seed"]), 10)  # the workload exists before the race
    barrier = threading.Barrier(4)

    def run(n: int) -> None:
        barrier.wait()
        for i in range(3):
            with session_scope(engine) as session:
                store_batch(session, batch(w, [f"w{n}-{i}-{j}" for j in range(4)]), 10)

    threads = [threading.Thread(target=run, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    rows = stored(engine, "acme")
    assert len(rows) == 10 + 1
    assert sum(rows.values()) == 2 * (1 + 4 * 3 * 4)
    assert folded(engine, "acme") == (1 + 4 * 3 * 4 - 10, 2 * (1 + 4 * 3 * 4 - 10))


def test_folding_shows_in_the_workload_api_and_in_health_to_whoever_may_see_the_workload(engine, callers, client):
    with session_scope(engine) as session:
        store_batch(session, merged(batch(WorkloadName("acme", "bot"), ["a", "b", "c"]),
                                    batch(WorkloadName("globex", "rag"), ["x"])), 2)
    with Session(engine) as session:
        acme_bot, globex_rag = (session.execute(text(
            "SELECT w.id FROM workload w JOIN tenant t ON t.id = w.tenant_id WHERE t.name = :t"), {"t": t}).scalar_one()
            for t in ("acme", "globex"))
    body = client.get(f"/api/v1/workloads/{acme_bot}", headers=auth(callers.acme_operator)).json()
    assert (body["fragments_folded"], body["visits_folded"]) == (1, 2)
    assert client.get(f"/api/v1/workloads/{globex_rag}", headers=auth(callers.globex_viewer)).json()["fragments_folded"] == 0

    def health(token=None):
        return client.get("/api/v1/health", headers=auth(token) if token else {}).json()

    for token in (None, callers.admin, callers.acme_operator, callers.globex_viewer):
        assert health(token)["workloads_folding"] == 1
    assert health()["folded_workloads"] == []
    assert health(callers.globex_viewer)["folded_workloads"] == []  # another tenant's workload: not even its name
    for token in (callers.admin, callers.acme_operator):
        assert health(token)["folded_workloads"] == [
            {"workload_id": acme_bot, "workload": "bot", "tenant": "acme", "fragments_folded": 1, "visits_folded": 2}]


def test_an_edge_to_a_name_folded_under_a_lower_limit_still_lands_on_the_overflow(engine):
    w = WorkloadName("acme", "bot")
    with session_scope(engine) as session:
        store_batch(session, batch(w, ["a", "b", "c"]), 2)
    with session_scope(engine) as session:  # the limit was raised; c (not in this batch) was never stored
        store_batch(session, batch(w, ["a"], edges=[EdgeCalls(w, "tool:a", "tool:c", calls=1)]), 10)
    assert set(stored(engine, "acme")) == {"tool:a", "tool:b", "tool:~overflow"}
