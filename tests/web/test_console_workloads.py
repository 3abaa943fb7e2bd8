"""The Workloads pages: the list, and one workload's call graph and latencies against its SLA."""

from sqlmodel import Session, select

import web.pages.workloads
from controlplane.models import Fragment, FragmentProfile
from tests.web.conftest import _minute, sign_in
from tests.web.test_console_placements import figure_of


def test_the_list_shows_attainment_against_target_and_cost(client, seeded):
    page = sign_in(client, seeded.admin_token).get("/ui/workloads").text
    bot = page.split(f'href="/ui/workloads/{seeded.bot_id}"')[1].split("</tr>")[0]
    # 12:00 … 12:29: (95 + 50) / (100 + 50) = 96.7%, below its 99% target; v2 costs it $8.00 + $0.40
    assert "acme" in bot and "96.7%" in bot and "health-bad" in bot and "99.0%" in bot and "$8.40" in bot
    research = page.split(f'href="/ui/workloads/{seeded.research_id}"')[1].split("</tr>")[0]
    assert "globex" in research and "75.0%" in research and "$4.00" in research


def test_a_workload_shows_its_graph_and_latency_against_its_sla(client, seeded):
    page = sign_in(client, seeded.admin_token).get(f"/ui/workloads/{seeded.bot_id}").text
    graph = figure_of(page, "chart-graph")
    nodes = {t["name"]: t["text"] for t in graph["data"] if t.get("mode") == "markers+text"}
    assert nodes == {"h100": ["llm:llama-70b"], "l4": ["embedding:bge"]}  # coloured by the class each runs on
    assert [a["text"] for a in graph["layout"]["annotations"]] == ["4.1 KB/call"]  # 409,600 bytes / 100 calls
    # llama at 12:29: 100 visits at 900 ms and 5 at 2,500 ms: p99 is 2,500 ms (within the sketch's 1%), over 2,000
    row = page.split('id="profiles-body"')[1].split("</tr>")[0]
    p99 = row.split('<span class="health-bad">')[1].split(" ms")[0]
    assert 2475 <= float(p99.replace(",", "")) <= 2525
    assert "149." in row or "150." in row or "151." in row  # TTFT p99 150 ms, within the 200 ms bound
    latency = figure_of(page, "chart-latency")
    assert {t["name"] for t in latency["data"]} == {"p99 latency", "TTFT p99"}
    assert {s["y0"] for s in latency["layout"]["shapes"]} == {2000, 200}  # the SLA's p99 and TTFT bounds
    assert "96.7%" in page and "target 99.0%" in page


def test_another_tenants_workload_is_not_found(client, seeded):
    browser = sign_in(client, seeded.acme_token)
    assert browser.get(f"/ui/workloads/{seeded.research_id}").status_code == 404
    listing = browser.get("/ui/workloads").text
    assert "research-agent" not in listing and "Tenant" not in listing


def test_a_workload_too_big_to_draw_shows_its_busiest_and_says_so(engine, client, seeded, monkeypatch):
    with Session(engine) as session:
        bge = session.exec(select(Fragment).where(Fragment.key == "embedding:bge")).one()
        session.add(FragmentProfile(fragment_id=bge.id, device_class="l4", minute=_minute(12, 29),
                                    visits=3, latency_ms_sum=30.0))
        session.commit()
    monkeypatch.setattr(web.pages.workloads, "GRAPH_FRAGMENTS", 1)
    monkeypatch.setattr(web.pages.workloads, "PROFILE_ROWS", 1)
    page = sign_in(client, seeded.admin_token).get(f"/ui/workloads/{seeded.bot_id}").text

    graph = figure_of(page, "chart-graph")
    nodes = [name for t in graph["data"] if t.get("mode") == "markers+text" for name in t["text"]]
    assert nodes == ["llm:llama-70b"]  # the busier of the two
    assert "the busiest 1 of 2 fragments" in page
    rows = page.split('id="profiles-body"')[1].split("</tbody>")[0]
    assert rows.count("<tr>") == 1 and "llm:llama-70b" in rows  # 105 visits over bge's 3
    assert 'id="profiles-shown"' in page and "The busiest 1 of 2 (fragment, class) rows" in page
