"""Admission control for the API: a bounded number of requests in a process, the rest told to retry.

Requests beyond `api_concurrency` wait for a worker thread; beyond (1 + QUEUE_FACTOR) times that
many in the process, a request is answered at once with 503 and `Retry-After` instead of joining a
queue it would only time out in. With the worker threads and the database pool sized from the same
setting (controlplane.db.pool_size), an overloaded server answers slowly or says so, and never
hangs. Health and readiness checks are always admitted.
"""

import json

import anyio.to_thread
from starlette.types import ASGIApp, Receive, Scope, Send

QUEUE_FACTOR = 4
RETRY_AFTER_S = 1
EXEMPT = ("/api/v1/health", "/api/v1/ready")


class Admission:
    """Pure ASGI middleware: counts the HTTP requests in flight and sheds those past the bound."""

    def __init__(self, app: ASGIApp, concurrency: int) -> None:
        self.app = app
        self.concurrency = concurrency
        self.bound = concurrency * (1 + QUEUE_FACTOR)
        self.in_flight = 0
        self._sized = False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if not self._sized:  # the thread pool belongs to the running event loop: size it there
            anyio.to_thread.current_default_thread_limiter().total_tokens = self.concurrency
            self._sized = True
        if self.in_flight >= self.bound and scope["path"] not in EXEMPT:
            await _overloaded(scope, send)
            return
        self.in_flight += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.in_flight -= 1


async def _overloaded(scope: Scope, send: Send) -> None:
    body = json.dumps({
        "type": "about:blank", "title": "Service unavailable", "status": 503,
        "detail": "the server is at capacity; retry after the seconds in Retry-After", "instance": scope["path"],
    }).encode()
    await send({"type": "http.response.start", "status": 503, "headers": [
        (b"content-type", b"application/problem+json"), (b"retry-after", str(RETRY_AFTER_S).encode()),
        (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
