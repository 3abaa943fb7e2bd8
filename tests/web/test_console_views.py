"""The console's pure helpers: the changes between two placements, and the call graph's columns."""

from hypothesis import given
from hypothesis import strategies as st

from controlplane.queries import PricedItem
from web.changes import changes
from web.workload_graph import columns, human_bytes


def item(fragment: int, cls: int, replicas: int, slices: int = 1, phase: str = "") -> PricedItem:
    return PricedItem(
        fragment_id=fragment, fragment_key=f"f{fragment}", fragment_kind="llm", workload_id=1, workload="w",
        tenant_id=1, tenant="t", device_class_id=cls, device_class=f"c{cls}", phase=phase, replicas=replicas,
        slices=slices, usd_per_hour=replicas * slices * (cls + 1.0), devices=replicas * slices,
    )


side = st.dictionaries(st.tuples(st.integers(1, 4), st.integers(0, 2), st.sampled_from(["", "prefill"])),
                       st.tuples(st.integers(0, 3), st.integers(1, 2)), max_size=8)


@given(before=side, after=side)
def test_changes_list_exactly_the_lines_that_differ(before, after):
    a = [item(f, c, r, s, p) for (f, c, p), (r, s) in before.items()]
    b = [item(f, c, r, s, p) for (f, c, p), (r, s) in after.items()]
    result = changes(a, b)
    # Independently: a line differs when its (replicas, slices) differ, a missing line being 0 replicas.
    def replicas(side_, key):
        return side_.get(key, (0, None))

    expected = {key for key in before.keys() | after.keys()
                if replicas(before, key) != replicas(after, key) and (replicas(before, key)[0] or replicas(after, key)[0])}
    assert {(c.fragment_id, int(c.device_class[1:]), c.phase) for c in result.lines} == expected
    assert result.unchanged == len(before.keys() | after.keys()) - len(expected)
    for c in result.lines:
        key = (c.fragment_id, int(c.device_class[1:]), c.phase)
        assert (c.replicas_before, c.replicas_after) == (replicas(before, key)[0], replicas(after, key)[0])
    assert result.usd_per_hour_delta == sum(r * s * (c + 1.0) for (_, c, _), (r, s) in after.items()) - sum(
        r * s * (c + 1.0) for (_, c, _), (r, s) in before.items())


def test_columns_follow_the_longest_call_chain_and_survive_cycles():
    # 1 → 2 → 3 and 1 → 3: 3 sits after 2, not beside it
    assert columns([1, 2, 3], [(1, 2), (2, 3), (1, 3)]) == {1: 0, 2: 1, 3: 2}
    # a cycle 2 → 3 → 2 below root 1 ends; its back edge does not push 2 further
    assert columns([1, 2, 3], [(1, 2), (2, 3), (3, 2)]) == {1: 0, 2: 1, 3: 2}
    # two roots, an isolated fragment, a self-call
    assert columns([1, 2, 3, 4], [(1, 3), (2, 3), (4, 4)]) == {1: 0, 2: 0, 3: 1, 4: 0}


def test_bytes_read_as_people_write_them():
    assert [human_bytes(n) for n in (None, 512, 4096, 2_500_000, 7e12)] == ["—", "512 B", "4.1 KB", "2.5 MB", "7,000.0 GB"]
