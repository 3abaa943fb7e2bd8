"""Helpers shared by tests that need real components: skipping rules, free ports, waiting, Chromium."""

import os
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

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


T = TypeVar("T")


def wait_until(predicate: Callable[[], T], what: str, polls: int = 200, interval: float = 0.05) -> T:
    """Poll `predicate` until it returns something truthy and return that; fail the test naming `what` once
    `polls` tries have all come back falsy.

    It counts tries, never elapsed time: a loaded machine makes the wait longer, it cannot turn the test into
    a speed check (speed figures belong in bench/)."""
    for _ in range(polls):
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    pytest.fail(f"never happened in {polls} polls {interval:g} s apart: {what}")


CONSOLE_CHARTS = ("chart-cost", "chart-tokens", "chart-busy", "chart-capacity", "chart-sla")


def wait_for_charts(page, timeout_ms: int) -> None:
    """Wait until every overview chart holds data (the console marks each with `data-points`)."""
    page.wait_for_function(
        "ids => ids.every(id => Number(document.getElementById(id).dataset.points) > 0)",
        arg=list(CONSOLE_CHARTS),
        timeout=timeout_ms,
    )


FOCUS_VALIDATOR = Path(__file__).resolve().parents[1] / ".venv-focus" / "bin" / "focus-validator"
FOCUS_OVERRIDES = Path(__file__).resolve().parent / "focus" / "overrides.yaml"


def focus_failures(csv_path: Path, report_dir: Path) -> list[str]:
    """The FOCUS 1.0 rules `csv_path` breaks, by focus-validator 1.0.0 (its JUnit report; the CLI
    exits 0 either way). Skips (fails under CI=true) where `make test` has not made .venv-focus."""
    import subprocess
    import xml.etree.ElementTree as ET

    if not FOCUS_VALIDATOR.exists():
        missing_component("focus-validator", f"{FOCUS_VALIDATOR} is missing: make .venv-focus/.installed-stamp")
    site = next((FOCUS_VALIDATOR.parents[1] / "lib").glob("python3*/site-packages"))
    report = report_dir / "focus-report.xml"
    # cwd: the validator reads its currency-code list from a path relative to its site-packages.
    subprocess.run([str(FOCUS_VALIDATOR), "--data-file", str(csv_path.resolve()), "--validate-version", "1.0",
                    "--override-file", str(FOCUS_OVERRIDES), "--output-type", "unittest",
                    "--output-destination", str(report)], cwd=site, check=True, capture_output=True, timeout=300)
    suites = ET.parse(report).getroot()
    return sorted(case.get("name") for case in suites.iter("testcase")
                  if case.find("failure") is not None or case.find("error") is not None)
