"""Helpers shared by tests that need real components: skipping rules, free ports, Chromium."""

import os
import socket
from pathlib import Path

import pytest

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"


def missing_component(name: str, reason: str) -> None:
    """Skip on a laptop without `name`; under CI=true a missing real component fails the run."""
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{name} is required under CI=true but unavailable: {reason}")
    pytest.skip(f"{name} unavailable: {reason}")


def require_chromium() -> str:
    """The path of Debian's Chromium, or a skip (a failure under CI=true) when it is not installed."""
    if not CHROMIUM.exists():
        missing_component("Chromium", f"{CHROMIUM} is missing: apt-get install chromium")
    return str(CHROMIUM)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


CONSOLE_CHARTS = ("chart-cost", "chart-tokens", "chart-busy", "chart-capacity", "chart-sla")


def wait_for_charts(page, timeout_ms: int) -> None:
    """Wait until every overview chart holds data (the console marks each with `data-points`)."""
    page.wait_for_function(
        "ids => ids.every(id => Number(document.getElementById(id).dataset.points) > 0)",
        arg=list(CONSOLE_CHARTS),
        timeout=timeout_ms,
    )
