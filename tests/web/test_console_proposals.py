"""The Proposals page: the open proposal against the placement in force, its cost change and reasons,
and Approve / Reject, which run the REST API's own routes. Seed: tests/web/conftest.py (v3 proposed,
v2 in force)."""

from sqlmodel import Session, select

from controlplane.api.placements import TENANT_REASON
from controlplane.models import AuditEvent, Migration, MigrationState, Placement, PlacementState
from tests.web.conftest import csrf_in, sign_in


def state_of(engine, version: int) -> tuple[str, str | None, list[str]]:
    with Session(engine) as session:
        placement = session.exec(select(Placement).where(Placement.version == version)).one()
        moves = session.exec(select(Migration.state).where(Migration.placement_id == placement.id)).all()
        return placement.state, placement.decided_by, sorted(moves)


def test_a_fleet_operator_sees_the_whole_proposal_with_its_buttons(client, seeded):
    page = sign_in(client, seeded.operator_token).get("/ui/proposals").text
    assert "Placement v3" in page and "(v2)" in page
    # v2 $12.40 → v3 $20.80 (llama 2 × $4 + bge 2 × 2/4 × $0.80 + qwen 3 × $4): +$8.40
    assert "$12.40 → $20.80 per hour" in page and "+$8.40" in page
    assert "demand grew: support-bot and research-agent" in page  # the placement's reason
    assert "+1 replica on l4 — support-bot: demand 12 rps exceeds 9 rps served" in page
    assert "+2 replicas on h100 — research-agent: demand 31 rps" in page
    assert "<td>research-agent</td><td>llm:qwen-32b</td><td>whole</td><td>h100</td>" in page
    assert "1 → 3" in page and "$4.00 → $12.00" in page  # qwen
    assert "1 → 2" in page and "$0.40 → $0.80" in page  # bge
    assert "1 other line unchanged" in page  # llama stays at 2 on h100
    assert 'action="/ui/proposals/3/approve"' in page and 'action="/ui/proposals/3/reject"' in page


def test_a_tenant_viewer_sees_its_own_lines_and_no_buttons(client, seeded):
    page = sign_in(client, seeded.acme_token).get("/ui/proposals").text
    # acme's items only: v2 llama $8.00 + bge $0.40 → v3 llama $8.00 + bge $0.80
    assert "$8.40 → $8.80 per hour" in page and "+$0.40" in page
    assert TENANT_REASON in page
    assert "support-bot: demand 12 rps" in page
    for other in ("research-agent", "qwen", "globex", "31 rps", "$12.00", "$20.80"):
        assert other not in page, other
    assert "/approve" not in page and "/reject" not in page


def test_approve_runs_the_api_route_and_the_reconciler_applies_it_next(client, seeded, engine):
    browser = sign_in(client, seeded.operator_token)
    csrf = csrf_in(browser.get("/ui/proposals").text)
    response = browser.post("/ui/proposals/3/approve", data={"csrf_token": csrf}, follow_redirects=False)
    assert response.status_code == 303 and response.headers["location"] == "/ui/proposals?decided=3"
    state, by, moves = state_of(engine, 3)
    assert state == PlacementState.applying and by.endswith(":ops-operator")
    assert moves == [MigrationState.pending, MigrationState.pending]
    with Session(engine) as session:
        assert session.exec(select(AuditEvent.action).where(AuditEvent.action == "placement.approve")).all() == [
            "placement.approve"]
    page = browser.get(response.headers["location"]).text
    assert "Placement v3 is now" in page and "applying" in page and "next cycle" in page
    assert 'id="no-proposals"' in page
    # Deciding twice is the API's 409, in its words.
    again = browser.post("/ui/proposals/3/approve", data={"csrf_token": csrf})
    assert again.status_code == 409 and "only a proposed placement can be approved or rejected" in again.text


def test_reject_closes_the_proposal_and_its_migrations(client, seeded, engine):
    browser = sign_in(client, seeded.admin_token)
    csrf = csrf_in(browser.get("/ui/proposals").text)
    assert browser.post("/ui/proposals/3/reject", data={"csrf_token": csrf}, follow_redirects=False).status_code == 303
    assert state_of(engine, 3)[0] == PlacementState.rejected
    assert state_of(engine, 3)[2] == [MigrationState.rejected, MigrationState.rejected]
    assert "rejected" in browser.get("/ui/proposals").text


def test_deciding_needs_the_csrf_token_a_fleet_operator_and_the_newest_proposal(client, console_app, seeded, engine):
    from fastapi.testclient import TestClient

    browser = sign_in(client, seeded.operator_token)
    csrf = csrf_in(browser.get("/ui/proposals").text)
    for data in ({}, {"csrf_token": "forged"}):
        assert browser.post("/ui/proposals/3/approve", data=data).status_code == 403
    for token, why in ((seeded.acme_token, "needs the operator role"),
                       (seeded.acme_operator_token, "tenant-scoped token cannot change fleet-wide objects")):
        with TestClient(console_app) as other:
            sign_in(other, token)
            refused = other.post("/ui/proposals/3/approve", data={"csrf_token": csrf_in(other.get("/ui/proposals").text)})
            assert refused.status_code == 403 and why in refused.text
    assert state_of(engine, 3)[0] == PlacementState.proposed

    with Session(engine) as session:  # a newer plan recorded since: v3 can no longer be decided
        session.add(Placement(version=4, state=PlacementState.recorded))
        session.commit()
    page = browser.get("/ui/proposals").text
    assert "can no longer be decided" in page and "/ui/proposals/3/approve" not in page
    stale = browser.post("/ui/proposals/3/approve", data={"csrf_token": csrf})
    assert stale.status_code == 409 and "superseded by v4" in stale.text
    assert state_of(engine, 3)[0] == PlacementState.proposed
