"""The agent graph the SLAs run along: edges, each SLA workload's roots, and path latencies.

A workload's SLA bounds the p99 of a visit to one of its roots, so path latency counts what a
visit in the slowest 1% (TAIL_SHARE) does, as the fleet runs it:

* children a fragment calls one after another add up; children it calls concurrently (their
  calls overlap in the trace: Edge.concurrent) take the max;
* a child called on a fraction of visits is in the tail path when that fraction is above the
  tail the SLA leaves (> 1% for a p99), and then counts in full, not by its fraction;
* repeated calls add per call at the tail, not at the mean: w_fg = ceil(calls at the 99th
  percentile) when telemetry measured it (Edge.calls_p99), else ceil(mean calls), and 0 for a
  mean of at most TAIL_SHARE calls (at most 1% of visits call). Concurrent calls of one edge
  run side by side and count once.

Every latency is the p99 of its part, so the sum bounds the visit's p99 from above (the p99 of a
sum is at most the sum of p99s). With lat_f f's own latency and tau_fg the transfer on an edge,

    L_f = lat_f + sum_{(f,g) sequential} w_fg * (tau_fg + L_g)
                + max(0, max_{(f,g) concurrent, w_fg > 0} (tau_fg + L_g))

is a bottom-up recurrence, and a workload's p99 estimate is the largest L_r over its roots r
(fragments of the workload no edge from the same workload leads into). Only fragments reachable
from such roots matter; a cycle among them has no finite path latency and is reported as such.
"""

import math
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cached_property

from optimizer.types import Edge, Problem


@dataclass(frozen=True)
class Graph:
    """Edges by parent, the roots of every workload with an SLA, and a children-first order."""

    children: dict[str, tuple[Edge, ...]]
    roots: dict[str, tuple[str, ...]]  # SLA workload -> its root fragments
    order: tuple[str, ...]  # fragments reachable from SLA roots, every child before its parents
    cycle: tuple[str, ...] = ()  # a cycle among those fragments, when there is one

    @cached_property
    def position(self) -> dict[str, int]:
        return {f: i for i, f in enumerate(self.order)}


def build_graph(problem: Problem) -> Graph:
    workload_of = {f.fragment: f.workload for f in problem.fragments}
    children: dict[str, list[Edge]] = defaultdict(list)
    has_parent = set()
    for e in problem.edges:
        children[e.parent].append(e)
        if workload_of[e.parent] == workload_of[e.child]:
            has_parent.add(e.child)
    sla_workloads = {s.workload for s in problem.slas}
    roots: dict[str, list[str]] = {w: [] for w in sla_workloads}
    for f in problem.fragments:
        if f.workload in sla_workloads and f.fragment not in has_parent:
            roots[f.workload].append(f.fragment)
    # A workload whose every fragment has a parent in it holds a cycle: start there to find it.
    starts = [r for rs in roots.values() for r in rs]
    starts += [f.fragment for f in problem.fragments
               if f.workload in sla_workloads and not roots[f.workload]]
    order, cycle = _postorder(starts, children)
    return Graph({k: tuple(v) for k, v in children.items()}, {w: tuple(r) for w, r in roots.items()},
                 tuple(order), tuple(cycle))


def _postorder(starts: list[str], children: dict[str, list[Edge]]) -> tuple[list[str], list[str]]:
    """Depth-first post-order (children first) without recursion, and the first cycle met."""
    state: dict[str, int] = {}  # 1 on the stack, 2 done
    order: list[str] = []
    for start in starts:
        if start in state:
            continue
        stack = [(start, iter(children.get(start, ())))]
        state[start] = 1
        while stack:
            node, it = stack[-1]
            nxt = next(it, None)
            if nxt is None:
                stack.pop()
                state[node] = 2
                order.append(node)
                continue
            child = nxt.child
            if state.get(child) == 1:
                path = [n for n, _ in stack]
                return order, path[path.index(child):] + [child]
            if child not in state:
                state[child] = 1
                stack.append((child, iter(children.get(child, ()))))
    return order, []


TAIL_SHARE = 0.01  # the share of visits a p99 SLA leaves above its bound


def tail_calls(edge: Edge) -> int:
    """w_fg of the module docstring: calls of the child a visit in the tail makes."""
    if edge.calls_p99 is not None:
        return max(0, math.ceil(edge.calls_p99 - 1e-9))
    k = edge.calls_per_parent_call
    return 0 if k <= TAIL_SHARE else max(1, math.ceil(k - 1e-9))


def longest_paths(
    graph: Graph, latency_ms: Callable[[str], float], transfer_ms: Callable[[Edge], float],
    order: Sequence[str] | None = None,
) -> tuple[dict[str, float], dict[str, str | None]]:
    """L_f of the module docstring for every fragment in `order` (children first; default
    `graph.order`), and the child adding most to it (the tail path goes on through it)."""
    below: dict[str, float] = {}
    via: dict[str, str | None] = {}
    for f in graph.order if order is None else order:
        added, concurrent, arg, top = 0.0, 0.0, None, 0.0
        for e in graph.children.get(f, ()):
            w = tail_calls(e)
            if not w:
                continue
            one = transfer_ms(e) + below[e.child]
            value = one if e.concurrent else w * one
            if e.concurrent:
                concurrent = max(concurrent, one)
            else:
                added += value
            if value > top:
                top, arg = value, e.child
        below[f] = latency_ms(f) + added + concurrent
        via[f] = arg
    return below, via


def workload_p99(graph: Graph, below: dict[str, float]) -> dict[str, tuple[float, str | None]]:
    """Per SLA workload, its worst path latency and the root that path starts from."""
    out = {}
    for w, roots in graph.roots.items():
        worst = max(((below[r], r) for r in roots), default=(0.0, None))
        out[w] = worst
    return out


def path_from(root: str, via: dict[str, str | None]) -> list[str]:
    path = [root]
    while (nxt := via.get(path[-1])) is not None:
        path.append(nxt)
    return path


def reachable(graph: Graph, roots: Sequence[str]) -> tuple[str, ...]:
    """The fragments reachable from `roots`, children first (a slice of `graph.order`)."""
    seen, stack = set(roots), list(roots)
    while stack:
        for e in graph.children.get(stack.pop(), ()):
            if e.child not in seen:
                seen.add(e.child)
                stack.append(e.child)
    return tuple(sorted(seen, key=graph.position.__getitem__))
