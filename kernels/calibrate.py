"""Calibration micro-benchmarks: the matmul FLOP/s per dtype and the copy bandwidth this node achieves.

Timed with torch.utils.benchmark (a warm-up run, then the median of repeated blocks over at least
`min_run_time` seconds, on a fixed number of threads). A square matmul of n x n by n x n does
2 n^3 FLOP; a copy of b bytes moves 2 b (it reads and writes them). `quick` uses sizes that run in
well under a second each, for tests; its matmul figures are lower than a full run's (small matrices
reach no peak), while its copy is still larger than the caches (a copy that fits in them measures
the cache, several times the memory's bandwidth, and would be recorded as efficiency far above 1).
"""

import socket
from dataclasses import dataclass

import torch
from torch.utils import benchmark

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass(frozen=True)
class Sizes:
    matmul_n: int
    copy_bytes: int
    min_run_time_s: float


FULL = Sizes(matmul_n=1024, copy_bytes=256 * 2**20, min_run_time_s=1.0)
FULL_CUDA = Sizes(matmul_n=8192, copy_bytes=2 * 2**30, min_run_time_s=1.0)  # a GPU reaches its peaks only at these
QUICK = Sizes(matmul_n=128, copy_bytes=64 * 2**20, min_run_time_s=0.05)  # a copy past the caches, still


@dataclass(frozen=True)
class Achieved:
    """Median achieved GFLOP/s per dtype name (DTYPES) and copy GB/s, with the spread of each (IQR / median)."""

    gflops: dict[str, float]
    copy_gbps: float
    spread: dict[str, float]
    threads: int
    device: str
    torch_version: str

    @property
    def source(self) -> str:
        return (f"heteroplane calibrate on {socket.gethostname()}, torch {self.torch_version}, "
                f"{self.threads} threads, {self.device}")


def measure(threads: int, quick: bool = False, device: str = "cpu") -> Achieved:
    """Time the matmuls and the copy on `device` with `threads` CPU threads."""
    sizes = QUICK if quick else FULL_CUDA if device.startswith("cuda") else FULL
    gflops, spread = {}, {}
    n = sizes.matmul_n
    for name, dtype in DTYPES.items():
        a = torch.randn(n, n, device=device).to(dtype)
        b = torch.randn(n, n, device=device).to(dtype)
        m = _time("torch.mm(a, b)", {"torch": torch, "a": a, "b": b}, threads, sizes, name)
        gflops[name] = 2 * n**3 / m.median / 1e9
        spread[name] = m.iqr / m.median
    src = torch.empty(sizes.copy_bytes, dtype=torch.uint8, device=device)
    dst = torch.empty_like(src)
    m = _time("dst.copy_(src)", {"src": src, "dst": dst}, threads, sizes, "copy")
    spread["copy"] = m.iqr / m.median
    return Achieved(gflops, 2 * sizes.copy_bytes / m.median / 1e9, spread, threads, device, torch.__version__)


def _time(stmt: str, env: dict, threads: int, sizes: Sizes, label: str) -> benchmark.Measurement:
    timer = benchmark.Timer(stmt, globals=env, num_threads=threads, label=label)
    timer.timeit(1)  # warm-up: first-call allocation and kernel selection stay out of the median
    return timer.blocked_autorange(min_run_time=sizes.min_run_time_s)
