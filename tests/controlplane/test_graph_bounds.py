"""`/graph` and `/profiles` stay bounded however many fragments a workload has: the graph shows its
busiest fragments and the edges among them with the whole graph's totals, the profiles page."""

from datetime import UTC, datetime, timedelta

import pytest
from fastapi.testclient import TestClient
from sqlmodel import Session

from controlplane.app import create_app
from controlplane.auth import mint_token
from controlplane.models import Edge, Fragment, FragmentProfile, ProfileBucket, Role, Tenant, Workload
from controlplane.settings import Settings

FRAGMENTS = 3000
MINUTE = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
UNTIL = (MINUTE + timedelta(minutes=1)).isoformat()
ONLY_BUCKETS = 40  # fragments that also have a class seen only in distributions (metrics), no visits


def visits_of(i: int) -> int:
    """Distinct visits per fragment index, in no order of the index (7919 is prime to 3000)."""
    return i * 7919 % FRAGMENTS + 1


@pytest.fixture
def big(engine) -> dict:
    """A workload of FRAGMENTS fragments in a chain i -> i+1 (calls i+1), each seen on class 'l40s'."""
    with Session(engine) as session:
        tenant = Tenant(name="acme")
        session.add(tenant)
        session.flush()
        workload = Workload(name="sprawl", tenant_id=tenant.id)
        session.add(workload)
        session.flush()
        fragments = [Fragment(workload_id=workload.id, key=f"tool:t{i}", kind="tool", name=f"t{i}") for i in range(FRAGMENTS)]
        session.add_all(fragments)
        session.flush()
        ids = [f.id for f in fragments]
        session.add_all(FragmentProfile(fragment_id=fid, device_class="l40s", minute=MINUTE, visits=visits_of(i),
                                        latency_ms_sum=10.0 * visits_of(i)) for i, fid in enumerate(ids))
        session.add_all(ProfileBucket(fragment_id=ids[i], device_class="h100", minute=MINUTE, series="ttft_ms",
                                      bucket=100, count=3) for i in range(ONLY_BUCKETS))
        session.add_all(Edge(workload_id=workload.id, parent_id=ids[i], child_id=ids[i + 1], calls=i + 1)
                        for i in range(FRAGMENTS - 1))
        _, token = mint_token(session, "reader", Role.viewer)
        session.commit()
        workload_id = workload.id
    with TestClient(create_app(engine, Settings())) as client:
        client.headers["Authorization"] = f"Bearer {token}"
        yield {"api": client, "workload": workload_id, "ids": ids}


def expected_graph(ids: list[int], limit: int) -> tuple[list[int], list[tuple[int, int]]]:
    """Independently: the `limit` fragments of most visits, and the chain's edges among them, most calls first."""
    busiest = sorted(range(FRAGMENTS), key=lambda i: (-visits_of(i), ids[i]))[:limit]
    shown = set(busiest)
    edges = sorted(((i + 1, i) for i in range(FRAGMENTS - 1) if i in shown and i + 1 in shown), reverse=True)[:4 * limit]
    return [ids[i] for i in busiest], [(ids[i], ids[i + 1]) for _, i in edges]


@pytest.mark.parametrize("limit", [None, 1, 500])
def test_a_big_graph_shows_its_busiest_fragments_within_the_bound(big, limit):
    query = "" if limit is None else f"?limit={limit}"
    response = big["api"].get(f"/api/v1/workloads/{big['workload']}/graph{query}")

    assert response.status_code == 200
    graph = response.json()
    shown = limit or 100
    want_fragments, want_edges = expected_graph(big["ids"], shown)
    assert [f["id"] for f in graph["fragments"]] == want_fragments
    assert [(e["parent_id"], e["child_id"]) for e in graph["edges"]] == want_edges
    assert (graph["fragments_total"], graph["edges_total"], graph["truncated"]) == (FRAGMENTS, FRAGMENTS - 1, True)
    assert len(response.content) < 2_000 * shown + 10_000  # bounded by the limit, not the workload


def test_a_small_graph_is_whole_and_not_truncated(engine):
    with Session(engine) as session:
        tenant = Tenant(name="acme")
        session.add(tenant)
        session.flush()
        workload = Workload(name="small", tenant_id=tenant.id)
        session.add(workload)
        session.flush()
        a, b = Fragment(workload_id=workload.id, key="agent:a", kind="agent", name="a"), \
            Fragment(workload_id=workload.id, key="tool:b", kind="tool", name="b")
        session.add_all([a, b])
        session.flush()
        session.add(Edge(workload_id=workload.id, parent_id=a.id, child_id=b.id, calls=2))
        _, token = mint_token(session, "reader", Role.viewer)
        session.commit()
        workload_id = workload.id
    with TestClient(create_app(engine, Settings())) as client:
        graph = client.get(f"/api/v1/workloads/{workload_id}/graph", headers={"Authorization": f"Bearer {token}"}).json()

    assert (len(graph["fragments"]), len(graph["edges"])) == (2, 1)
    assert (graph["fragments_total"], graph["edges_total"], graph["truncated"]) == (2, 1, False)


def expected_profiles(ids: list[int]) -> list[tuple[int, str, int]]:
    """Independently: every (fragment, class) observed, most visits first, then fragment id and class."""
    pairs = [(ids[i], "l40s", visits_of(i)) for i in range(FRAGMENTS)] + [(ids[i], "h100", 0) for i in range(ONLY_BUCKETS)]
    return sorted(pairs, key=lambda p: (-p[2], p[0], p[1]))


def test_profiles_page_through_every_pair_busiest_first(big):
    pages, offset = [], 0
    while True:
        response = big["api"].get(f"/api/v1/workloads/{big['workload']}/profiles",
                                  params={"minutes": 5, "until": UNTIL, "limit": 500, "offset": offset})
        assert response.status_code == 200
        body = response.json()
        assert (body["total"], body["limit"], body["offset"]) == (FRAGMENTS + ONLY_BUCKETS, 500, offset)
        assert len(body["items"]) <= 500
        assert len(response.content) < 2_000 * 500
        if not body["items"]:
            break
        pages += body["items"]
        offset += 500

    assert [(p["fragment_id"], p["device_class"], p["visits"]) for p in pages] == expected_profiles(big["ids"])
    only_buckets = next(p for p in pages if p["device_class"] == "h100")
    assert only_buckets["ttft_ms"]["count"] == 3


def test_profiles_answer_one_page_by_default(big):
    body = big["api"].get(f"/api/v1/workloads/{big['workload']}/profiles", params={"minutes": 5, "until": UNTIL}).json()

    assert (len(body["items"]), body["total"], body["limit"], body["offset"]) == (50, FRAGMENTS + ONLY_BUCKETS, 50, 0)
    assert [p["visits"] for p in body["items"]] == list(range(FRAGMENTS, FRAGMENTS - 50, -1))


@pytest.mark.parametrize(("path", "query", "field"), [
    ("graph", "limit=0", "limit"), ("graph", "limit=501", "limit"),
    ("profiles", "limit=501", "limit"), ("profiles", "offset=-1", "offset"),
])
def test_bounds_out_of_range_are_422_naming_the_field(big, path, query, field):
    response = big["api"].get(f"/api/v1/workloads/{big['workload']}/{path}?{query}")

    assert response.status_code == 422
    assert field in response.text
