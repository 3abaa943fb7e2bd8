"""The composition root: the one place that builds heteroplane's components from its settings and
starts and stops them, for `heteroplane serve` and `heteroplane demo` alike.

What runs, by `actuator` (HETEROPLANE_ACTUATOR):
- `none`: the API and console, the OTLP receiver and ingest, the Prometheus puller: heteroplane
  observes and plans nothing (what `serve` did before there was a choice);
- `sim`: all of that, plus the simulated fleet as the actuator and the reconciler driving it;
- `kubernetes`: the reconciler driving a cluster through the Kubernetes actuator
  (controlplane.actuators.kubernetes), configured in-cluster or from KUBECONFIG.

The API runs in this process (`api_workers` 1) or in worker processes (controlplane.workers); the
loops (ingest, puller, reconciler) always run here. Starting is all or nothing: a component that
fails to start stops the ones started before it, and the error names it.
"""

import logging
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

from fastapi import FastAPI
from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from collectors.pipeline import Ingest
from collectors.prometheus import PrometheusPuller
from collectors.receiver import create_receiver_app
from controlplane.actuators.base import Actuator
from controlplane.app import create_app
from controlplane.auth import mint_token, otlp_authoriser
from controlplane.collected import database_sink, readings_store
from controlplane.db import make_engine
from controlplane.leadership import LeaderLoop, Leadership, SingleProcess, leadership_for
from controlplane.models import DeviceClass, Role
from controlplane.reconciler import Reconciler
from controlplane.runtime import ServerThread, check_connection_budget, prepare_database, report_cycles
from controlplane.settings import Settings
from controlplane.telemetry import Telemetry
from controlplane.workers import StatusBoard, WorkerPool, connections_needed, main_pool_size
from web.console import mount_console

if TYPE_CHECKING:
    from controlplane.actuators.kubernetes import KubernetesActuator
    from controlplane.simfleet import SimulatedFleet

log = logging.getLogger(__name__)


class StartupError(RuntimeError):
    """A component could not start; the message names it and what to change."""


@dataclass
class Plane:
    """Everything one `serve` or `demo` process runs, built by `build` and started by `start`."""

    settings: Settings
    engine: Engine
    ingest: Ingest
    components: dict[str, str]  # what /health shows of the loops
    api: ServerThread | WorkerPool
    otlp: ServerThread
    actuator: Actuator | None = None
    reconciler: Reconciler | None = None
    puller: PrometheusPuller | None = None
    board: StatusBoard | None = None
    leadership: Leadership = field(default_factory=SingleProcess)
    stoppers: list[Callable[[], None]] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)

    @property
    def watch(self) -> Callable[[], None] | None:
        """What the main loop calls twice a second: restarting API workers that exited."""
        return self.api.watch if isinstance(self.api, WorkerPool) else None

    def start(self) -> None:
        """Start every component, in dependency order; on a failure stop what started and raise."""
        steps: list[tuple[str, Callable[[], None], Callable[[], None]]] = [
            ("ingest", self.ingest.start, self.ingest.stop),
            ("api", self.api.start, self.api.stop),
            ("otlp", self.otlp.start, self.otlp.stop),
        ]
        if self.board is not None:
            steps.insert(0, ("status board", self.board.start, self.board.stop))
        if self.actuator is not None and hasattr(self.actuator, "start"):
            steps.append(("actuator", self.actuator.start, self.actuator.stop))
        if self.puller is not None:
            steps.append(("prometheus", *self._thread("prometheus", self.puller.run_forever, self.puller.close)))
        if self.reconciler is not None:
            steps.append(("reconciler", *self._thread("reconciler", self._lead, self.leadership.release)))
        for name, start, stop in steps:
            try:
                start()
            except Exception as exc:
                self.stop()
                raise StartupError(f"{name} failed to start: {exc}") from exc
            self.stoppers.append(stop)

    def _lead(self, stop: threading.Event) -> None:
        """The reconciler's thread: cycles only while this process holds the leadership (one process
        of those sharing the database), a follower otherwise; /health says which."""

        def changed(leading: bool) -> None:
            if not leading:
                self.components["reconciler"] = "standby: another replica leads"

        self.components["reconciler"] = "standby: another replica leads"
        loop = LeaderLoop(self.leadership, partial(report_cycles, self.reconciler, self.components),
                          self.settings.leader_period_s, on_change=changed)
        loop.run(stop)

    def _thread(self, name: str, run: Callable[[threading.Event], None],
                close: Callable[[], None]) -> tuple[Callable[[], None], Callable[[], None]]:
        thread = threading.Thread(target=run, args=(self._stop,), name=name, daemon=True)

        def stop() -> None:
            self._stop.set()
            thread.join(timeout=30)
            close()

        return thread.start, stop

    def stop(self) -> None:
        """Stop what started, last started first; keep going past a component that fails to stop."""
        while self.stoppers:
            stop_one = self.stoppers.pop()
            try:
                stop_one()
            except Exception:
                log.exception("error while stopping")


def build(settings: Settings, actuator: Actuator | None = None) -> Plane:
    """Components for `settings`, not yet started: the database is brought to the schema's head and
    the catalog seeded. `actuator` overrides the one `settings.actuator` names (tests, demo)."""
    engine = make_engine(settings.effective_database_url, main_pool_size(settings))
    try:
        return _components(settings, engine, actuator)
    except Exception:
        engine.dispose()
        raise


def _components(settings: Settings, engine: Engine, actuator: Actuator | None) -> Plane:
    check_connection_budget(engine, connections_needed(settings))
    prepare_database(engine, settings)
    if actuator is None:
        actuator = actuator_of(settings, engine)
    ingest = Ingest(database_sink(engine, settings.max_fragments_per_workload))
    telemetry = Telemetry(ingest)  # this process's loops' metrics, served by /metrics (through workers')
    components: dict[str, str] = {}
    leadership = leadership_for(settings)
    reconciler = (Reconciler(engine, actuator, settings, observer=telemetry.reconciler, fence=leadership.fence)
                  if actuator is not None else None)
    board = None
    if settings.api_workers == 1:
        app = service_app(engine, settings, ingest, components, telemetry)
        app.state.reconciler = reconciler  # GET /health reports the SLAs its latest cycle could not meet
        api: ServerThread | WorkerPool = ServerThread(app, settings.api_host, settings.api_port, "api")
    else:
        status = Path(tempfile.mkdtemp(prefix="heteroplane-serve-")) / "status.json"
        board = StatusBoard(status, components, ingest, telemetry, reconciler)
        api = WorkerPool(settings, status)
    otlp = ServerThread(create_receiver_app(otlp_authoriser(engine), ingest, settings.otlp_max_body_bytes), settings.otlp_host, settings.otlp_port, "otlp")
    puller = PrometheusPuller(
        readings_store(engine), settings.prometheus_url, settings.prometheus_interval_s, settings.prometheus_window,
        on_status=lambda status: components.__setitem__("prometheus", status.component()),
    ) if settings.prometheus_url else None
    plane = Plane(settings, engine, ingest, components, api, otlp, actuator, reconciler, puller, board, leadership)
    plane.stoppers.append(engine.dispose)
    return plane


def service_app(engine: Engine, settings: Settings, ingest: Ingest | None = None,
                components: dict[str, str] | None = None, telemetry: Telemetry | None = None) -> FastAPI:
    """What the API port serves, in this process or an API worker: the REST API and /metrics
    (controlplane.app) with the console (web) mounted on it."""
    app = create_app(engine, settings, ingest, components, telemetry)
    mount_console(app)
    return app


def actuator_of(settings: Settings, engine: Engine) -> Actuator | None:
    """The actuator `settings.actuator` names; raises StartupError where it cannot be had."""
    if settings.actuator == "none":
        return None
    if settings.actuator == "sim":
        return simulated_fleet(settings, engine)
    return kubernetes_cluster(settings, engine)


def kubernetes_cluster(settings: Settings, engine: Engine) -> "KubernetesActuator":
    """The Kubernetes actuator over the cluster this process runs in (its service account), else the
    one KUBECONFIG (or ~/.kube/config) names; the device classes' shapes from the catalog table."""
    from kubernetes import client, config  # imported only where used: the client takes seconds to load
    from kubernetes.config.config_exception import ConfigException

    from controlplane.actuators.kubernetes import KubernetesActuator
    from controlplane.actuators.kubernetes_manifests import ClassShape

    try:
        config.load_incluster_config()
    except ConfigException:
        try:
            config.load_kube_config()
        except (ConfigException, OSError) as exc:
            raise StartupError("HETEROPLANE_ACTUATOR=kubernetes needs a cluster: run in a pod with a service "
                               f"account, or set KUBECONFIG ({exc})") from None
    with Session(engine) as session:
        shapes = {c.name: ClassShape(c.vendor, c.slices_per_device, c.cores) for c in session.exec(select(DeviceClass))}
    return KubernetesActuator(client.ApiClient(), settings.kubernetes_namespace, shapes,
                              settings.kubernetes_ready_timeout_s, watch=True)


def simulated_fleet(settings: Settings, engine: Engine) -> "SimulatedFleet":
    """The simulated fleet, sending its apps' spans to this process's receiver with a token of its own."""
    from controlplane.simfleet import SimulatedFleet

    with Session(engine) as session:
        _, token = mint_token(session, "simulated-fleet-telemetry", Role.operator)
        session.commit()
    return SimulatedFleet(
        seed=settings.sim_seed,
        speedup=settings.sim_speedup,
        otlp_endpoint=f"http://{settings.otlp_host}:{settings.otlp_port}/v1/traces",
        otlp_headers={"Authorization": f"Bearer {token}"},
        metrics_port=settings.sim_metrics_port,
        metrics_addr="127.0.0.1",
    )
