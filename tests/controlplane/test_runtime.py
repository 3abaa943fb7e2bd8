"""The reconciler loop as /health reports it: the latest cycle's outcome, not the worst one ever."""

import threading
from dataclasses import dataclass, field

from fastapi.testclient import TestClient
from sqlmodel import Session

from controlplane.actuators.base import NodeInventory
from controlplane.actuators.memory import InMemoryActuator
from controlplane.app import create_app
from controlplane.reconciler import Reconciler
from controlplane.runtime import report_cycles
from controlplane.seed import seed_catalog
from controlplane.settings import Settings


@dataclass
class FlakyActuator(InMemoryActuator):
    """Raises on its first inventory call (a fault mid-cycle), then works; stops the loop on call `stop_after`."""

    stop: threading.Event = field(default_factory=threading.Event)
    stop_after: int = 2
    calls: int = 0
    seen_by_health: list[tuple[int, dict]] = field(default_factory=list)
    client: TestClient | None = None

    def inventory(self) -> tuple[NodeInventory, ...]:
        self.calls += 1
        # What /health says when this cycle starts: the outcome of the cycle before it.
        response = self.client.get("/api/v1/health")
        self.seen_by_health.append((response.status_code, response.json()["components"]))
        if self.calls == self.stop_after:
            self.stop.set()  # this cycle still runs to the end; the loop stops after it
        if self.calls == 1:
            raise ConnectionError("the cluster API is unreachable")
        return super().inventory()


def test_health_is_ok_again_once_a_cycle_succeeds_after_a_failed_one(engine):
    with Session(engine) as session:
        seed_catalog(session)
        session.commit()
    settings = Settings(reconcile_period_s=0.01, solver_time_limit_s=1)
    app = create_app(engine, settings)
    actuator = FlakyActuator(nodes=(NodeInventory("cpu-0", "CPU-EPYC-64C", devices=2, healthy_devices=2),))
    with TestClient(app) as client:
        actuator.client = client
        report_cycles(Reconciler(engine, actuator, settings), app.state.components, actuator.stop)
        final = client.get("/api/v1/health")
    assert actuator.seen_by_health == [
        (200, {"reconciler": "ok"}),  # before any cycle
        (503, {"reconciler": "error: ConnectionError"}),  # after the failed one
    ]
    assert final.status_code == 200 and final.json()["components"] == {"reconciler": "ok"}
