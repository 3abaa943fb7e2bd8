"""`heteroplane calibrate`: measure what this node achieves and record it for its device class."""

import os
from typing import Annotated

import typer


def calibrate(
    device_class: Annotated[str, typer.Option("--device-class", help="The class this node belongs to (by name).")],
    quick: Annotated[bool, typer.Option("--quick", help="Small sizes: seconds, not a minute; lower figures.")] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Measure and print; record nothing.")] = False,
    threads: Annotated[int | None, typer.Option(help="CPU threads to measure on; default all of this node's.")] = None,
) -> None:
    """Measure matmul GFLOP/s per dtype (float32, bfloat16, float16) and copy GB/s on this node and
    record them, with their efficiency against the class's datasheet, as the class's calibration:
    the planner then prices the class by what it achieves. Exit 2 on a bad option."""
    from rich.console import Console
    from rich.table import Table
    from sqlmodel import Session

    from controlplane.calibration import (
        DTYPES,
        MAX_THREADS,
        Measured,
        datasheet,
        device_class_named,
        figures,
        store_figures,
    )
    from controlplane.db import make_engine
    from controlplane.models._common import utcnow
    from controlplane.settings import get_settings

    console = Console(stderr=True)

    def fail(message: str) -> typer.Exit:
        console.print(f"[red]{message}[/red]", soft_wrap=True)
        return typer.Exit(2)

    cores = os.cpu_count() or 1
    threads = cores if threads is None else threads
    if not 1 <= threads <= min(cores, MAX_THREADS):
        raise fail(f"--threads must be 1 to {min(cores, MAX_THREADS)} (this node's CPUs), got {threads}")
    try:
        import torch

        from kernels.calibrate import measure
    except ImportError:
        raise fail("calibrate needs torch: install the kernels extra (pip install 'heteroplane[kernels]')") from None

    engine = make_engine(get_settings().effective_database_url, 2)
    try:
        with Session(engine) as session:
            try:
                row = device_class_named(session, device_class)
            except ValueError as exc:
                raise fail(f"--device-class: {exc}") from None
            if row.cores == 0 and not torch.cuda.is_available():
                raise fail(f"--device-class: {row.name} is an accelerator class and this node has no CUDA device; "
                           "run calibrate on a node of that class")
            device = "cpu" if row.cores > 0 else "cuda"
            console.print(f"measuring {row.name} on {device}, {threads} threads{' (quick)' if quick else ''} ...")
            achieved = measure(threads, quick=quick, device=device)
            measured = Measured(achieved.gflops, achieved.copy_gbps, threads, achieved.source)
            now = utcnow()
            try:
                values = figures(row, measured, now)
            except ValueError as exc:
                raise fail(str(exc)) from None
            peaks, bandwidth = datasheet(row, threads)
            table = Table("measure", "achieved", "datasheet", "efficiency", "spread", title=f"{row.name} calibration")
            for d in DTYPES:
                table.add_row(f"{d} matmul", f"{achieved.gflops[d]:,.1f} GFLOP/s", f"{peaks[d]:,.1f} GFLOP/s",
                              f"{values[f'{d}_efficiency']:.1%}", f"{achieved.spread[d]:.1%}")
            table.add_row("copy", f"{achieved.copy_gbps:,.1f} GB/s", f"{bandwidth:,.1f} GB/s",
                          f"{values['memory_efficiency']:.1%}", f"{achieved.spread['copy']:.1%}")
            Console().print(table)
            if dry_run:
                console.print("dry run: nothing recorded")
                return
            store_figures(session, row, values, now)
            console.print(f"recorded for {row.name}: {measured.source}")
    finally:
        engine.dispose()
