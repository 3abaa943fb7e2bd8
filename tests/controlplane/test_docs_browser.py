"""/docs and /redoc in a real headless Chromium with every request to another host refused: both
render the API from this server alone, with no console error and no failed request, and Swagger
UI's "Try it out" calls the API with the token given to its Authorize dialog."""

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import pytest
from sqlmodel import Session, SQLModel

from controlplane.app import create_app
from controlplane.auth import mint_token
from controlplane.db import make_engine
from controlplane.models import Role, Tenant
from controlplane.runtime import ServerThread
from controlplane.settings import Settings
from tests.support import ARTIFACTS, CHROMIUM_ARGS, require_chromium

if TYPE_CHECKING:
    from playwright.sync_api import Page, Route

LOCAL_HOSTS = {"127.0.0.1", "localhost"}


@pytest.fixture
def engine(tmp_path):
    """A SQLite database with one tenant, acme."""
    engine = make_engine(f"sqlite:///{tmp_path / 'docs.db'}")
    SQLModel.metadata.create_all(engine)
    with Session(engine) as session:
        session.add(Tenant(name="acme"))
        session.commit()
    yield engine
    engine.dispose()


@pytest.fixture
def admin_token(engine) -> str:
    with Session(engine) as session:
        _, raw = mint_token(session, "docs-admin", Role.admin)
        session.commit()
    return raw


@pytest.fixture
def server(engine):
    """The API app under uvicorn on a free port, in a background thread."""
    server = ServerThread(create_app(engine, Settings()), "127.0.0.1", 0, "docs")
    server.start()
    yield f"http://127.0.0.1:{server.port}"
    server.stop()


@contextmanager
def offline_page() -> Iterator[tuple["Page", list[str]]]:
    """A Chromium page that may reach this machine only, and the problems it met: console errors,
    page errors, failed requests, answers >= 400, requests to other hosts (refused)."""
    chromium = require_chromium()
    from playwright.sync_api import sync_playwright

    problems: list[str] = []

    def only_local(route: "Route") -> None:
        if urlsplit(route.request.url).hostname in LOCAL_HOSTS or route.request.url.startswith(("data:", "blob:")):
            route.continue_()
        else:
            problems.append(f"asked another host: {route.request.url}")
            route.abort()

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        try:
            context = browser.new_context(viewport={"width": 1360, "height": 900})
            context.route("**/*", only_local)
            page = context.new_page()
            page.on("console", lambda msg: problems.append(f"console: {msg.text}") if msg.type == "error" else None)
            page.on("pageerror", lambda exc: problems.append(f"page error: {exc}"))
            page.on("requestfailed", lambda req: problems.append(f"failed: {req.url} {req.failure}"))
            page.on("response", lambda res: problems.append(f"{res.status}: {res.url}") if res.status >= 400 else None)
            yield page, problems
        finally:
            browser.close()


@pytest.mark.real_component("browser")
@pytest.mark.parametrize("path, rendered", [
    ("/docs", ".opblock"),  # Swagger UI: one block per operation
    ("/redoc", "h1:has-text('heteroplane')"),  # ReDoc: the API's title
])
def test_docs_page_renders_offline(server, path, rendered):
    with offline_page() as (page, problems):
        page.goto(f"{server}{path}", wait_until="networkidle")
        page.wait_for_selector(rendered, timeout=20_000)
        if path == "/docs":
            assert page.locator(".opblock").count() >= 20
            assert page.locator(".opblock-summary-path", has_text="/api/v1/tenants").count() >= 1
        page.wait_for_load_state("networkidle")
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / f"docs{path.replace('/', '-')}.png"))
    assert problems == []


@pytest.mark.real_component("browser")
def test_swagger_ui_calls_the_api_with_the_token_given_to_authorize(server, admin_token):
    with offline_page() as (page, problems):
        page.goto(f"{server}/docs", wait_until="networkidle")
        page.click("button.authorize")
        page.fill(".modal-ux input", admin_token)
        page.click(".modal-ux button[type=submit]")
        page.click(".modal-ux button.btn-done")
        operation = page.locator("#operations-tenants-list_tenants_api_v1_tenants_get")
        operation.locator(".opblock-summary").click()
        operation.locator("button.try-out__btn").click()
        operation.locator("button.execute").click()
        status = operation.locator(".live-responses-table tr.response .response-col_status").first
        status.wait_for(timeout=20_000)
        assert status.inner_text().strip() == "200"
        assert '"total": 1' in operation.locator(".live-responses-table .microlight").first.inner_text()
    assert problems == []
