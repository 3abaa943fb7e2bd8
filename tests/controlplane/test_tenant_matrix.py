"""Tenant isolation across the whole API: every operation of the OpenAPI document, called with each
tenant's tokens over a fleet both tenants use, answers no byte of the other tenant's (ids, names,
costs) and nothing fleet-wide beyond the device catalog and placement summaries; writes to the
other tenant's objects answer 404 and change nothing."""

import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from datetime import timedelta

from fastapi.testclient import TestClient
from httpx import Response
from sqlalchemy import select as sa_select
from sqlmodel import Session, SQLModel, select

from collectors.pipeline import IngestStats
from controlplane.actuators.base import NodeInventory
from controlplane.actuators.memory import InMemoryActuator
from controlplane.auth import mint_token
from controlplane.models import (
    ApiToken,
    DeviceClass,
    Edge,
    Fragment,
    FragmentKind,
    FragmentPin,
    FragmentProfile,
    Migration,
    MigrationPolicy,
    Node,
    Placement,
    PlacementItem,
    Role,
    Sla,
    UsageRecord,
    Workload,
)
from controlplane.models._common import minute_of, utcnow
from controlplane.reconciler import Reconciler
from controlplane.seed import seed_catalog
from controlplane.settings import Settings
from tests.controlplane.conftest import auth

T0 = minute_of(utcnow())
MIN, SEC = timedelta(minutes=1), timedelta(seconds=1)
MISSING = 999_999  # an id no row has: the other tenant's ids must answer exactly as this one does


@dataclass(frozen=True)
class Sample:
    """One tenant's workload; every text of it carries `mark`, so that one search finds its names."""

    mark: str
    workload: str
    p99_ms: int
    llm: str
    tool: str
    min_improvement_pct: float  # of its workload policy: acme's hardly ever moves for cost


SAMPLES = {
    "acme": Sample("zebra", "zebra-chat", 23_456, "zebrachat-8b", "zebra-lookup", 50.0),
    "globex": Sample("quokka", "quokka-docs", 27_183, "quokkadocs-3b", "quokka-index", 1.0),
}
CPU, DEAR = NodeInventory("cpu-0", "CPU-EPYC-64C", 2, 2), NodeInventory("mi300x-0", "MI300X", 4, 4)
L40S, L4 = NodeInventory("l40s-0", "L40S", 8, 8), NodeInventory("l4-0", "L4", 8, 8)
ACTUATOR_ERROR = "node l40s-0 refused 1 replica of globex/quokka-docs llm:quokkadocs-3b: out of memory"
INGEST_ERROR = ('IntegrityError: (psycopg.errors.UniqueViolation) duplicate key value violates unique constraint '
                '"uq_fragment_workload_key" DETAIL: Key (workload_id, key)=({wid}, llm:quokkadocs-3b) already exists.')


class FailingIngest:
    """An OTLP pipeline whose last flush failed, as /health reports it: the driver's words name rows."""

    def __init__(self, message: str) -> None:
        self.message = message

    def stats(self) -> IngestStats:
        return IngestStats(0, 12, 0, 3, 0, 0, 0, self.message)


# ---------------------------------------------------------------------------- the fleet both tenants use


def two_tenants(engine, client: TestClient, callers) -> dict[str, str]:
    """Both tenants' workloads, graphs, SLAs and policies (each names one policy "nightly"), placed by
    real reconciler cycles: an initial placement, a failed actuation, moves for cost and for demand,
    an operator's rollback (pins), a policy that wants approval, then lost capacity (a degraded plan
    whose unmet SLAs /health names); usage metered all along. Returns a token per tenant caller."""
    tenant_of = {"acme": callers.acme_id, "globex": callers.globex_id}
    with Session(engine) as session:
        seed_catalog(session)
        session.add(MigrationPolicy(name="fleet-default", min_improvement_pct=1, cooldown_s=0))
        for tenant, s in SAMPLES.items():
            workload = Workload(name=s.workload, tenant_id=tenant_of[tenant], description=f"{s.mark} app")
            session.add(workload)
            session.flush()
            session.add(Sla(workload_id=workload.id, p99_ms=s.p99_ms))
            session.add(MigrationPolicy(name="nightly", tenant_id=workload.tenant_id, cooldown_s=0))
            session.add(MigrationPolicy(name=f"{s.workload}-hold", tenant_id=workload.tenant_id,
                                        workload_id=workload.id, cooldown_s=0,
                                        min_improvement_pct=s.min_improvement_pct))
            llm = _fragment(session, workload, FragmentKind.llm, s.llm, 800, 200)
            tool = _fragment(session, workload, FragmentKind.tool, s.tool, 0, 0)
            session.add(Edge(workload_id=workload.id, parent_id=llm.id, child_id=tool.id, calls=2400, bytes_total=2400 * 512))
        tokens = {
            "acme_operator": callers.acme_operator,
            "acme_viewer": mint_token(session, "acme-view", Role.viewer, tenant_id=callers.acme_id)[1],
            "globex_operator": mint_token(session, "globex-ops", Role.operator, tenant_id=callers.globex_id)[1],
            "globex_viewer": callers.globex_viewer,
        }
        session.commit()

    actuator = InMemoryActuator((DEAR, CPU))
    cycle(engine, actuator, T0 + 30 * SEC)  # v1: the initial placement
    actuator.nodes, actuator.fail_with = (DEAR, CPU, L40S), ACTUATOR_ERROR
    cycle(engine, actuator, T0 + 2 * MIN)  # v2: globex moves for cost, and the actuator fails
    actuator.fail_with = None
    cycle(engine, actuator, T0 + 3 * MIN)  # v3: the same moves, applied
    _demand(engine, SAMPLES["acme"], 6)
    cycle(engine, actuator, T0 + 4 * MIN)  # v4: acme's demand grew past its placement
    rollback = client.post("/api/v1/placements/1/rollback", headers=auth(callers.admin))
    assert rollback.status_code == 201, rollback.text  # v5: back to v1, both LLMs pinned
    with Session(engine) as session:
        hold = session.exec(select(MigrationPolicy).where(MigrationPolicy.name == "quokka-docs-hold")).one()
        hold.approval_required = True
        session.commit()
    actuator.nodes = (DEAR, CPU, L40S, L4)
    cycle(engine, actuator, T0 + 5 * MIN)
    cycle(engine, actuator, T0 + 6 * MIN)
    cycle(engine, actuator, T0 + 7 * MIN)
    actuator.nodes = (CPU, NodeInventory("l4-0", "L4", 1, 1))  # the rest lost: neither tenant is served
    client.app.state.reconciler = cycle(engine, actuator, T0 + 8 * MIN)
    with Session(engine) as session:
        globex_wid = session.exec(select(Workload.id).where(Workload.tenant_id == callers.globex_id)).one()
    client.app.state.ingest = FailingIngest(INGEST_ERROR.format(wid=globex_wid))
    return tokens


def cycle(engine, actuator: InMemoryActuator, at) -> Reconciler:
    reconciler = Reconciler(engine, actuator, Settings(solver_time_limit_s=2), clock=lambda: at)
    reconciler.run_once()
    return reconciler


def _fragment(session: Session, workload: Workload, kind: FragmentKind, name: str, tokens_in: int, tokens_out: int):
    fragment = Fragment(workload_id=workload.id, key=f"{kind.value}:{name}", kind=kind, name=name,
                        model=name if kind is FragmentKind.llm else "", first_seen=T0 - 10 * MIN)
    session.add(fragment)
    session.flush()
    for k in range(-10, 31):
        session.add(FragmentProfile(fragment_id=fragment.id, minute=T0 + k * MIN, visits=60, latency_ms_sum=60 * 50.0,
                                    tokens_in=60 * tokens_in, tokens_out=60 * tokens_out))
    return fragment


def _demand(engine, sample: Sample, factor: int) -> None:
    with Session(engine) as session:
        for profile in session.exec(select(FragmentProfile).join(Fragment, Fragment.id == FragmentProfile.fragment_id)
                                    .where(Fragment.key.contains(sample.mark))).all():
            profile.visits *= factor
            profile.latency_ms_sum *= factor
            profile.tokens_in *= factor
            profile.tokens_out *= factor
        session.commit()


# ---------------------------------------------------------------------------- what must not leak


@dataclass
class Markers:
    """Patterns of one owner's data (a tenant's, or the fleet's), by what they show."""

    patterns: dict[str, re.Pattern] = field(default_factory=dict)

    def add(self, label: str, pattern: str) -> None:
        self.patterns[label] = re.compile(pattern)

    def number(self, label: str, value: float) -> None:
        """A figure as JSON prints it and as a reason does ($1,234.56/h)."""
        self.add(f"{label} {value!r}", rf"(?<![\d.]){re.escape(repr(value))}(?!\d)|{re.escape(f'${value:,.2f}')}(?!\d)")

    def found(self, text: str) -> set[str]:
        return {label for label, pattern in self.patterns.items() if pattern.search(text)}


def tenant_markers(session: Session, tenant: str, tenant_id: int, costs: list[float]) -> Markers:
    """The ids, names and figures of `tenant`: as JSON fields and as the words of a reason or an error."""
    m = Markers()
    m.add("name", rf"{SAMPLES[tenant].mark}|{tenant}")
    m.add("tenant id", rf'"tenant_id":\s*{tenant_id}\b|\btenant {tenant_id}\b')
    m.add("SLA", rf"\b{SAMPLES[tenant].p99_ms}\b|\b{SAMPLES[tenant].p99_ms:,}\b")
    for wid in session.exec(select(Workload.id).where(Workload.tenant_id == tenant_id)).all():
        m.add(f"workload {wid}", rf'"workload_id":\s*{wid}\b|"workload":\s*"{wid}"|\bworkload {wid}\b')
    for fid in session.exec(select(Fragment.id).join(Workload).where(Workload.tenant_id == tenant_id)).all():
        m.add(f"fragment {fid}", rf'"(fragment|parent|child)_id":\s*{fid}\b|\bfragment {fid}\b|\b{fid}(/\w+)?@')
    for mid in session.exec(select(Migration.id).join(Fragment).join(Workload).where(Workload.tenant_id == tenant_id)).all():
        m.add(f"migration {mid}", rf"\bmigration {mid}\b")
    for cost in costs:
        m.number("cost", cost)
    return m


def fleet_markers(session: Session, legit: set[float]) -> Markers:
    """What only fleet-wide callers see: the fleet's $/h (placements and their reasons) but for
    figures in `legit`, the node inventory, and which of the fleet's operators did what."""
    m = Markers()
    for usd, reason in session.exec(select(Placement.usd_per_hour, Placement.reason)).all():
        for value in [usd, *(float(x.replace(",", "")) for x in re.findall(r"\$([\d,]+\.\d\d)/h", reason))]:
            if not _near(value, legit):
                m.number("fleet cost", value)
    for name in session.exec(select(Node.name)).all():
        m.add(f"node {name}", rf"\b{re.escape(name)}\b")
    for token_id, name in session.exec(select(ApiToken.id, ApiToken.name).where(ApiToken.tenant_id.is_(None))).all():
        m.add(f"operator {name}", rf"token:{token_id}:")
    return m


def _near(value: float, others: set[float]) -> bool:
    return any(abs(value - o) < 0.006 for o in others)


def own_figures(session: Session, tenant_id: int) -> set[float]:
    """Every $ figure `tenant_id` may see of its own, and the price list everyone may see."""
    figures = {c.usd_per_hour for c in session.exec(select(DeviceClass)).all()}
    for placement in session.exec(select(Placement)).all():
        items = [c.usd_per_hour_for(i.replicas, i.slices) for i, c in session.exec(
            select(PlacementItem, DeviceClass).join(DeviceClass).join(Fragment).join(Workload)
            .where(PlacementItem.placement_id == placement.id, Workload.tenant_id == tenant_id)).all()]
        figures |= {*items, sum(items)}
    usage = session.exec(select(UsageRecord).where(UsageRecord.tenant_id == tenant_id)).all()
    for key in ("workload_id", "fragment_id", "device_class_id", "tenant_id"):
        groups: dict[int, float] = {}
        for u in usage:
            groups[getattr(u, key)] = groups.get(getattr(u, key), 0.0) + u.cost_usd
        figures |= set(groups.values())
    return figures


def costs_seen_by(client: TestClient, token: str, session: Session) -> list[float]:
    """A tenant's own $ figures as the API shows them to it: its share of each placement, its costs."""
    seen = [client.get(f"/api/v1/placements/{v}", headers=auth(token)).json()["usd_per_hour"]
            for v in session.exec(select(Placement.version)).all()]
    for group in ("tenant", "workload", "fragment", "device_class"):
        report = client.get("/api/v1/costs", params={"group_by": group, **COST_WINDOW}, headers=auth(token)).json()
        seen += [report["total_cost_usd"], *(line["cost_usd"] for line in report["items"])]
    return [x for x in seen if x]


COST_WINDOW = {"since": (T0 - 60 * MIN).isoformat(), "until": (T0 + 60 * MIN).isoformat()}


# ---------------------------------------------------------------------------- every operation, and its calls


@dataclass(frozen=True)
class Call:
    """One request of one operation (`method`, `template`), and whose objects the ids in it name."""

    method: str
    template: str  # the path as the OpenAPI document has it
    path: str
    target: str  # own, other, fleet or none
    params: dict = field(default_factory=dict)
    body: dict | None = None
    kind: str | None = None  # of the object its path or body names
    other_id: int | None = None  # the other tenant's id in it, which its twin replaces by MISSING

    @property
    def operation(self) -> tuple[str, str]:
        return self.method, self.template

    @property
    def writes(self) -> bool:
        return self.method != "GET"

    def twin(self) -> "Call":
        """The same call with the other tenant's id replaced by one that names nothing."""
        def swap(values: dict) -> dict:
            return {k: MISSING if k in KIND_OF and v == self.other_id else v for k, v in values.items()}
        return replace(self, path=re.sub(rf"/{self.other_id}(?=/|$)", f"/{MISSING}", self.path), target="missing",
                       params=swap(self.params), body=swap(self.body) if self.body is not None else None,
                       other_id=None)


# Which objects a path or query parameter names; `index` is a device's index on its node.
KIND_OF = {"device_class_id": "device_class", "node_id": "node", "tenant_id": "tenant", "workload_id": "workload",
           "sla_id": "sla", "policy_id": "policy", "version": "placement", "migration_id": "migration",
           "fragment_id": "pin", "token_id": "token"}
# Whose objects each kind has: a tenant's objects answer another tenant 404 (as a missing one does).
TENANT_KINDS = {"tenant", "workload", "sla", "policy", "migration", "pin", "token"}

Ids = dict[str, dict[str, list[int]]]  # kind -> own / other / fleet -> ids


def ids_for(session: Session, tenant_id: int, other_id: int) -> Ids:
    def of(tid: int) -> dict[str, list[int]]:
        workloads = list(session.exec(select(Workload.id).where(Workload.tenant_id == tid)).all())
        fragments = list(session.exec(select(Fragment.id).where(Fragment.workload_id.in_(workloads))).all())
        return {
            "tenant": [tid], "workload": workloads,
            "sla": list(session.exec(select(Sla.id).where(Sla.workload_id.in_(workloads))).all()),
            "policy": list(session.exec(select(MigrationPolicy.id).where(MigrationPolicy.tenant_id == tid)).all()),
            "migration": list(session.exec(select(Migration.id).where(Migration.fragment_id.in_(fragments))).all()),
            "pin": list(session.exec(select(FragmentPin.fragment_id).where(FragmentPin.fragment_id.in_(fragments))).all()),
            "token": list(session.exec(select(ApiToken.id).where(ApiToken.tenant_id == tid)).all()),
        }
    own, other = of(tenant_id), of(other_id)
    fleet = {
        "device_class": list(session.exec(select(DeviceClass.id).order_by(DeviceClass.id).limit(2)).all()),
        "node": list(session.exec(select(Node.id).order_by(Node.id).limit(2)).all()),
        "placement": list(session.exec(select(Placement.version)).all()),
        "policy": list(session.exec(select(MigrationPolicy.id).where(MigrationPolicy.tenant_id.is_(None))).all()),
        "token": list(session.exec(select(ApiToken.id).where(ApiToken.tenant_id.is_(None))).all()),
    }
    kinds = set(own) | set(fleet)
    return {k: {"own": own.get(k, []), "other": other.get(k, []), "fleet": fleet.get(k, [])} for k in kinds}


def _policy_bodies(ids: Ids, target: str) -> Iterator[dict]:
    if target == "fleet":
        yield {"name": "nightly"}
        return
    for tenant_id in ids["tenant"][target]:
        yield {"name": "nightly", "tenant_id": tenant_id}
    for workload_id in ids["workload"][target]:
        yield {"name": "weekend", "workload_id": workload_id}


# Request bodies, and for creates what the body names: a function of the ids and whose they are.
BODIES: dict[tuple[str, str], Callable[[Ids, str], Iterator[dict]]] = {
    ("POST", "/api/v1/device-classes"): lambda ids, t: iter([{
        "name": "X-1", "vendor": "x", "bf16_tflops": 1, "memory_gib": 1, "memory_gbps": 1, "fabric": "pcie",
        "usd_per_hour": 1}] if t == "fleet" else []),
    ("POST", "/api/v1/nodes"): lambda ids, t: ({"name": "x-node", "device_class_id": d, "device_count": 1}
                                               for d in ids["device_class"][t]),
    ("POST", "/api/v1/tenants"): lambda ids, t: iter([{"name": "initech"}] if t == "fleet" else []),
    ("POST", "/api/v1/workloads"): lambda ids, t: ({"name": "new-app", "tenant_id": x} for x in ids["tenant"][t]),
    ("POST", "/api/v1/slas"): lambda ids, t: ({"workload_id": w, "p99_ms": 1000} for w in ids["workload"][t]),
    ("POST", "/api/v1/migration-policies"): _policy_bodies,
    ("POST", "/api/v1/tokens"): lambda ids, t: ({"name": "new", "role": "viewer", "tenant_id": x}
                                                for x in (ids["tenant"][t] or [None])),
    ("PATCH", "/api/v1/device-classes/{device_class_id}"): lambda ids, t: iter([{"usd_per_hour": 9.5}]),
    ("PATCH", "/api/v1/nodes/{node_id}"): lambda ids, t: iter([{"cordoned": True}]),
    ("PATCH", "/api/v1/nodes/{node_id}/devices/{index}"): lambda ids, t: iter([{"cordoned": True}]),
    ("PATCH", "/api/v1/tenants/{tenant_id}"): lambda ids, t: iter([{"display_name": "renamed"}]),
    ("PATCH", "/api/v1/workloads/{workload_id}"): lambda ids, t: iter([{"description": "patched"}]),
    ("PATCH", "/api/v1/slas/{sla_id}"): lambda ids, t: iter([{"p99_ms": 999}]),
    ("PATCH", "/api/v1/migration-policies/{policy_id}"): lambda ids, t: iter([{"enabled": False}]),
    ("PUT", "/api/v1/workloads/{workload_id}/runtime-template"): lambda ids, t: iter([{"image": "app:1"}]),
    ("PUT", "/api/v1/fragments/{fragment_id}/runtime-template"): lambda ids, t: iter([{"image": "app:1"}]),
}
# Query values beyond ids and enums: windows that hold the fleet's usage and profiles.
QUERIES = {
    ("GET", "/api/v1/costs"): COST_WINDOW,
    ("GET", "/api/v1/workloads/{workload_id}/profiles"): {"minutes": 120, "until": (T0 + 60 * MIN).isoformat()},
}


def operations(openapi: dict) -> dict[tuple[str, str], dict]:
    return {(method.upper(), path): op for path, ops in openapi["paths"].items() for method, op in ops.items()}


def calls_of(openapi: dict, method: str, template: str, ids: Ids) -> list[Call]:
    """Every call of one operation: its path id as the caller's, the other tenant's and a fleet-wide
    object's; each query id and enum value alike; a create's body naming each owner."""
    op = operations(openapi)[method, template]
    base = Call(method, template, template, "none", dict(QUERIES.get((method, template), {})))
    path_kind = next((KIND_OF[p] for p in re.findall(r"{(\w+)}", template) if p in KIND_OF), None)
    bodies = BODIES.get((method, template))
    out = []
    if path_kind is not None:
        body = next(bodies(ids, "own"), None) if bodies else None
        for target, values in ids[path_kind].items():
            out += [replace(base, path=re.sub(r"{index}", "0", re.sub(r"{\w+_id}|{version}", str(value), template)),
                            target=target, body=body, kind=path_kind, other_id=value if target == "other" else None)
                    for value in values]
    elif bodies is not None:
        for target in ("own", "other", "fleet"):
            for body in bodies(ids, target):
                kind, value = next(((KIND_OF[k], v) for k, v in body.items() if k in KIND_OF and v), (None, None))
                out.append(replace(base, target=target, body=body, kind=kind,
                                   other_id=value if target == "other" else None))
    else:
        out.append(base)
    for param in op.get("parameters", []):
        name = param["name"]
        if param["in"] != "query":
            continue
        if name in KIND_OF:
            out += [replace(base, target=target, params={**base.params, name: v},
                            other_id=v if target == "other" else None)
                    for target, values in ids[KIND_OF[name]].items() for v in values]
        out += [replace(base, params={**base.params, name: value}) for value in _enum(openapi, param["schema"])]
    return out


def _enum(openapi: dict, schema: dict) -> list[str]:
    for option in [schema, *schema.get("anyOf", []), *([schema["items"]] if "items" in schema else [])]:
        if "$ref" in option:
            return openapi["components"]["schemas"][option["$ref"].rsplit("/", 1)[1]].get("enum", [])
    return []


# ---------------------------------------------------------------------------- the matrix


def database_rows(engine) -> dict[str, list[tuple]]:
    with engine.connect() as conn:
        return {t.name: [tuple(r) for r in conn.execute(sa_select(t).order_by(*t.primary_key.columns)).all()]
                for t in SQLModel.metadata.sorted_tables}


def text_of(response: Response) -> str:
    headers = {k: v for k, v in response.headers.items() if k != "content-length"}
    return f"{response.status_code} {json.dumps(headers)} {response.text}"


def normalised(response: Response, value: int) -> str:
    return re.sub(rf"(?<![\w.:-]){value}(?![\w.:])", "<id>", text_of(response))


CALLERS = {"acme_operator": ("acme", "globex"), "acme_viewer": ("acme", "globex"),
           "globex_operator": ("globex", "acme"), "globex_viewer": ("globex", "acme")}
NODE_REFUSAL = "node inventory is fleet-wide; a tenant-scoped token cannot read it"


@dataclass
class Reader:
    """One tenant caller: what it must never see, what it may, and what it was shown."""

    name: str
    token: str
    theirs: Markers  # the other tenant's
    fleet: Markers
    mine: Markers
    seen_own: set[str] = field(default_factory=set)
    failures: list[str] = field(default_factory=list)

    def send(self, client: TestClient, call: Call) -> Response:
        response = client.request(call.method, call.path, params=call.params, json=call.body, headers=auth(self.token))
        # The id the caller sent, said back ("workload 7 not found"), tells it nothing: `sweep` checks
        # that the answer is the one a missing id gets.
        text = normalised(response, call.other_id) if call.other_id is not None else text_of(response)
        if found := self.theirs.found(text) | self.fleet.found(text):
            self.fail(call, f"{response.status_code} shows {sorted(found)}: {response.text[:300]}")
        self.seen_own |= self.mine.found(text)
        return response

    def fail(self, call: Call, why: str) -> None:
        self.failures.append(f"{self.name} {call.method} {call.path} {call.params or ''} {call.body or ''}: {why}")

    def sweep(self, client: TestClient, call: Call) -> None:
        """Send `call`; when it names the other tenant's object, check that it answers as for none."""
        response = self.send(client, call)
        if call.other_id is not None:
            twin = self.send(client, call.twin())
            if normalised(response, call.other_id) != normalised(twin, MISSING):
                self.fail(call, f"the other tenant's id answers {response.status_code} {response.text[:200]}, a "
                                f"missing one {twin.status_code} {twin.text[:200]}")
            if call.kind in TENANT_KINDS and response.status_code != 404 and not _role_refusal(response):
                self.fail(call, f"{response.status_code}, not 404")
        if call.path.startswith("/api/v1/nodes") and call.method == "GET" and \
                (response.status_code, _detail(response)) != (403, NODE_REFUSAL):
            self.fail(call, f"{response.status_code} {response.text[:200]}")
        if call.writes and call.target == "fleet" and response.status_code != 403:
            self.fail(call, f"a write to a fleet-wide object is not refused: {response.status_code} {response.text[:200]}")


def test_no_response_to_a_tenant_carries_another_tenants_or_the_fleets_data(engine, client, callers):
    tokens = two_tenants(engine, client, callers)
    unmet = client.get("/api/v1/health", headers=auth(callers.viewer)).json()["unmet_slas"]
    assert {u["workload"] for u in unmet} == {s.workload for s in SAMPLES.values()}  # /health names both
    openapi = client.app.openapi()
    assert set(operations(openapi)) == _covered(openapi), "an operation the matrix cannot call yet"
    tenant_id = {"acme": callers.acme_id, "globex": callers.globex_id}
    theirs: dict[str, Markers] = {}  # by reader
    with Session(engine) as session:
        legit = {tenant: own_figures(session, tid) for tenant, tid in tenant_id.items()}
        for reader, other in (("acme", "globex"), ("globex", "acme")):
            seen = costs_seen_by(client, tokens[f"{other}_operator"], session)
            theirs[reader] = tenant_markers(session, other, tenant_id[other],
                                            [x for x in seen if not _near(x, legit[reader])])
        readers = [Reader(caller, tokens[caller], theirs[me], fleet_markers(session, legit[me]), theirs[other])
                   for caller, (me, other) in CALLERS.items()]
        ids = {caller: ids_for(session, tenant_id[me], tenant_id[other]) for caller, (me, other) in CALLERS.items()}
    for reader in readers:  # figures to look for remain once those the reader may see are set aside
        assert any(label.startswith("cost") for label in reader.theirs.patterns)
        assert any(label.startswith("fleet cost") for label in reader.fleet.patterns)
        # ... and each kind of a tenant's objects exists for both, so every route is asked for both
        assert all(ids[reader.name][kind][whose] for kind in TENANT_KINDS for whose in ("own", "other"))

    before = database_rows(engine)
    own_writes: list[tuple[Reader, Call]] = []
    for reader in readers:
        for method, path in operations(openapi):
            calls = calls_of(openapi, method, path, ids[reader.name])
            assert calls, (method, path)
            for call in calls:
                if call.writes and call.target == "own":
                    own_writes.append((reader, call))
                else:
                    reader.sweep(client, call)
    failures = [f for reader in readers for f in reader.failures]
    assert not failures, "\n".join(failures)
    assert database_rows(engine) == before, "a refused write changed the database"

    # Writes to one's own objects last, their answers searched alike: deletes after the rest, a
    # workload's after its pins', policies' and SLA's (the route table's order, reversed).
    order = list(operations(openapi))
    deletes = sorted((rc for rc in own_writes if rc[1].method == "DELETE"), key=lambda rc: -order.index(rc[1].operation))
    for reader, call in [rc for rc in own_writes if rc[1].method != "DELETE"] + deletes:
        reader.send(client, call)
    failures = [f for reader in readers for f in reader.failures]
    assert not failures, "\n".join(failures)
    # The markers are real: each caller's own answers show its names, ids and costs.
    for reader in readers:
        for what in ("name", "tenant id", "SLA", "workload", "fragment", "cost"):
            assert any(label.startswith(what) for label in reader.seen_own), f"{reader.name} never saw its {what}"


def _role_refusal(response: Response) -> bool:
    """A 403 for the token's role, which every id of the route gets alike."""
    return response.status_code == 403 and "role" in (_detail(response) or "")


def _detail(response: Response) -> str | None:
    body = response.json() if response.content else None
    return body.get("detail") if isinstance(body, dict) else None


def _covered(openapi: dict) -> set[tuple[str, str]]:
    """Operations the matrix knows how to call: every path parameter's kind known, and a body in
    BODIES where one is asked for."""
    return {(m, p) for (m, p), op in operations(openapi).items()
            if set(re.findall(r"{(\w+)}", p)) <= set(KIND_OF) | {"index"}
            and ("requestBody" not in op or (m, p) in BODIES)}
