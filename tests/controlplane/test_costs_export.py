"""GET /costs/export and `heteroplane costs export`: the ledger's charges as CSV or FOCUS 1.0 rows,
summing to GET /costs, passing focus-validator, and a tenant's file holding nothing of another's."""

import csv
import io
import json

import pytest

from tests.controlplane.conftest import auth
from tests.controlplane.test_costs import WINDOW, get, world  # noqa: F401 - fixture
from tests.support import focus_failures


def export(client, token, **params):
    response = client.get("/api/v1/costs/export", params={**WINDOW, **params}, headers=auth(token))
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/csv")
    assert response.headers["content-disposition"].startswith("attachment; filename=")
    return list(csv.DictReader(io.StringIO(response.text))), response.text


@pytest.mark.parametrize("rule", ["none", "weighted", "even"])
@pytest.mark.parametrize("step", ["1h", "1m", "1d"])
def test_the_files_sum_to_the_cost_report(client, callers, world, rule, step):  # noqa: F811
    for token in (callers.admin, callers.acme_operator, callers.globex_viewer):
        total = get(client, token, share_idle=rule, step=step)["total_cost_usd"]
        plain, _ = export(client, token, share_idle=rule, step=step)
        focus, _ = export(client, token, share_idle=rule, step=step, format="focus")
        assert sum(float(r["cost_usd"]) for r in plain) == pytest.approx(total, rel=1e-9, abs=1e-12)
        assert sum(float(r["BilledCost"]) for r in focus) == pytest.approx(total, rel=1e-9, abs=1e-12)


def test_rows_are_periods_of_the_step_cut_to_the_range(client, callers, world):  # noqa: F811
    rows, _ = export(client, callers.admin, step="1h")
    # WINDOW is 09:48-10:08: the 09:00 hour cut to 09:48-10:00, the 10:00 hour to 10:00-10:08
    assert {(r["period_start"], r["period_end"]) for r in rows} <= {
        ("2026-03-02T09:48:00Z", "2026-03-02T10:00:00Z"), ("2026-03-02T10:00:00Z", "2026-03-02T10:08:00Z")}
    idle = [r for r in rows if r["line"] == "idle"]
    assert {(r["device_class"], float(r["cost_usd"])) for r in idle} == {("H100", 1.4), ("L4", 0.4)}
    prefill = next(r for r in rows if r["fragment"] == "llm:qwen (prefill)")
    assert float(prefill["usd_per_device_hour"]) == pytest.approx(7.0)  # what the ledger charged per device-hour


def test_a_tenants_file_holds_nothing_of_another_tenant(client, callers, world):  # noqa: F811
    for rule in ("none", "weighted", "even"):
        for fmt in ("csv", "focus"):
            _, text = export(client, callers.acme_operator, share_idle=rule, format=fmt)
            assert "acme-bot" in text
            for foreign in ("globex", "qwen", "research", f"tenant-{callers.globex_id},"):
                assert foreign not in text, (rule, fmt, foreign)
            if rule == "none":
                assert "idle" not in text.lower()  # unshared idle is the fleet's, not a tenant's


def test_the_focus_file_of_a_metered_fleet_passes_focus_1_0(client, callers, world, tmp_path):  # noqa: F811
    for rule in ("none", "weighted"):
        _, text = export(client, callers.admin, share_idle=rule, format="focus")
        path = tmp_path / f"{rule}.csv"
        path.write_text(text)
        assert focus_failures(path, tmp_path) == [], rule
    rows, _ = export(client, callers.admin, share_idle="weighted", format="focus")
    shares = [r for r in rows if json.loads(r["Tags"]).get("idle_share")]
    assert shares and all(r["ListUnitPrice"] == "" and r["SubAccountName"] for r in shares)


@pytest.mark.parametrize(("query", "field"), [
    ({"format": "xlsx"}, "format"), ({"share_idle": "all"}, "share_idle"), ({"step": "1w"}, "step"),
    ({"since": "2026-01-01T00:00:00Z", "until": "2026-03-01T00:00:00Z", "step": "1m"}, "step"),
    ({"since": "1999-01-01T00:00:00Z"}, "since"),
])
def test_bad_parameters_are_422_naming_the_field(client, callers, query, field):
    response = client.get("/api/v1/costs/export", params={**WINDOW, **query}, headers=auth(callers.admin))
    assert response.status_code == 422 and response.headers["content-type"].startswith("application/problem+json")
    assert field in json.dumps(response.json())


def test_an_empty_range_is_400_as_for_the_cost_report(client, callers):
    """since must precede until: an order between two parameters, 400 as GET /costs answers it."""
    same = {"since": "2026-03-02T10:00:00Z", "until": "2026-03-02T10:00:00Z"}
    for path in ("/api/v1/costs", "/api/v1/costs/export"):
        response = client.get(path, params=same, headers=auth(callers.admin))
        assert response.status_code == 400 and "since must be before until" in response.text


def test_an_export_needs_a_token(client):
    assert client.get("/api/v1/costs/export").status_code == 401


def test_the_command_line_writes_what_the_api_answers(client, callers, world, engine, tmp_path,  # noqa: F811
                                                      monkeypatch):
    """`heteroplane costs export` reads the same database and writes the same file as the API."""
    from typer.testing import CliRunner

    from controlplane.cli import app
    from controlplane.settings import get_settings

    monkeypatch.setenv("HETEROPLANE_DATABASE_URL", engine.url.render_as_string(hide_password=False))
    get_settings.cache_clear()
    try:
        runner = CliRunner()
        for fmt in ("csv", "focus"):
            out = tmp_path / f"{fmt}.csv"
            result = runner.invoke(app, ["costs", "export", "--format", fmt, "--since", WINDOW["since"],
                                         "--until", WINDOW["until"], "--share-idle", "weighted", "-o", str(out)])
            assert result.exit_code == 0, result.output
            _, text = export(client, callers.admin, format=fmt, share_idle="weighted")
            assert out.read_text() == text
        mine = runner.invoke(app, ["costs", "export", "--tenant", "acme", "--since", WINDOW["since"],
                                   "--until", WINDOW["until"]])
        assert mine.exit_code == 0 and "acme-bot" in mine.output and "qwen" not in mine.output
        for bad, says in ((["--format", "xml"], "--format"), (["--since", "yesterday"], "--since"),
                          (["--tenant", "nobody"], "--tenant"), (["--since", "2026-03-02", "--until", "2026-03-01"],
                                                                 "--since")):
            refused = runner.invoke(app, ["costs", "export", *bad])
            assert refused.exit_code == 2 and says in refused.output, (bad, refused.output)
    finally:
        get_settings.cache_clear()
