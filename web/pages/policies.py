"""Migration policies: the list every user may read, and create, edit and delete for fleet operators.

Reads and writes run the REST API's own routes (controlplane.api.policies) and validate with its
input models (MigrationPolicyCreate, MigrationPolicyUpdate), so the rules (bounds, window syntax,
names unique in a scope, who sees which policy) are defined once; a rule broken shows next to its
field. A form posts strings: empty numbers are left out (the model's default, or the value kept),
checkboxes are true when sent, and maintenance windows are one per line."""

from collections.abc import Mapping
from typing import Any

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import RedirectResponse, Response
from pydantic import ValidationError
from sqlmodel import Session, select

from controlplane.api.common import Id, Window
from controlplane.api.policies import create_policy, delete_policy, list_policies, update_policy, writable_policy
from controlplane.errors import ApiError, Forbidden
from controlplane.models import MigrationPolicy, Tenant, Workload
from controlplane.models.workloads import MigrationPolicyCreate, MigrationPolicyUpdate
from web.deps import Console, CsrfChecked, SignedIn, User, render

NUMBERS = ("min_improvement_pct", "cooldown_s", "max_moves_per_cycle", "proposal_ttl_s", "supersede_cost_pct",
           "supersede_demand_pct", "demand_margin_pct")
SWITCHES = ("approval_required", "dry_run", "enabled")
# Fields the page shows, in order, with their labels; the scope and name are set once, at creation.
LABELS = {
    "min_improvement_pct": "Min improvement %", "cooldown_s": "Cooldown (s)", "max_moves_per_cycle": "Max moves per cycle",
    "proposal_ttl_s": "Proposal TTL (s)", "supersede_cost_pct": "Supersede on cost %",
    "supersede_demand_pct": "Supersede on demand %", "demand_margin_pct": "Demand margin %",
}
MAX_POLICIES = 500  # the API's largest page


def fields_of(form: Mapping[str, str], creating: bool) -> dict[str, Any]:
    """The JSON body the form stands for."""
    body: dict[str, Any] = {}
    if creating:
        body["name"] = form.get("name", "").strip()
        kind, _, ident = form.get("scope", "fleet").partition(":")
        if kind in ("tenant", "workload"):
            body[f"{kind}_id"] = ident
    for name in NUMBERS:
        if (value := form.get(name, "").strip()) != "":
            body[name] = value
    for name in SWITCHES:
        body[name] = form.get(name) == "on"
    body["maintenance_windows"] = [line.strip() for line in form.get("maintenance_windows", "").splitlines() if line.strip()]
    return body


def errors_of(exc: ValidationError) -> dict[str, str]:
    """Each field's first message, by field name (the scope's ids are the scope's)."""
    out: dict[str, str] = {}
    for error in exc.errors():
        loc = [str(p) for p in error.get("loc", ())]
        field = loc[0] if loc else "form"
        field = "scope" if field in ("tenant_id", "workload_id") else field
        out.setdefault(field, error.get("msg", "invalid").removeprefix("Value error, "))
    return out


def _fleet_operator(user: User) -> None:
    if not user.fleet_operator:
        raise Forbidden("policies are edited by fleet-wide operators and admins; this token may only read them")


def routes(console: Console) -> APIRouter:
    router = console.router()

    def scopes(session: Session, user: User) -> tuple[dict[int, str], dict[int, str]]:
        """Names of the tenants and workloads `user` may see, for scope columns and choices."""
        tenants = select(Tenant.id, Tenant.name).order_by(Tenant.name)
        workloads = select(Workload.id, Workload.name, Tenant.name).join(Tenant, Tenant.id == Workload.tenant_id)
        if (tenant_id := user.principal.tenant_id) is not None:
            tenants, workloads = tenants.where(Tenant.id == tenant_id), workloads.where(Workload.tenant_id == tenant_id)
        return (dict(session.exec(tenants).all()),
                {wid: f"{tenant}/{name}" for wid, name, tenant in session.exec(workloads.order_by(Tenant.name, Workload.name)).all()})

    def form_page(request: Request, user: User, policy: MigrationPolicy | None, values: dict[str, Any],
                  errors: dict[str, str], status: int = 200) -> Response:
        with console.session() as session:
            tenants, workloads = scopes(session, user)
        return render(request, "policy_form.html", {
            "user": user, "active": "Policies", "policy": policy, "values": values, "errors": errors,
            "tenants": tenants, "workloads": workloads, "labels": LABELS,
        }, status=status)

    @router.get("/policies")
    def policies_page(request: Request, user: SignedIn, saved: str = "") -> Response:
        with console.session() as session:
            page = list_policies(session, user.principal, Window(limit=MAX_POLICIES, offset=0))
            tenants, workloads = scopes(session, user)
        return render(request, "policies.html", {
            "user": user, "active": "Policies", "policies": page.items, "total": page.total,
            "tenants": tenants, "workloads": workloads, "labels": LABELS, "saved": saved[:63],
        })

    @router.get("/policies/new")
    def new_policy(request: Request, user: SignedIn) -> Response:
        _fleet_operator(user)
        return form_page(request, user, None, MigrationPolicyCreate(name="x").model_dump() | {"name": ""}, {})

    @router.get("/policies/{policy_id}/edit")
    def edit_policy(request: Request, policy_id: Id, user: SignedIn) -> Response:
        _fleet_operator(user)
        with console.session() as session:
            policy = writable_policy(session, user.principal, policy_id)
        return form_page(request, user, policy, policy.model_dump(), {})

    def write(user: User, policy_id: int | None, form: Mapping[str, str]) -> tuple[Any, dict[str, str], int]:
        """Validate and save: (the saved policy, {}, 303), or (None, the errors by field, the status)."""
        body = fields_of(form, creating=policy_id is None)
        try:
            model = MigrationPolicyCreate if policy_id is None else MigrationPolicyUpdate
            parsed = model.model_validate(body)
        except ValidationError as exc:
            return None, errors_of(exc), 422
        with console.session() as session:
            try:
                if policy_id is None:
                    return create_policy(parsed, session, user.principal), {}, 303
                return update_policy(policy_id, parsed, session, user.principal), {}, 303
            except ApiError as exc:
                if exc.status in (403, 404):
                    raise  # an error page: there is no form to show it beside
                return None, {exc.field or "form": exc.detail}, exc.status

    def submit(request: Request, user: User, policy_id: int | None, form: Mapping[str, str]) -> Response:
        _fleet_operator(user)
        saved, errors, status = write(user, policy_id, form)
        if saved is not None:
            return RedirectResponse(f"/ui/policies?saved={saved.name}", status_code=303)
        policy = None
        if policy_id is not None:
            with console.session() as session:
                policy = writable_policy(session, user.principal, policy_id)
        values = fields_of(form, creating=True) | {"scope": form.get("scope", "fleet")}
        values["maintenance_windows"] = form.get("maintenance_windows", "").splitlines()
        return form_page(request, user, policy, values, errors, status=status)

    async def form_of(request: Request) -> dict[str, str]:
        return {k: v for k, v in (await request.form()).items() if isinstance(v, str)}

    @router.post("/policies", dependencies=[CsrfChecked])
    async def create(request: Request, user: SignedIn) -> Response:
        return await run_in_threadpool(submit, request, user, None, await form_of(request))

    @router.post("/policies/{policy_id}", dependencies=[CsrfChecked])
    async def update(request: Request, policy_id: Id, user: SignedIn) -> Response:
        return await run_in_threadpool(submit, request, user, policy_id, await form_of(request))

    @router.post("/policies/{policy_id}/delete", dependencies=[CsrfChecked])
    def delete(request: Request, policy_id: Id, user: SignedIn) -> Response:
        _fleet_operator(user)
        with console.session() as session:
            delete_policy(policy_id, session, user.principal)
        return RedirectResponse("/ui/policies", status_code=303)

    return router
