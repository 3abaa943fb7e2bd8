"""`heteroplane demo` as a user runs it: placements for the three sample apps, live charts, clean Ctrl-C."""

import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from sqlmodel import Session, select

from controlplane.auth import authenticate, mint_token
from controlplane.demo import prepare_demo
from controlplane.models import ApiToken, AuditEvent, Role, Tenant, Workload
from controlplane.models._common import utcnow
from tests.support import ARTIFACTS, CHROMIUM_ARGS, free_port, require_chromium, wait_for_charts, wait_until

SAMPLE_APPS = {"rag-chatbot", "coding-agent", "doc-pipeline"}


@dataclass
class Demo:
    base: str
    token: str
    process: subprocess.Popen
    log: Path

    def get(self, path: str) -> httpx.Response:
        return httpx.get(f"{self.base}{path}", headers={"Authorization": f"Bearer {self.token}"}, timeout=10)

    def wait_for(self, what: str, predicate, polls: int = 90):
        """`predicate`'s first truthy value, polled once a second while the demo runs; the demo's log on failure."""

        def running_and():
            assert self.process.poll() is None, f"demo exited early:\n{self.log.read_text()[-3000:]}"
            return predicate()

        try:
            return wait_until(running_and, what, polls=polls, interval=1)
        except pytest.fail.Exception as gave_up:
            pytest.fail(f"{gave_up}\n{self.log.read_text()[-3000:]}")


def test_running_the_demo_again_leaves_one_live_demo_admin_token(engine):
    with Session(engine) as session:
        _, own = mint_token(session, "ops", Role.admin)  # an operator's own admin token: none of the demo's business
        session.commit()
        first = prepare_demo(session, utcnow())
        session.commit()
        second = prepare_demo(session, utcnow())
        session.commit()

        live = session.exec(select(ApiToken).where(ApiToken.revoked_at.is_(None))).all()
        assert sorted(t.name for t in live if t.role == Role.admin) == ["demo-console", "ops"]
        assert authenticate(session, first) is None  # the first run's token, printed then, no longer opens anything
        assert authenticate(session, second).role == Role.admin and authenticate(session, own) is not None
        assert len(session.exec(select(Tenant)).all()) == 2 and len(session.exec(select(Workload)).all()) == 3
        revoked = session.exec(select(AuditEvent).where(AuditEvent.action == "token.revoke")).all()
        assert [(e.actor, e.detail["name"]) for e in revoked] == [("heteroplane demo", "demo-console")]


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> Iterator[Demo]:
    """The real `heteroplane demo` on free ports and a fresh data directory, re-planning every 2 s."""
    data = tmp_path_factory.mktemp("demo")
    api_port = free_port()
    env = {
        **os.environ,
        "HETEROPLANE_DATA_DIR": str(data),
        "HETEROPLANE_API_PORT": str(api_port),
        "HETEROPLANE_OTLP_PORT": str(free_port()),
        "HETEROPLANE_SIM_METRICS_PORT": str(free_port()),
        "HETEROPLANE_RECONCILE_PERIOD_S": "2",
        "HETEROPLANE_SOLVER_TIME_LIMIT_S": "2",
    }
    log = data / "demo.log"
    with log.open("w") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "controlplane.cli", "demo"], env=env, stdout=out, stderr=subprocess.STDOUT
        )
    demo = Demo(f"http://127.0.0.1:{api_port}", "", process, log)
    demo.token = demo.wait_for("the admin token",
                               lambda: (re.findall(r"\bhp_[A-Za-z0-9_-]{20,}", log.read_text()) or [""])[0], polls=60)
    yield demo
    if process.poll() is None:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            raise


def test_demo_places_every_fragment_of_the_three_apps(demo):
    workloads = demo.wait_for("the sample workloads", lambda: demo.get("/api/v1/workloads").json()["items"])
    assert {w["name"] for w in workloads} == SAMPLE_APPS
    # The document pipeline may wait: it is queued and shed before the interactive apps.
    assert {w["name"]: w["priority"] for w in workloads} == {
        "rag-chatbot": "realtime", "coding-agent": "realtime", "doc-pipeline": "batch"}

    def placed_everywhere():
        current = demo.get("/api/v1/placements/current")
        if current.status_code != 200:
            return None
        placed = {item["workload_id"] for item in current.json()["items"]}
        return current.json() if placed == {w["id"] for w in workloads} else None

    placement = demo.wait_for("a placement covering all three apps", placed_everywhere)
    classes = {item["device_class"] for item in placement["items"]}
    assert len(classes) >= 2, f"a heterogeneous placement was expected, got {classes}"
    assert "CPU-EPYC-64C" in classes  # tools, retrieval and glue run on CPU

    # The graphs came in as real OTLP from the simulated apps and are readable through the API.
    rag = next(w for w in workloads if w["name"] == "rag-chatbot")
    fragments = {f["key"] for f in demo.get(f"/api/v1/workloads/{rag['id']}/fragments").json()["items"]}
    assert {"cpu:api", "embedding:bge-large-en", "llm:llama-3.1-70b-instruct"} <= fragments
    assert demo.get(f"/api/v1/workloads/{rag['id']}/edges").json()["total"] >= 3

    costs = demo.wait_for(
        "metered cost for every app",
        lambda: (lambda r: r if {i["name"] for i in r["items"] if i["cost_usd"] > 0 and not i["idle"]} == SAMPLE_APPS
                 else None)(
            demo.get("/api/v1/costs?group_by=workload").json()
        ),
    )
    assert costs["total_cost_usd"] > 0 and costs["total_tokens"] > 0
    assert costs["idle_cost_usd"] > 0  # the demo fleet lists for more than its placements cost: idle is shown


@pytest.mark.real_component("browser")
def test_console_shows_live_charts_in_chromium(demo):
    chromium = require_chromium()
    from playwright.sync_api import sync_playwright

    demo.wait_for("a current placement", lambda: demo.get("/api/v1/placements/current").status_code == 200)
    errors: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1360, "height": 900})
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.goto(f"{demo.base}/ui")
            assert page.url.endswith("/ui/login")
            page.fill("#token", demo.token)
            page.click("button[type=submit]")
            page.wait_for_url(f"{demo.base}/ui")
            wait_for_charts(page, timeout_ms=90_000)
            assert page.locator("#placements-body tr").count() >= 10
            ARTIFACTS.mkdir(exist_ok=True)
            page.screenshot(path=str(ARTIFACTS / "demo-console.png"), full_page=True)

            # Every page of the navigation bar, on the running demo: no error, no failed request.
            page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
            page.on("requestfailed", lambda req: errors.append(f"failed: {req.url}"))
            page.on("response", lambda r: errors.append(f"{r.status}: {r.url}") if r.status >= 400 else None)
            links = page.locator("header nav a")
            pages = {links.nth(i).inner_text(): links.nth(i).get_attribute("href") for i in range(links.count())}
            assert set(pages) >= {"Overview", "Chargeback", "Proposals", "Placements", "Workloads", "Fleet", "Policies"}
            for name, path in pages.items():
                page.goto(demo.base + path)
                page.wait_for_selector("main h1")
                page.wait_for_load_state("networkidle")
                page.screenshot(path=str(ARTIFACTS / f"demo-{name.lower()}.png"), full_page=True)
            page.goto(f"{demo.base}/ui/chargeback")
            assert "rag-chatbot" not in page.inner_text("#chargeback-body")  # tenants first
            for link in ("#download-csv", "#download-focus"):
                with page.expect_download() as download:
                    page.click(link)
                assert download.value.failure() is None
                assert download.value.suggested_filename.endswith(".csv")
        finally:
            browser.close()
    assert errors == []


def test_the_banner_stays_the_last_thing_on_screen(demo):
    demo.wait_for("a current placement", lambda: demo.get("/api/v1/placements/current").status_code == 200)
    screen = demo.log.read_text().splitlines()
    opening = next(i for i, line in enumerate(screen) if "heteroplane demo is running" in line)
    closing = next(i for i, line in enumerate(screen) if "Ctrl-C stops everything" in line)
    banner = "\n".join(screen[opening:closing])
    assert demo.token in banner and f"{demo.base}/docs" in banner and f"{demo.base}/redoc" in banner
    assert not [line for line in screen[closing:] if " INFO " in line]  # the reconciler's lines went to the log file
    log_file = Path(re.search(r"Log +(\S+)", banner).group(1))
    assert "reconcile: apply v1" in log_file.read_text()


def test_ctrl_c_stops_everything_cleanly(demo):
    demo.process.send_signal(signal.SIGINT)
    assert demo.process.wait(timeout=30) == 0
    output = demo.log.read_text()
    assert "stopped" in output and "Traceback" not in output
    assert "Traceback" not in (demo.log.parent / "heteroplane-demo.log").read_text()
    with pytest.raises(httpx.ConnectError):
        demo.get("/api/v1/health")
