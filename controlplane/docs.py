"""The API's documentation pages, /docs (Swagger UI) and /redoc, working with no network.

FastAPI's own pages load Swagger UI and ReDoc from a CDN, so behind a firewall or offline they
are blank. Here the assets come from an installed package, fastapi-offline (it ships
swagger-ui-dist's bundle and stylesheet and ReDoc's standalone bundle), served by this app at
DOCS_ASSETS: FastAPI's "self-hosting JavaScript and CSS for docs" pattern (`docs_url=None`,
`redoc_url=None`, then `get_swagger_ui_html` and `get_redoc_html` with local URLs).

One change is made to what the package ships: ReDoc's bundle draws the Redocly logo beside its
"API docs by Redocly" link from Redocly's CDN, the one thing either page would fetch from another
host, so that URL is swapped for a blank inline image (the link stays).

Both pages are public, as /openapi.json is; calling an operation from Swagger UI takes a token
through its Authorize button like any other client. Each page carries a Content-Security-Policy
that lets it load from this origin only. Swagger UI's page starts itself with one inline script,
allowed by its SHA-256 hash rather than by `'unsafe-inline'`. ReDoc needs two more things, granted
on its page alone: inline styles (its styled-components inject <style> elements) and a Web Worker
built from a blob: URL (its search index).
"""

import base64
import hashlib
import re
from functools import cache
from importlib.resources import files

from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse, Response
from fastapi.staticfiles import StaticFiles

DOCS_ASSETS = "/docs/assets"
ASSETS_PACKAGE = ("fastapi_offline", "static")  # (package, folder in it), as StaticFiles(packages=...) takes it

_INLINE_SCRIPT = re.compile(rb"<script>(.*?)</script>", re.DOTALL)
REDOC_LOGO = b"https://cdn.redoc.ly/redoc/logo-mini.svg"
BLANK_IMAGE = b"data:image/svg+xml,%3Csvg xmlns='http://www.w3.org/2000/svg'/%3E"


@cache
def redoc_bundle() -> tuple[bytes, str]:
    """ReDoc's standalone bundle with the logo it would fetch from the web blanked, and its ETag."""
    package, folder = ASSETS_PACKAGE
    bundle = (files(package) / folder / "redoc.standalone.js").read_bytes().replace(REDOC_LOGO, BLANK_IMAGE)
    return bundle, f'"{hashlib.sha256(bundle).hexdigest()[:32]}"'


def content_security_policy(html: bytes, extra: str = "") -> str:
    """The policy for a docs page whose body is `html`: everything from this origin, its inline
    scripts allowed by hash alone; `extra` adds the directives a page needs beyond that."""
    hashes = "".join(
        f" 'sha256-{base64.b64encode(hashlib.sha256(script).digest()).decode()}'"
        for script in _INLINE_SCRIPT.findall(html)
    )
    return (
        f"default-src 'self'; script-src 'self'{hashes}; img-src 'self' data:; connect-src 'self'; "
        f"object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'{extra}"
    )


REDOC_NEEDS = "; style-src 'self' 'unsafe-inline'; worker-src blob:"


def _secured(page: HTMLResponse, extra_policy: str = "") -> HTMLResponse:
    page.headers["Content-Security-Policy"] = content_security_policy(page.body, extra_policy)
    page.headers["X-Content-Type-Options"] = "nosniff"
    page.headers["Referrer-Policy"] = "same-origin"
    return page


def install_docs(app: FastAPI) -> None:
    """Serve /docs and /redoc on `app` (created with `docs_url=None, redoc_url=None`) over the
    assets at DOCS_ASSETS."""
    assert app.docs_url is None and app.redoc_url is None, "FastAPI's CDN pages would shadow these"
    openapi_url = app.openapi_url or "/openapi.json"
    favicon = f"{DOCS_ASSETS}/favicon.png"

    @app.get(f"{DOCS_ASSETS}/redoc.standalone.js", include_in_schema=False)  # before the mount, which it shadows
    def redoc_js(request: Request) -> Response:
        bundle, etag = redoc_bundle()
        if request.headers.get("if-none-match") == etag:
            return Response(status_code=304, headers={"ETag": etag})
        return Response(bundle, media_type="text/javascript", headers={"ETag": etag})

    app.mount(DOCS_ASSETS, StaticFiles(packages=[ASSETS_PACKAGE]), name="docs-assets")

    @app.get("/docs", include_in_schema=False)
    def swagger_ui() -> HTMLResponse:
        return _secured(get_swagger_ui_html(
            openapi_url=openapi_url, title=f"{app.title} - Swagger UI", swagger_favicon_url=favicon,
            swagger_js_url=f"{DOCS_ASSETS}/swagger-ui-bundle.js", swagger_css_url=f"{DOCS_ASSETS}/swagger-ui.css",
        ))

    @app.get("/redoc", include_in_schema=False)
    def redoc() -> HTMLResponse:
        return _secured(get_redoc_html(
            openapi_url=openapi_url, title=f"{app.title} - ReDoc", redoc_js_url=f"{DOCS_ASSETS}/redoc.standalone.js",
            redoc_favicon_url=favicon, with_google_fonts=False,
        ), REDOC_NEEDS)
