"""The overview's numbers, read back through GET /ui/data/overview and the server-rendered page.

The seeded rows and the window are described in conftest.py; the arithmetic is written next to each assertion.
"""

import re
from datetime import UTC, datetime

from pytest import approx
from sqlmodel import Session

from controlplane.models import Fragment, FragmentKind, PlacementItem


def signed_in(client, token: str):
    form = client.get("/ui/login").text
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', form).group(1)
    assert client.post("/ui/login", data={"token": token, "csrf_token": csrf}, follow_redirects=False).status_code == 303
    return client


def at(minute: str, series: list, minutes: list[str]):
    return series[minutes.index(f"2026-05-01T{minute}:00Z")]


def test_fleet_wide_overview_matches_the_seeded_rows(client, seeded):
    d = signed_in(client, seeded.admin_token).get("/ui/data/overview").json()
    assert d["tenant"] is None
    minutes = d["minutes"]
    # 30 minutes ending before the one NOW (12:30:20) falls in, which is still being written.
    assert len(minutes) == 30 and minutes[0] == "2026-05-01T12:00:00Z" and minutes[-1] == "2026-05-01T12:29:00Z"
    assert d["range"] == "30m" and d["bucket_minutes"] == 1

    h = d["headline"]
    assert h["placement_version"] == 2
    # v2: llama 2 × 1 slice × $4.00 + bge 1 × 2/4 slices × $0.80 + qwen 1 × $4.00 = 8.00 + 0.40 + 4.00
    assert h["placement_usd_per_hour"] == approx(12.40)
    # recent minutes 12:25 … 12:29: $0.20 + ($0.40 + $0.10 + $0.20) = $0.90 over 5 minutes → × 12 per hour
    assert h["metered_usd_per_hour"] == approx(10.80)
    # window: 0.40 + 0.10 + 0.20 + 0.20 = $0.90 for 200k + 50k + 100k + 40k = 390k tokens (11:59 and 12:30 left out)
    assert h["window_cost_usd"] == approx(0.90) and h["window_tokens"] == 390_000
    assert h["usd_per_million_tokens"] == approx(0.90 / 0.39)
    # (95 + 50 + 150) / (100 + 50 + 200); the 11:59 row is before the window
    assert h["window_requests"] == 350 and h["sla_attainment"] == approx(295 / 350)

    cost = d["cost"]
    assert at("12:29", cost["metered_usd_per_hour"], minutes) == approx(0.70 * 60)  # 0.40 + 0.10 + 0.20
    assert at("12:25", cost["usd_per_million_tokens"], minutes) == approx(5.00)  # $0.20 / 40k × 1e6
    assert at("12:10", cost["usd_per_million_tokens"], minutes) is None  # no tokens that minute
    # v1 (11:50:20: $4 + $4) holds until v2 arrives at 12:20:20, which is in force at the end of 12:20
    assert at("12:00", cost["placement_usd_per_hour"], minutes) == approx(8.00)
    assert at("12:19", cost["placement_usd_per_hour"], minutes) == approx(8.00)
    assert at("12:20", cost["placement_usd_per_hour"], minutes) == approx(12.40)

    util = {u["device_class"]: u for u in d["utilisation"]}
    assert set(util) == {"h100", "l4"}  # cpu has no nodes, usage or placement
    h100 = util["h100"]
    assert at("12:29", h100["busy_fraction"], minutes) == approx((60 + 45) / (120 + 60))
    assert at("12:29", h100["allocated_devices"], minutes) == approx(3.0)  # 180 device-seconds / 60
    assert at("12:28", h100["busy_fraction"], minutes) is None
    assert h100["window_busy_fraction"] == approx((60 + 45 + 30) / (120 + 60 + 60))  # 12:30 left out
    assert h100["placed_devices"] == 3  # llama 2 + qwen 1
    assert h100["healthy_devices"] == 7  # gpu-a 8 less its unhealthy device 0; gpu-b is unhealthy
    assert util["l4"]["placed_devices"] == 1  # 2 of 4 slices: counted as the one whole GPU they occupy
    assert util["l4"]["healthy_devices"] == 4

    sla = {w["workload"]: w for w in d["sla"]}
    assert sla["support-bot"]["target"] == 0.99 and sla["research-agent"]["target"] is None
    assert at("12:29", sla["support-bot"]["attainment"], minutes) == approx(0.95)
    assert at("12:28", sla["support-bot"]["attainment"], minutes) == approx(1.0)
    assert sla["research-agent"]["window_attainment"] == approx(0.75)

    rows = {(p["workload"], p["fragment"], p["device_class"]): p for p in d["placements"]}
    assert set(rows) == {
        ("support-bot", "llm:llama-70b", "h100"),
        ("support-bot", "embedding:bge", "l4"),
        ("research-agent", "llm:qwen-32b", "h100"),
    }
    bge = rows[("support-bot", "embedding:bge", "l4")]
    assert (bge["replicas"], bge["slices"], bge["usd_per_hour"]) == (1, 2, approx(0.40))

    fleet = {f["device_class"]: f for f in d["fleet"]}
    assert fleet["h100"] == {
        "device_class": "h100", "vendor": "nvidia", "nodes": 2, "healthy_nodes": 1, "devices": 16,
        "healthy_devices": 7, "placed_devices": 3, "usd_per_device_hour": 4.0,
    }
    assert h["placement_devices"] == 4  # 3 h100 + 1 l4


def test_tenant_token_sees_only_its_tenant(client, seeded):
    signed_in(client, seeded.acme_token)
    d = client.get("/ui/data/overview").json()
    assert d["tenant"] == "acme"
    h = d["headline"]
    assert h["placement_usd_per_hour"] == approx(8.40)  # llama $8.00 + bge $0.40, not globex's qwen
    assert h["metered_usd_per_hour"] == approx((0.20 + 0.40 + 0.10) * 12)  # globex's $0.20 at 12:29 left out
    assert h["window_tokens"] == 290_000  # 200k + 50k + 40k; 12:30's 50k is the minute in progress
    assert h["sla_attainment"] == approx(145 / 150)
    assert {p["workload"] for p in d["placements"]} == {"support-bot"}
    assert [w["workload"] for w in d["sla"]] == ["support-bot"]
    util = {u["device_class"]: u for u in d["utilisation"]}
    assert at("12:29", util["h100"]["busy_fraction"], d["minutes"]) == approx(60 / 120)
    assert util["h100"]["placed_devices"] == 2
    assert at("12:00", d["cost"]["placement_usd_per_hour"], d["minutes"]) == approx(4.00)  # v1's llama only

    page = client.get("/ui").text
    assert "tenant acme" in page and "support-bot" in page
    assert "research-agent" not in page and "qwen" not in page and "globex" not in page


def test_page_renders_the_numbers_and_escapes_names(client, seeded, engine):
    with Session(engine) as session:
        hostile = Fragment(
            workload_id=seeded.bot_id, key='tool:<script>alert("x")</script>', kind=FragmentKind.tool, name="t",
            first_seen=datetime(2026, 5, 1, tzinfo=UTC), last_seen=datetime(2026, 5, 1, tzinfo=UTC),
        )
        session.add(hostile)
        session.flush()
        session.add(PlacementItem(placement_id=seeded.placement_v2_id, fragment_id=hostile.id, device_class_id=seeded.h100_id, replicas=0))
        session.commit()
    page = signed_in(client, seeded.admin_token).get("/ui").text
    assert "$12.40" in page and "$10.80" in page and "84.3%" in page  # placement, metered, 295 / 350
    assert '<script>alert("x")</script>' not in page
    assert "tool:&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;" in page
    for chart in ("chart-cost", "chart-tokens", "chart-busy", "chart-capacity", "chart-sla"):
        assert f'id="{chart}" data-points="0"' in page


def test_a_split_fragment_shows_its_prefill_and_decode_pools(client, seeded, engine):
    with Session(engine) as session:
        split = Fragment(workload_id=seeded.bot_id, key="llm:split-70b", kind=FragmentKind.llm, name="s", model="s-70b",
                         first_seen=datetime(2026, 5, 1, tzinfo=UTC), last_seen=datetime(2026, 5, 1, tzinfo=UTC))
        session.add(split)
        session.flush()
        for phase, replicas in (("prefill", 1), ("decode", 3)):
            session.add(PlacementItem(placement_id=seeded.placement_v2_id, fragment_id=split.id,
                                      device_class_id=seeded.h100_id, phase=phase, replicas=replicas))
        session.commit()
    browser = signed_in(client, seeded.admin_token)
    rows = [(p["fragment"], p["pool"], p["replicas"]) for p in browser.get("/ui/data/overview").json()["placements"]]
    assert ("llm:split-70b", "decode", 3) in rows and ("llm:split-70b", "prefill", 1) in rows
    assert ("embedding:bge", "", 1) in rows  # whole replicas
    page = browser.get("/ui").text
    assert "<td>llm:split-70b</td><td>prefill</td>" in page and "<td>embedding:bge</td><td>whole</td>" in page


def test_a_longer_range_sums_minutes_into_buckets(client, seeded):
    d = signed_in(client, seeded.admin_token).get("/ui/data/overview?range=6h").json()
    assert d["range"] == "6h" and d["bucket_minutes"] == 5 and len(d["minutes"]) == 72
    # 72 buckets of 5 minutes end where 12:30 begins: the first starts at 06:30, the last at 12:25
    assert d["minutes"][0] == "2026-05-01T06:30:00Z" and d["minutes"][-1] == "2026-05-01T12:25:00Z"
    # 12:25 … 12:29: $0.20 + $0.70 in 5 minutes → $10.80 per hour
    assert d["cost"]["metered_usd_per_hour"][-1] == approx(10.80)
    # 11:55 … 11:59 holds 11:59's $5.00: $60.00 per hour
    assert at("11:55", d["cost"]["metered_usd_per_hour"], d["minutes"]) == approx(60.0)
    # the window now reaches 11:59: $5.00 and 1 token more, and its 10 requests (none within SLA)
    h = d["headline"]
    assert h["window_cost_usd"] == approx(5.90) and h["window_tokens"] == 390_001
    assert h["window_requests"] == 360 and h["sla_attainment"] == approx(295 / 360)
    # h100 in 12:25 … 12:29: (120 + 60 + 60) device-seconds over 300 s: 0.8 devices on average
    util = {u["device_class"]: u for u in d["utilisation"]}
    assert util["h100"]["allocated_devices"][-1] == approx(0.8)
    seven = client.get("/ui/data/overview?range=7d").json()
    assert (seven["bucket_minutes"], len(seven["minutes"]), seven["minutes"][-1]) == (60, 168, "2026-05-01T11:30:00Z")


def test_an_unknown_range_is_refused_naming_the_field(client, seeded):
    browser = signed_in(client, seeded.admin_token)
    data = browser.get("/ui/data/overview?range=1y")
    assert data.status_code == 422 and data.headers["content-type"] == "application/problem+json"
    assert data.json()["detail"].startswith("range: ")
    page = browser.get("/ui?range=1y")
    assert page.status_code == 422 and "range: Input should be" in page.text


def test_minutes_below_the_sla_target_are_marked(client, seeded):
    d = signed_in(client, seeded.admin_token).get("/ui/data/overview").json()
    bot = next(w for w in d["sla"] if w["workload"] == "support-bot")
    # target 99%: 12:29 is 95% (breached), 12:28 100% (met), minutes without requests neither
    assert at("12:29", bot["breached"], d["minutes"]) is True
    assert at("12:28", bot["breached"], d["minutes"]) is False
    assert sum(bot["breached"]) == 1
    research = next(w for w in d["sla"] if w["workload"] == "research-agent")
    assert not any(research["breached"])  # no target, nothing to breach


def test_the_page_picks_ranges_and_links_every_page(client, seeded):
    page = signed_in(client, seeded.admin_token).get("/ui?range=24h").text
    assert 'data-overview-url="/ui/data/overview?range=24h"' in page
    assert '<a href="/ui?range=24h" class="active" aria-current="true">24 h</a>' in page
    for label, href in (("Overview", "/ui"), ("Proposals", "/ui/proposals"), ("Placements", "/ui/placements"),
                        ("Workloads", "/ui/workloads"), ("Fleet", "/ui/fleet"), ("Policies", "/ui/policies")):
        assert f'<a href="{href}"' in page and f">{label}</a>" in page
    assert '<a href="/ui" class="active" aria-current="page">Overview</a>' in page


def test_a_banner_says_when_health_is_degraded(client, console_app, seeded):
    browser = signed_in(client, seeded.admin_token)
    assert 'id="health-banner"' not in browser.get("/ui").text
    console_app.state.components = {"reconciler": "error: SolverCrashed", "prometheus": "ok"}
    page = browser.get("/ui").text
    banner = page.split('id="health-banner"')[1].split("</section>")[0]
    assert "degraded" in banner and "reconciler: error: SolverCrashed" in banner and "prometheus" not in banner


def test_the_banner_names_unmet_slas_only_to_those_who_may_see_them(console_app, seeded):
    from types import SimpleNamespace

    from fastapi.testclient import TestClient

    from optimizer.types import Priority, Shortfall, ShortfallCause, ShortfallKind

    unmet = Shortfall(workload=str(seeded.research_id), priority=Priority.realtime, kind=ShortfallKind.latency,
                      cause=ShortfallCause.fast_classes_full, sla_p99_ms=1000, predicted_p99_ms=1800)
    console_app.state.reconciler = SimpleNamespace(last=SimpleNamespace(shortfalls=(unmet,)))
    with TestClient(console_app) as admin, TestClient(console_app) as acme:
        fleet = signed_in(admin, seeded.admin_token).get("/ui").text.split('id="health-banner"')[1].split("</section>")[0]
        assert "no plan meeting every SLA: 1 unmet" in fleet and "globex/research-agent" in fleet
        tenant = signed_in(acme, seeded.acme_token).get("/ui").text.split('id="health-banner"')[1].split("</section>")[0]
        assert "1 unmet" in tenant and "research-agent" not in tenant and "globex" not in tenant
