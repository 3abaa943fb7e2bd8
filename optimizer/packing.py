"""Replicas on devices: what fits one device class, how many devices a placement occupies, and what
they cost.

A device class has D devices of S slices each, on nodes of D_n healthy devices (sum_n D_n = D; no
nodes known: one pool). A replica of s slices is one of

    sub-device   s < S       s slices of one device (a MIG profile, a DRA partition, CPU cores)
    device       s = S       one whole device
    multi        s = g * S   g >= 2 whole devices on one node (tensor parallelism); any other s > S
                             is malformed (optimizer.candidates.validate rejects it)

so the class holds a multiset of replicas when there are device patterns (maximal multisets of
sub-device sizes summing to <= S) and node patterns (maximal multisets of multi sizes g summing to
<= D_n, per node size) with counts n_p, m_q such that

    N_s <= sum_p n_p * count_p(s)                 every sub-device size s
    N_g <= sum_q m_q * count_q(g)                 every multi size g (node patterns of every node size)
    sum_{q of node size D_n} m_q <= nodes of that size
    sum_p n_p + N_S + sum_g g * N_g <= D

This is exact: devices are identical bins, so the contents of any packing are sub-multisets of
patterns (and a sub-multiset of a pattern fits where the pattern does); devices hosting sub-device
replicas or whole-device replicas may be anywhere, so only multi-device replicas need nodes. The
solver writes these rows into its CP-SAT model (its `_add_packing`); `min_devices` solves the same rows alone.

Cost. A class sold by the slice costs s / S of a device's price per replica. A class sold by the
device costs every device a replica occupies: sum_p n_p + N_S + sum_g g * N_g of them. Assignments
carry their slices' share either way; the rest of an occupied device (slices no replica uses) is
the class's idle cost, which `device_costs` reports beside them.
"""

from collections import Counter
from collections.abc import Iterable, Mapping
from functools import cache

from optimizer.types import Assignment, ClassCapacity

_PATTERN_LIMIT = 5_000  # patterns per class before enumeration gives up (never reached by real slice sizes)


@cache
def patterns(sizes: tuple[int, ...], capacity: int) -> tuple[tuple[int, ...], ...]:
    """Every maximal multiset of `sizes` (each <= capacity) summing to at most `capacity`, as sorted
    tuples (largest first). Maximal: no size can be added. Non-maximal ones are covered by "<=" rows."""
    sizes = tuple(sorted(set(sizes), reverse=True))
    if not sizes:
        return ()
    smallest = sizes[-1]
    out: list[tuple[int, ...]] = []

    def grow(start: int, room: int, chosen: list[int]) -> None:
        if len(out) > _PATTERN_LIMIT:
            raise ValueError(f"too many packing patterns for sizes {sizes} in {capacity}")
        if room < smallest:  # nothing fits any more: maximal
            if chosen:
                out.append(tuple(chosen))
            return
        for i in range(start, len(sizes)):
            if sizes[i] <= room:
                chosen.append(sizes[i])
                grow(i, room - sizes[i], chosen)
                chosen.pop()

    grow(0, capacity, [])
    return tuple(out)


def kind(slices: int, slices_per_device: int) -> tuple[str, int]:
    """('sub', s), ('device', 1) or ('multi', g) for a replica of `slices` on a class of S slices."""
    if slices < slices_per_device:
        return "sub", slices
    if slices == slices_per_device:
        return "device", 1
    return "multi", slices // slices_per_device


def fits_somewhere(cls: ClassCapacity, slices: int) -> int:
    """The most replicas of `slices` the class holds with nothing else on it."""
    s_per = cls.slices_per_device
    what, n = kind(slices, s_per)
    if what == "sub":
        return cls.devices * (s_per // slices)
    if what == "device":
        return cls.devices
    nodes = cls.node_devices or (cls.devices,)
    return sum(d // n for d in nodes)


def min_devices(cls: ClassCapacity, replicas: Mapping[int, int]) -> int | None:
    """The fewest devices of `cls` that hold `replicas` (slices per replica -> count), packed as the
    module docstring says; None when they do not fit the class at all."""
    s_per = cls.slices_per_device
    sub: Counter[int] = Counter()
    whole = 0
    multi: Counter[int] = Counter()
    for slices, n in replicas.items():
        if n <= 0:
            continue
        what, size = kind(slices, s_per)
        if what == "sub":
            sub[size] += n
        elif what == "device":
            whole += n
        else:
            multi[size] += n
    if multi and not _nodes_hold(cls, multi):
        return None
    devices = whole + sum(g * n for g, n in multi.items()) + _sub_devices(s_per, sub)
    return devices if devices <= cls.devices else None


def _sub_devices(capacity: int, counts: Mapping[int, int]) -> int:
    """Fewest devices of `capacity` slices holding `counts` sub-device replicas (exact)."""
    counts = {s: n for s, n in counts.items() if n > 0}
    if not counts:
        return 0
    lower = _lower_bound(capacity, counts)
    upper = _best_fit_decreasing(capacity, counts)
    if upper == lower:
        return upper
    return _exact_cover(tuple(sorted(counts.items())), capacity, upper)


def _lower_bound(capacity: int, counts: Mapping[int, int]) -> int:
    """No fewer devices than the slices need, nor than replicas of size >= s need when a device holds
    at most capacity // s of them."""
    bound = -(-sum(s * n for s, n in counts.items()) // capacity)
    at_least = 0
    for size in sorted(counts, reverse=True):
        at_least += counts[size]
        bound = max(bound, -(-at_least // (capacity // size)))
    return bound


def _best_fit_decreasing(capacity: int, counts: Mapping[int, int]) -> int:
    """Devices best fit decreasing opens for `counts`, placed in bulk (`_pack_sub`)."""
    residual: Counter[int] = Counter()
    return sum(_pack_sub(residual, capacity, size, counts[size]) for size in sorted(counts, reverse=True))


def _pack_sub(residual: Counter[int], capacity: int, size: int, n: int) -> int:
    """Best fit of `n` sub-device replicas of `size` into partly used devices (`residual`: free slices
    -> devices, updated), then into new devices of `capacity`, each filled before the next; returns
    how many devices it opened."""
    left = _best_fit(residual, size, n, take_all=False)
    if not left:
        return 0
    per = capacity // size
    full, rest = divmod(left, per)
    if (r := capacity - per * size) and full:
        residual[r] += full
    if rest:
        residual[capacity - rest * size] += 1
    return full + (rest > 0)


def pattern_counts(rows: list[tuple[tuple[int, ...], int]], need: Mapping[int, int],
                   groups: Mapping[int, int] | None = None) -> list[int] | None:
    """Counts per pattern covering `need` (size -> replicas) with the fewest patterns used; `rows`
    are (pattern, group) and `groups` caps the patterns used per group (node size -> nodes; None: no
    cap). None when no counts exist. A small exact model (CP-SAT, one worker)."""
    from ortools.sat.python import cp_model

    need = {size: n for size, n in need.items() if n > 0}
    upper = sum(need.values())
    model = cp_model.CpModel()
    counts = [model.new_int_var(0, upper if groups is None else min(upper, groups[g]), "") for _, g in rows]
    for size, n in need.items():
        model.add(sum(v * p.count(size) for v, (p, _) in zip(counts, rows, strict=True) if size in p) >= n)
    for g, cap in (groups or {}).items():
        model.add(sum(v for v, (_, group) in zip(counts, rows, strict=True) if group == g) <= cap)
    model.minimize(sum(counts))
    solver = cp_model.CpSolver()
    solver.parameters.num_workers = 1
    solver.parameters.max_time_in_seconds = 10.0
    solver.parameters.catch_sigint_signal = False  # a library must not take the process's SIGINT (see solver)
    if solver.solve(model) not in (cp_model.OPTIMAL, cp_model.FEASIBLE):
        return None
    return [solver.value(v) for v in counts]


def _exact_cover(counts: tuple[tuple[int, int], ...], capacity: int, upper: int) -> int:
    """Fewest devices for sub-device replicas: `pattern_counts` over the device patterns."""
    found = _cover_cached(counts, capacity)
    return upper if found is None else min(upper, found)


@cache
def _cover_cached(counts: tuple[tuple[int, int], ...], capacity: int) -> int | None:
    rows = [(p, 0) for p in patterns(tuple(s for s, _ in counts), capacity)]
    found = pattern_counts(rows, dict(counts))
    return None if found is None else sum(found)


def _nodes_hold(cls: ClassCapacity, multi: Mapping[int, int]) -> bool:
    """Whether multi-device replicas (g devices -> count) fit on the class's nodes, g on one node each."""
    if not cls.node_devices:
        return True  # nodes not known: only the device total limits them (min_devices checks it)
    nodes = Counter(d for d in cls.node_devices if d > 0)
    for g in sorted(multi, reverse=True):  # best fit decreasing, then the exact model when it fails
        if _best_fit(nodes, g, multi[g], take_all=False):
            return node_counts(cls, multi) is not None
    return True


def node_rows(cls: ClassCapacity, sizes: Iterable[int]) -> list[tuple[tuple[int, ...], int]]:
    """(node pattern, node size) for every node size of the class and the multi sizes g given."""
    sizes = tuple(sorted(set(sizes)))
    return [(p, size) for size in sorted(set(cls.node_devices))
            for p in patterns(tuple(g for g in sizes if g <= size), size)]


def node_counts(cls: ClassCapacity, multi: Mapping[int, int]) -> list[int] | None:
    """Counts per `node_rows` pattern placing `multi` (g -> replicas) on the nodes; None if impossible."""
    rows = node_rows(cls, multi)
    return pattern_counts(rows, multi, Counter(cls.node_devices)) if rows else None


def device_costs(classes: Mapping[str, ClassCapacity], assignments: Iterable[Assignment]
                 ) -> tuple[dict[str, int], dict[str, float]]:
    """Per class the devices the assignments occupy (fewest that hold them), and the idle cost of
    a class sold by the device: occupied devices' price less the assignments' slice shares ($/h)."""
    by_class: dict[str, Counter[int]] = {}
    share: dict[str, float] = {}
    for a in assignments:
        by_class.setdefault(a.device_class, Counter())[a.slices] += a.replicas
        share[a.device_class] = share.get(a.device_class, 0.0) + a.usd_per_hour
    devices: dict[str, int] = {}
    idle: dict[str, float] = {}
    for name, replicas in by_class.items():
        cls = classes[name]
        n = min_devices(cls, replicas)
        if n is None:
            raise ValueError(f"replicas on {name} do not fit its devices: {dict(replicas)}")
        devices[name] = n
        if not cls.sold_by_slice:
            waste = n * cls.usd_per_hour - share[name]
            if waste > 1e-9 * max(1.0, share[name]):
                idle[name] = waste
    return devices, idle


class Room:
    """Free space on every class while a heuristic adds and removes replicas (greedy, baselines).

    Best fit, per class: sub-device replicas go to the partly used devices with the least room that
    holds them, then open devices; whole and multi-device replicas take devices from the nodes with
    the fewest free devices that hold them (keeping large holes for large replicas). Every state it
    reaches is a real packing, so what it accepts fits; it may refuse a replica an exact packing would
    fit (the solver's model is exact). State is kept as counts (devices by free slices, nodes by free
    devices), and n replicas are placed at once, so the cost does not grow with replicas or devices.
    Removing replicas repacks the class from its counts, largest first; when that best fit cannot
    hold them all, the space stays taken (an under-estimate of room, never an over-estimate).
    """

    def __init__(self, classes: Mapping[str, ClassCapacity]) -> None:
        self._classes = dict(classes)
        self._counts: dict[str, Counter[int]] = {name: Counter() for name in classes}
        self._residual: dict[str, Counter[int]] = {}  # class -> partly used devices by free slices (> 0)
        self._nodes: dict[str, Counter[int]] = {}  # class -> nodes by free devices (> 0)
        for name in classes:
            self._reset(name)

    def _reset(self, name: str) -> None:
        cls = self._classes[name]
        self._residual[name] = Counter()
        self._nodes[name] = Counter(d for d in (cls.node_devices or (cls.devices,)) if d > 0)

    def fits(self, name: str, slices: int) -> int:
        """How many more replicas of `slices` the class holds as it is packed now."""
        per_device = self._classes[name].slices_per_device
        what, size = kind(slices, per_device)
        nodes = self._nodes[name]
        if what == "multi":
            return sum(count * (free // size) for free, count in nodes.items())
        whole = sum(free * count for free, count in nodes.items())
        if what == "device":
            return whole
        return whole * (per_device // size) + sum(count * (r // size) for r, count in self._residual[name].items())

    def add(self, name: str, slices: int, n: int) -> int:
        """Place up to `n` replicas of `slices`; returns how many were placed."""
        placed = self._place(name, slices, n)
        self._counts[name][slices] += placed
        return placed

    def remove(self, name: str, slices: int, n: int) -> None:
        counts = self._counts[name]
        counts[slices] -= min(n, counts[slices])
        before = Counter(self._residual[name]), Counter(self._nodes[name])
        self._reset(name)
        for size in sorted(counts, reverse=True):
            if self._place(name, size, counts[size]) < counts[size]:
                self._residual[name], self._nodes[name] = before
                return

    def _place(self, name: str, slices: int, n: int) -> int:
        n = min(n, self.fits(name, slices))
        if n <= 0:
            return 0
        per_device = self._classes[name].slices_per_device
        what, size = kind(slices, per_device)
        if what != "sub":
            _best_fit(self._nodes[name], size, n)
            return n
        if opened := _pack_sub(self._residual[name], per_device, size, n):
            _best_fit(self._nodes[name], 1, opened)
        return n


def _best_fit(bins: Counter[int], size: int, n: int, take_all: bool = True) -> int:
    """Put `n` items of `size` into `bins` (free space -> how many bins), the fullest bins that hold
    one first, each bin filled before the next: what n one-at-a-time best-fit placements do. Returns
    how many did not fit (0 when `take_all`: the caller checked the room)."""
    for free in sorted(f for f in bins if f >= size):
        if n == 0:
            break
        per = free // size
        count = bins[free]
        full = min(count, n // per)
        _move(bins, free, free - per * size, full)
        n -= full * per
        if n and count > full:  # one more bin takes the rest
            _move(bins, free, free - n * size, 1)
            n = 0
    assert n == 0 or not take_all, "Room placed more than fits"
    return n


def _move(bins: Counter[int], frm: int, to: int, count: int) -> None:
    if count <= 0:
        return
    bins[frm] -= count
    if not bins[frm]:
        del bins[frm]
    if to > 0:
        bins[to] += count
