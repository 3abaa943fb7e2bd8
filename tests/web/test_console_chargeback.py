"""The Chargeback page: tenant → workload → fragment with the idle row, the share-idle switch, the
range, and the CSV and FOCUS downloads, all GET /costs' and GET /costs/export's figures.

Seed (tests/web/conftest.py), 24 h to 12:30: acme llama h100 $0.40 + $0.20 + $5.00, bge l4 $0.10;
globex qwen h100 $0.20; idle h100 $0.40, l4 $0.05. Weighted (12:00 bucket): h100 idle by h100 cost,
acme 0.60 : globex 0.20 -> $0.30 : $0.10; l4 idle all to bge -> acme $6.05, globex $0.30."""

import csv
import io

import pytest

from tests.web.conftest import sign_in


def body(page: str) -> str:
    return page.split('id="chargeback-body"')[1].split("</tbody>")[0]


def test_tenants_and_the_idle_row(client, seeded):
    page = sign_in(client, seeded.admin_token).get("/ui/chargeback").text
    rows = body(page)
    assert f'tenant={seeded.acme_id}">acme</a>' in rows and f'tenant={seeded.globex_id}">globex</a>' in rows
    assert "idle capacity" in rows and "$0.45" in rows  # idle apart: $0.40 + $0.05
    assert "$5.70" in rows and "$0.20" in rows
    assert '<span class="value" id="total">$6.35</span>' in page


def test_drill_down_to_workloads_and_fragments(client, seeded):
    browser = sign_in(client, seeded.admin_token)
    tenant = browser.get(f"/ui/chargeback?tenant={seeded.acme_id}").text
    assert f"workload={seeded.bot_id}" in body(tenant) and "support-bot" in body(tenant) and "idle capacity" not in body(tenant)
    assert "qwen" not in tenant and "research-agent" not in tenant
    workload = browser.get(f"/ui/chargeback?tenant={seeded.acme_id}&workload={seeded.bot_id}").text
    rows = body(workload)
    assert "llm:llama-70b" in rows and "$5.60" in rows and "embedding:bge" in rows and "$0.10" in rows
    assert 'id="crumbs"' in workload and ">acme</a>" in workload and "support-bot" in workload


def test_the_share_idle_switch(client, seeded):
    browser = sign_in(client, seeded.admin_token)
    weighted = browser.get("/ui/chargeback?share_idle=weighted").text
    rows = body(weighted)
    assert "idle capacity" not in rows and "$6.05" in rows and "$0.30" in rows
    assert '<span class="value" id="total">$6.35</span>' in weighted  # idle moved, not lost
    even = body(browser.get("/ui/chargeback?share_idle=even").text)  # $0.225 each of the $0.45
    assert "$5.92" in even or "$5.93" in even


def test_a_tenant_sees_its_own_tenant_only(client, seeded):
    browser = sign_in(client, seeded.acme_token)
    page = browser.get("/ui/chargeback").text
    assert "acme" in body(page) and "globex" not in page and "idle capacity" not in page
    assert "$5.70" in page
    foreign = browser.get(f"/ui/chargeback?tenant={seeded.globex_id}&workload={seeded.research_id}").text
    assert "Nothing metered" in foreign and "qwen" not in foreign and "research" not in foreign


@pytest.mark.parametrize(("token", "share", "total"), [("admin", "none", 6.35), ("admin", "weighted", 6.35),
                                                      ("acme", "none", 5.70), ("acme", "weighted", 6.05)])
def test_downloads_sum_to_the_page(client, seeded, token, share, total):
    browser = sign_in(client, seeded.admin_token if token == "admin" else seeded.acme_token)
    for fmt, column in (("csv", "cost_usd"), ("focus", "BilledCost")):
        response = browser.get(f"/ui/chargeback/export?format={fmt}&share_idle={share}")
        assert response.status_code == 200 and response.headers["content-type"].startswith("text/csv")
        assert response.headers["content-disposition"].startswith('attachment; filename="heteroplane-')
        rows = list(csv.DictReader(io.StringIO(response.text)))
        assert sum(float(r[column]) for r in rows) == pytest.approx(total)
        if token == "acme":
            assert "globex" not in response.text and "qwen" not in response.text


@pytest.mark.parametrize("query", ["range=1y", "share_idle=all", "tenant=0", "workload=99999999999"])
def test_bad_parameters_are_named(client, seeded, query):
    response = sign_in(client, seeded.admin_token).get(f"/ui/chargeback?{query}")
    assert response.status_code == 422 and query.split("=")[0].replace("range", "range") in response.text


def test_downloads_need_sign_in(client, seeded):
    response = client.get("/ui/chargeback/export?format=focus", follow_redirects=False)
    assert response.status_code == 303 and response.headers["location"] == "/ui/login"
