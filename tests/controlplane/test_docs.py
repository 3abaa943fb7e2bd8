"""/docs and /redoc load nothing from outside this server, under a CSP that allows no inline script
but Swagger UI's own (by hash); static scripts and stylesheets go out gzip-compressed, the rest not."""

import base64
import gzip
import hashlib
import re
from html.parser import HTMLParser
from importlib.resources import files

import plotly.offline
import pytest
from fastapi.testclient import TestClient
from sqlmodel import SQLModel

from controlplane.composition import service_app
from controlplane.compression import is_asset
from controlplane.db import make_engine
from controlplane.docs import redoc_bundle
from controlplane.settings import Settings
from web.console import STATIC_DIR

DOCS_PACKAGE_FILES = files("fastapi_offline") / "static"
TYPES = {".js": "text/javascript", ".css": "text/css", ".png": "image/png", ".json": "application/json"}


class _Page(HTMLParser):
    """The URLs a page makes the browser fetch, and the text of its inline scripts."""

    def __init__(self, html: str) -> None:
        super().__init__()
        self.urls: list[str] = []
        self.inline_scripts: list[str] = []
        self._in_inline_script = False
        self.feed(html)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        for name in ("src", "href", "spec-url"):
            if found.get(name):
                self.urls.append(found[name])
        self._in_inline_script = tag == "script" and "src" not in found

    def handle_endtag(self, tag: str) -> None:
        self._in_inline_script = False

    def handle_data(self, data: str) -> None:
        if self._in_inline_script:
            self.inline_scripts.append(data)
            self.urls += re.findall(r"url: '([^']+)'", data)  # Swagger UI's document, given to SwaggerUIBundle


@pytest.fixture
def client(tmp_path):
    """The app `serve` runs (API, docs and console) over a SQLite database; /metrics public."""
    engine = make_engine(f"sqlite:///{tmp_path / 'docs.db'}")
    SQLModel.metadata.create_all(engine)
    with TestClient(service_app(engine, Settings(metrics_public=True))) as client:
        yield client
    engine.dispose()


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
def test_a_docs_page_fetches_only_local_assets_each_served_with_its_type(client, page):
    response = client.get(page)  # no token: the pages are as public as /openapi.json
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/html")
    assert "http://" not in response.text and "https://" not in response.text  # no CDN, no web font
    urls = _Page(response.text).urls
    assert "/openapi.json" in urls and any(url.endswith(".js") for url in urls), urls
    for url in urls:
        assert url.startswith("/") and not url.startswith("//"), url
        asset = client.get(url)
        assert asset.status_code == 200, url
        suffix = re.search(r"\.\w+$", url).group()
        assert asset.headers["content-type"].split(";")[0] == TYPES[suffix], url


def test_the_docs_csp_allows_swagger_uis_inline_script_by_its_hash_and_redoc_only_what_it_needs(client):
    swagger = client.get("/docs")
    csp = dict(d.strip().split(" ", 1) for d in swagger.headers["content-security-policy"].split(";"))
    (script,) = _Page(swagger.text).inline_scripts
    digest = base64.b64encode(hashlib.sha256(script.encode()).digest()).decode()
    assert csp["script-src"] == f"'self' 'sha256-{digest}'"
    assert csp["frame-ancestors"] == "'none'" and csp["connect-src"] == "'self'" and csp["default-src"] == "'self'"
    assert "'unsafe-inline'" not in swagger.headers["content-security-policy"] and "worker-src" not in csp
    redoc = client.get("/redoc")
    assert _Page(redoc.text).inline_scripts == []
    csp = dict(d.strip().split(" ", 1) for d in redoc.headers["content-security-policy"].split(";"))
    assert csp["script-src"] == "'self'" and csp["worker-src"] == "blob:"  # its search index runs in a worker
    assert swagger.headers["x-content-type-options"] == redoc.headers["x-content-type-options"] == "nosniff"


def test_redocs_bundle_is_the_packages_but_for_the_logo_it_would_fetch_from_redocly(client):
    shipped = (DOCS_PACKAGE_FILES / "redoc.standalone.js").read_bytes()
    logo = b"https://cdn.redoc.ly/redoc/logo-mini.svg"
    assert shipped.count(logo) == 1  # the bundle's one image from another host (fonts are left off the page)
    served = client.get("/docs/assets/redoc.standalone.js")
    assert b"cdn.redoc.ly" not in served.content
    before, after = shipped.split(logo)
    assert served.content.startswith(before) and served.content.endswith(after)
    assert served.content[len(before):-len(after)].startswith(b"data:image/svg+xml,")
    again = client.get("/docs/assets/redoc.standalone.js", headers={"If-None-Match": served.headers["etag"]})
    assert again.status_code == 304 and again.content == b""


def _raw(client: TestClient, url: str, accept: str) -> tuple[str | None, bytes]:
    """The Content-Encoding and the body as sent, before any decoding."""
    with client.stream("GET", url, headers={"Accept-Encoding": accept}) as response:
        assert response.status_code == 200, url
        return response.headers.get("content-encoding"), b"".join(response.iter_raw())


@pytest.mark.parametrize("url, original", [
    ("/docs/assets/swagger-ui-bundle.js", lambda: (DOCS_PACKAGE_FILES / "swagger-ui-bundle.js").read_bytes()),
    ("/docs/assets/swagger-ui.css", lambda: (DOCS_PACKAGE_FILES / "swagger-ui.css").read_bytes()),
    ("/docs/assets/redoc.standalone.js", lambda: redoc_bundle()[0]),
    ("/ui/static/console.js", lambda: (STATIC_DIR / "console.js").read_bytes()),
    ("/ui/static/console.css", lambda: (STATIC_DIR / "console.css").read_bytes()),
    ("/ui/static/plotly.min.js", lambda: plotly.offline.get_plotlyjs().encode()),
])
def test_scripts_and_stylesheets_are_gzipped_for_clients_that_accept_it(client, url, original):
    encoding, body = _raw(client, url, "gzip, deflate")
    assert encoding == "gzip"
    assert gzip.decompress(body) == original()
    assert len(body) < len(original()) * 0.6  # every one of these compresses to well under this
    encoding, body = _raw(client, url, "identity")
    assert encoding is None and body == original()


@pytest.mark.parametrize("url", ["/docs", "/redoc", "/openapi.json", "/metrics", "/ui/login"])
def test_pages_api_answers_and_metrics_are_sent_as_they_are(client, url):
    encoding, body = _raw(client, url, "gzip")
    assert encoding is None and len(body) > 500  # large enough that a blanket GZipMiddleware would compress it


def test_what_counts_as_an_asset():
    assert is_asset("/ui/static/plotly.min.js") and is_asset("/docs/assets/swagger-ui.css")
    assert not is_asset("/docs") and not is_asset("/metrics") and not is_asset("/docs/assets/favicon.png")
    assert not is_asset("/api/v1/tenants/app.js")  # an API answer, whatever its name ends with
