"""`heteroplane plan PROBLEM.json`: a table, JSON, exit codes an operator can script on, and a quick start."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from controlplane.cli import app

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "problem.json"
runner = CliRunner()


def _write(tmp_path: Path, doc: dict) -> str:
    path = tmp_path / "problem.json"
    path.write_text(json.dumps(doc))
    return str(path)


def test_prints_a_table_for_the_example() -> None:
    result = runner.invoke(app, ["plan", str(EXAMPLE)])
    assert result.exit_code == 0, result.output
    for text in ("support/chat", "support/embed", "support/retrieval", "H100-SXM", "status: optimal", "total: $8.15/h"):
        assert text in result.output
    # chat's 2 replicas of 2 slices occupy one 7-slice H100 sold whole: its 3 idle slices cost 3/7 x $6.88.
    assert "(idle slices)" in result.output and "2.95" in result.output


def test_json_output_is_the_plan_only() -> None:
    result = runner.invoke(app, ["plan", str(EXAMPLE), "--json"])
    assert result.exit_code == 0, result.output
    plan = json.loads(result.output)
    assert plan["status"] == "optimal" and plan["feasible"] is True
    served = {a["fragment"] for a in plan["assignments"] if a["replicas"] > 0}
    assert served == {"support/chat", "support/embed", "support/retrieval"}
    idle = plan["cost_breakdown"]["idle_by_class"]
    assert plan["usd_per_hour"] == pytest.approx(sum(a["usd_per_hour"] for a in plan["assignments"]) + sum(idle.values()))
    assert plan["devices_used"] == {"H100-SXM": 1, "L4": 1, "CPU-EPYC-64C": 1}


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


# The service's stack, none of which a plan needs (SQLModel alone took ~0.4 s of the command's start).
NOT_FOR_PLANNING = ("fastapi", "starlette", "uvicorn", "sqlalchemy", "sqlmodel", "alembic", "pydantic_settings",
                    "opentelemetry", "plotly")
PLAN_AND_LIST_MODULES = f"""
import json, sys
from typer.testing import CliRunner
from controlplane.cli import app
result = CliRunner().invoke(app, ["plan", {str(EXAMPLE)!r}])
print(json.dumps({{"exit_code": result.exit_code, "output": result.output, "modules": sorted(sys.modules)}}))
"""


def test_plan_loads_the_solver_and_not_the_service() -> None:
    # A fresh interpreter: this test process has imported everything already.
    ran = subprocess.run([sys.executable, "-c", PLAN_AND_LIST_MODULES], cwd=ROOT, capture_output=True, text=True,
                         check=True)
    seen = json.loads(ran.stdout)
    assert seen["exit_code"] == 0 and "status: optimal" in seen["output"], seen["output"]
    assert "ortools.sat.python.cp_model" in seen["modules"]  # the command really solved in that process
    loaded = sorted(m for m in seen["modules"] if m.split(".")[0] in NOT_FOR_PLANNING)
    assert loaded == []
