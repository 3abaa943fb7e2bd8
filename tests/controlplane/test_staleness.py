"""A reconciler loop that hangs or stops cycling makes /health degraded ('stale'), and recovers."""

import threading

from fastapi.testclient import TestClient
from hypothesis import assume, given
from hypothesis import strategies as st

from controlplane.actuators.memory import InMemoryActuator
from controlplane.app import create_app
from controlplane.reconciler import STALE_PERIODS, Reconciler, staleness
from controlplane.settings import Settings
from tests.support import wait_until


def test_a_cycle_within_its_allowance_is_not_stale():
    allowance = STALE_PERIODS * (10 + 5)
    assert staleness(100.0, 90.0, 100.0 + allowance, 10, 5) is None  # running, just within
    assert staleness(100.0, 90.0, 100.0 + allowance + 1, 10, 5) == "a cycle has been running for 46 s"
    assert staleness(100.0, 120.0, 120.0 + allowance, 10, 5) is None  # idle between cycles
    assert staleness(100.0, 120.0, 1_120.5, 10, 5) == "no cycle for 1,000 s"
    assert staleness(None, None, 1e9, 10, 5) is None  # never started: nothing to judge


@given(began=st.floats(0, 1e6), took=st.floats(0, 1e4) | st.none(), later=st.floats(0, 1e6),
       period=st.floats(0.01, 600), limit=st.floats(0.01, 600))
def test_staleness_holds_once_it_starts_and_never_before_its_allowance(began, took, later, period, limit):
    ended = None if took is None else began + took
    last = began if ended is None else ended
    allowance = 3 * period + 3 * limit  # written out again: STALE_PERIODS cycles of period and solve
    for now in (last + later, last + later + 1000):
        assume(abs(now - last - allowance) > 1e-6 * (1 + allowance))  # not on the boundary's last bit
        verdict = staleness(began, ended, now, period, limit)
        assert (verdict is not None) == (now - last > allowance)


def test_a_hung_loop_is_stale_on_health_and_ok_again_once_it_cycles(engine):
    settings = Settings(reconcile_period_s=0.05, solver_time_limit_s=0.05, fast_path_period_s=0.05)
    reconciler = Reconciler(engine, InMemoryActuator(()), settings)
    release = threading.Event()
    hung = threading.Event()

    def cycle():
        if not release.is_set():
            hung.set()
            release.wait(30)
        return reconciler.last

    reconciler._cycle = cycle
    stop = threading.Event()
    loop = threading.Thread(target=reconciler.run_forever, args=(stop,), daemon=True)
    app = create_app(engine, settings)
    app.state.reconciler = reconciler
    app.state.components = {"reconciler": "ok"}
    with TestClient(app) as client:
        loop.start()
        assert hung.wait(10)

        def reconciler_state() -> str:
            return client.get("/api/v1/health").json()["components"]["reconciler"]

        wait_until(lambda: reconciler_state().startswith("stale: a cycle has been running for"),
                   "the hung cycle reported stale", polls=400)
        assert client.get("/api/v1/health").status_code == 503
        release.set()
        wait_until(lambda: reconciler_state() == "ok", "the released cycle reported ok again", polls=400)
        stop.set()
        loop.join(10)
        assert reconciler_state() == "ok"  # a loop that ended (leadership moved) is not stale
