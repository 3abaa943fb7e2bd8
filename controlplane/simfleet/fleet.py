"""The simulated fleet: an Actuator over a fixed inventory that serves the sample apps and reports like real hardware.

It is a peer of the Kubernetes actuator. The control plane reaches it only
through the Actuator protocol; the sim reaches the control plane only through
OTLP spans (the load driver) and Prometheus metrics (FleetMetrics).

What runs: every replica set of the last applied placement, plus, for each
fragment of a sample app that no placement has named yet, its initial
deployment (models on H100, the rest on CPU), as apps ran before heteroplane
adopted them. Replicas are packed onto healthy devices of nodes not lost, in node
order, slice by slice (a replica may straddle devices: a simplification); a replica
that no longer fits after a device fails (`fail_device`) or its node is lost
(`fail_node`) stops running, and its fragment's visits fail when none is left.

An LLM fragment may run split (disaggregated serving): a prefill pool and a
decode pool of replica sets instead of whole replicas. Each visit is prefilled
on one pool, decoded on the other (physics.split_visit), and each part's busy
time lands on its own set's devices; once either pool has no running replica,
the fragment's visits fail.

Load is tracked with exponentially decayed sums (time constant `TAU_S`), so
rates, utilisation and queue depths follow the traffic within tens of seconds.
"""

import math
import random
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace

from controlplane.actuators.base import ApplyResult, DesiredPlacement, NodeInventory, ObservedPlacement, ReplicaSet
from controlplane.simfleet import physics
from controlplane.simfleet.apps import APPS, MODEL_KINDS, App, Fragment, Kind
from controlplane.simfleet.devices import DEFAULT_LAYOUT, NodeLayout, build_inventory, device_class
from controlplane.simfleet.metrics import DeviceStats, FleetMetrics, LlmStats
from optimizer.types import Phase

TAU_S = 20.0
_EWMA = 0.05
_MIB = 2**20
_GIB = 2**30
HOST_FRAGMENT_MEMORY_GIB = 2.0  # what a non-model replica holds on the device it sits on

SetKey = tuple[str, str, str, str, Phase]  # tenant, workload, fragment_key, device_class, phase
FragmentId = tuple[str, str, str]  # tenant, workload, fragment_key
DeviceId = tuple[str, int]  # node, index


@dataclass(frozen=True)
class ClassUtilisation:
    """How much of one device class is healthy, allocated and busy, in devices."""

    device_class: str
    devices: int  # healthy
    allocated: float  # devices' worth of slices held by running replicas
    busy: float  # devices' worth of busy time per second, recently

    @property
    def utilisation(self) -> float:
        """Busy over healthy devices, 0..1."""
        return self.busy / self.devices if self.devices else 0.0


class _Decayed:
    """An exponentially decayed sum; `per_second` estimates the rate of what was added."""

    __slots__ = ("value", "t")

    def __init__(self) -> None:
        self.value = 0.0
        self.t = -math.inf

    def add(self, amount: float, at: float) -> None:
        if at >= self.t:
            self.value = (self.value * math.exp((self.t - at) / TAU_S) if self.value else 0.0) + amount
            self.t = at
        else:  # arrivals are planned slightly out of order; count a past one at its decayed weight
            self.value += amount * math.exp((at - self.t) / TAU_S)

    def per_second(self, now: float) -> float:
        if not self.value:
            return 0.0
        return self.value * math.exp(min(0.0, self.t - now) / TAU_S) / TAU_S


@dataclass
class _FragmentLoad:
    arrivals: _Decayed = field(default_factory=_Decayed)
    mean_input: float = 0.0
    mean_output: float = 0.0

    def record(self, input_tokens: int, output_tokens: int, at: float) -> None:
        first = self.arrivals.value == 0.0
        self.arrivals.add(1.0, at)
        self.mean_input = input_tokens if first else self.mean_input + _EWMA * (input_tokens - self.mean_input)
        self.mean_output = output_tokens if first else self.mean_output + _EWMA * (output_tokens - self.mean_output)


@dataclass
class _RunningSet:
    """A replica set as packed onto devices, with its recent serving statistics."""

    replica_set: ReplicaSet  # replicas = those actually running
    fragment: Fragment | None  # None for a fragment no sample app visits
    devices: dict[DeviceId, int]  # slices held on each device
    arrivals: _Decayed = field(default_factory=_Decayed)
    mean_wait_s: float = 0.0
    mean_service_s: float = 0.0
    max_batch: int = 1
    mean_kv_share: float = 0.0  # one visit's share of a replica's KV-cache memory (LLM)


@dataclass
class _Device:
    node: str
    index: int
    device_class: str
    healthy: bool = True
    xid: int = 0
    node_lost: bool = False  # its node is down: nothing on it runs, whatever the device's own health
    busy: _Decayed = field(default_factory=_Decayed)

    @property
    def usable(self) -> bool:
        return self.healthy and not self.node_lost

    @property
    def id(self) -> DeviceId:
        return (self.node, self.index)

    @property
    def uuid(self) -> str:
        return f"GPU-{uuid.uuid5(uuid.NAMESPACE_URL, f'heteroplane-sim/{self.node}/{self.index}')}"


def _key(rs: ReplicaSet) -> SetKey:
    return (rs.tenant, rs.workload, rs.fragment_key, rs.device_class, rs.phase)


def _fragment_id(rs: ReplicaSet) -> FragmentId:
    return (rs.tenant, rs.workload, rs.fragment_key)


def _name(rs: ReplicaSet) -> str:
    """How messages name a replica set: tenant/workload/fragment/class, and its pool when split."""
    name = "/".join((*_fragment_id(rs), rs.device_class))
    return f"{name} ({rs.phase} pool)" if rs.phase in (Phase.prefill, Phase.decode) else name


def _deployment(rs: "_RunningSet") -> physics.Deployment:
    return physics.Deployment(rs.replica_set.device_class, rs.replica_set.replicas, rs.replica_set.slices)


class SimulatedFleet:
    """The embedded demo cluster: implements `Actuator`, serves the sample apps, exports OTLP and Prometheus.

    `speedup` is trace seconds per wall second: it compresses arrivals (more
    load), never span durations. Telemetry is only sent once `start()` runs the
    load driver: spans to `otlp_endpoint` (base URL such as
    http://localhost:4318, or the full .../v1/traces) with `otlp_headers`
    (e.g. {"Authorization": "Bearer <token>"}), metrics on `metrics_port`
    (0 picks a free port, None serves none). Thread-safe.
    """

    def __init__(
        self,
        *,
        seed: int = 0,
        speedup: float = 1.0,
        otlp_endpoint: str | None = None,
        otlp_headers: Mapping[str, str] | None = None,
        metrics_port: int | None = None,
        metrics_addr: str = "0.0.0.0",
        apps: tuple[App, ...] = APPS,
        layout: tuple[NodeLayout, ...] = DEFAULT_LAYOUT,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if speedup <= 0:
            raise ValueError(f"speedup must be > 0 (trace seconds per wall second), got {speedup}")
        self.seed = seed
        self.speedup = speedup
        self.otlp_endpoint = otlp_endpoint
        self.otlp_headers = dict(otlp_headers or {})
        self.apps = apps
        self.metrics = FleetMetrics(self)
        self._metrics_port = metrics_port
        self._metrics_addr = metrics_addr
        self._clock = clock
        self._lock = threading.RLock()
        self._nodes = build_inventory(layout)
        self._devices = [_Device(n.name, i, n.device_class) for n in self._nodes for i in range(n.devices)]
        self._by_id = {d.id: d for d in self._devices}
        self._fragments: dict[FragmentId, Fragment] = {
            (app.tenant, app.workload, f.key): f for app in apps for f in app.fragments()
        }
        self._loads: dict[FragmentId, _FragmentLoad] = {}
        self._desired: DesiredPlacement | None = None
        self._running: dict[SetKey, _RunningSet] = {}
        self._driver = None
        self._repack(self._effective(()))

    # --- Actuator ---------------------------------------------------------------------------

    def apply(self, desired: DesiredPlacement) -> ApplyResult:
        """Run `desired` (instant make-before-break); the same version twice is a no-op, an older one is refused."""
        with self._lock:
            problem = self._validate(desired.replica_sets)
            if problem:
                return ApplyResult(False, problem)
            if self._desired is not None:
                if desired.version == self._desired.version:
                    if set(desired.replica_sets) == set(self._desired.replica_sets):
                        return ApplyResult(True, f"version {desired.version} already applied; nothing changed")
                    return ApplyResult(False, f"version {desired.version} was already applied with different "
                                              "replica sets; send a new version")
                if desired.version < self._desired.version:
                    return ApplyResult(False, f"version {desired.version} is older than the applied version "
                                              f"{self._desired.version}; send a newer version")
            sets = self._effective(desired.replica_sets)
            problem = self._check_capacity(sets)
            if problem:
                return ApplyResult(False, problem)
            self._desired = desired
            self._repack(sets)
            running = sum(rs.replica_set.replicas for rs in self._running.values())
            return ApplyResult(True, f"version {desired.version} applied: {running} replicas in "
                                     f"{len(self._running)} replica sets")

    def observe(self) -> ObservedPlacement:
        with self._lock:
            sets = tuple(sorted((rs.replica_set for rs in self._running.values()), key=_key))
            return ObservedPlacement(self._desired.version if self._desired else None, sets)

    def inventory(self) -> tuple[NodeInventory, ...]:
        with self._lock:
            unhealthy: dict[str, list[int]] = {n.name: [] for n in self._nodes}
            lost: set[str] = set()
            for d in self._devices:
                if not d.healthy:
                    unhealthy[d.node].append(d.index)
                if d.node_lost:
                    lost.add(d.node)
            return tuple(
                NodeInventory(n.name, n.device_class, n.devices, n.devices - len(unhealthy[n.name]),
                              unhealthy=tuple(unhealthy[n.name]), ready=n.name not in lost)
                for n in self._nodes
            )

    # --- faults -----------------------------------------------------------------------------

    def fail_device(self, node: str, index: int, xid: int = 79) -> None:
        """Mark a device unhealthy with an XID error (79: fallen off the bus); replicas on it are evicted."""
        with self._lock:
            device = self._device(node, index)
            device.healthy, device.xid = False, xid
            self._repack(self._effective(self._desired.replica_sets if self._desired else ()))

    def repair_device(self, node: str, index: int) -> None:
        with self._lock:
            device = self._device(node, index)
            device.healthy, device.xid = True, 0
            self._repack(self._effective(self._desired.replica_sets if self._desired else ()))

    def fail_node(self, node: str) -> None:
        """Lose a whole node (it is reported not ready and exports no metrics); replicas on it are evicted."""
        self._set_node_lost(node, True)

    def repair_node(self, node: str) -> None:
        self._set_node_lost(node, False)

    def _set_node_lost(self, node: str, lost: bool) -> None:
        with self._lock:
            devices = [d for d in self._devices if d.node == node]
            if not devices:
                raise KeyError(f"no node {node!r}; nodes are {[n.name for n in self._nodes]}")
            for d in devices:
                d.node_lost = lost
            self._repack(self._effective(self._desired.replica_sets if self._desired else ()))

    # --- serving (called by the load driver) -----------------------------------------------

    def serve(
        self, app: App, fragment: Fragment, input_tokens: int, output_tokens: int, at: float, rng: random.Random
    ) -> physics.Visit | None:
        """Serve one visit starting at wall time `at`; None when the fragment has no running replica.

        A split fragment needs a running replica in each pool; its LLM metrics carry the decode class.
        """
        fid = (app.tenant, app.workload, fragment.key)
        with self._lock:
            fragment_load = self._loads.setdefault(fid, _FragmentLoad())
            fragment_load.record(input_tokens, output_tokens, at)
            sets = [rs for rs in self._running.values() if _fragment_id(rs.replica_set) == fid]
            if not sets:
                return None
            load = physics.Load(fragment_load.arrivals.per_second(at), fragment_load.mean_input,
                                fragment_load.mean_output)
            if all(rs.replica_set.phase is Phase.whole for rs in sets):
                visit = physics.visit(fragment, [_deployment(rs) for rs in sets], load, input_tokens, output_tokens,
                                      u=rng.random(), z=rng.gauss(0.0, 1.0))
                chosen = next(rs for rs in sets if rs.replica_set.device_class == visit.device_class)
                self._record(chosen, at, wait_s=visit.wait_s, service_s=visit.latency_s - visit.wait_s,
                             occupancy_s=visit.occupancy_s, max_batch=visit.max_batch, kv_share=visit.kv_share)
            else:
                prefill = [rs for rs in sets if rs.replica_set.phase is Phase.prefill]
                decode = [rs for rs in sets if rs.replica_set.phase is Phase.decode]
                if not prefill or not decode:  # a pool lost every replica: no visit can finish
                    return None
                visit = physics.split_visit(fragment, [_deployment(rs) for rs in prefill],
                                            [_deployment(rs) for rs in decode], load, input_tokens, output_tokens,
                                            u_prefill=rng.random(), u_decode=rng.random(), z=rng.gauss(0.0, 1.0))
                prefiller = next(rs for rs in prefill if rs.replica_set.device_class == visit.prefill_class)
                decoder = next(rs for rs in decode if rs.replica_set.device_class == visit.device_class)
                # A prefill replica works through one prompt at a time; only the decode replica batches,
                # and a visit waits for a slot in its batch only when the decode pool runs past capacity.
                self._record(prefiller, at, wait_s=visit.wait_s,
                             service_s=visit.ttft_s - visit.wait_s - visit.hand_off_s,
                             occupancy_s=visit.prefill_occupancy_s, max_batch=1, kv_share=visit.kv_share)
                self._record(decoder, at, wait_s=visit.decode_wait_s,
                             service_s=visit.latency_s - visit.ttft_s - visit.decode_wait_s,
                             occupancy_s=visit.occupancy_s, max_batch=visit.max_batch, kv_share=visit.kv_share)
        if fragment.kind is Kind.llm:
            self.metrics.observe_llm(
                tenant=app.tenant,
                workload=app.workload,
                model_name=fragment.name,
                device_class=visit.device_class,
                ttft_s=visit.ttft_s,
                itl_s=visit.itl_s,
                prompt_tokens=input_tokens,
                generation_tokens=output_tokens,
            )
        return visit

    # --- state for metrics and the demo -----------------------------------------------------

    def device_stats(self) -> tuple[DeviceStats, ...]:
        now = self._clock()
        with self._lock:
            used_bytes = {d.id: 0.0 for d in self._devices}
            for rs in self._running.values():
                spec = device_class(rs.replica_set.device_class)
                for device_id, slices in rs.devices.items():
                    if rs.fragment is not None and rs.fragment.kind in MODEL_KINDS:
                        # vLLM-style servers preallocate their whole share of memory for weights and KV cache.
                        used_bytes[device_id] += slices / spec.slices_per_device * spec.memory_gib * _GIB * 0.9
                    else:
                        used_bytes[device_id] += slices / rs.replica_set.slices * HOST_FRAGMENT_MEMORY_GIB * _GIB
            stats = []
            for d in self._devices:
                if d.node_lost:  # its exporter went down with it
                    continue
                spec = device_class(d.device_class)
                util = min(1.0, d.busy.per_second(now)) if d.healthy else 0.0
                total = spec.memory_gib * _GIB
                stats.append(DeviceStats(
                    hostname=d.node,
                    index=d.index,
                    uuid=d.uuid,
                    model_name=spec.model_name,
                    device_class=d.device_class,
                    utilisation=util,
                    memory_used_mib=min(used_bytes[d.id], total) / _MIB,
                    memory_total_mib=total / _MIB,
                    power_w=spec.idle_watts + (spec.max_watts - spec.idle_watts) * util,
                    xid=d.xid,
                ))
            return tuple(stats)

    def llm_stats(self) -> tuple[LlmStats, ...]:
        """vLLM's gauges per fragment and device class; a prefill and a decode pool on one class add up.

        By Little's law: requests running = arrival rate x service time (at most the batch slots),
        waiting = arrival rate x mean wait; KV-cache use = the running requests' KV over the replicas'
        KV memory (each request's share of its replica's), averaged over replicas as vLLM's is.
        """
        now = self._clock()
        with self._lock:
            # running, waiting, KV held (in replicas' worth), replicas
            totals: dict[tuple[str, str, str, str], tuple[float, float, float, int]] = {}
            for rs in self._running.values():
                if rs.fragment is None or rs.fragment.kind is not Kind.llm:
                    continue
                rate = rs.arrivals.per_second(now)
                r = rs.replica_set
                running = min(rate * rs.mean_service_s, r.replicas * rs.max_batch)  # Little, capped by batch slots
                label = (r.tenant, r.workload, rs.fragment.name, r.device_class)
                before = totals.get(label, (0.0, 0.0, 0.0, 0))
                totals[label] = (before[0] + running, before[1] + rate * rs.mean_wait_s,
                                 before[2] + running * rs.mean_kv_share, before[3] + r.replicas)
            return tuple(LlmStats(*label, running, waiting, min(1.0, kv / replicas) if replicas else 0.0)
                         for label, (running, waiting, kv, replicas) in totals.items())

    def class_utilisation(self) -> tuple[ClassUtilisation, ...]:
        now = self._clock()
        with self._lock:
            by_class: dict[str, list[float]] = {}
            for d in self._devices:
                row = by_class.setdefault(d.device_class, [0, 0.0, 0.0])
                if d.usable:
                    row[0] += 1
                    row[2] += min(1.0, d.busy.per_second(now))
            for rs in self._running.values():
                spec = device_class(rs.replica_set.device_class)
                by_class[spec.name][1] += sum(rs.devices.values()) / spec.slices_per_device
            return tuple(ClassUtilisation(name, int(n), alloc, busy) for name, (n, alloc, busy) in by_class.items())

    # --- lifecycle --------------------------------------------------------------------------

    def start(self) -> None:
        """Serve /metrics (if a port was given) and start replaying the apps' traffic in real time."""
        from controlplane.simfleet.driver import LoadDriver

        with self._lock:
            if self._driver is not None:
                return
            if self._metrics_port is not None:
                self._metrics_port = self.metrics.serve(self._metrics_port, self._metrics_addr)
            self._driver = LoadDriver(self, seed=self.seed, speedup=self.speedup)
            self._driver.start(self.otlp_endpoint, self.otlp_headers)

    def stop(self) -> None:
        """Stop the traffic, flush spans, stop serving metrics. Safe to call twice."""
        with self._lock:
            driver, self._driver = self._driver, None
        if driver is not None:
            driver.stop()
        self.metrics.stop()

    @property
    def metrics_port(self) -> int | None:
        """The port /metrics is served on once started (resolved when 0 was asked for)."""
        return self._metrics_port

    def __enter__(self) -> "SimulatedFleet":
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- internals --------------------------------------------------------------------------

    def _device(self, node: str, index: int) -> _Device:
        try:
            return self._by_id[(node, index)]
        except KeyError:
            raise KeyError(f"no device {index} on node {node!r}; nodes are {[n.name for n in self._nodes]}") from None

    def _validate(self, replica_sets: tuple[ReplicaSet, ...]) -> str:
        """The first problem with a placement's replica sets, or "".

        A fragment's running sets (replicas > 0) must be whole replicas only, or a prefill and a decode
        pool together; a set with no replicas runs nothing, so it never makes a mix.
        """
        seen: set[SetKey] = set()
        running: dict[FragmentId, list[ReplicaSet]] = {}
        for rs in replica_sets:
            try:
                phase = Phase(rs.phase)
            except ValueError:
                return (f"{_name(rs)}: phase must be one of {[p.value for p in Phase]} "
                        f"(whole, prefill, decode), got {rs.phase!r}")
            try:
                device_class(rs.device_class)
            except KeyError as exc:
                return str(exc.args[0])
            if rs.replicas < 0 or rs.slices < 1:
                return f"{_name(rs)}: replicas must be >= 0 and slices >= 1, got {rs.replicas}, {rs.slices}"
            if _key(rs) in seen:
                return f"{_name(rs)} appears twice; merge the replica sets"
            seen.add(_key(rs))
            if phase is not Phase.whole and not rs.fragment_key.startswith(f"{Kind.llm}:"):
                return (f"{_name(rs)}: only LLM fragments run prefill and decode pools; "
                        "give this fragment whole replicas")
            if rs.replicas > 0:
                running.setdefault(_fragment_id(rs), []).append(rs)
        for fid, sets in running.items():
            phases = {Phase(rs.phase) for rs in sets}
            listing = ", ".join(_name(rs) for rs in sets)
            if Phase.whole in phases and len(phases) > 1:
                return (f"{'/'.join(fid)} is given both whole replicas and pools ({listing}); a fragment runs "
                        "either whole replicas or a prefill and a decode pool")
            if phases in ({Phase.prefill}, {Phase.decode}):
                (has,), (lacks,) = phases, {Phase.prefill, Phase.decode} - phases
                return (f"{'/'.join(fid)} has a {has} pool ({listing}) but no {lacks} pool; a split fragment "
                        f"needs replicas in both")
        return ""

    def _effective(self, replica_sets: tuple[ReplicaSet, ...]) -> list[ReplicaSet]:
        """The placement's non-empty sets, plus initial deployments of app fragments it does not name."""
        named = {(rs.tenant, rs.workload, rs.fragment_key) for rs in replica_sets}
        sets = [rs for rs in replica_sets if rs.replicas > 0]
        for (tenant, workload, key), fragment in self._fragments.items():
            if (tenant, workload, key) not in named:
                d = physics.initial_deployment(fragment)
                sets.append(ReplicaSet(tenant, workload, key, d.device_class, d.replicas, d.slices))
        return sets

    def _check_capacity(self, sets: list[ReplicaSet]) -> str:
        demand: dict[str, int] = {}
        for rs in sets:
            demand[rs.device_class] = demand.get(rs.device_class, 0) + rs.replicas * rs.slices
        problems = []
        for name, slices in sorted(demand.items()):
            spec = device_class(name)
            capacity = sum(d.usable for d in self._devices if d.device_class == name) * spec.slices_per_device
            if slices > capacity:
                problems.append(f"{name} needs {slices} slices but has {capacity} "
                                f"({spec.slices_per_device} per healthy device)")
        if not problems:
            return ""
        return "placement exceeds the inventory: " + "; ".join(problems) + \
            " (counting initial deployments of fragments the placement does not name)"

    def _repack(self, sets: list[ReplicaSet]) -> None:
        """Pack replica sets onto healthy devices, keeping each surviving set's serving statistics."""
        free: dict[DeviceId, int] = {
            d.id: device_class(d.device_class).slices_per_device for d in self._devices if d.usable
        }
        running: dict[SetKey, _RunningSet] = {}
        for rs in sorted(sets, key=_key):
            candidates = [i for i in free if self._by_id[i].device_class == rs.device_class]  # node order
            held: dict[DeviceId, int] = {}
            replicas = 0
            for _ in range(rs.replicas):
                if sum(free[i] for i in candidates) < rs.slices:
                    break
                need = rs.slices
                for i in candidates:
                    take = min(need, free[i])
                    if take:
                        free[i] -= take
                        held[i] = held.get(i, 0) + take
                        need -= take
                    if not need:
                        break
                replicas += 1
            if not replicas:
                continue
            previous = self._running.get(_key(rs))
            entry = _RunningSet(
                replace(rs, replicas=replicas, phase=Phase(rs.phase)),
                self._fragments.get(_fragment_id(rs)),
                held,
            )
            if previous is not None:
                entry.arrivals, entry.mean_wait_s = previous.arrivals, previous.mean_wait_s
                entry.mean_service_s, entry.max_batch = previous.mean_service_s, previous.max_batch
            running[_key(rs)] = entry
        self._running = running

    def _record(
        self, rs: _RunningSet, at: float, *, wait_s: float, service_s: float, occupancy_s: float, max_batch: int,
        kv_share: float = 0.0,
    ) -> None:
        """Count a visit's (part's) arrival, wait and service on `rs`, and its occupancy as busy time."""
        first = rs.arrivals.value == 0.0
        rs.arrivals.add(1.0, at)
        rs.mean_wait_s = wait_s if first else rs.mean_wait_s + _EWMA * (wait_s - rs.mean_wait_s)
        rs.mean_service_s = service_s if first else rs.mean_service_s + _EWMA * (service_s - rs.mean_service_s)
        rs.mean_kv_share = kv_share if first else rs.mean_kv_share + _EWMA * (kv_share - rs.mean_kv_share)
        rs.max_batch = max_batch
        spec = device_class(rs.replica_set.device_class)
        # One visit occupies one replica; on average it is spread evenly over the set's devices.
        share = occupancy_s / (spec.slices_per_device * rs.replica_set.replicas)
        for device_id, slices in rs.devices.items():
            self._by_id[device_id].busy.add(share * slices, at)
