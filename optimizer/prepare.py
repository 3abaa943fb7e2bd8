"""The stage every planner starts with: validate the problem, index it, and find what rules it out."""

from dataclasses import dataclass

from optimizer.candidates import Candidate, Pools, allowed_candidates, pool_candidates, validate
from optimizer.diagnose import diagnose_fragments, diagnose_slas
from optimizer.graph import Graph, build_graph
from optimizer.types import ClassCapacity, Problem


@dataclass(frozen=True)
class Prepared:
    """A validated problem's classes by name, allowed (fragment, class) candidates for whole replicas,
    call graph, why no plan can exist (empty when one may), and the prefill and decode candidates of
    the fragments that may be split (used by `solve` only)."""

    classes: dict[str, ClassCapacity]
    candidates: dict[str, tuple[Candidate, ...]]
    graph: Graph
    diagnosis: tuple[str, ...]
    pools: Pools


def prepare(problem: Problem, diagnose: bool = True) -> Prepared:
    """Raises ValueError for malformed input; `diagnose=False` skips the infeasibility checks."""
    validate(problem)
    classes = {cls.device_class: cls for cls in problem.device_classes}
    slas = {s.workload: s for s in problem.slas}
    candidates = {f.fragment: allowed_candidates(f, classes, slas.get(f.workload)) for f in problem.fragments}
    pools = pool_candidates(problem, classes)
    graph = build_graph(problem)
    diagnosis: tuple[str, ...] = ()
    if diagnose:
        diagnosis = tuple(
            diagnose_fragments(problem, classes, candidates, pools) or diagnose_slas(problem, graph, classes, candidates)
        )
    return Prepared(classes, candidates, graph, diagnosis, pools)


def unpack(prepared: Prepared) -> tuple[dict[str, ClassCapacity], dict[str, tuple[Candidate, ...]], Graph, tuple[str, ...]]:
    return prepared.classes, prepared.candidates, prepared.graph, prepared.diagnosis
