"""`heteroplane kernels verify|bench`: verify every candidate kernel of every op on this machine, race
the verified ones against the eager reference, and record the selection with its evidence (the JSON
export file and the `kernel_selection` table).

torch is an extra: this module imports it only inside the commands, so `heteroplane` loads without
it and these commands say how to install it.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:
    from sqlalchemy import Engine

    from kernels.registry import Checked, Row

kernels_app = typer.Typer(help="Verified kernel selection (needs the kernels extra: torch).", no_args_is_help=True)

OpOption = Annotated[str | None, typer.Option("--op", help="Only this op (default: every op).")]
FolderOption = Annotated[Path | None, typer.Option(
    "--folder", help="Candidates folder (default: kernels/candidates/).", exists=True, file_okay=False)]
QuickOption = Annotated[bool, typer.Option(
    "--quick", help="Small shapes, fewer seeds and rounds, no torch.compile candidates.")]
OutOption = Annotated[Path | None, typer.Option(
    "--out", help="Export file (JSON); default: <data_dir>/kernels/selection-<device class>.json.")]
ClassOption = Annotated[str, typer.Option("--device-class", help="Device class the selection is for.")]
DeviceOption = Annotated[str, typer.Option(
    "--device", help="Where to verify and time: auto (CUDA when present, else the CPU), cpu or cuda.")]


def _require_torch() -> None:
    try:
        import torch  # noqa: F401
    except ImportError:
        typer.echo("torch is not installed: install the kernels extra (pip install '.[kernels]')", err=True)
        raise typer.Exit(2) from None


def _run(op: str | None, folder: Path | None, quick: bool, out: Path | None,
         device_class: str, device: str = "auto") -> tuple[list[Checked], list[Row], Path]:
    _require_torch()
    import torch
    from rich.progress import Progress

    from kernels import ops, registry, suite

    if op is not None and op not in ops.SPECS:
        typer.echo(f"unknown op {op[:64]!r}; known: {', '.join(sorted(ops.SPECS))}", err=True)
        raise typer.Exit(2)
    from controlplane.models.fleet import CLASS_NAME_PATTERN, MAX_CLASS_NAME

    if len(device_class) > MAX_CLASS_NAME or not re.fullmatch(CLASS_NAME_PATTERN, device_class):
        typer.echo(f"--device-class must be a device class name: 1 to {MAX_CLASS_NAME} letters, digits, '.', '_' or "
                   f"'-', starting with a letter or digit; got {device_class[:MAX_CLASS_NAME]!r}", err=True)
        raise typer.Exit(2)
    if device not in ("auto", "cpu", "cuda"):
        typer.echo(f"--device must be auto, cpu or cuda, got {device[:32]!r}", err=True)
        raise typer.Exit(2)
    if device == "cuda" and not torch.cuda.is_available():
        typer.echo("--device cuda: this node has no CUDA device torch can use", err=True)
        raise typer.Exit(2)
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    engine = _database()  # before minutes of verifying: an unreachable database fails now, not after
    candidates = [c for c in suite.all_candidates(folder, compiled=not quick) if op is None or c.op == op]
    names = sorted({c.op for c in candidates})
    if quick:  # the spec's shapes but its largest, verified and timed briefly
        shapes = {o: ops.SPECS[o].shapes[:-1] for o in names}
        s = registry.Settings(seeds=(0, 1), rounds=3, min_run_time=0.01, verify_shapes=shapes, device=device)
    else:
        s, shapes = registry.Settings(device=device), None
    steps = len(candidates) + sum(len((shapes or {}).get(o, ops.SPECS[o].shapes)) for o in names) * len(ops.FLOATS)
    with Progress(transient=True) as bar:
        task = bar.add_task("kernels", total=steps)

        def progress(what: str) -> None:
            bar.update(task, advance=1, description=what)

        checked, rows = registry.run(candidates, s, shapes=shapes, device_class=device_class, progress=progress)
    path = out or _default_out(device_class)
    stored = registry.per_bucket(rows)
    registry.export(stored, path)
    _store(engine, stored, device_class)
    return checked, rows, path


def _default_out(device_class: str) -> Path:
    from controlplane.settings import get_settings

    safe = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in device_class)
    return get_settings().data_dir / "kernels" / f"selection-{safe}.json"


def _database() -> Engine:
    """The configured database, migrated; exit 2 with one line when it cannot be reached."""
    from sqlalchemy.exc import OperationalError

    from controlplane.db import make_engine, upgrade
    from controlplane.settings import get_settings

    url = get_settings().effective_database_url
    try:
        upgrade(url)
    except OperationalError as e:
        typer.echo(f"cannot reach the database the selection is stored in: {str(e.orig or e).splitlines()[0]}",
                   err=True)
        raise typer.Exit(2) from None
    return make_engine(url)


def _store(engine: Engine, rows: list[Row], device_class: str) -> None:
    """Write the selection, and say so when no fleet class has its name (the planner would not use it)."""
    from sqlmodel import Session, select

    from controlplane import kernel_selections
    from controlplane.calibration import known_classes
    from controlplane.models import DeviceClass

    with Session(engine) as session:
        kernel_selections.save(session, rows)
        if session.exec(select(DeviceClass.id).where(DeviceClass.name == device_class)).first() is None:
            typer.echo(f"note: no device class is named {device_class!r}, so the planner uses none of these "
                       f"speedups; known classes: {known_classes(session)}", err=True)
    engine.dispose()


@kernels_app.command("verify")
def verify_cmd(op: OpOption = None, folder: FolderOption = None, quick: QuickOption = False,
               out: OutOption = None, device_class: ClassOption = "cpu", device: DeviceOption = "auto") -> None:
    """Verify every candidate of every op; print accepted, rejected (with the failing case) or kept
    as fallback (verified but not faster: the reference stays), and record the selection."""
    from rich.table import Table

    from controlplane.cli import _console
    from kernels.registry import per_bucket

    checked, rows, path = _run(op, folder, quick, out, device_class, device)
    selected = per_bucket(rows)
    table = Table("op", "candidate", "verdict", "why")
    for k in checked:
        c, f = k.candidate, k.verdict.failure
        won = [f"{r.dtype} {'x'.join(map(str, r.shape))} {r.speedup:.2f}x" for r in selected if r.chosen == c.name]
        if not k.ok:
            why = k.side_effect or f"{f.check} at shape {f.shape}, {f.dtype}, seed {f.seed}" + (
                f", max error {f.max_error:.3g}" if f.max_error == f.max_error else "") + (
                f" ({f.detail})" if f.detail else "")
            table.add_row(c.op, c.name, "[red]rejected[/red]", why)
        elif won:
            table.add_row(c.op, c.name, "[green]accepted, selected[/green]", "; ".join(won))
        else:
            table.add_row(c.op, c.name, "accepted, kept as fallback", "not clearly faster than the reference")
    console = _console()
    console.print(table)
    console.print(f"selection written to {path} and the kernel_selection table")


@kernels_app.command("bench")
def bench_cmd(op: OpOption = None, folder: FolderOption = None, quick: QuickOption = False,
              out: OutOption = None, device_class: ClassOption = "cpu", device: DeviceOption = "auto") -> None:
    """Per op and shape: reference time, best verified candidate time and speedup; stores the selection."""
    from rich.table import Table

    from controlplane.cli import _console

    _, rows, path = _run(op, folder, quick, out, device_class, device)
    table = Table("op", "dtype", "shape", "reference µs", "best verified", "µs", "speedup", "spread", "selected")
    for r in rows:
        table.add_row(r.op, r.dtype, "x".join(map(str, r.shape)), f"{r.reference_s * 1e6:.1f}",
                      r.best_verified or "-", f"{r.best_verified_s * 1e6:.1f}" if r.best_verified else "-",
                      f"{r.reference_s / r.best_verified_s:.2f}x" if r.best_verified else "-", f"{r.spread:.1%}",
                      r.chosen)
    console = _console()
    console.print(table)
    console.print(f"selection written to {path} and the kernel_selection table")
