"""`heteroplane kernels verify|bench` in-process (--quick, one op) on SQLite and PostgreSQL: verdicts
and timings printed, the selection exported and stored, bad options refused with the fix named."""

import json
import sys

import pytest
from sqlmodel import Session, select
from typer.testing import CliRunner

from controlplane.cli import _console, app
from controlplane.db import make_engine
from controlplane.models import KernelSelection
from controlplane.queries import kernel_speedups
from controlplane.settings import get_settings


@pytest.fixture
def cli_env(empty_database_url, monkeypatch, tmp_path):
    monkeypatch.setenv("HETEROPLANE_DATABASE_URL", empty_database_url)
    monkeypatch.setenv("HETEROPLANE_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("COLUMNS", "200")  # rich tables unwrapped
    get_settings.cache_clear()
    _console.cache_clear()
    yield empty_database_url
    get_settings.cache_clear()
    _console.cache_clear()


def test_verify_prints_verdicts_and_records_the_selection(cli_env, tmp_path):
    bad = tmp_path / "cands"
    bad.mkdir()
    (bad / "doubles.py").write_text("OP = 'softmax'\nDTYPES = ('float32',)\n"
                                    "def kernel(x):\n    return x.softmax(-1) * 2\n")
    out = tmp_path / "sel.json"
    done = CliRunner().invoke(app, ["kernels", "verify", "--quick", "--op", "softmax", "--folder", str(bad),
                                    "--out", str(out), "--device-class", "cpu-test"])
    assert done.exit_code == 0, done.output
    assert "doubles" in done.output and "rejected" in done.output and "values at shape" in done.output
    assert "softmax_alt" in done.output and "accepted" in done.output
    rows = json.loads(out.read_text())["rows"]
    # softmax's quick shapes (1,1) (3,7) (13,31) (2,64): buckets 0, 4, 8, 7, each float dtype
    assert sorted({(r["dtype"], r["shape_bucket"]) for r in rows}) == sorted(
        (d, b) for d in ("bfloat16", "float16", "float32") for b in (0, 4, 7, 8))
    assert all(r["seeds"] == [0, 1] and r["torch_version"] and r["device"] == "cpu" for r in rows)
    engine = make_engine(cli_env)
    with Session(engine) as session:
        stored = session.exec(select(KernelSelection).where(KernelSelection.device_class == "cpu-test")).all()
        assert len(stored) == len(rows) == 12
        assert {s.chosen for s in stored} <= {"reference", "softmax_alt"}
        speedups = kernel_speedups(session, "cpu-test")
    engine.dispose()
    assert set(speedups) == {"softmax"} and speedups["softmax"] >= 1.0


def test_bench_prints_times_per_shape(cli_env, tmp_path):
    done = CliRunner().invoke(app, ["kernels", "bench", "--quick", "--op", "rmsnorm", "--out", str(tmp_path / "b.json")])
    assert done.exit_code == 0, done.output
    assert "reference µs" in done.output and "rmsnorm_alt" in done.output and "13x31" in done.output


@pytest.mark.parametrize("args,message", [
    (["--op", "gelu"], "unknown op 'gelu'; known: attention_decode"),
    (["--folder", "/no/such/folder"], "does not exist"),
    (["--device-class", "gpu\x00x"], "--device-class must be a device class name: 1 to 64 letters"),
    (["--device-class", "x" * 10_000], "--device-class must be a device class name: 1 to 64 letters"),
    (["--device-class", "../../etc/x"], "--device-class must be a device class name: 1 to 64 letters"),
    (["--op", "o" * 10_000], "unknown op 'oooo"),
    (["--device", "tpu"], "--device must be auto, cpu or cuda, got 'tpu'"),
])
def test_bad_options_are_refused_naming_the_fix(cli_env, args, message):
    done = CliRunner().invoke(app, ["kernels", "verify", "--quick", *args])
    assert done.exit_code == 2 and message in " ".join(done.output.split()), done.output
    assert len(done.output) < 1000  # a 10k-character argument is not echoed back


def test_cuda_asked_for_on_a_node_without_it_is_refused(cli_env, monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    done = CliRunner().invoke(app, ["kernels", "bench", "--quick", "--op", "rmsnorm", "--device", "cuda"])
    assert done.exit_code == 2 and "no CUDA device" in done.output, done.output


def test_a_selection_for_a_class_the_fleet_does_not_have_says_the_planner_will_not_use_it(cli_env, tmp_path):
    done = CliRunner().invoke(app, ["kernels", "bench", "--quick", "--op", "rmsnorm", "--device-class", "nope",
                                    "--out", str(tmp_path / "b.json")])
    assert done.exit_code == 0, done.output
    assert "no device class is named 'nope'" in " ".join(done.output.split()), done.output


def test_without_torch_the_cli_loads_and_says_to_install_the_extra(cli_env, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)  # `import torch` now raises ImportError
    done = CliRunner().invoke(app, ["kernels", "bench", "--quick"])
    assert done.exit_code == 2 and "install the kernels extra" in done.output


def test_an_unreachable_database_is_said_in_one_line_before_any_kernel_is_verified(cli_env, monkeypatch, tmp_path):
    monkeypatch.setenv("HETEROPLANE_DATABASE_URL", "postgresql+psycopg://nobody@127.0.0.1:1/nodb")
    get_settings.cache_clear()
    out = tmp_path / "never.json"
    done = CliRunner().invoke(app, ["kernels", "verify", "--quick", "--op", "softmax", "--out", str(out)])
    assert done.exit_code == 2 and "cannot reach the database" in done.output, done.output
    assert "Traceback" not in done.output and len(done.output.splitlines()) <= 3
    assert not out.exists()  # nothing verified, nothing exported


def test_the_unknown_class_note_lists_a_bounded_number_of_known_classes(cli_env, tmp_path):
    from controlplane.db import upgrade
    from controlplane.models import DeviceClass

    upgrade(cli_env)
    engine = make_engine(cli_env)
    with Session(engine) as session:
        session.add_all(DeviceClass(name=f"C{i:04d}", vendor="v", bf16_tflops=1, memory_gib=1, memory_gbps=1,
                                    fabric="f", usd_per_hour=1) for i in range(300))
        session.commit()
    engine.dispose()
    done = CliRunner().invoke(app, ["kernels", "bench", "--quick", "--op", "rmsnorm", "--device-class", "nope",
                                    "--out", str(tmp_path / "b.json")])
    said = " ".join(done.output.split())
    assert done.exit_code == 0 and "C0000, C0001" in said and "and 280 more" in said, done.output
    assert "C0299" not in said
