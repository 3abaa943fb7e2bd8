"""The kernel_selection table (SQLite and PostgreSQL): a new measurement replaces the stored one, and
kernel_speedups aggregates an op's buckets and dtypes by geometric mean."""

import math

import pytest
from sqlmodel import select

from controlplane import kernel_selections
from controlplane.models import KernelSelection
from controlplane.queries import kernel_speedups
from kernels.registry import Row


def row(op, dtype, bucket, chosen, speedup, device_class="cpu"):
    return Row(op, device_class, dtype, bucket, (2, 2 ** (bucket - 1)), chosen, speedup, 0.02, 1e-5, chosen, 1e-5,
               1e-5, 1e-4, (0, 1, 2), "2.13.0", "cpu", "2026-12-05T23:00:00+00:00")


def test_speedups_are_the_geometric_mean_of_an_ops_rows_for_the_class(session):
    kernel_selections.save(session, [
        row("softmax", "float32", 7, "softmax_alt", 2.0), row("softmax", "bfloat16", 7, "reference", 1.0),
        row("softmax", "float32", 10, "softmax_alt", 4.0),
        row("rmsnorm", "float32", 7, "reference", 1.0),
        row("softmax", "float32", 7, "softmax_alt", 8.0, device_class="gpu"),
    ])
    # softmax on cpu: (2 · 1 · 4)^(1/3) = 2
    assert kernel_speedups(session, "cpu") == pytest.approx({"rmsnorm": 1.0, "softmax": 2.0})
    assert kernel_speedups(session, "gpu") == pytest.approx({"softmax": 8.0})
    assert kernel_speedups(session, "tpu") == {}


def test_a_new_measurement_replaces_the_stored_one(session):
    kernel_selections.save(session, [row("softmax", "float32", 7, "softmax_alt", 2.0)])
    kernel_selections.save(session, [row("softmax", "float32", 7, "reference", 1.0)])
    stored = session.exec(select(KernelSelection)).all()
    assert [(s.chosen, s.speedup, s.seeds, s.shape) for s in stored] == [("reference", 1.0, "0,1,2", "2x64")]
    assert stored[0].measured_at.isoformat() == "2026-12-05T23:00:00+00:00"
    assert math.isclose(kernel_speedups(session, "cpu")["softmax"], 1.0)
