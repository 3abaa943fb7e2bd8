"""Field ownership, server-side apply and merge patch for the API server double, as pure functions on JSON objects.

Server-side apply (SSA) decides who may change a field by recording, per field manager, the set of fields it
set (`metadata.managedFields`). The double keeps a simplified model of that bookkeeping:

- A field is a *leaf path*: a tuple of keys down to a value that is not a non-empty mapping. Lists are atomic
  (a list is one field, replaced whole), unlike the real server, which merges some lists by key.
- Of `metadata`, only `labels` and `annotations` are fields; identity and server-set metadata are not.
- An *apply* by manager M of configuration C owns exactly the leaf paths of C. Paths M owned before and no
  longer applies are removed from the object unless another manager still owns them. A path that another
  manager owns *and* whose value C changes is a conflict: without force the apply fails, with force M takes
  the path over. Applying the value a path already has shares it, as in Kubernetes.
- An *update* (create, PUT, merge patch) by manager M owns the paths whose value it changed, taken from
  everyone else: updates never conflict.

Ownership is stored only in `managedFields` entries, in the real `FieldsV1` encoding (`{"f:spec": {"f:replicas":
{}}}`), so what a client reads back is what the double decides with.
"""

import copy
from dataclasses import dataclass
from typing import Any

Path = tuple[str, ...]
Obj = dict[str, Any]

_OWNED_METADATA = ("labels", "annotations")


@dataclass(frozen=True)
class FieldConflict:
    """A path that `manager` owns and an apply would change."""

    manager: str
    path: Path

    def describe(self) -> str:
        return f'conflict with "{self.manager}": .{".".join(self.path)}'


class ApplyConflictError(Exception):
    """An apply without force would take fields from other managers."""

    def __init__(self, conflicts: list[FieldConflict]):
        self.conflicts = conflicts
        noun = "conflict" if len(conflicts) == 1 else "conflicts"
        details = "\n".join(f"- {c.describe()}" for c in conflicts)
        super().__init__(f"Apply failed with {len(conflicts)} {noun}: {details}")


def leaf_paths(obj: Obj, prefix: Path = ()) -> set[Path]:
    """The fields an object (or applied configuration) sets, as leaf paths."""
    paths: set[Path] = set()
    for key, value in obj.items():
        if not prefix and key in ("apiVersion", "kind"):
            continue
        if prefix == ("metadata",) and key not in _OWNED_METADATA:
            continue
        path = (*prefix, key)
        if isinstance(value, dict) and value:
            paths |= leaf_paths(value, path)
        else:
            paths.add(path)
    return paths


def get_path(obj: Obj, path: Path) -> Any:
    """The value at `path`, None where absent (JSON null and absence are the same to the double)."""
    node: Any = obj
    for key in path:
        if not isinstance(node, dict) or key not in node:
            return None
        node = node[key]
    return node


def _set_path(obj: Obj, path: Path, value: Any) -> None:
    node = obj
    for key in path[:-1]:
        if not isinstance(node.get(key), dict):
            node[key] = {}
        node = node[key]
    node[path[-1]] = copy.deepcopy(value)


def _delete_path(obj: Obj, path: Path) -> None:
    parent = get_path(obj, path[:-1])
    if isinstance(parent, dict):
        parent.pop(path[-1], None)


def to_fields_v1(paths: set[Path]) -> Obj:
    root: Obj = {}
    for path in sorted(paths):
        node = root
        for key in path:
            node = node.setdefault(f"f:{key}", {})
    return root


def from_fields_v1(fields: Obj, prefix: Path = ()) -> set[Path]:
    paths: set[Path] = set()
    for key, sub in fields.items():
        path = (*prefix, key.removeprefix("f:"))
        paths |= from_fields_v1(sub, path) if sub else {path}
    return paths


@dataclass(frozen=True)
class _Owner:
    manager: str
    operation: str
    subresource: str


def _owners(obj: Obj) -> dict[_Owner, set[Path]]:
    owners: dict[_Owner, set[Path]] = {}
    for entry in obj.get("metadata", {}).get("managedFields") or []:
        owner = _Owner(entry["manager"], entry["operation"], entry.get("subresource", ""))
        owners[owner] = from_fields_v1(entry.get("fieldsV1") or {})
    return owners


def _with_owners(obj: Obj, owners: dict[_Owner, set[Path]], previous: Obj, acting: _Owner, now: str) -> Obj:
    """`obj` with managedFields rebuilt from `owners`: the acting manager's entry is stamped `now`, the others
    keep their time in `previous`."""
    previous_times = {
        _Owner(e["manager"], e["operation"], e.get("subresource", "")): e.get("time")
        for e in previous.get("metadata", {}).get("managedFields") or []
    }
    entries = []
    for owner, paths in owners.items():
        if not paths:
            continue
        entry: Obj = {
            "manager": owner.manager,
            "operation": owner.operation,
            "apiVersion": obj["apiVersion"],
            "time": now if owner == acting else previous_times.get(owner, now),
            "fieldsType": "FieldsV1",
            "fieldsV1": to_fields_v1(paths),
        }
        if owner.subresource:
            entry["subresource"] = owner.subresource
        entries.append(entry)
    result = copy.deepcopy(obj)
    result.setdefault("metadata", {})["managedFields"] = entries
    return result


def apply(current: Obj, applied: Obj, manager: str, *, force: bool, subresource: str, now: str) -> Obj:
    """Server-side apply of `applied` by `manager` onto `current` (`{}` when absent); raises ApplyConflictError."""
    acting = _Owner(manager, "Apply", subresource)
    applied_paths = leaf_paths(applied)
    owners = _owners(current)
    conflicts = [
        FieldConflict(owner.manager, path)
        for owner, paths in owners.items()
        if owner.manager != manager
        for path in sorted(paths & applied_paths)
        if get_path(current, path) != get_path(applied, path)
    ]
    if conflicts and not force:
        raise ApplyConflictError(conflicts)
    taken = {c.path for c in conflicts}
    others = {owner: paths - taken for owner, paths in owners.items() if owner != acting}
    still_owned = set().union(*others.values())
    result = copy.deepcopy(current)
    for path in owners.get(acting, set()) - applied_paths - still_owned:
        _delete_path(result, path)
    for path in applied_paths:
        _set_path(result, path, get_path(applied, path))
    result["apiVersion"], result["kind"] = applied["apiVersion"], applied["kind"]
    return _with_owners(result, {**others, acting: applied_paths}, current, acting, now)


def record_update(old: Obj, new: Obj, manager: str, *, subresource: str, now: str) -> Obj:
    """`new` with `manager` owning, as an Update, every path whose value differs from `old`."""
    acting = _Owner(manager, "Update", subresource)
    changed = {path for path in leaf_paths(new) if get_path(old, path) != get_path(new, path)}
    owners = {owner: paths - changed for owner, paths in _owners(old).items()}
    owners[acting] = owners.get(acting, set()) | changed
    return _with_owners(new, owners, old, acting, now)


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch: mappings merge recursively, null deletes, anything else replaces."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result
