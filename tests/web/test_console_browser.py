"""The console in a real headless Chromium: sign in through the form, watch the charts fill, open
every page, approve a proposal; no console error and no failed request anywhere. Screenshots of
every page go to artifacts/ (gitignored)."""

import csv
import math
from datetime import timedelta

import pytest
from sqlmodel import select

from controlplane.actuators.base import NodeInventory
from controlplane.actuators.memory import InMemoryActuator
from controlplane.db import session_scope
from controlplane.models import Fragment, RequestStat, UsageRecord, Workload
from controlplane.reconciler import Reconciler
from controlplane.runtime import ServerThread
from controlplane.settings import Settings
from tests.support import ARTIFACTS, CHROMIUM_ARGS, require_chromium, wait_for_charts

# The seeded fleet (tests/web/conftest.py) as an actuator reports it: gpu-a's device 0 failed, gpu-b down.
SEED_FLEET = (NodeInventory("gpu-a", "h100", devices=8, healthy_devices=7),
              NodeInventory("gpu-b", "h100", devices=8, healthy_devices=0, ready=False),
              NodeInventory("l4-a", "l4", devices=4, healthy_devices=4))


@pytest.fixture
def busy_history(engine, seeded, now):
    """Metering for 12:01 … 12:24, which the seed leaves empty, so the screenshot shows a day-like curve."""
    # fragment key -> (devices held, class id, class $/hour), as placed by v1/v2
    held = {
        "llm:llama-70b": (2, seeded.h100_id, 4.0),
        "embedding:bge": (0.5, seeded.l4_id, 0.8),
        "llm:qwen-32b": (1, seeded.h100_id, 4.0),
    }
    start = now.replace(minute=1, second=0)
    with session_scope(engine) as s:
        tenants = {w.id: w.tenant_id for w in s.exec(select(Workload)).all()}
        fragments = s.exec(select(Fragment)).all()
        for i in range(24):
            minute = start + timedelta(minutes=i)
            load = 0.55 + 0.3 * math.sin(i / 4)
            for f in fragments:
                devices, class_id, price = held[f.key]
                s.add(
                    UsageRecord(
                        minute=minute, tenant_id=tenants[f.workload_id], workload_id=f.workload_id, fragment_id=f.id,
                        device_class_id=class_id, device_seconds_allocated=60 * devices, device_seconds_busy=60 * devices * load,
                        tokens=int(90_000 * devices * load), cost_usd=devices * price / 60,
                    )
                )
            for workload_id in tenants:
                requests = int(120 * load)
                within = int(requests * (0.995 - 0.3 * max(0.0, load - 0.7)))
                s.add(RequestStat(workload_id=workload_id, minute=minute, requests=requests, within_sla=within))


@pytest.fixture
def server(console_app, busy_history):
    """The console app under uvicorn on a free port, in a background thread."""
    server = ServerThread(console_app, "127.0.0.1", 0, "console")
    server.start()
    yield f"http://127.0.0.1:{server.port}"
    server.stop()


@pytest.mark.real_component("browser")
def test_sign_in_and_watch_the_live_overview(server, seeded):
    chromium = require_chromium()
    from playwright.sync_api import sync_playwright

    errors: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1360, "height": 900})
            page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.on("dialog", lambda dialog: errors.append(f"unexpected dialog: {dialog.message}"))

            page.goto(f"{server}/ui")
            assert page.url.endswith("/ui/login")
            page.fill("#token", "hp_wrong")
            page.click("button[type=submit]")
            assert "unknown, revoked or expired" in page.inner_text("[role=alert]")
            # Chromium logs the refused sign-in's 401 as a console error; that one is expected.
            assert len(errors) == 1 and "401" in errors[0], errors
            errors.clear()

            page.fill("#token", seeded.admin_token)
            page.click("button[type=submit]")
            page.wait_for_url(f"{server}/ui")
            wait_for_charts(page, timeout_ms=10_000)
            assert page.inner_text("#status") == "updated 12:30:20"
            assert page.locator("#placements-body tr").count() == 3
            assert page.inner_text("[data-kpi=placement_usd_per_hour]") == "$12.40"
            assert page.locator("#chart-busy .scatterlayer .trace").count() == 2  # h100 and l4

            ARTIFACTS.mkdir(exist_ok=True)
            page.screenshot(path=str(ARTIFACTS / "console.png"), full_page=True)

            page.click("text=Sign out")
            page.wait_for_url(f"{server}/ui/login")
        finally:
            browser.close()
    assert errors == []


# Each page, and an element that holds data once the page has drawn (figures carry data-points).
PAGES = {
    "proposals": ("/ui/proposals", "#proposal-3"),
    "placements": ("/ui/placements?a=1", "#chart-timeline[data-points]:not([data-points='0'])"),
    "workloads": ("/ui/workloads", "#workloads-body a"),
    "workload": ("/ui/workloads/{bot_id}", "#chart-graph[data-points]:not([data-points='0'])"),
    "fleet": ("/ui/fleet", "#chart-nodes[data-points]:not([data-points='0'])"),
    "policies": ("/ui/policies", "#policy-1"),
    "policy-form": ("/ui/policies/new", "textarea[name=maintenance_windows]"),
    "chargeback": ("/ui/chargeback", "#chart-chargeback[data-points]:not([data-points='0'])"),
    "chargeback-workload": ("/ui/chargeback?tenant={acme_id}&workload={bot_id}&share_idle=weighted",
                            "#chart-chargeback[data-points]:not([data-points='0'])"),
}


@pytest.mark.real_component("browser")
def test_every_page_opens_cleanly_and_a_proposal_is_approved(server, seeded, engine, tmp_path):
    chromium = require_chromium()
    from playwright.sync_api import sync_playwright

    problems: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1360, "height": 900})
            page.on("console", lambda msg: problems.append(msg.text) if msg.type == "error" else None)
            page.on("pageerror", lambda exc: problems.append(str(exc)))
            page.on("requestfailed", lambda req: problems.append(f"failed: {req.url}"))
            page.on("response", lambda r: problems.append(f"{r.status}: {r.url}") if r.status >= 400 else None)
            page.on("dialog", lambda dialog: problems.append(f"unexpected dialog: {dialog.message}"))

            page.goto(f"{server}/ui/login")
            page.fill("#token", seeded.admin_token)
            page.click("button[type=submit]")
            page.wait_for_url(f"{server}/ui")
            wait_for_charts(page, timeout_ms=10_000)
            ARTIFACTS.mkdir(exist_ok=True)
            for name, (path, ready) in PAGES.items():
                page.goto(server + path.format(bot_id=seeded.bot_id, acme_id=seeded.acme_id))
                try:
                    page.wait_for_selector(ready, timeout=10_000)
                except Exception:
                    raise AssertionError((name, problems)) from None
                # Every page links every other in its navigation bar.
                assert page.locator("header nav a").count() == 7, name
                page.screenshot(path=str(ARTIFACTS / f"console-{name}.png"), full_page=True)

            # Approve the open proposal: the page reloads with it applying (the reconciler's next cycle applies it).
            page.goto(f"{server}/ui/proposals")
            page.click("text=Approve v3")
            page.wait_for_url(f"{server}/ui/proposals?decided=3")
            assert "v3 is now applying" in page.inner_text("#decided")
            assert page.locator("#no-proposals").count() == 1
            assert "applying" in page.inner_text("#recent-body")
            page.screenshot(path=str(ARTIFACTS / "console-approved.png"), full_page=True)
            # The reconciler's next cycle (here, one cycle on the seeded fleet) applies it.
            Reconciler(engine, InMemoryActuator(SEED_FLEET), Settings(solver_time_limit_s=2)).run_once()
            page.goto(f"{server}/ui/placements")
            rows = {row.split("\t")[0]: row.split("\t") for row in page.locator("#history-body tr").all_inner_texts()}
            assert rows["v3"][1] == "applied" and rows["v3"][3] != "—", rows["v3"]  # in force from then

            # Both downloads, as a browser saves them: they add up to the page's total.
            page.goto(f"{server}/ui/chargeback")
            total = float(page.inner_text("#total").replace("$", "").replace(",", ""))
            for link, column in (("#download-csv", "cost_usd"), ("#download-focus", "BilledCost")):
                with page.expect_download() as download:
                    page.click(link)
                saved = tmp_path / download.value.suggested_filename
                download.value.save_as(saved)
                with saved.open() as f:
                    assert round(sum(float(r[column]) for r in csv.DictReader(f)), 2) == total, link
                (ARTIFACTS / f"console-{saved.name}").write_bytes(saved.read_bytes())

            page.goto(f"{server}/ui?range=6h")
            wait_for_charts(page, timeout_ms=10_000)
            assert page.locator(".range a.active").inner_text() == "6 h"
        finally:
            browser.close()
    assert problems == []
