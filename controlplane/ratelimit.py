"""Failed sign-ins and failed bearer tokens, counted per client so that guessing is slow.

A client (its address) that fails authentication MAX_FAILURES times within WINDOW_S is answered 429
with Retry-After until the oldest of those failures leaves the window; successful requests are
never counted. In-process and bounded: a process remembers at most MAX_CLIENTS clients.
"""

import time
from collections import deque

from starlette.requests import Request

MAX_FAILURES = 20
WINDOW_S = 60.0
MAX_CLIENTS = 10_000


class FailureLimiter:
    """Per-client sliding windows of failure times (monotonic seconds)."""

    def __init__(self, max_failures: int = MAX_FAILURES, window_s: float = WINDOW_S,
                 clock=time.monotonic) -> None:
        self.max_failures = max_failures
        self.window_s = window_s
        self.clock = clock
        self._failures: dict[str, deque[float]] = {}

    def retry_after(self, client: str) -> int | None:
        """Seconds `client` must wait before trying again, or None when it may try now."""
        times = self._recent(client)
        if len(times) < self.max_failures:
            return None
        return max(1, int(times[0] + self.window_s - self.clock()) + 1)

    def failed(self, client: str) -> None:
        if len(self._failures) >= MAX_CLIENTS and client not in self._failures:
            self._failures.clear()  # bounded memory: forgetting everyone errs towards letting them try
        self._recent(client).append(self.clock())

    def _recent(self, client: str) -> deque[float]:
        times = self._failures.setdefault(client, deque())
        while times and times[0] <= self.clock() - self.window_s:
            times.popleft()
        return times


def client_of(request: Request) -> str:
    """The key a caller's failures are counted under: its address, the same for the API and the
    console, so guessing through both counts together."""
    return request.client.host if request.client else ""
