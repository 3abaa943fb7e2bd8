"""The closed loop's controllers: who decides what the simulated fleet runs, behind `replay.Controller`.

  unmanaged    the apps' starting deployment (the sim with no placement applied), never changed.
  static       every LLM on H100, sized once for the peak; the rest as the starting deployment.
  reactive     each fragment on its starting class, replicas scaled as a Kubernetes HPA would.
  heteroplane  the control plane's Reconciler over the harness's database, once a period.

Each acts only through the Actuator protocol (`fleet.apply`); static and reactive read the sim's
physics where a real deployment would read its metrics (the GPU utilisation DCGM reports).
"""

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from sqlmodel import Session, select

from controlplane.actuators.base import DesiredPlacement, ReplicaSet
from controlplane.models import MigrationPolicy, Sla, Tenant, Workload
from controlplane.reconciler import CycleReport, Reconciler
from controlplane.settings import Settings
from controlplane.simfleet import physics
from controlplane.simfleet.apps import App, Fragment, Kind
from controlplane.simfleet.devices import H100, NodeLayout, device_class
from controlplane.simfleet.replay import FragmentId, FragmentLoad, Loop, RunResult

TARGET_UTILISATION = 0.7  # the HPA's target, and the utilisation static sizes the peak for


def _fragments(loop: Loop) -> dict[FragmentId, Fragment]:
    return {(a.tenant, a.workload, f.key): f for a in loop.config.apps for f in a.fragments()}


def _initial(fid: FragmentId, fragment: Fragment) -> ReplicaSet:
    d = physics.initial_deployment(fragment)
    return ReplicaSet(*fid, d.device_class, d.replicas, d.slices)


def _capacity(loop: Loop) -> dict[str, int]:
    """Healthy slices per class."""
    out: dict[str, int] = {}
    for n in loop.fleet.inventory():
        out[n.device_class] = out.get(n.device_class, 0) + n.healthy_devices * device_class(n.device_class).slices_per_device
    return out


def fit(sets: Sequence[ReplicaSet], capacity: Mapping[str, int]) -> list[ReplicaSet]:
    """`sets` with replicas trimmed, largest set first and never below one, until every class fits
    its healthy slices."""
    out = list(sets)
    for cls, slices in capacity.items():
        while sum(rs.replicas * rs.slices for rs in out if rs.device_class == cls) > slices:
            over = [i for i, rs in enumerate(out) if rs.device_class == cls
                    and rs.replicas > 1]
            if not over:
                break
            i = max(over, key=lambda i: out[i].replicas * out[i].slices)
            out[i] = ReplicaSet(out[i].tenant, out[i].workload, out[i].fragment_key, cls, out[i].replicas - 1,
                                out[i].slices)
    return out


@dataclass
class Unmanaged:
    """The apps' starting deployment: nothing is ever applied."""

    name: str = "unmanaged"
    reads_telemetry: bool = False

    def start(self, loop: Loop) -> None:
        pass

    def act(self, loop: Loop, loads: Sequence[FragmentLoad]) -> None:
        pass


def peak_loads(result: RunResult) -> dict[FragmentId, FragmentLoad]:
    """Each fragment's busiest period of a run (its visits then, and their mean tokens)."""
    peak: dict[FragmentId, FragmentLoad] = {}
    for p in result.periods:
        for load in p.loads:
            if load.fragment not in peak or load.visits > peak[load.fragment].visits:
                peak[load.fragment] = load
    return peak


def static_placement(apps: Sequence[App], peak: Mapping[FragmentId, FragmentLoad], period_s: float,
                     target: float = TARGET_UTILISATION) -> tuple[tuple[ReplicaSet, ...], dict[FragmentId, str]]:
    """Every LLM on H100 sized for its busiest period, the rest as the starting deployment; and the
    sizing arithmetic per LLM. Sizing rule, from the peak period's visits and mean tokens:

        replicas(f) = ceil(peak visits/s x occupancy_H100(f) / target)

    where occupancy is the replica-seconds one visit at those tokens holds an H100 replica of the
    fewest slices that fit the model (physics.service): the peak runs at `target` utilisation (70%)."""
    sets, sizing = [], {}
    for app in apps:
        for fragment in app.fragments():
            fid = (app.tenant, app.workload, fragment.key)
            if fragment.kind is not Kind.llm or fid not in peak:
                sets.append(_initial(fid, fragment))
                continue
            load = peak[fid]
            slices = physics.min_slices(fragment, device_class(H100))
            occupancy = physics.service(fragment, physics.Deployment(H100, 1, slices), round(load.tokens_in),
                                        round(load.tokens_out)).occupancy_s
            rate = load.visits / period_s
            replicas = max(1, math.ceil(rate * occupancy / target))
            sizing[fid] = f"{rate:.2f} visits/s x {occupancy:.2f} s / {target} -> {replicas} x {slices} slices"
            sets.append(ReplicaSet(*fid, H100, replicas, slices))
    return tuple(sets), sizing


def with_enough_h100(sets: Sequence[ReplicaSet], layout: tuple[NodeLayout, ...]) -> tuple[NodeLayout, ...]:
    """`layout` plus the H100 nodes `sets` need beyond it: a static deployment buys the GPUs its peak
    needs (unused devices cost nothing in the harness; only allocated ones are billed)."""
    spec = device_class(H100)
    need = math.ceil(sum(rs.replicas * rs.slices for rs in sets if rs.device_class == H100) / spec.slices_per_device)
    have = sum(n.nodes * n.devices_per_node for n in layout if n.device_class == H100)
    if need <= have:
        return layout
    return (*layout, NodeLayout(H100, math.ceil((need - have) / 8), 8, "sim-h100-static"))


@dataclass
class Static:
    """The static deployment of `static_placement`, applied once at the start."""

    sets: tuple[ReplicaSet, ...]
    name: str = "static"
    reads_telemetry: bool = False

    def start(self, loop: Loop) -> None:
        result = loop.fleet.apply(DesiredPlacement(1, self.sets))
        if not result.ok:
            raise RuntimeError(f"static placement refused: {result.message}")

    def act(self, loop: Loop, loads: Sequence[FragmentLoad]) -> None:
        pass


@dataclass
class Reactive:
    """Each fragment on its starting class, replicas scaled like a Kubernetes HPA on a 70% target.

    Every period, per fragment: util = its replicas' utilisation at the period's visit rate and mean
    tokens (physics.utilisation, capped at 1: what DCGM's GPU utilisation would show); desired =
    ceil(current x util / 0.7), unless util / 0.7 is within the HPA's 10% tolerance of 1; a scale-down
    takes the highest recommendation of the last `stabilisation_s` (the HPA's scale-down
    stabilisation window, 300 s by default); at least one replica; trimmed to the class's capacity.
    """

    name: str = "reactive"
    reads_telemetry: bool = False
    tolerance: float = 0.1
    stabilisation_s: float = 300.0
    _replicas: dict[FragmentId, ReplicaSet] = field(default_factory=dict)
    _history: dict[FragmentId, list[tuple[float, int]]] = field(default_factory=dict)
    _version: int = 0

    def start(self, loop: Loop) -> None:
        self._replicas = {fid: _initial(fid, f) for fid, f in _fragments(loop).items()}

    def act(self, loop: Loop, loads: Sequence[FragmentLoad]) -> None:
        now = loop.now().timestamp()
        fragments = _fragments(loop)
        by_fragment = {load.fragment: load for load in loads}
        wanted = []
        for fid, rs in self._replicas.items():
            load = by_fragment.get(fid)
            util = 0.0
            if load is not None and load.visits:
                rho, _ = physics.utilisation(fragments[fid], [physics.Deployment(rs.device_class, rs.replicas, rs.slices)],
                                             physics.Load(load.visits / loop.config.period_s, load.tokens_in,
                                                          load.tokens_out))
                util = min(1.0, rho)
            ratio = util / TARGET_UTILISATION
            recommended = rs.replicas if abs(ratio - 1) <= self.tolerance else max(1, math.ceil(rs.replicas * ratio))
            history = [(t, n) for t, n in self._history.get(fid, []) if now - t < self.stabilisation_s]
            history.append((now, recommended))
            self._history[fid] = history
            desired = recommended if recommended >= rs.replicas else max(n for _, n in history)
            wanted.append(ReplicaSet(*fid, rs.device_class, desired, rs.slices))
        wanted = fit(wanted, _capacity(loop))
        if all(self._replicas[(w.tenant, w.workload, w.fragment_key)] == w for w in wanted):
            return
        self._version += 1
        if loop.fleet.apply(DesiredPlacement(self._version, tuple(wanted))).ok:
            self._replicas = {(w.tenant, w.workload, w.fragment_key): w for w in wanted}


def compressed_time_settings(period_s: float, solver_time_limit_s: float = 2.0) -> tuple[Settings, MigrationPolicy]:
    """The reconciler's settings and fleet policy for a compressed day: a cycle every period; a
    cooldown of two periods instead of 300 s (a compressed day's hour passes in `day_s / 24`); the
    shipped minimum saving (5%), move limit (10), demand margin (0), headroom (1.2) and migration cost."""
    settings = Settings(reconcile_period_s=period_s, solver_time_limit_s=solver_time_limit_s)
    policy = MigrationPolicy(name="compressed-day", cooldown_s=int(2 * period_s))
    return settings, policy


@dataclass
class Heteroplane:
    """The control plane's Reconciler on the harness's database and simulated clock, once a period."""

    solver_time_limit_s: float = 2.0
    name: str = "heteroplane"
    reads_telemetry: bool = True
    reports: list[CycleReport] = field(default_factory=list)
    _reconciler: Reconciler | None = None

    def start(self, loop: Loop) -> None:
        settings, policy = compressed_time_settings(loop.config.period_s, self.solver_time_limit_s)
        sla = dict(loop.config.sla_ms)
        with Session(loop.engine) as session:
            session.add(policy)
            for app in loop.config.apps:
                tenant = session.exec(select(Tenant).where(Tenant.name == app.tenant)).first()
                if tenant is None:
                    tenant = Tenant(name=app.tenant)
                    session.add(tenant)
                    session.flush()
                workload = Workload(tenant_id=tenant.id, name=app.workload)
                session.add(workload)
                session.flush()
                if app.workload in sla:
                    session.add(Sla(workload_id=workload.id, p99_ms=sla[app.workload]))
            session.commit()
        self._reconciler = Reconciler(loop.engine, loop.fleet, settings, clock=loop.now)

    def act(self, loop: Loop, loads: Sequence[FragmentLoad]) -> None:
        self.reports.append(self._reconciler.run_once())
