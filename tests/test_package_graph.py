"""The package graph: optimizer imports no other package, collectors nothing of the control plane or
the console (their pure stages load no table, engine or setting), the control plane nothing of the
console but in its composition root, and no module imports itself back
through others."""

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("optimizer", "collectors", "controlplane", "web")


def imports_of(path: Path, known: set[str], deep: bool = False) -> set[str]:
    """What one module imports when it is loaded: its module-level imports, not those inside
    functions (deferred) or under `if TYPE_CHECKING:` (never run); with `deep`, every import
    anywhere in it. `from package import module` imports that module."""
    found = set()
    tree = ast.parse(path.read_text())
    for node in (ast.walk(tree) if deep else tree.body):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            submodules = {f"{node.module}.{alias.name}" for alias in node.names} & known
            found |= submodules or {node.module}
    return found


def modules(deep: bool = False) -> dict[str, set[str]]:
    paths = {".".join(p.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__"): p
             for package in PACKAGES for p in (ROOT / package).rglob("*.py")}
    return {name: {m for m in imports_of(path, set(paths), deep) if m.split(".")[0] in PACKAGES}
            for name, path in paths.items()}


def test_optimizer_imports_no_other_package():
    leaks = {m: sorted(i for i in imps if not i.startswith("optimizer")) for m, imps in modules(deep=True).items()
             if m.startswith("optimizer")}
    assert not {m: i for m, i in leaks.items() if i}


def test_collectors_import_nothing_of_the_control_plane_or_the_console():
    """The collectors are handed what they need of the control plane (the receiver its authorise
    function, the ingest pipeline and the Prometheus puller their database writers)."""
    leaks = {m: sorted(i for i in imps if i.split(".")[0] in ("controlplane", "web"))
             for m, imps in modules(deep=True).items() if m.startswith("collectors")}
    assert not {m: i for m, i in leaks.items() if i}


def test_only_the_composition_root_mounts_the_console():
    """The API (controlplane.app) knows nothing of the console; the composition root mounts it."""
    importers = {m for m, imps in modules(deep=True).items()
                 if m.startswith("controlplane") and any(i.split(".")[0] == "web" for i in imps)}
    assert importers == {"controlplane.composition"}


def test_the_pure_collector_stages_load_nothing_of_the_control_plane():
    probe = ("import sys, collectors.normalise, collectors.assembly, collectors.metrics_decode, collectors.sketch; "
             "print(sorted(m for m in sys.modules if m.split('.')[0] in ('controlplane', 'web', 'sqlmodel')))")
    loaded = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, check=True)
    assert loaded.stdout.strip() == "[]"


def test_no_module_imports_itself_back():
    """Strongly connected components of the graph of what modules import when loaded (an import of a
    package is one of its __init__), by Tarjan's algorithm: each must be a single module."""
    graph = modules()
    edges = {m: {t for t in targets if t in graph} for m, targets in graph.items()}
    index, low, stack, on_stack, cycles, counter = {}, {}, [], set(), [], [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in edges[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    sys.setrecursionlimit(10_000)
    for v in edges:
        if v not in index:
            visit(v)
    assert not cycles, cycles
