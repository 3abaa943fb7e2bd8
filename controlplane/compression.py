"""gzip for the static assets the API port serves: the console's scripts and stylesheets (web/) and
the documentation pages' (controlplane.docs).

Those are the large bodies every browser fetches (Plotly 4.8 MB, Swagger UI 1.5 MB, ReDoc 1.1 MB;
about 30% of that gzipped), so a request for a path ending in .js or .css, outside /api/, gets a
gzip body when it accepts one, compressed by Starlette's GZipMiddleware. Everything else is sent as
it is: HTML pages and API answers are small, and some carry a secret (a token just minted, a CSRF
token) beside text the request chose, the mix whose compressed length leaks the secret (BREACH).
/metrics, the OTLP receiver (its own app, on its own port) and any streamed answer are untouched.
"""

from starlette.middleware.gzip import GZipMiddleware
from starlette.types import ASGIApp, Receive, Scope, Send

ASSET_SUFFIXES = (".js", ".css")


def is_asset(path: str) -> bool:
    """Whether a request for `path` may be answered gzip-compressed."""
    return path.endswith(ASSET_SUFFIXES) and not path.startswith("/api/")


class CompressedAssets:
    """Pure ASGI middleware: GZipMiddleware for the requests `is_asset` names, the app as it is for the rest."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.gzip = GZipMiddleware(app, compresslevel=6)  # zlib's default: ~level 9's size at less CPU

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and is_asset(scope["path"]):
            await self.gzip(scope, receive, send)
        else:
            await self.app(scope, receive, send)
