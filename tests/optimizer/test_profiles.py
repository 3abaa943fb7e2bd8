"""Mélange bucket tables as service profiles."""

import copy
import json
from pathlib import Path

import pytest

from optimizer.profiles import bucket_of, load_bucket_table, profiles_for_bucket

MELANGE = Path("/work/shared/data/melange/llama2-7b-profiles.json")

SMALL = {
    "model": "llama2-7b",
    "bucket_edges_tokens": [0, 100, 1000],
    "gpus": {
        "L4": {"usd_per_hour": 0.7, "tputs": [[10.0, 2.0], [3.0, 0.0]]},
        "H100": {"usd_per_hour": 6.2, "tputs": [[40.0, 9.0], [20.0, 4.0]]},
    },
}


def test_cells_become_whole_device_measured_profiles() -> None:
    table = load_bucket_table(SMALL)
    assert table.edges == (0, 100, 1000) and table.buckets == 2
    by_class = {p.device_class: p for p in profiles_for_bucket(table, 0, 1)}
    assert set(by_class) == {"L4", "H100-SXM"}  # Mélange names mapped to catalog classes
    assert by_class["L4"].throughput_rps == 2.0 and by_class["H100-SXM"].throughput_rps == 9.0
    assert by_class["L4"].slices == 1 and by_class["H100-SXM"].slices == 7  # a whole 7-slice H100
    assert all(p.measured and p.latency_ms > 0 for p in by_class.values())
    assert by_class["H100-SXM"].latency_ms < by_class["L4"].latency_ms


def test_a_class_that_cannot_serve_a_bucket_gets_no_profile() -> None:
    table = load_bucket_table(SMALL)
    assert [p.device_class for p in profiles_for_bucket(table, 1, 1)] == ["H100-SXM"]
    with pytest.raises(IndexError, match=r"\(2, 0\)"):
        profiles_for_bucket(table, 2, 0)


@pytest.mark.parametrize(
    ("tokens_in", "tokens_out", "expected"),
    [(0, 0, (0, 0)), (99, 100, (0, 1)), (100, 999.5, (1, 1)), (5000, 1000, (1, 1))],  # past the last edge: last bucket
)
def test_bucket_of_uses_the_table_edges(tokens_in, tokens_out, expected) -> None:
    assert bucket_of(load_bucket_table(SMALL), tokens_in, tokens_out) == expected


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda d: d.__setitem__("bucket_edges_tokens", [0, 1000, 100]), "bucket_edges_tokens"),
        (lambda d: d["gpus"].__setitem__("TPU", d["gpus"]["L4"]), "gpus.TPU: unknown GPU"),
        (lambda d: d["gpus"]["L4"]["tputs"].pop(), r"gpus.L4.tputs: must be 2 x 2"),
        (lambda d: d["gpus"]["L4"]["tputs"][0].__setitem__(0, -1), "gpus.L4.tputs"),
    ],
)
def test_bad_tables_are_rejected_naming_the_field(mutate, message) -> None:
    data = copy.deepcopy(SMALL)
    mutate(data)
    with pytest.raises(ValueError, match=message):
        load_bucket_table(data)


@pytest.mark.skipif(not MELANGE.exists(), reason=f"Mélange profiles not present at {MELANGE}")
def test_melange_llama2_7b_table() -> None:
    table = load_bucket_table(MELANGE)
    assert table.model == "llama2-7b" and table.buckets == 6
    assert [r.device_class for r in table.rows] == ["L4", "A10G", "A100-80GB", "H100-SXM"]
    assert table.rows[0].usd_per_hour == json.loads(MELANGE.read_text())["gpus"]["L4"]["usd_per_hour"]
    # Short requests: the L4 is the cheapest per request/s; long ones: the A100 is (Mélange's point).
    def cheapest(i, j):
        prices = {r.device_class: r.usd_per_hour for r in table.rows}
        return min(profiles_for_bucket(table, i, j), key=lambda p: prices[p.device_class] / p.throughput_rps)
    assert cheapest(0, 0).device_class == "L4"
    assert cheapest(5, 5).device_class in {"A100-80GB", "H100-SXM"}
