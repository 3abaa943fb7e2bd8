"""The agent graph the SLAs run along: edges, each SLA workload's roots, and path latencies.

The latency of a root-to-leaf path counts every visit: a child called k times per parent visit
contributes k times its own latency, k transfers on the edge and k times everything below it.
Because that is linear in k, the worst path from f down is a bottom-up recurrence

    L_f = lat_f + max(0, max_{(f, g) in E} k_fg * (tau_fg + L_g))

and a workload's p99 estimate is the largest L_r over its roots r (fragments of the workload no
edge from the same workload leads into). Only fragments reachable from such roots matter; a cycle among them has no
finite path latency and is reported as such.
"""

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


def longest_paths(
    graph: Graph, latency_ms: Callable[[str], float], transfer_ms: Callable[[Edge], float],
    order: Sequence[str] | None = None,
) -> tuple[dict[str, float], dict[str, str | None]]:
    """L_f of the module docstring for every fragment in `order` (children first; default
    `graph.order`), and the child each max came from."""
    below: dict[str, float] = {}
    via: dict[str, str | None] = {}
    for f in graph.order if order is None else order:
        best, arg = 0.0, None
        for e in graph.children.get(f, ()):
            value = e.calls_per_parent_call * (transfer_ms(e) + below[e.child])
            if value > best:
                best, arg = value, e.child
        below[f] = latency_ms(f) + best
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
