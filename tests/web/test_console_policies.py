"""The Policies page: the list as each user may see it, and create / edit / delete for fleet operators,
validated by the API's own input models, with errors shown beside their fields."""

from fastapi.testclient import TestClient
from sqlmodel import Session, select

from controlplane.models import AuditEvent, MigrationPolicy
from tests.web.conftest import csrf_in, sign_in

FORM = {
    "name": "night-moves", "scope": "fleet", "min_improvement_pct": "12.5", "cooldown_s": "120",
    "max_moves_per_cycle": "4", "proposal_ttl_s": "", "supersede_cost_pct": "", "supersede_demand_pct": "",
    "demand_margin_pct": "", "enabled": "on", "approval_required": "on",
    "maintenance_windows": "Sat 02:00-04:00 UTC\r\ndaily 03:00-04:00\r\n",
}


def policy(engine, name: str) -> MigrationPolicy | None:
    with Session(engine) as session:
        return session.exec(select(MigrationPolicy).where(MigrationPolicy.name == name)).first()


def test_the_list_shows_each_policy_with_its_scope_and_edit_controls(client, seeded):
    page = sign_in(client, seeded.operator_token).get("/ui/policies").text
    assert "fleet-careful</td><td>whole fleet" in page
    assert "acme-slow</td><td>tenant acme" in page and "17.5%" in page
    assert "globex-research</td><td>workload globex/research-agent" in page and "Sat 02:00-04:00 UTC" in page
    assert 'href="/ui/policies/new"' in page and "/ui/policies/1/edit" in page and "/ui/policies/1/delete" in page


def test_a_tenant_sees_fleet_and_own_policies_read_only(client, console_app, seeded):
    page = sign_in(client, seeded.acme_token).get("/ui/policies").text
    assert "fleet-careful" in page and "acme-slow" in page and "globex" not in page
    assert "/edit" not in page and "/delete" not in page and "/ui/policies/new" not in page
    assert client.get("/ui/policies/new").status_code == 403
    with TestClient(console_app) as operator:  # the API lets a tenant operator edit its own; the console does not
        sign_in(operator, seeded.acme_operator_token)
        csrf = csrf_in(operator.get("/ui/policies").text)
        refused = operator.post("/ui/policies", data=FORM | {"csrf_token": csrf, "scope": f"tenant:{seeded.acme_id}"})
        assert refused.status_code == 403 and "fleet-wide operators" in refused.text
        assert operator.post("/ui/policies/2/delete", data={"csrf_token": csrf}).status_code == 403


def test_creating_a_policy_saves_what_the_form_says_and_audits_it(client, seeded, engine):
    browser = sign_in(client, seeded.admin_token)
    csrf = csrf_in(browser.get("/ui/policies/new").text)
    response = browser.post("/ui/policies", data=FORM | {"csrf_token": csrf}, follow_redirects=False)
    assert response.status_code == 303 and response.headers["location"] == "/ui/policies?saved=night-moves"
    row = policy(engine, "night-moves")
    assert (row.tenant_id, row.workload_id, row.min_improvement_pct, row.cooldown_s, row.max_moves_per_cycle) == (
        None, None, 12.5, 120, 4)
    assert row.approval_required and row.enabled and not row.dry_run
    assert row.maintenance_windows == ["Sat 02:00-04:00 UTC", "daily 03:00-04:00"]
    assert row.proposal_ttl_s == 3600  # left empty: the model's default
    with Session(engine) as session:
        assert session.exec(select(AuditEvent).where(AuditEvent.action == "migration_policy.create")).one()
    assert "Policy night-moves saved" in browser.get(response.headers["location"]).text

    scoped = FORM | {"csrf_token": csrf, "name": "bot-only", "scope": f"workload:{seeded.bot_id}", "approval_required": ""}
    assert browser.post("/ui/policies", data=scoped, follow_redirects=False).status_code == 303
    row = policy(engine, "bot-only")
    assert (row.workload_id, row.tenant_id, row.approval_required) == (seeded.bot_id, seeded.acme_id, False)


def test_invalid_input_is_shown_beside_its_field_and_nothing_is_saved(client, seeded, engine):
    browser = sign_in(client, seeded.operator_token)
    csrf = csrf_in(browser.get("/ui/policies/new").text)
    bad = FORM | {"csrf_token": csrf, "name": "Bad Name", "min_improvement_pct": "150", "cooldown_s": "soon",
                  "maintenance_windows": "Sat 02:00-04:00\nSomeday 25:00-26:00"}
    response = browser.post("/ui/policies", data=bad)
    assert response.status_code == 422
    page = response.text
    assert 'id="error-name"' in page and "should match pattern" in page
    assert 'id="error-min_improvement_pct">Input should be less than or equal to 100' in page
    assert 'id="error-cooldown_s">Input should be a valid integer' in page
    assert "id=\"error-maintenance_windows\">maintenance window &#39;Someday 25:00-26:00&#39;: &#39;someday&#39; is not a day" in page
    assert 'value="150"' in page and 'value="Bad Name"' in page  # what was typed stays in the form
    assert policy(engine, "Bad Name") is None

    taken = browser.post("/ui/policies", data=FORM | {"csrf_token": csrf, "name": "fleet-careful"})
    assert taken.status_code == 409
    assert 'id="error-name"' in taken.text and "already exists fleet-wide" in taken.text

    unknown = browser.post("/ui/policies", data=FORM | {"csrf_token": csrf, "scope": "workload:notanid"})
    assert unknown.status_code == 422 and 'id="error-scope"' in unknown.text


def test_the_console_and_the_api_refuse_the_same_input_in_the_same_words(full_client, seeded):
    api = full_client.post("/api/v1/migration-policies", json={"name": "x", "min_improvement_pct": 150},
                           headers={"Authorization": f"Bearer {seeded.admin_token}"})
    assert api.status_code == 422
    words = api.json()["errors"][0]["message"]
    browser = sign_in(full_client, seeded.admin_token)
    page = browser.post("/ui/policies", data=FORM | {"csrf_token": csrf_in(browser.get("/ui/policies/new").text),
                                                     "min_improvement_pct": "150"})
    assert page.status_code == 422 and f'id="error-min_improvement_pct">{words}<' in page.text


def test_editing_and_deleting_a_policy(client, seeded, engine):
    browser = sign_in(client, seeded.operator_token)
    acme_slow = policy(engine, "acme-slow")
    form = browser.get(f"/ui/policies/{acme_slow.id}/edit").text
    assert 'value="17.5"' in form and 'name="name"' not in form  # name and scope are set at creation
    csrf = csrf_in(form)
    edit = {k: v for k, v in FORM.items() if k not in ("name", "scope")} | {"csrf_token": csrf, "cooldown_s": "900"}
    assert browser.post(f"/ui/policies/{acme_slow.id}", data=edit, follow_redirects=False).status_code == 303
    row = policy(engine, "acme-slow")
    assert (row.cooldown_s, row.min_improvement_pct, row.tenant_id) == (900, 12.5, seeded.acme_id)

    invalid = browser.post(f"/ui/policies/{acme_slow.id}", data=edit | {"proposal_ttl_s": "5"})
    assert invalid.status_code == 422 and 'id="error-proposal_ttl_s">Input should be greater than or equal to 60' in invalid.text
    assert policy(engine, "acme-slow").proposal_ttl_s == 3600

    assert browser.post(f"/ui/policies/{acme_slow.id}/delete", data={"csrf_token": "forged"}).status_code == 403
    assert policy(engine, "acme-slow") is not None
    assert browser.post(f"/ui/policies/{acme_slow.id}/delete", data={"csrf_token": csrf},
                        follow_redirects=False).status_code == 303
    assert policy(engine, "acme-slow") is None
    assert browser.get(f"/ui/policies/{acme_slow.id}/edit").status_code == 404
