"""The Placements page: the history as a timeline and the changes between two chosen versions."""

import html
import json
import re

from controlplane.api.placements import TENANT_REASON
from tests.web.conftest import sign_in


def figure_of(page: str, chart: str) -> dict:
    match = re.search(rf'id="{chart}" data-figure="([^"]*)"', page)
    assert match, f"no figure {chart}"
    return json.loads(html.unescape(match.group(1)))


def test_history_and_timeline_show_every_version_with_its_state(client, seeded):
    page = sign_in(client, seeded.admin_token).get("/ui/placements").text
    rows = re.findall(r'<td class="num">v(\d+)</td><td><span class="state state-(\w+)">', page)
    assert rows == [("3", "proposed"), ("2", "applied"), ("1", "applied")]
    traces = {t["name"]: t for t in figure_of(page, "chart-timeline")["data"]}
    assert set(traces) == {"applied", "proposed"}
    assert traces["applied"]["text"] == ["v1", "v2"] and traces["applied"]["y"] == [8.0, 12.4]
    assert traces["proposed"]["x"] == ["2026-05-01 12:25:20"]
    assert 'href="/ui/placements?a=1&amp;b=2#compare"' in page  # compare any version with the one in force


def test_the_changes_between_two_versions(client, seeded):
    page = sign_in(client, seeded.admin_token).get("/ui/placements?a=1").text  # b: the one in force, v2
    body = page.split('id="diff-body"')[1].split("</tbody>")[0]
    assert "<td>support-bot</td><td>embedding:bge</td><td>whole</td><td>l4</td>" in body and "0 → 1" in body
    assert "<td>support-bot</td><td>llm:llama-70b</td>" in body and "1 → 2" in body
    assert "qwen" not in body and "1 other line unchanged" in page  # qwen: 1 h100 in both
    # v1 $8.00 (llama + qwen) → v2 $12.40: +$4.40
    assert "$8.00 → $12.40 per hour (+$4.40)" in page
    backwards = client.get("/ui/placements?a=3&b=1").text
    assert "$20.80 → $8.00 per hour (−$12.80)" in backwards


def test_a_tenant_sees_its_own_lines_costs_and_a_fixed_reason(client, seeded):
    page = sign_in(client, seeded.acme_token).get("/ui/placements?a=1&b=3").text
    assert TENANT_REASON in page and "demand grew" not in page
    assert "qwen" not in page and "research-agent" not in page
    # acme alone: v1 llama $4.00 → v3 llama $8.00 + bge $0.80
    assert "$4.00 → $8.80 per hour (+$4.80)" in page
    assert {t["name"]: t["y"] for t in figure_of(page, "chart-timeline")["data"]} == {"applied": [4.0, 8.4], "proposed": [8.8]}


def test_unknown_and_malformed_versions(client, seeded):
    browser = sign_in(client, seeded.admin_token)
    missing = browser.get("/ui/placements?a=9&b=1")
    assert missing.status_code == 404 and "placement version 9 not found" in missing.text
    malformed = browser.get("/ui/placements?a=0")
    assert malformed.status_code == 422 and "a: Input should be greater than or equal to 1" in malformed.text
    assert browser.get("/ui/placements?offset=-1").status_code == 422


def test_why_each_fragment_is_where_it_is(client, seeded):
    """The optimizer's explanation kept with the version (PlacementChoice): to an operator every
    fragment's, to a tenant its own fragments' only."""
    page = sign_in(client, seeded.admin_token).get("/ui/placements").text  # v2, the one in force
    body = page.split('id="why-body"')[1].split("</tbody>")[0]
    assert "<td>llm:llama-70b</td><td>latency bound of workload support-bot</td><td>l4</td>" in body
    assert "−$1.60" in body and "+$2.25" in body and "llm:qwen-32b" in body
    none_kept = client.get("/ui/placements?a=1&b=3").text.split('id="why-body"')[1].split("</tbody>")[0]
    assert "No explanation kept for v3" in none_kept
    tenant = sign_in(client, seeded.acme_token).get("/ui/placements").text.split('id="why-body"')[1]
    assert "llama-70b" in tenant and "qwen" not in tenant and "2.25" not in tenant.split("</tbody>")[0]
