"""The checker's own bin packing: do a plan's replicas fit the devices it says it occupies?

Written apart from optimizer.packing on purpose (no shared code, no patterns, no CP-SAT): a depth
first search that puts the largest replica left into each distinct residual a bin has, with
visited states remembered. Exact on the small instances tests give it; past SEARCH_LIMIT states it
answers "undecided" rather than guess, unless first fit decreasing already found a packing.
"""

from collections import Counter

from optimizer.types import ClassCapacity

SEARCH_LIMIT = 200_000


def device_violations(cls: ClassCapacity, replicas: Counter[int], claimed: int) -> list[str]:
    """Why `replicas` (slices per replica -> count) do not fit `claimed` devices of `cls`, if they do not.

    Sub-device replicas share devices of S slices; a whole-device replica takes one device; one of
    g * S slices takes g devices of one node (any g devices when the class lists no nodes)."""
    per = cls.slices_per_device
    sub = Counter({s: n for s, n in replicas.items() if s < per and n > 0})
    whole = sum(n for s, n in replicas.items() if s == per)
    multi = Counter({s // per: n for s, n in replicas.items() if s > per and n > 0})
    out = []
    if claimed > cls.devices:
        out.append(f"claims {claimed} devices but has {cls.devices} healthy")
    spanning = whole + sum(g * n for g, n in multi.items())
    free_for_sub = claimed - spanning
    if free_for_sub < 0:
        out.append(f"claims {claimed} devices but its whole- and multi-device replicas take {spanning}")
        return out
    fits = _fits(Counter({per: free_for_sub}), sub)
    if fits is False:
        out.append(f"its sub-device replicas {dict(sub)} do not fit {free_for_sub} devices of {per} slices")
    elif fits is None:
        out.append(f"could not verify that {dict(sub)} fit {free_for_sub} devices of {per} slices")
    elif sub:
        fewest = min_bins(per, sub)
        if fewest is not None and fewest < free_for_sub:
            out.append(f"claims {claimed} devices but its replicas fit in {spanning + fewest}")
    if multi and cls.node_devices:
        on_nodes = _fits(Counter(cls.node_devices), multi)
        if on_nodes is not True:
            out.append(f"its multi-device replicas {dict(multi)} (devices each) "
                       f"{'do not fit' if on_nodes is False else 'could not be verified on'} nodes of "
                       f"{sorted(cls.node_devices)} devices")
    return out


def min_bins(capacity: int, items: Counter[int]) -> int | None:
    """The fewest bins of `capacity` holding `items` (size -> count); None when undecided."""
    total = sum(s * n for s, n in items.items())
    # Start from the best of two bounds: the slices, and for every size s the items at least that
    # large, of which one bin holds no more than capacity // s.
    k = -(-total // capacity)
    for s in items:
        larger = sum(n for size, n in items.items() if size >= s)
        k = max(k, -(-larger // (capacity // s)))
    while True:
        fits = _fits(Counter({capacity: k}), items)
        if fits is None:
            return None
        if fits:
            return k
        k += 1


def _fits(bins: Counter[int], items: Counter[int]) -> bool | None:
    """Whether `items` (size -> count) pack into `bins` (capacity -> count): True, False, or None."""
    sizes = sorted((s for s, n in items.items() if n > 0), reverse=True)
    if not sizes:
        return True
    if sum(s * items[s] for s in sizes) > sum(c * n for c, n in bins.items()):
        return False
    if _first_fit_decreasing(bins, items, sizes):
        return True
    top = max(bins)
    seen: set[tuple[tuple[int, ...], tuple[int, ...]]] = set()
    start = (tuple(items[s] for s in sizes), tuple(bins.get(r, 0) for r in range(top + 1)))
    stack = [start]
    while stack:
        left, residual = stack.pop()
        if (left, residual) in seen:
            continue
        seen.add((left, residual))
        if len(seen) > SEARCH_LIMIT:
            return None
        i = next((i for i, n in enumerate(left) if n), None)
        if i is None:
            return True
        size = sizes[i]
        fewer = left[:i] + (left[i] - 1,) + left[i + 1:]
        for r in range(size, top + 1):
            if residual[r]:
                after = list(residual)
                after[r] -= 1
                after[r - size] += 1
                stack.append((fewer, tuple(after)))
    return False


def _first_fit_decreasing(bins: Counter[int], items: Counter[int], sizes: list[int]) -> bool:
    """Best fit decreasing over a histogram of bins by free space: a quick packing, when it finds one.
    All items of one size go at once: a bin with r free slices takes r // size of them."""
    free = [0] * (max(bins) + 1)
    for c, n in bins.items():
        free[c] += n
    for s in sizes:
        left = items[s]
        for r in range(s, len(free)):
            if not left:
                break
            each = r // s
            whole_bins = min(free[r], left // each)
            free[r] -= whole_bins
            free[r - each * s] += whole_bins
            left -= whole_bins * each
            if left and free[r]:  # one more bin, partly filled
                free[r] -= 1
                free[r - left * s] += 1
                left = 0
        if left:
            return False
    return True
