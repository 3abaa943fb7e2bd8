"""The `heteroplane` command: serve, demo, plan, database and token administration."""

import json
import logging
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from controlplane.cli_calibrate import calibrate
from controlplane.cli_kernels import kernels_app
from controlplane.roles import Role

if TYPE_CHECKING:
    from datetime import datetime

    from rich.console import Console

    from controlplane.settings import Settings

# Each command imports what it needs when it runs: `heteroplane plan` should cost the solver's
# import and its solve, not SQLModel's and the settings' as well (tests/test_cli_plan.py).
app = typer.Typer(help="heteroplane: cost-optimal placement of agent workloads on heterogeneous fleets.", no_args_is_help=True)
db_app = typer.Typer(help="Database schema.", no_args_is_help=True)
token_app = typer.Typer(help="API tokens.", no_args_is_help=True)
export_app = typer.Typer(help="Placements as another system's objects.", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(token_app, name="token")
app.add_typer(export_app, name="export")
costs_app = typer.Typer(help="Chargeback from the metering ledger.", no_args_is_help=True)
app.add_typer(costs_app, name="costs")
app.add_typer(kernels_app, name="kernels")
app.command()(calibrate)


@cache
def _console() -> "Console":
    from rich.console import Console

    return Console()


_LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def _setup_logging(settings: "Settings", log_file: Path | None = None) -> None:
    """Log at `settings.log_level` to stderr or, given `log_file`, there, with only warnings and
    errors on stderr (the demo: its banner stays on screen under the reconciler's log)."""
    level = settings.log_level.upper()
    if log_file is None:
        logging.basicConfig(level=level, format=_LOG_FORMAT)
    else:
        log_file.parent.mkdir(parents=True, exist_ok=True)
        # This run's log only. The handler appends: uvicorn's logging setup closes every handler, and
        # only an appending FileHandler opens its file again.
        log_file.write_text("")
        terminal = logging.StreamHandler()
        terminal.setLevel(logging.WARNING)
        logging.basicConfig(level=level, format=_LOG_FORMAT,
                            handlers=[logging.FileHandler(log_file, encoding="utf-8"), terminal])
    logging.getLogger("alembic").setLevel(logging.WARNING)


@app.command()
def serve() -> None:
    """Run the REST API and console (api_port), the OTLP receiver (otlp_port) and, with an actuator
    (HETEROPLANE_ACTUATOR), the reconciler, until Ctrl-C or SIGTERM."""
    from controlplane.composition import build
    from controlplane.runtime import run_until_interrupted
    from controlplane.settings import get_settings

    console = _console()
    settings = get_settings()
    _setup_logging(settings)
    try:
        plane = build(settings)
        plane.start()
    except RuntimeError as exc:  # StartupError, a refused connection budget, a port in use
        console.print(f"[red]{exc}[/red]", soft_wrap=True)
        raise typer.Exit(2) from None
    processes = "this process" if settings.api_workers == 1 else f"{settings.api_workers} worker processes"
    console.print(f"API and console: http://{settings.api_host}:{settings.api_port}/ui  (OpenAPI at /docs; {processes})")
    console.print(f"OTLP/HTTP receiver: http://{settings.otlp_host}:{settings.otlp_port}/v1/traces and /v1/metrics")
    if plane.puller is not None:
        console.print(f"Pulling DCGM and vLLM metrics from {plane.puller.display_url}")
    if plane.reconciler is not None:
        console.print(f"Reconciling every {settings.reconcile_period_s:g} s through the {settings.actuator} actuator")
    run_until_interrupted([plane.stop], plane.watch)


@app.command()
def demo() -> None:
    """Run everything on the embedded default with a simulated fleet and three sample agent apps."""
    from controlplane.demo import run_demo
    from controlplane.settings import get_settings

    settings = get_settings()
    log_file = settings.data_dir.resolve() / "heteroplane-demo.log"
    _setup_logging(settings, log_file)
    raise typer.Exit(run_demo(settings, _console(), log_file))


@app.command()
def plan(
    problem_file: Annotated[Path, typer.Argument(help="A Problem as JSON (see examples/problem.json).")],
    as_json: Annotated[bool, typer.Option("--json", help="Print the plan as JSON only.")] = False,
) -> None:
    """Solve a placement problem from a file and print the plan; exit 1 if infeasible, 2 if the file is bad."""
    from optimizer.problem_io import plan_to_json, problem_from_json
    from optimizer.solver import solve

    try:
        problem = problem_from_json(json.loads(problem_file.read_text()))
        result = solve(problem)
    except (OSError, ValueError) as exc:  # unreadable, not JSON, a bad field, or the solver's cross-field checks
        _console().print(f"[red]{problem_file}: {exc}[/red]", soft_wrap=True)
        raise typer.Exit(2) from None
    if as_json:
        typer.echo(json.dumps(plan_to_json(result), indent=2))
        raise typer.Exit(0 if result.feasible else 1)
    from rich.table import Table

    console = _console()
    table = Table("fragment", "pool", "class", "replicas", "slices", "$/h", title="plan")
    for a in sorted(result.assignments, key=lambda a: (a.fragment, a.phase, a.device_class)):
        if a.replicas:
            table.add_row(a.fragment, a.phase.value or "whole", a.device_class, str(a.replicas), str(a.slices),
                          f"{a.usd_per_hour:.2f}")
    for name, usd in sorted(result.cost_breakdown.idle_by_class.items()):  # devices sold whole, partly used
        table.add_row("(idle slices)", "", name, "", "", f"{usd:.2f}")
    if result.assignments:
        console.print(table)
    console.print(f"status: {result.status.value}   total: ${result.usd_per_hour:.2f}/h   "
                  f"gap: {result.gap:.1%}   solve time: {result.solve_time_s:.3f} s")
    for line in result.diagnosis:
        console.print(f"[yellow]{line}[/yellow]", soft_wrap=True)
    raise typer.Exit(0 if result.feasible else 1)


@db_app.command("upgrade")
def db_upgrade(revision: Annotated[str, typer.Argument(help="Target revision.")] = "head") -> None:
    """Apply the schema migrations (creates the SQLite file if needed)."""
    from controlplane.db import make_engine, upgrade
    from controlplane.settings import get_settings

    settings = get_settings()
    make_engine(settings.effective_database_url).dispose()  # creates the data directory for SQLite
    upgrade(settings.effective_database_url, revision)
    _console().print(f"database at revision {revision}")


@token_app.command("create")
def token_create(
    name: Annotated[str, typer.Option(help="What the token is for, e.g. 'ci-deployer'.")],
    role: Annotated[Role, typer.Option(help="admin, operator or viewer.")] = Role.viewer,
    tenant: Annotated[str | None, typer.Option(help="Limit the token to this tenant (by name).")] = None,
) -> None:
    """Mint an API token and print it once; only its hash is stored. The token alone goes to stdout
    (`TOKEN=$(heteroplane token create ...)`); which database holds it goes to stderr."""
    from sqlmodel import Session, select

    from controlplane.auth import mint_token
    from controlplane.db import display_url, make_engine, pool_size, upgrade
    from controlplane.models import Tenant
    from controlplane.settings import get_settings

    console = _console()
    settings = get_settings()
    engine = make_engine(settings.effective_database_url, pool_size(settings.api_concurrency))
    upgrade(settings.effective_database_url)
    with Session(engine) as session:
        tenant_id = None
        if tenant is not None:
            row = session.exec(select(Tenant).where(Tenant.name == tenant)).first()
            if row is None:
                console.print(f"[red]no tenant named {tenant!r}; create it first (POST /api/v1/tenants)[/red]")
                raise typer.Exit(2)
            if role is Role.admin:
                console.print("[red]a tenant-scoped token cannot be admin; use --role operator or viewer[/red]")
                raise typer.Exit(2)
            tenant_id = row.id
        _, raw = mint_token(session, name, role, tenant_id)
        session.commit()
    engine.dispose()
    typer.echo(f"token {name!r} ({role.value}{', tenant ' + repr(tenant) if tenant else ''}) written to "
               f"{display_url(settings.effective_database_url)}", err=True)
    typer.echo(raw)


@export_app.command("k8s")
def export_k8s(
    version: Annotated[int | None, typer.Option(help="Placement version; default: the one applied last.")] = None,
    namespace: Annotated[str, typer.Option(help="Namespace of the workloads' objects.")] = "heteroplane-workloads",
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Write here instead of stdout.")] = None,
) -> None:
    """Write a placement's Kubernetes manifests as YAML (a dry run, or for GitOps): the Deployments and
    DRA claim templates the Kubernetes actuator would apply. Exit 2 when there is no such placement
    or a fragment has no runtime template."""
    import yaml
    from sqlmodel import Session, select

    from controlplane.actuators.kubernetes_manifests import ClassShape, NoContainer, manifests
    from controlplane.db import make_engine
    from controlplane.models import DeviceClass
    from controlplane.queries import placement_in_force, placement_of_version
    from controlplane.reconciler import desired_placement
    from controlplane.settings import get_settings

    console = _console()
    settings = get_settings()
    engine = make_engine(settings.effective_database_url, 2)
    with Session(engine) as session:
        placement = placement_of_version(session, version) if version is not None else placement_in_force(session)
        if placement is None:
            console.print(f"[red]no placement {'version ' + str(version) if version is not None else 'applied yet'}"
                          "[/red]")
            raise typer.Exit(2)
        desired = desired_placement(session, placement)
        shapes = {c.name: ClassShape(c.vendor, c.slices_per_device, c.cores) for c in session.exec(select(DeviceClass))}
    engine.dispose()
    try:
        objects = manifests(desired, shapes, namespace)
    except (NoContainer, KeyError) as exc:
        console.print(f"[red]placement v{desired.version}: {str(exc).strip(chr(34) + chr(39))}[/red]", soft_wrap=True)
        raise typer.Exit(2) from None
    text = yaml.safe_dump_all(objects, sort_keys=False)
    if output is None:
        typer.echo(text, nl=False)
    else:
        output.write_text(text)
        console.print(f"{len(objects)} objects of placement v{desired.version} written to {output}")


def _instant(value: str | None, name: str) -> "datetime | None":
    """An ISO 8601 instant from the command line (UTC when it names no zone), inside the window the
    API accepts; exit 2 naming the option otherwise."""
    from datetime import UTC, datetime

    from controlplane.models._common import EARLIEST, LATEST

    if value is None:
        return None
    try:
        at = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        _console().print(f"[red]--{name}: {value!r} is not an ISO 8601 date-time[/red]")
        raise typer.Exit(2) from None
    at = at if at.tzinfo else at.replace(tzinfo=UTC)
    if not EARLIEST <= at <= LATEST:
        _console().print(f"[red]--{name}: {value!r} is outside {EARLIEST:%Y-%m-%d} to {LATEST:%Y-%m-%d}[/red]")
        raise typer.Exit(2)
    return at


@costs_app.command("export")
def costs_export(
    format: Annotated[str, typer.Option("--format", help="csv, or focus (FinOps FOCUS 1.0 columns).")] = "csv",  # noqa: A002
    since: Annotated[str | None, typer.Option(help="Start (ISO 8601, UTC); default the first of the month.")] = None,
    until: Annotated[str | None, typer.Option(help="End (ISO 8601, UTC), exclusive; default now.")] = None,
    step: Annotated[str, typer.Option(help="Charge period: 1h, 1d (or 1m).")] = "1h",
    share_idle: Annotated[str, typer.Option(help="none (idle rows of their own), weighted or even.")] = "none",
    tenant: Annotated[str | None, typer.Option(help="Only this tenant's rows (by name).")] = None,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Write here instead of stdout.")] = None,
) -> None:
    """Write the ledger's charges as CSV, as GET /costs/export does (the same rows and totals), read
    straight from the database: for a bill, or a FOCUS file for a FinOps tool. Exit 2 on a bad option."""
    from datetime import UTC, datetime

    from sqlmodel import Session, select

    from controlplane.api.costs import MAX_BUCKETS, ExportFormat, Step, _buckets, charge_lines
    from controlplane.chargeback import ShareIdle
    from controlplane.db import make_engine
    from controlplane.focus import write_csv
    from controlplane.models import Tenant
    from controlplane.models._common import utcnow
    from controlplane.settings import get_settings

    console = _console()
    choices = {"format": (format, ExportFormat), "step": (step, Step), "share-idle": (share_idle, ShareIdle)}
    parsed = {}
    for option, (value, kind) in choices.items():
        try:
            parsed[option] = kind(value)
        except ValueError:
            console.print(f"[red]--{option}: {value!r} is not one of {', '.join(k.value for k in kind)}[/red]")
            raise typer.Exit(2) from None
    end = _instant(until, "until") or utcnow()
    start = _instant(since, "since") or datetime(end.year, end.month, 1, tzinfo=UTC)
    if start >= end:
        console.print("[red]--since must be before --until[/red]")
        raise typer.Exit(2)
    if _buckets(start, end, parsed["step"]) > MAX_BUCKETS:
        console.print(f"[red]--step {step}: at most {MAX_BUCKETS} periods; shorten the range or use a coarser step[/red]")
        raise typer.Exit(2)
    settings = get_settings()
    engine = make_engine(settings.effective_database_url, 2)
    with Session(engine) as session:
        tenant_id = None
        if tenant is not None:
            tenant_id = session.exec(select(Tenant.id).where(Tenant.name == tenant)).first()
            if tenant_id is None:
                console.print(f"[red]--tenant: no tenant named {tenant!r}[/red]")
                raise typer.Exit(2)
        lines = charge_lines(session, tenant_id, start, end, parsed["step"], parsed["share-idle"])
    engine.dispose()
    text = write_csv(lines, focus=parsed["format"] is ExportFormat.focus)
    if output is None:
        typer.echo(text, nl=False)
    else:
        output.write_text(text)
        total = sum(line.cost_usd for line in lines)
        console.print(f"{len(lines)} rows, ${total:,.2f}, {start:%Y-%m-%d %H:%M} to {end:%Y-%m-%d %H:%M} UTC, "
                      f"written to {output}")


if __name__ == "__main__":
    app()
