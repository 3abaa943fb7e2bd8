"""Open-loop HTTP/1.1 load for the benches: requests sent at fixed, evenly spaced times, whatever the
earlier ones are doing, so a slow server does not slow the offered load down (bench/api_load.py,
bench/ingest_http.py).

One asyncio task per request, started at its scheduled time; each takes an idle keep-alive connection
or opens one. Plain HTTP/1.1 on asyncio streams rather than an HTTP client: the generator shares the
machine's cores with the server, so it spends as little CPU as it can. Latency is measured from each
request's scheduled time, so time spent queued behind a slow server counts.
"""

import asyncio
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

KEEP_ALIVE_S = 4.0  # uvicorn closes a keep-alive connection idle 5 s


@dataclass(frozen=True)
class LoadResult:
    """What one open-loop run got back: answers per HTTP status (0: no answer), the latency of every
    request in ms from its scheduled time, and the no-answer cases per exception type."""

    statuses: dict[int, int]
    latencies_ms: list[float]
    errors: dict[str, int]


async def open_loop(base: str, request: Callable[[str, int], bytes], per_second: float, seconds: float,
                    answer_timeout_s: float = 30.0) -> LoadResult:
    """Send `per_second` requests a second for `seconds` (at least one) to `base` (http://host:port);
    `request(host, i)` is the i-th request's bytes, head and body."""
    host, port = base.removeprefix("http://").split(":")
    idle: deque[tuple[asyncio.StreamReader, asyncio.StreamWriter, float]] = deque()  # oldest left
    statuses: dict[int, int] = {}
    errors: dict[str, int] = {}
    latencies: list[float] = []
    loop = asyncio.get_running_loop()

    async def send(i: int, due: float) -> None:
        while idle and idle[0][2] < loop.time() - KEEP_ALIVE_S:  # the server may have closed it: a client
            idle.popleft()[1].close()                             # would not reuse it either
        reader, writer, _ = idle.pop() if idle else (*await asyncio.open_connection(host, int(port)), 0.0)
        try:
            writer.write(request(host, i))
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), answer_timeout_s)
            status = int(head.split(b" ", 2)[1])
            length = next((int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
                           if line.lower().startswith(b"content-length:")), None)
            await reader.readexactly(length or 0)
            # Without a length the body's end is unknown, so the connection cannot be reused.
            closing = length is None or b"connection: close" in head.lower()
        except (TimeoutError, OSError, asyncio.IncompleteReadError, ValueError) as exc:
            status, closing = 0, True
            errors[type(exc).__name__] = errors.get(type(exc).__name__, 0) + 1
        latencies.append((loop.time() - due) * 1000)
        statuses[status] = statuses.get(status, 0) + 1
        if closing:
            writer.close()
        else:
            idle.append((reader, writer, loop.time()))

    tasks = []
    start = loop.time() + 0.2
    for i in range(max(1, int(per_second * seconds))):
        due = start + i / per_second
        await asyncio.sleep(max(0.0, due - loop.time()))
        tasks.append(asyncio.create_task(send(i, due)))
    await asyncio.gather(*tasks)
    for _, writer, _ in idle:
        writer.close()
    return LoadResult(statuses, latencies, errors)
