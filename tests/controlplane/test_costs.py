"""GET /costs over the ledger: idle visible and shared as OpenCost does, series, several group
keys, cost per 1M tokens by type, bounded parameters, and tenants kept apart (issue 14)."""

import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlmodel import Session, SQLModel, delete

from controlplane.auth import mint_token
from controlplane.models import (
    DeviceClass,
    Fragment,
    FragmentKind,
    IdleRecord,
    Role,
    Tenant,
    UsageRecord,
    Workload,
)
from tests.controlplane.conftest import auth

M0 = datetime(2026, 3, 2, 9, 58, tzinfo=UTC)  # two minutes before 10:00, so an hour's bucket boundary falls inside
MIN = timedelta(minutes=1)
WINDOW = {"since": (M0 - 10 * MIN).isoformat(), "until": (M0 + 10 * MIN).isoformat()}


@dataclass
class World:
    h100: int
    l4: int
    acme_llm: int
    acme_rerank: int
    globex_llm: int


def usage_row(minute, fragment: Fragment, workload: Workload, cls: int, cost: float, allocated: float, busy: float = 0.0,
              phase: str = "", tin: int = 0, tout: int = 0) -> UsageRecord:
    llm = fragment.kind == FragmentKind.llm
    return UsageRecord(minute=minute, tenant_id=workload.tenant_id, workload_id=workload.id, fragment_id=fragment.id,
                       device_class_id=cls, phase=phase, device_seconds_allocated=allocated, device_seconds_busy=busy,
                       tokens=tin + tout, llm_input_tokens=tin if llm else 0, llm_output_tokens=tout if llm else 0,
                       rerank_tokens=tin + tout if fragment.kind == FragmentKind.rerank else 0, cost_usd=cost)


@pytest.fixture
def world(engine, callers) -> World:
    """acme's bot runs an LLM on H100 and a reranker on L4; globex's research an LLM on H100, split
    into a prefill and a decode pool. Two minutes of usage, and idle on both classes:

        minute   row                          cost   allocated s  tokens
        M0       acme llm H100 (whole)        0.50   257.14       800 in / 150 out
        M0+1     acme llm H100 (whole)        0.20   102.86       200 in /  50 out
        M0       acme rerank L4               0.20   900          5000
        M0       globex llm H100 prefill      0.60   308.57       -
        M0       globex llm H100 decode       1.50   771.43       2000 in / 1000 out
        M0       idle H100                    1.40   720
        M0       idle L4                      0.40   1800
    """
    with Session(engine) as session:
        h100 = DeviceClass(name="H100", vendor="nvidia", bf16_tflops=989, memory_gib=80, memory_gbps=3350,
                           fabric="nvlink", usd_per_hour=7.0, slices_per_device=7)
        l4 = DeviceClass(name="L4", vendor="nvidia", bf16_tflops=121, memory_gib=24, memory_gbps=300,
                         fabric="pcie", usd_per_hour=0.8)
        bot = Workload(name="acme-bot", tenant_id=callers.acme_id)
        research = Workload(name="globex-research", tenant_id=callers.globex_id)
        session.add_all([h100, l4, bot, research])
        session.flush()
        llm = Fragment(workload_id=bot.id, key="llm:llama", kind=FragmentKind.llm, name="llama")
        rerank = Fragment(workload_id=bot.id, key="rerank:bge-reranker", kind=FragmentKind.rerank, name="bge-reranker")
        qwen = Fragment(workload_id=research.id, key="llm:qwen", kind=FragmentKind.llm, name="qwen")
        session.add_all([llm, rerank, qwen])
        session.flush()
        session.add_all([
            usage_row(M0, llm, bot, h100.id, 0.5, 0.5 / 7 * 3600, 100, tin=800, tout=150),
            usage_row(M0 + MIN, llm, bot, h100.id, 0.2, 0.2 / 7 * 3600, 50, tin=200, tout=50),
            usage_row(M0, rerank, bot, l4.id, 0.2, 900, 300, tin=5000),
            usage_row(M0, qwen, research, h100.id, 0.6, 0.6 / 7 * 3600, 200, phase="prefill"),
            usage_row(M0, qwen, research, h100.id, 1.5, 1.5 / 7 * 3600, 400, phase="decode", tin=2000, tout=1000),
            IdleRecord(minute=M0, device_class_id=h100.id, device_seconds_healthy=2100, device_seconds_allocated=1380,
                       device_seconds_idle=720, cost_usd=1.4),
            IdleRecord(minute=M0, device_class_id=l4.id, device_seconds_healthy=2700, device_seconds_allocated=900,
                       device_seconds_idle=1800, cost_usd=0.4),
        ])
        session.commit()
        return World(h100.id, l4.id, llm.id, rerank.id, qwen.id)


def get(client, token, **params):
    response = client.get("/api/v1/costs", params={**WINDOW, **params}, headers=auth(token))
    assert response.status_code == 200, response.text
    return response.json()


def by_name(report) -> dict[str, dict]:
    return {line["name"]: line for line in report["items"]}


def test_idle_is_a_line_of_its_own_for_the_fleet_and_invisible_to_a_tenant(client, callers, world):
    fleet = get(client, callers.operator, group_by="tenant")
    lines = by_name(fleet)
    assert set(lines) == {"acme", "globex", "idle"}
    assert lines["idle"]["group"] == {"tenant": None} and lines["idle"]["id"] is None and lines["idle"]["idle"]
    assert lines["idle"]["cost_usd"] == pytest.approx(1.8) and lines["idle"]["device_seconds_idle"] == 2520
    assert lines["acme"]["cost_usd"] == pytest.approx(0.9) and lines["acme"]["idle_cost_usd"] == 0
    assert fleet["total_cost_usd"] == sum(line["cost_usd"] for line in fleet["items"])  # exact, not approximately
    assert fleet["total_cost_usd"] == pytest.approx(0.9 + 2.1 + 1.8)
    assert fleet["idle_cost_usd"] == pytest.approx(1.8)

    acme = get(client, callers.acme_operator, group_by="tenant")
    assert [(line["name"], line["idle_cost_usd"]) for line in acme["items"]] == [("acme", 0)]
    assert acme["total_cost_usd"] == acme["items"][0]["cost_usd"] == pytest.approx(0.9)
    assert acme["idle_cost_usd"] == 0


def test_idle_by_class_is_one_idle_line_per_class(client, callers, world):
    lines = get(client, callers.admin, group_by="device_class")["items"]
    idle = {line["group"]["device_class"]["name"]: line["cost_usd"] for line in lines if line["idle"]}
    assert idle == {"H100": pytest.approx(1.4), "L4": pytest.approx(0.4)}
    assert all(line["name"] == "idle" for line in lines if line["idle"])


def test_weighted_shares_each_class_idle_by_cost_on_that_class(client, callers, world):
    report = get(client, callers.admin, group_by="tenant", share_idle="weighted")
    lines = by_name(report)
    assert "idle" not in lines
    # H100 idle $1.40: acme ran $0.70 of the $2.80 on it (a quarter); L4 idle $0.40: acme alone ran on L4.
    assert lines["acme"]["idle_cost_usd"] == pytest.approx(1.4 / 4 + 0.4)
    assert lines["globex"]["idle_cost_usd"] == pytest.approx(1.4 * 3 / 4)
    assert lines["acme"]["device_seconds_idle"] == pytest.approx(720 / 4 + 1800)
    assert report["total_cost_usd"] == pytest.approx(0.9 + 2.1 + 1.8)
    # A tenant's token sees its own share, and nothing of the rest.
    acme = get(client, callers.acme_operator, group_by="tenant", share_idle="weighted")
    assert [(line["name"], line["cost_usd"]) for line in acme["items"]] == [("acme", pytest.approx(0.9 + 0.75))]


def test_even_shares_idle_equally_among_the_tenants_that_ran(client, callers, world):
    lines = by_name(get(client, callers.admin, group_by="tenant", share_idle="even"))
    assert lines["acme"]["idle_cost_usd"] == pytest.approx(0.9) and lines["globex"]["idle_cost_usd"] == pytest.approx(0.9)
    # globex ran nothing on L4: its half of L4's idle goes to what it ran (H100).
    globex = get(client, callers.globex_viewer, group_by="device_class", share_idle="even")
    assert [(line["name"], line["idle_cost_usd"]) for line in globex["items"]] == [("H100", pytest.approx(0.9))]


def test_series_are_in_utc_aligned_buckets_that_add_up_to_their_line(client, callers, world):
    report = get(client, callers.admin, group_by="workload", step="1h", share_idle="weighted")
    bot = by_name(report)["acme-bot"]
    # M0 (09:58) and M0 + 1 (09:59) are in the 09:00 bucket.
    assert [p["start"] for p in bot["series"]] == ["2026-03-02T09:00:00Z"]
    minutes = by_name(get(client, callers.admin, group_by="workload", step="1m"))["acme-bot"]["series"]
    assert [(p["start"], p["cost_usd"]) for p in minutes] == [
        ("2026-03-02T09:58:00Z", pytest.approx(0.7)), ("2026-03-02T09:59:00Z", pytest.approx(0.2))]
    for line in report["items"]:
        assert sum(p["cost_usd"] for p in line["series"]) == pytest.approx(line["cost_usd"])
    assert get(client, callers.admin)["items"][0]["series"] is None  # no step, no series


def test_lines_can_be_keyed_by_several_group_keys(client, callers, world):
    report = get(client, callers.admin, group_by=["tenant", "fragment", "phase"])
    keyed = {(line["group"]["tenant"]["name"], line["group"]["fragment"]["name"], line["group"]["phase"]["name"]):
             line["cost_usd"] for line in report["items"] if not line["idle"]}
    assert keyed == {("acme", "llm:llama", "whole"): pytest.approx(0.7),
                     ("acme", "rerank:bge-reranker", "whole"): pytest.approx(0.2),
                     ("globex", "llm:qwen", "prefill"): pytest.approx(0.6),
                     ("globex", "llm:qwen", "decode"): pytest.approx(1.5)}
    line = next(line for line in report["items"] if line["name"] == "globex / llm:qwen / decode")
    assert line["id"] == line["group"]["tenant"]["id"] == callers.globex_id
    kinds = by_name(get(client, callers.admin, group_by="fragment_kind"))
    assert kinds["llm"]["cost_usd"] == pytest.approx(2.8) and kinds["llm"]["tokens_by_type"]["llm_input"] == 3000


def test_cost_per_million_tokens_is_priced_per_token_type(client, callers, world):
    # Issue 14: one $/1M over every token mixed reranker tokens with LLM tokens.
    report = get(client, callers.admin, group_by="tenant")
    types = {t["token_type"]: t for t in report["by_token_type"]}
    # acme's whole replicas ($0.70) served 1000 input and 200 output tokens: split 5/6, 1/6.
    # globex's prefill pool ($0.60) served input, its decode pool ($1.50) output.
    assert types["llm_input"]["tokens"] == 3000 and types["llm_output"]["tokens"] == 1200
    assert types["llm_input"]["usd_per_1m_tokens"] == pytest.approx((0.7 * 5 / 6 + 0.6) / 3000 * 1e6)
    assert types["llm_output"]["usd_per_1m_tokens"] == pytest.approx((0.7 / 6 + 1.5) / 1200 * 1e6)
    assert types["rerank"] == {"token_type": "rerank", "tokens": 5000, "cost_usd": pytest.approx(0.2),
                               "usd_per_1m_tokens": pytest.approx(40.0)}
    assert types["embedding"]["tokens"] == 0 and types["embedding"]["usd_per_1m_tokens"] is None
    # The blended figure, for comparison, is a third of the LLM's.
    assert report["allocated_cost_usd"] / report["total_tokens"] * 1e6 == pytest.approx(3.0 / 9200 * 1e6)
    acme = {t["token_type"]: t["tokens"] for t in get(client, callers.acme_operator)["by_token_type"]}
    assert acme == {"llm_input": 1000, "llm_output": 200, "embedding": 0, "rerank": 5000}


@pytest.mark.parametrize(("query", "field"), [
    ("share_idle=some", "share_idle"),
    ("step=2m", "step"),
    ("group_by=tenants", "group_by"),
    ("group_by=tenant&group_by=tenant", "group_by"),
    ("group_by=" + "&group_by=".join(["tenant", "workload", "device_class", "fragment", "fragment_kind", "phase",
                                      "tenant"]), "group_by"),
    ("step=1m&since=2026-01-01T00:00:00Z&until=2026-01-08T00:01:00Z", "step"),
    ("step=1d&since=2000-01-01T00:00:00Z&until=2199-01-01T00:00:00Z", "step"),
])
def test_bad_parameters_are_422_naming_the_field(client, callers, query, field):
    response = client.get(f"/api/v1/costs?{query}", headers=auth(callers.admin))
    assert response.status_code == 422, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    assert field in response.text


def test_seven_days_of_minutes_is_the_longest_minute_series(client, callers):
    response = client.get("/api/v1/costs?step=1m&since=2026-01-01T00:00:00Z&until=2026-01-08T00:00:00Z",
                          headers=auth(callers.admin))
    assert response.status_code == 200, response.text


# ---------------------------------------------------------------------------- property: sharing adds up, tenants apart

PRICES = [0.5, 1.25, 3.0, 7.0]


@st.composite
def fleets(draw):
    """Classes (price), tenants with fragments, usage rows (tenant, fragment, class, minute, allocated
    seconds) and idle rows (class, minute, idle seconds)."""
    classes = draw(st.lists(st.sampled_from(PRICES), min_size=1, max_size=3))
    tenants = draw(st.integers(2, 3))
    fragments = draw(st.lists(st.tuples(st.integers(0, tenants - 1), st.sampled_from(list(FragmentKind))),
                              min_size=1, max_size=5))
    usage = draw(st.lists(st.tuples(st.integers(0, len(fragments) - 1), st.integers(0, len(classes) - 1),
                                    st.integers(0, 3), st.integers(1, 3600), st.integers(0, 10_000)),
                          min_size=1, max_size=10, unique_by=lambda u: u[:3]))
    idle = draw(st.lists(st.tuples(st.integers(0, len(classes) - 1), st.integers(0, 3), st.integers(1, 7200)),
                         max_size=6, unique_by=lambda i: i[:2]))
    return classes, tenants, fragments, usage, idle


def expected_shares(rule, classes, fragments, usage, idle) -> dict[int, float]:
    """Each tenant's allocated cost plus its share of idle over the whole range, computed apart from
    the implementation: weighted by the tenant's cost on the idle's class (on every class when no
    one ran on that one), or even among the tenants that ran anything."""
    cost_on: dict[tuple[int, int], float] = {}
    for f, c, _minute, seconds, _tokens in usage:
        tenant = fragments[f][0]
        cost_on[(tenant, c)] = cost_on.get((tenant, c), 0.0) + seconds / 3600 * classes[c]
    tenants = sorted({t for t, _ in cost_on})
    total = {t: sum(v for (u, _), v in cost_on.items() if u == t) for t in tenants}
    result = dict(total)
    for c, _minute, seconds in idle:
        idle_cost = seconds / 3600 * classes[c]
        if rule == "even":
            for t in tenants:
                result[t] += idle_cost / len(tenants)
            continue
        on_class = {t: cost_on.get((t, c), 0.0) for t in tenants}
        weights = on_class if sum(on_class.values()) > 0 else total
        for t in tenants:
            result[t] += idle_cost * weights[t] / sum(weights.values())
    return result


def wipe(engine) -> None:
    with Session(engine) as session:
        for table in reversed(SQLModel.metadata.sorted_tables):
            session.exec(delete(table))
        session.commit()


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(fleet=fleets(), rule=st.sampled_from(["weighted", "even"]),
       group_by=st.sampled_from(["tenant", "workload", "fragment", "device_class", "fragment_kind"]))
def test_shared_idle_adds_up_and_a_tenant_sees_only_its_own(client, engine, fleet, rule, group_by):
    classes, tenants, fragments, usage, idle = fleet
    wipe(engine)
    with Session(engine) as session:
        class_rows = [DeviceClass(name=f"class-{i}", vendor="v", bf16_tflops=1, memory_gib=1, memory_gbps=1,
                                  fabric="f", usd_per_hour=price) for i, price in enumerate(classes)]
        tenant_rows = [Tenant(name=f"tenant{i}-marker") for i in range(tenants)]
        session.add_all(class_rows + tenant_rows)
        session.flush()
        workloads = [Workload(name=f"app{i}-marker", tenant_id=t.id) for i, t in enumerate(tenant_rows)]
        session.add_all(workloads)
        session.flush()
        fragment_rows = [Fragment(workload_id=workloads[t].id, key=f"{kind.value}:frag{i}-marker", kind=kind,
                                  name=f"frag{i}") for i, (t, kind) in enumerate(fragments)]
        session.add_all(fragment_rows)
        session.flush()
        for f, c, minute, seconds, tokens in usage:
            session.add(usage_row(M0 + minute * MIN, fragment_rows[f], workloads[fragments[f][0]], class_rows[c].id,
                                  seconds / 3600 * classes[c], seconds, tin=tokens))
        for c, minute, seconds in idle:
            session.add(IdleRecord(minute=M0 + minute * MIN, device_class_id=class_rows[c].id,
                                   device_seconds_idle=seconds, cost_usd=seconds / 3600 * classes[c]))
        admin = mint_token(session, "admin", Role.admin)[1]
        tokens = [mint_token(session, f"t{i}", Role.viewer, tenant_id=t.id)[1] for i, t in enumerate(tenant_rows)]
        ids = [(t.id, {w.id for w in workloads if w.tenant_id == t.id},
                {f.id for f in fragment_rows if f.workload_id == workloads[i].id}) for i, t in enumerate(tenant_rows)]
        class_ids = {c.id for c in class_rows}
        session.commit()

    expected = expected_shares(rule, classes, fragments, usage, idle)
    allocated = sum(seconds / 3600 * classes[c] for _f, c, _m, seconds, _t in usage)
    idle_total = sum(seconds / 3600 * classes[c] for c, _m, seconds in idle)
    fleet_report = get(client, admin, group_by="tenant", share_idle=rule)
    assert not any(line["idle"] for line in fleet_report["items"])  # something ran: all idle is shared
    assert fleet_report["total_cost_usd"] == sum(line["cost_usd"] for line in fleet_report["items"])
    assert fleet_report["total_cost_usd"] == pytest.approx(allocated + idle_total, rel=1e-9, abs=1e-9)
    seen = {line["id"]: line["cost_usd"] for line in fleet_report["items"]}
    assert seen == {ids[t][0]: pytest.approx(v, rel=1e-9, abs=1e-12) for t, v in expected.items()}

    for t, token in enumerate(tokens):
        report = get(client, token, group_by=group_by, share_idle=rule)
        assert report["total_cost_usd"] == pytest.approx(expected.get(t, 0.0), rel=1e-9, abs=1e-12)
        own_tenant, own_workloads, own_fragments = ids[t]
        own_usage = [u for u in usage if fragments[u[0]][0] == t]
        assert report["total_tokens"] == sum(u[4] for u in own_usage)
        text = json.dumps(report)
        for o in (o for o in range(tenants) if o != t):
            assert f"tenant{o}-marker" not in text and f"app{o}-marker" not in text
            assert not any(f"frag{i}-marker" in text for i, (owner, _) in enumerate(fragments) if owner == o)
        allowed = {own_tenant, *own_workloads, *own_fragments, *class_ids}
        for line in report["items"]:
            assert not line["idle"]
            assert {v["id"] for v in line["group"].values() if v and v["id"] is not None} <= allowed
        # Its lines are exactly the fleet's lines of its tenant, figure for figure: nothing of anyone else's.
        keyed = ["tenant"] + ([group_by] if group_by != "tenant" else [])
        fleet_view = get(client, admin, group_by=keyed, share_idle=rule)["items"]
        own_lines = [line for line in fleet_view if (line["group"]["tenant"] or {}).get("id") == own_tenant]
        assert get(client, token, group_by=keyed, share_idle=rule)["items"] == own_lines
