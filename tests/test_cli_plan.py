"""`heteroplane plan PROBLEM.json`: a table, JSON, and exit codes an operator can script on."""

import json
from pathlib import Path

from typer.testing import CliRunner

from controlplane.cli import app

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "problem.json"
runner = CliRunner()


def _write(tmp_path: Path, doc: dict) -> str:
    path = tmp_path / "problem.json"
    path.write_text(json.dumps(doc))
    return str(path)


def test_prints_a_table_for_the_example() -> None:
    result = runner.invoke(app, ["plan", str(EXAMPLE)])
    assert result.exit_code == 0, result.output
    for text in ("support/chat", "support/embed", "support/retrieval", "H100-SXM", "status: optimal", "total: $"):
        assert text in result.output


def test_json_output_is_the_plan_only() -> None:
    result = runner.invoke(app, ["plan", str(EXAMPLE), "--json"])
    assert result.exit_code == 0, result.output
    plan = json.loads(result.output)
    assert plan["status"] == "optimal" and plan["feasible"] is True
    served = {a["fragment"] for a in plan["assignments"] if a["replicas"] > 0}
    assert served == {"support/chat", "support/embed", "support/retrieval"}
    assert plan["usd_per_hour"] == sum(a["usd_per_hour"] for a in plan["assignments"])


def test_infeasible_problem_exits_1_with_a_diagnosis(tmp_path) -> None:
    doc = json.loads(EXAMPLE.read_text())
    doc["fragments"][0]["demand_rps"] = 10_000.0  # far beyond 2 H100s and 8 L4s
    result = runner.invoke(app, ["plan", _write(tmp_path, doc)])
    assert result.exit_code == 1, result.output
    assert "status: infeasible" in result.output and "support/chat" in result.output
    as_json = runner.invoke(app, ["plan", _write(tmp_path, doc), "--json"])
    assert as_json.exit_code == 1 and json.loads(as_json.output)["diagnosis"]


def test_bad_field_exits_2_naming_its_path(tmp_path) -> None:
    doc = json.loads(EXAMPLE.read_text())
    doc["fragments"][1]["profiles"][0]["throughput_rps"] = -3
    result = runner.invoke(app, ["plan", _write(tmp_path, doc)])
    assert result.exit_code == 2
    assert "fragments[1].profiles[0].throughput_rps: must be > 0" in result.output


def test_unreadable_file_exits_2(tmp_path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    assert runner.invoke(app, ["plan", str(bad)]).exit_code == 2
    assert runner.invoke(app, ["plan", str(tmp_path / "missing.json")]).exit_code == 2


def test_split_example_shows_its_pools_and_a_bad_phase_is_named(tmp_path) -> None:
    example = EXAMPLE.with_name("split.json")
    result = runner.invoke(app, ["plan", str(example)])
    assert result.exit_code == 0, result.output
    rows = [line for line in result.output.splitlines() if "llm" in line]
    assert any("prefill" in r and "flops" in r for r in rows) and any("decode" in r and "bandwidth" in r for r in rows)
    doc = json.loads(example.read_text())
    doc["fragments"][0]["profiles"][2]["phase"] = "prefil"
    bad = runner.invoke(app, ["plan", _write(tmp_path, doc)])
    assert bad.exit_code == 2 and "fragments[0].profiles[2].phase" in bad.output
