"""`heteroplane calibrate`: measures this node, records achieved / datasheet for its class, refuses bad input."""

import math
import subprocess
import sys
from pathlib import Path

import pytest
from sqlmodel import Session, select
from typer.testing import CliRunner

from controlplane.cli import app
from controlplane.models import DeviceCalibration, DeviceClass
from controlplane.seed import seed_catalog
from controlplane.settings import get_settings

pytest.importorskip("torch")
ROOT = Path(__file__).resolve().parents[1]
CPU = "CPU-EPYC-64C"  # 12.7 TFLOP/s bf16 and 307 GB/s over 64 cores


@pytest.fixture
def calibrate(engine, monkeypatch):
    with Session(engine) as session:
        seed_catalog(session)
        session.commit()
    monkeypatch.setenv("HETEROPLANE_DATABASE_URL", engine.url.render_as_string(hide_password=False))
    get_settings.cache_clear()
    runner = CliRunner()
    yield lambda *args: runner.invoke(app, ["calibrate", *args])
    get_settings.cache_clear()


def stored(engine) -> list[DeviceCalibration]:
    with Session(engine) as session:
        return list(session.exec(select(DeviceCalibration)).all())


def test_quick_calibration_records_achieved_over_the_datasheet_share_of_the_threads_used(calibrate, engine):
    result = calibrate("--device-class", CPU, "--quick", "--threads", "1")
    assert result.exit_code == 0, result.output
    (row,) = stored(engine)
    with Session(engine) as session:
        assert session.get(DeviceClass, row.device_class_id).name == CPU
    # One thread of 64 cores: the datasheet share is 12.7e3 / 64 GFLOP/s bf16 (float32 half that), 307 / 64 GB/s.
    bf16_peak = 12.7e3 / 64
    assert row.bfloat16_efficiency == pytest.approx(row.bfloat16_gflops / bf16_peak)
    assert row.float16_efficiency == pytest.approx(row.float16_gflops / bf16_peak)
    assert row.float32_efficiency == pytest.approx(row.float32_gflops / (bf16_peak / 2))
    assert row.memory_efficiency == pytest.approx(row.copy_gbps / (307 / 64))
    for value in (row.float32_gflops, row.bfloat16_gflops, row.float16_gflops, row.copy_gbps):
        assert math.isfinite(value) and value > 0
    assert "torch 2." in row.source and "1 threads" in row.source and row.threads == 1
    assert "bfloat16 matmul" in result.output and "copy" in result.output

    again = calibrate("--device-class", CPU, "--quick", "--threads", "1")  # a new calibration replaces the old
    assert again.exit_code == 0, again.output
    (newer,) = stored(engine)
    assert newer.id == row.id and newer.measured_at >= row.measured_at


def test_a_dry_run_measures_and_records_nothing(calibrate, engine):
    result = calibrate("--device-class", CPU, "--quick", "--threads", "1", "--dry-run")
    assert result.exit_code == 0, result.output
    assert "nothing recorded" in result.output and "GFLOP/s" in result.output
    assert stored(engine) == []


@pytest.mark.parametrize(("args", "says"), [
    (["--device-class", "TPU-v9"], "unknown device class 'TPU-v9'; known classes: A100-80GB, A10G, CPU-EPYC-64C"),
    (["--device-class", "a\x00b"], "--device-class: a device class name is at most 64 characters without NUL"),
    (["--device-class", "x" * 10_000], "name is at most 64 characters without NUL; got 10000 characters starting"),
    (["--device-class", CPU, "--threads", "0"], "--threads must be 1 to"),
    (["--device-class", CPU, "--threads", "-1"], "--threads must be 1 to"),
    (["--device-class", CPU, "--threads", str(10**20)], "--threads must be 1 to"),
    (["--device-class", CPU, "--threads", "100000"], "--threads must be 1 to"),
])
def test_bad_options_exit_2_naming_the_problem(calibrate, engine, args, says):
    result = calibrate(*args, "--quick")
    assert result.exit_code == 2
    assert says in " ".join(result.output.split())
    assert len(result.output) < 2_000  # a hostile argument is not echoed whole
    assert stored(engine) == []


def test_an_accelerator_class_is_refused_on_a_node_without_its_device(calibrate, engine):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this node has CUDA: an accelerator class can be measured here")
    result = calibrate("--device-class", "H100-SXM", "--quick", "--threads", "1")
    assert result.exit_code == 2 and "accelerator class" in result.output and "no CUDA" in result.output
    assert stored(engine) == []


@pytest.mark.parametrize("bad", [math.nan, math.inf, 0.0, -1.0])
def test_a_bad_measured_figure_is_refused_and_the_earlier_calibration_kept(calibrate, engine, monkeypatch, bad):
    assert calibrate("--device-class", CPU, "--quick", "--threads", "1").exit_code == 0
    (before,) = stored(engine)

    import kernels.calibrate

    real = kernels.calibrate.measure

    def broken(threads, quick=False, device="cpu"):
        achieved = real(threads, quick, device)
        return kernels.calibrate.Achieved({**achieved.gflops, "float16": bad}, achieved.copy_gbps, achieved.spread,
                                          threads, device, achieved.torch_version)

    monkeypatch.setattr(kernels.calibrate, "measure", broken)
    result = calibrate("--device-class", CPU, "--quick", "--threads", "1")
    assert result.exit_code == 2
    assert "measured float16 GFLOP/s must be a finite number > 0" in " ".join(result.output.split())
    (after,) = stored(engine)
    assert after.float16_gflops == before.float16_gflops and after.measured_at == before.measured_at


def test_without_torch_the_command_says_to_install_the_kernels_extra(calibrate, engine, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)  # import torch now raises ImportError
    monkeypatch.delitem(sys.modules, "kernels.calibrate", raising=False)
    result = calibrate("--device-class", CPU, "--quick", "--threads", "1")
    assert result.exit_code == 2 and "install the kernels extra" in result.output
    assert stored(engine) == []


def test_the_cli_loads_without_importing_torch():
    ran = subprocess.run([sys.executable, "-c", "import sys, controlplane.cli; print('torch' in sys.modules)"],
                         cwd=ROOT, capture_output=True, text=True, check=True)
    assert ran.stdout.strip() == "False"
