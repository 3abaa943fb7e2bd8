"""What changes between two placements, line by line, as the console shows it (proposals against
the placement in force, and any two versions of the history).

A line is one (workload, fragment, device class, pool): its replicas and $/hour before and after.
Lines that are the same on both sides are counted, not listed. Pure: it takes priced items
(controlplane.queries.PricedItem) and returns values.
"""

from collections.abc import Iterable
from dataclasses import dataclass

from controlplane.queries import PricedItem


@dataclass(frozen=True)
class ItemChange:
    workload_id: int
    workload: str
    fragment_id: int
    fragment_key: str
    device_class: str
    phase: str
    replicas_before: int
    replicas_after: int
    slices_before: int | None
    slices_after: int | None
    usd_per_hour_before: float
    usd_per_hour_after: float

    @property
    def usd_per_hour_delta(self) -> float:
        return self.usd_per_hour_after - self.usd_per_hour_before


@dataclass(frozen=True)
class PlacementChanges:
    lines: tuple[ItemChange, ...]  # only lines that differ, by workload, fragment, pool, class
    unchanged: int
    usd_per_hour_before: float  # Σ of the items' prices on each side
    usd_per_hour_after: float

    @property
    def usd_per_hour_delta(self) -> float:
        return self.usd_per_hour_after - self.usd_per_hour_before


def changes(before: Iterable[PricedItem], after: Iterable[PricedItem]) -> PlacementChanges:
    """The lines that differ from `before` to `after` (a line missing on a side has 0 replicas there)."""

    def keyed(items: Iterable[PricedItem]) -> dict[tuple[int, int, str], PricedItem]:
        return {(i.fragment_id, i.device_class_id, i.phase): i for i in items}

    a, b = keyed(before), keyed(after)
    lines, unchanged = [], 0
    for key in a.keys() | b.keys():
        old, new = a.get(key), b.get(key)
        if old is not None and new is not None and (old.replicas, old.slices) == (new.replicas, new.slices):
            unchanged += 1
            continue
        if (old.replicas if old else 0) == 0 and (new.replicas if new else 0) == 0:
            unchanged += 1
            continue
        either = new or old
        lines.append(ItemChange(
            workload_id=either.workload_id, workload=either.workload, fragment_id=either.fragment_id,
            fragment_key=either.fragment_key, device_class=either.device_class, phase=either.phase,
            replicas_before=old.replicas if old else 0, replicas_after=new.replicas if new else 0,
            slices_before=old.slices if old else None, slices_after=new.slices if new else None,
            usd_per_hour_before=old.usd_per_hour if old else 0.0, usd_per_hour_after=new.usd_per_hour if new else 0.0,
        ))
    lines.sort(key=lambda c: (c.workload, c.fragment_key, c.phase, c.device_class))
    return PlacementChanges(
        lines=tuple(lines), unchanged=unchanged,
        usd_per_hour_before=sum(i.usd_per_hour for i in a.values()),
        usd_per_hour_after=sum(i.usd_per_hour for i in b.values()),
    )
