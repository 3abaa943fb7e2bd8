"""Mélange-style bucket tables: profiled max throughput under an SLO, per request-size bucket.

A table (e.g. ``shared/data/melange/llama2-7b-profiles.json``) holds, for one model and each GPU
type, the maximum requests/s one GPU sustains while meeting the TPOT SLO, for requests whose
input length falls in bucket i and output length in bucket j. Bucket i covers
``[edges[i], edges[i + 1])`` tokens; lengths at or past the last edge count in the last bucket
(the table has nothing larger, so its throughput is optimistic there).

``profiles_for_bucket`` turns one cell of the table into the `ServiceProfile`s the solver takes:
one whole-device replica per GPU (Mélange does not partition GPUs), throughput from the table,
measured. The SLO is already folded into that throughput, so latency is only informative: the
roofline estimate of a request of the bucket's mid-point size on one whole device.
"""

import bisect
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from optimizer.catalog import by_name
from optimizer.perfmodel import estimate, params_from_model_name
from optimizer.types import ServiceProfile

# Mélange's GPU names -> catalog classes (its A100 and H100 are the 80 GB SXM parts).
GPU_CLASSES = {"L4": "L4", "A10G": "A10G", "A100": "A100-80GB", "H100": "H100-SXM"}


@dataclass(frozen=True)
class BucketRow:
    """One device class's profiled max requests/s per (input bucket, output bucket), one device."""

    device_class: str  # catalog name
    usd_per_hour: float  # the price the table was profiled with
    max_rps: tuple[tuple[float, ...], ...]  # [input bucket][output bucket]


@dataclass(frozen=True)
class BucketTable:
    """A model's bucket table over several device classes."""

    model: str
    edges: tuple[int, ...]  # token bucket edges, ascending from 0; len(edges) - 1 buckets
    rows: tuple[BucketRow, ...]

    @property
    def buckets(self) -> int:
        return len(self.edges) - 1


def load_bucket_table(source: str | Path | Mapping[str, Any]) -> BucketTable:
    """Read a Mélange-shaped table from a JSON file or an already parsed dict; ValueError naming the field."""
    data = json.loads(Path(source).read_text()) if isinstance(source, str | Path) else source
    edges = tuple(int(e) for e in data["bucket_edges_tokens"])
    if len(edges) < 2 or edges[0] != 0 or list(edges) != sorted(set(edges)):
        raise ValueError(f"bucket_edges_tokens: must rise strictly from 0 with at least 2 edges, got {list(edges)}")
    buckets = len(edges) - 1
    rows = []
    for gpu, entry in data["gpus"].items():
        if gpu not in GPU_CLASSES:
            raise ValueError(f"gpus.{gpu}: unknown GPU; known: {', '.join(GPU_CLASSES)}")
        tputs = tuple(tuple(float(v) for v in row) for row in entry["tputs"])
        if len(tputs) != buckets or any(len(row) != buckets for row in tputs):
            raise ValueError(f"gpus.{gpu}.tputs: must be {buckets} x {buckets} (one per bucket pair)")
        if any(v < 0 for row in tputs for v in row):
            raise ValueError(f"gpus.{gpu}.tputs: throughputs must be >= 0")
        rows.append(BucketRow(GPU_CLASSES[gpu], float(entry["usd_per_hour"]), tputs))
    return BucketTable(str(data.get("model", "")), edges, tuple(rows))


def bucket_of(table: BucketTable, tokens_in: float, tokens_out: float) -> tuple[int, int]:
    """(input bucket, output bucket) of a request with these token counts."""
    return _bucket(table.edges, tokens_in), _bucket(table.edges, tokens_out)


def profiles_for_bucket(table: BucketTable, i: int, j: int) -> tuple[ServiceProfile, ...]:
    """One measured whole-device `ServiceProfile` per class that can serve bucket (i, j) at all."""
    if not (0 <= i < table.buckets and 0 <= j < table.buckets):
        raise IndexError(f"bucket ({i}, {j}) is outside the table's {table.buckets} x {table.buckets}")
    params_b = params_from_model_name(table.model)
    mid_in, mid_out = _midpoint(table.edges, i), _midpoint(table.edges, j)
    profiles = []
    for row in table.rows:
        rps = row.max_rps[i][j]
        if rps <= 0:
            continue
        spec = by_name(row.device_class)
        est = estimate("llm", params_b, mid_in, mid_out, spec)
        if est is not None and est.slices < spec.slices_per_device:
            est = estimate("llm", params_b, mid_in, mid_out, spec, slices=spec.slices_per_device)
        latency_ms = est.latency_ms if est is not None else 0.0  # unknown: the SLO is in the throughput
        profiles.append(ServiceProfile(row.device_class, rps, latency_ms, spec.slices_per_device, measured=True))
    return tuple(profiles)


def _bucket(edges: tuple[int, ...], tokens: float) -> int:
    if tokens < 0:
        raise ValueError(f"token counts must be >= 0, got {tokens}")
    return min(bisect.bisect_right(edges, tokens) - 1, len(edges) - 2)


def _midpoint(edges: tuple[int, ...], bucket: int) -> float:
    return (edges[bucket] + edges[bucket + 1]) / 2
