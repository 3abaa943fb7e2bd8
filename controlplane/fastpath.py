"""The fast path between reconcile cycles: add replicas where a model server's queue or KV cache fills.

`read_pressure` is the only part that reads; `scale_up` is pure and greedy (milliseconds): the
full cycle's solver re-plans everything a few seconds later, so all this has to do is stop a
queue from growing meanwhile.

For each model's latest vLLM readings on a device class (ModelTelemetry, newer than the
placement in force, so replicas that placement added are not asked for twice) with

    queue pressure   w / r > Q      w: requests waiting (vllm:num_requests_waiting, summed over
                                    replicas), r: replicas running the model there, Q: threshold
    KV pressure      k >= K         k: KV-cache use, 0..1 (vllm:kv_cache_usage_perc, averaged)

the replicas wanted are

    from the queue   ceil(w / Q)                  replicas that bring it back to Q per replica
    from the KV      ceil(r * k / K)              replicas that bring the use back to K
    added            min(r, max(both) - r), >= 1  at most doubling: one fast step is an emergency,
                                                  the next cycle sizes it properly

spread over the fragments serving that model there (the pool that queues: a split fragment's
prefill pool for the queue, its decode pool for the KV cache), one replica at a time to the
fragment with the fewest, each only while the class still packs every replica on its healthy
devices (optimizer.packing.min_devices). Nothing needs adding: None.
"""

import math
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlmodel import Session, select

from controlplane.models import ModelTelemetry
from controlplane.models._common import minute_of, to_utc
from controlplane.planning import Replicas, Snapshot
from controlplane.policy import fits
from controlplane.queries import placement_in_force
from optimizer.types import ClassCapacity, Phase


@dataclass(frozen=True)
class ModelPressure:
    """The latest vLLM readings of one model on one device class (None: not reported)."""

    model: str
    device_class: str
    queue_depth: float | None
    kv_cache_usage: float | None


@dataclass(frozen=True)
class Thresholds:
    """When the fast path adds replicas (settings: fast_path_queue_per_replica, fast_path_kv_usage)."""

    queue_per_replica: float = 4.0
    kv_usage: float = 0.9


@dataclass(frozen=True)
class Addition:
    """Replicas the fast path added to one fragment's pool on one class, and why, in plain units."""

    fragment_id: int
    device_class: str
    phase: Phase
    replicas: int
    why: str


@dataclass(frozen=True)
class ScaleUp:
    """The placement with the fast path's replicas added, and what was added."""

    assignments: Replicas
    additions: tuple[Addition, ...]


def read_pressure(session: Session, now: datetime) -> tuple[ModelPressure, ...]:
    """Each model's readings on each labelled class from this minute or the last, newer than the
    placement in force (none: nothing is placed, so there is nothing to add to)."""
    in_force = placement_in_force(session)
    applied_at = in_force.applied_at if in_force is not None else None
    if applied_at is None:
        return ()
    latest: dict[tuple[str, str], ModelTelemetry] = {}
    for row in session.exec(
        select(ModelTelemetry)
        .where(ModelTelemetry.minute >= minute_of(to_utc(now)) - timedelta(minutes=1), ModelTelemetry.device_class != "")
        .order_by(ModelTelemetry.updated_at)
    ).all():
        if to_utc(row.updated_at) > to_utc(applied_at):
            latest[row.model, row.device_class] = row
    return tuple(ModelPressure(r.model, r.device_class, r.queue_depth, r.kv_cache_usage) for r in latest.values())


def scale_up(snapshot: Snapshot, capacity: Iterable[ClassCapacity], readings: Iterable[ModelPressure],
             thresholds: Thresholds) -> ScaleUp | None:
    """`snapshot.current` with replicas added where a reading crosses `thresholds` (module docstring),
    within `capacity`; None when nothing needs adding or nothing more fits."""
    classes = {c.device_class: c for c in capacity}
    by_model: dict[str, list[int]] = defaultdict(list)
    for f in snapshot.fragments:
        if f.kind == "llm":
            by_model[f.model].append(f.id)
    placement = dict(snapshot.current)
    additions = []
    for reading in sorted(readings, key=lambda r: (r.device_class, r.model)):
        cls = classes.get(reading.device_class)
        if cls is None:
            continue
        for phase, wanted, why in _wants(placement, by_model.get(reading.model, ()), reading, thresholds):
            pools = [key for key in placement if key[0] in by_model[reading.model] and key[1] == cls.device_class
                     and key[2] is phase]
            added: dict[tuple, int] = defaultdict(int)
            for _ in range(wanted):
                key = min(pools, key=lambda k: (placement[k][0], k[0]))
                replicas, slices = placement[key]
                placement[key] = (replicas + 1, slices)
                if not _fits(cls, placement):
                    placement[key] = (replicas, slices)
                    break
                added[key] += 1
            additions.extend(Addition(fid, c, p, n, why) for (fid, c, p), n in sorted(added.items()))
    if not additions:
        return None
    return ScaleUp(placement, tuple(additions))


def _wants(placement: Replicas, fragment_ids: Iterable[int], reading: ModelPressure, thresholds: Thresholds
           ) -> list[tuple[Phase, int, str]]:
    """(pool, replicas to add, why) for one reading: the queue's pool first, then the KV cache's."""
    ids = set(fragment_ids)
    running: dict[Phase, int] = defaultdict(int)
    for (fid, cls, phase), (replicas, _) in placement.items():
        if fid in ids and cls == reading.device_class:
            running[phase] += replicas
    if not running:
        return []
    split = Phase.whole not in running
    out = []
    queue, kv = reading.queue_depth, reading.kv_cache_usage
    pool = Phase.prefill if split else Phase.whole
    if queue is not None and running[pool] and queue / running[pool] > thresholds.queue_per_replica:
        r = running[pool]
        wanted = max(1, min(r, math.ceil(queue / thresholds.queue_per_replica) - r))
        out.append((pool, wanted, f"{queue:g} requests waiting on {r} replicas of {reading.model} on "
                                  f"{reading.device_class} (over {thresholds.queue_per_replica:g} per replica)"))
    pool = Phase.decode if split else Phase.whole
    if kv is not None and running[pool] and kv >= thresholds.kv_usage:
        r = running[pool]
        wanted = max(1, min(r, math.ceil(r * kv / thresholds.kv_usage) - r))
        out.append((pool, wanted, f"KV cache {kv:.0%} full on {r} replicas of {reading.model} on "
                                  f"{reading.device_class} (threshold {thresholds.kv_usage:.0%})"))
    if len(out) == 2 and out[0][0] is out[1][0]:  # one pool under both pressures: the larger ask
        out = [max(out, key=lambda o: o[1])]
    return out


def _fits(cls: ClassCapacity, placement: Mapping[tuple[int, str, Phase], tuple[int, int]]) -> bool:
    """Whether every replica `placement` puts on `cls` packs onto its healthy devices."""
    return fits({k: v for k, v in placement.items() if k[1] == cls.device_class}, (cls,))