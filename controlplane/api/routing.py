"""How an API route runs: its function, its response's validation and serialisation, and the end of
its database session, all on one worker thread.

FastAPI runs a plain `def` route on a worker thread, then validates what it returned against the
response model on another (the model reads ORM attributes, which may query), and ends the request's
session on a third. Between those hops the request holds its pooled connection while it waits for a
thread. With every thread waiting for a connection and every connection held by a finished request
waiting for a thread, nothing moves until the pool's timeout: the deadlock of issue 12, which a
flood of reads on a pool sized one per thread reproduces (tests/controlplane/test_overload.py).

`OneHopRoute` wraps each route function so that, on its thread, it validates the result against the
route's response model, serialises it to JSON bytes once, and closes every session it was given
(connection back in the pool) before the thread is released. What FastAPI gets is a finished
`Response`, which it sends as it is. The OpenAPI document is unchanged: the route keeps its
response model and status code.
"""

import functools
import inspect
from collections.abc import Callable
from typing import Any

from fastapi import Response
from fastapi.exceptions import ResponseValidationError
from fastapi.routing import APIRoute
from pydantic import TypeAdapter, ValidationError
from sqlmodel import Session


class OneHopRoute(APIRoute):
    """An APIRoute whose plain `def` function is wrapped by `one_hop` (async ones are left alone)."""

    def __init__(self, path: str, endpoint: Callable[..., Any], **kwargs: Any) -> None:
        if not inspect.iscoroutinefunction(endpoint) and not getattr(endpoint, "one_hop", False):
            endpoint = one_hop(endpoint, kwargs.get("response_model"), kwargs.get("status_code"))
        super().__init__(path, endpoint, **kwargs)


def one_hop(endpoint: Callable[..., Any], response_model: Any, status_code: int | None) -> Callable[..., Any]:
    """`endpoint`, answering a serialised Response and closing its sessions before it returns."""
    adapter = TypeAdapter(response_model) if _declared(response_model) else None

    @functools.wraps(endpoint)
    def run(*args: Any, **kwargs: Any) -> Any:
        sessions = [value for value in kwargs.values() if isinstance(value, Session)]
        try:
            result = endpoint(*args, **kwargs)
            if isinstance(result, Response):
                return result
            if adapter is None:
                if result is None and status_code is not None:
                    return Response(status_code=status_code)
                return result  # FastAPI encodes it; nothing in it reads the database
            try:
                value = adapter.validate_python(result, from_attributes=True)
            except ValidationError as exc:
                raise ResponseValidationError(errors=exc.errors(), body=result) from None
            return Response(adapter.dump_json(value, by_alias=True), status_code=status_code or 200,
                            media_type="application/json")
        finally:
            for session in sessions:
                session.close()

    run.one_hop = True  # type: ignore[attr-defined]
    return run


def _declared(response_model: Any) -> bool:
    """Whether a route was given a response model (FastAPI's `Default(None)` placeholder is not one)."""
    return response_model is not None and type(response_model).__name__ != "DefaultPlaceholder"
