"""FOCUS 1.0 and CSV rows from chargeback lines (controlplane/focus.py), checked by the FOCUS
project's own validator (focus-validator 1.0.0, in .venv-focus) and read back with the csv module."""

import csv
import io
import json
from datetime import UTC, datetime, timedelta

import pytest

from controlplane.focus import FOCUS_COLUMNS, ChargeLine, billing_month, write_csv
from tests.support import focus_failures

HOUR = timedelta(hours=1)
START = datetime(2026, 12, 31, 22, tzinfo=UTC)  # the last hours of a month and of a year


def lines() -> list[ChargeLine]:
    hostile = ['=HYPERLINK("http://x")', 'comma, "quote"', "new\nline", "ünï—códe", "-2+3", "@SUM(A1)"]
    out = []
    for h in range(3):
        start = START + h * HOUR
        for i, name in enumerate(hostile):
            out.append(ChargeLine(start, start + HOUR, "H100-SXM", 3600.0 * (i + 1) / 7, 3.0,
                                  3.0 * (i + 1) / 7, tenant_id=i + 1, tenant=f"tenant {name}", workload=name,
                                  fragment=f"llm:{name}"))
        out.append(ChargeLine(start, start + HOUR, "L40S", 5400.0, 1.25, 1.875))  # idle, no tenant
        out.append(ChargeLine(start, start + HOUR, "idle-share", 900.0, None, 0.4, tenant_id=1, tenant="acme",
                              workload="rag", fragment="llm:x", idle_share=True))
    return out


def read(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text)))


def test_billing_months_wrap_the_year():
    assert billing_month(START) == (datetime(2026, 12, 1, tzinfo=UTC), datetime(2027, 1, 1, tzinfo=UTC))
    assert billing_month(START + 3 * HOUR) == (datetime(2027, 1, 1, tzinfo=UTC), datetime(2027, 2, 1, tzinfo=UTC))


def test_the_focus_export_passes_the_focus_1_0_rules(tmp_path):
    path = tmp_path / "focus.csv"
    path.write_text(write_csv(lines(), focus=True))
    assert focus_failures(path, tmp_path) == []
    rows = read(path.read_text())
    assert tuple(rows[0]) == FOCUS_COLUMNS and len(rows) == len(lines())
    # The rule the validator's SkuPriceId_Nullable means (tests/focus/overrides.yaml), checked here.
    assert all(r["SkuPriceId"] for r in rows if r["ChargeCategory"] == "Usage")
    assert sum(float(r["BilledCost"]) for r in rows) == pytest.approx(sum(line.cost_usd for line in lines()))


def test_the_validator_harness_can_fail(tmp_path):
    """A file that breaks FOCUS (a currency that is none, a cost that is no number) is reported."""
    text = write_csv(lines(), focus=True).replace(",USD,", ",dollars,", 1)
    path = tmp_path / "broken.csv"
    path.write_text(text)
    assert any("BillingCurrency" in failure for failure in focus_failures(path, tmp_path))


def test_names_reach_the_file_whole_and_never_as_formulas():
    for focus in (True, False):
        rows = read(write_csv(lines(), focus=focus))
        for row in rows:
            for value in row.values():
                assert not value or value[0] not in "=+@", value  # no cell a spreadsheet would run
    rows = read(write_csv(lines(), focus=True))
    tags = [json.loads(r["Tags"]) for r in rows]
    assert {t.get("workload") for t in tags} >= {'=HYPERLINK("http://x")', "new\nline", "ünï—códe"}
    idle = [r for r in rows if r["SubAccountId"] == ""]
    assert len(idle) == 3 and all(json.loads(r["Tags"]) == {"device_class": "L40S", "idle": "true"} for r in idle)


def test_plain_csv_totals_equal_the_lines():
    rows = read(write_csv(lines(), focus=False))
    assert sum(float(r["cost_usd"]) for r in rows) == pytest.approx(sum(line.cost_usd for line in lines()), rel=1e-12)
    assert {r["line"] for r in rows} == {"usage", "idle", "idle share"}
