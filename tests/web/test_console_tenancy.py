"""Every console page, signed in as one tenant, shows not one byte of the other tenant: no name, no
id in a link or a form, no number only it could have produced. And every page is behind sign-in."""

import pytest
from fastapi.testclient import TestClient

from tests.web.conftest import sign_in

# What only globex's rows produce, and what only acme's do (ids are added per test).
GLOBEX = ("globex", "research-agent", "qwen", "globex-research", "31 rps", "$12.00", "$20.80", "1700", "1,700")
ACME = ("acme", "support-bot", "llama", "embedding:bge", "acme-slow", "12 rps", "$8.40", "$8.80", "2,500", "2500")


def pages(own_workload: int) -> list[str]:
    return [
        "/ui", "/ui?range=6h", "/ui?range=7d", "/ui/data/overview", "/ui/data/overview?range=24h",
        "/ui/proposals", "/ui/placements", "/ui/placements?a=1&b=3", "/ui/placements?a=3&b=1",
        "/ui/workloads", f"/ui/workloads/{own_workload}", "/ui/fleet", "/ui/policies",
        "/ui/chargeback", "/ui/chargeback?share_idle=weighted", "/ui/chargeback?share_idle=even&range=7d",
        "/ui/chargeback/export?format=csv&share_idle=weighted", "/ui/chargeback/export?format=focus&share_idle=even",
    ]


@pytest.mark.parametrize("viewer", ["acme", "globex"])
def test_a_tenant_sees_nothing_of_the_other_tenant_on_any_page(console_app, seeded, viewer):
    if viewer == "acme":
        token, own, others = seeded.acme_token, seeded.bot_id, GLOBEX
        other_ids = (f"/ui/workloads/{seeded.research_id}", f"workload:{seeded.research_id}", f"tenant:{seeded.globex_id}")
    else:
        token, own, others = seeded.globex_token, seeded.research_id, ACME
        other_ids = (f"/ui/workloads/{seeded.bot_id}", f"workload:{seeded.bot_id}", f"tenant:{seeded.acme_id}")
    with TestClient(console_app) as browser:
        sign_in(browser, token)
        for path in pages(own):
            response = browser.get(path)
            assert response.status_code == 200, (path, response.text[:300])
            for leak in others + other_ids:
                assert leak not in response.text, (path, leak)
        for other in other_ids[:1]:
            assert browser.get(other).status_code == 404


def test_the_fleet_wide_view_does_show_both_tenants(client, seeded):
    """The check above can fail: the same pages, fleet-wide, name both tenants."""
    browser = sign_in(client, seeded.admin_token)
    seen = "".join(browser.get(path).text for path in pages(seeded.bot_id))
    for word in ("globex", "research-agent", "qwen", "acme", "support-bot", "llama", "$20.80", "31 rps", "12 rps"):
        assert word in seen, word


@pytest.mark.parametrize("path", pages(1) + ["/ui/workloads/1", "/ui/policies/new", "/ui/policies/1/edit"])
def test_every_page_sends_a_stranger_to_sign_in(client, seeded, path):
    response = client.get(path, follow_redirects=False)
    if path.startswith("/ui/data/"):
        assert response.status_code == 401 and response.headers["content-type"] == "application/problem+json"
    else:
        assert response.status_code == 303 and response.headers["location"] == "/ui/login"


def test_every_form_post_needs_sign_in_and_its_csrf_token(client, seeded):
    client.get("/ui/login")  # a CSRF cookie, but no session
    csrf = client.cookies["hp_csrf"]
    for path in ("/ui/proposals/3/approve", "/ui/proposals/3/reject", "/ui/policies", "/ui/policies/1",
                 "/ui/policies/1/delete"):
        assert client.post(path, data={"csrf_token": "forged"}, follow_redirects=False).status_code == 403, path
        signed_out = client.post(path, data={"csrf_token": csrf}, follow_redirects=False)
        assert signed_out.status_code == 303 and signed_out.headers["location"] == "/ui/login", path
