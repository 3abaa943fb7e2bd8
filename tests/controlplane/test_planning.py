"""From stored telemetry to the optimizer's graph-aware problem."""

from datetime import timedelta

from sqlmodel import Session

from controlplane.actuators.base import NodeInventory
from controlplane.actuators.memory import InMemoryActuator
from controlplane.inventory import sync_inventory
from controlplane.models import Edge, EdgeVisitCalls, Fragment, FragmentKind, FragmentProfile, Sla, Tenant, Workload
from controlplane.models._common import minute_of, utcnow
from controlplane.planning import acyclic, build_problem, take_snapshot
from controlplane.reconciler import Reconciler
from controlplane.seed import seed_catalog
from controlplane.settings import Settings
from optimizer.checker import check
from optimizer.perfmodel import kv_bytes_per_token
from optimizer.types import Edge as OptEdge
from optimizer.types import Phase

NOW = minute_of(utcnow()) + timedelta(seconds=30)


def test_cycles_lose_their_lightest_edge():
    edges = [OptEdge("llm", "tool", 3.0), OptEdge("tool", "llm", 1.0), OptEdge("tool", "db", 1.0)]
    assert acyclic(edges) == (OptEdge("llm", "tool", 3.0), OptEdge("tool", "db", 1.0))


def test_the_problem_carries_the_graph_its_sla_and_what_runs_now(engine):
    with Session(engine) as session:
        seed_catalog(session)
        sync_inventory(session, (NodeInventory("h100-0", "H100-SXM", 8, 8), NodeInventory("cpu-0", "CPU-EPYC-64C", 2, 2)))
        tenant = Tenant(name="acme")
        session.add(tenant)
        session.flush()
        workload = Workload(tenant_id=tenant.id, name="agent")
        session.add(workload)
        session.flush()
        agent = Fragment(workload_id=workload.id, key="agent:a", kind=FragmentKind.agent, name="a")
        llm = Fragment(workload_id=workload.id, key="llm:m-8b", kind=FragmentKind.llm, name="m-8b", model="m-8b")
        session.add_all([agent, llm])
        session.flush()
        for fragment, visits in ((agent, 100), (llm, 300)):
            session.add(FragmentProfile(fragment_id=fragment.id, minute=minute_of(NOW), visits=visits,
                                        latency_ms_sum=visits * 20.0, tokens_in=visits * 200, tokens_out=visits * 50))
        # 300 calls from 100 agent visits, 9,000 bytes moved: 3 calls per call, 30 bytes per call.
        session.add(Edge(workload_id=workload.id, parent_id=agent.id, child_id=llm.id, calls=300, bytes_total=9000))
        session.add(Sla(workload_id=workload.id, p99_ms=30_000, ttft_ms=2_000, tpot_ms=200))
        session.commit()
        ids = (str(agent.id), str(llm.id), str(workload.id))

    actuator = InMemoryActuator(
        (NodeInventory("h100-0", "H100-SXM", 8, 8), NodeInventory("cpu-0", "CPU-EPYC-64C", 2, 2))
    )
    Reconciler(engine, actuator, Settings(solver_time_limit_s=2), clock=lambda: NOW).run_once()
    with Session(engine) as session:
        problem = build_problem(take_snapshot(session, NOW), 1.2, 2.0, migration_cost_usd=0.05)

    agent_id, llm_id, workload_id = ids
    assert problem.edges == (OptEdge(agent_id, llm_id, 3.0, 30.0),)
    assert [(s.workload, s.p99_ms, s.ttft_ms, s.tpot_ms) for s in problem.slas] == [(workload_id, 30_000, 2_000, 200)]
    # The LLM's estimated profiles state TTFT and TPOT, so the bounds rule out classes too slow for them:
    # whole replicas both, a prefill pool its TTFT, a decode pool its TPOT. The pools and the KV cache
    # one visit hands over (200 prompt tokens) let the solver split it.
    llm = next(f for f in problem.fragments if f.fragment == llm_id)
    by_phase = {phase: [p for p in llm.profiles if p.phase is phase] for phase in Phase}
    assert all(by_phase.values())
    assert all(p.ttft_ms and p.tpot_ms for p in by_phase[Phase.whole])
    assert all(p.ttft_ms for p in by_phase[Phase.prefill]) and all(p.tpot_ms for p in by_phase[Phase.decode])
    assert llm.kv_bytes_per_request == kv_bytes_per_token(8.0) * 200
    assert {a.fragment for a in problem.current} == {agent_id, llm_id}  # the placement the reconciler applied
    assert problem.migration_cost_usd == 0.05
    assert all(f.latency_bound_ms is None for f in problem.fragments)  # the SLA bounds paths, not fragments
    assert {c.device_class: c.vendor for c in problem.device_classes} == {"H100-SXM": "nvidia", "CPU-EPYC-64C": "amd"}
    # What runs now meets the path SLA, counting transfers: the checker finds nothing wrong.
    from controlplane.policy import as_plan

    assert check(problem, as_plan({(int(a.fragment), a.device_class, a.phase): (a.replicas, a.slices) for a in problem.current}, problem)) == []


def test_a_callers_span_time_is_not_taken_as_its_own_latency():
    # The agent's spans (5 s) include the 4 s it waits on the LLM; the path bound adds the LLM again,
    # so the agent keeps its estimate while the LLM's measured 4 s replaces its estimate on H100.
    from controlplane.planning import EdgeView, FragmentView, Snapshot, WorkloadView
    from optimizer.catalog import by_name

    def view(fid: int, kind: str, model: str, measured: dict[str, float]) -> FragmentView:
        return FragmentView(fid, f"{kind}:{model}", kind, model, 1, 1, "acme", "w", 2.0, 500.0, 100.0, 600, measured)

    snapshot = Snapshot(
        now=NOW, classes=(by_name("H100-SXM"), by_name("CPU-EPYC-64C")), class_ids={"H100-SXM": 1, "CPU-EPYC-64C": 2},
        healthy_devices={"H100-SXM": 8, "CPU-EPYC-64C": 2},
        fragments=(view(1, "agent", "a", {"CPU-EPYC-64C": 5000.0}), view(2, "llm", "m-8b", {"H100-SXM": 4000.0})),
        workloads={1: WorkloadView(1, 60_000.0)}, current={}, current_version=None, latest_version=0,
        edges=(EdgeView(1, 2, 1.0, 100.0),),
    )
    problem = build_problem(snapshot, 1.2, 2.0)
    agent, llm = (next(f for f in problem.fragments if f.fragment == fid) for fid in ("1", "2"))
    assert [(p.measured, p.latency_ms < 5000) for p in agent.profiles] == [(False, True)]
    h100 = next(p for p in llm.profiles if p.device_class == "H100-SXM" and p.phase is Phase.whole)
    assert h100.measured and h100.latency_ms == 4000.0


def test_the_problem_knows_how_classes_are_sold_their_nodes_and_how_edges_call(engine):
    with Session(engine) as session:
        seed_catalog(session)
        sync_inventory(session, (
            NodeInventory("h100-0", "H100-SXM", 8, 8),
            NodeInventory("h100-1", "H100-SXM", 8, 6),  # two devices failed
            NodeInventory("h100-2", "H100-SXM", 8, 0),  # the node is down
            NodeInventory("cpu-0", "CPU-EPYC-64C", 2, 2),
        ))
        tenant = Tenant(name="acme")
        session.add(tenant)
        session.flush()
        workload = Workload(tenant_id=tenant.id, name="agent")
        session.add(workload)
        session.flush()
        agent = Fragment(workload_id=workload.id, key="agent:a", kind=FragmentKind.agent, name="a")
        tool = Fragment(workload_id=workload.id, key="tool:search", kind=FragmentKind.tool, name="search")
        llm = Fragment(workload_id=workload.id, key="llm:m-8b", kind=FragmentKind.llm, name="m-8b", model="m-8b")
        session.add_all([agent, tool, llm])
        session.flush()
        for fragment, visits in ((agent, 100), (tool, 300), (llm, 100)):
            session.add(FragmentProfile(fragment_id=fragment.id, minute=minute_of(NOW), visits=visits,
                                        latency_ms_sum=visits * 20.0, tokens_in=visits * 200, tokens_out=visits * 50))
        # 100 agent visits: half search twice, half four times, and 240 of the 300 searches overlapped another
        # call. Every visit chats once; half the chats overlapped a search, which is not most of them.
        searches = Edge(workload_id=workload.id, parent_id=agent.id, child_id=tool.id, calls=300, calls_overlapping=240)
        chats = Edge(workload_id=workload.id, parent_id=agent.id, child_id=llm.id, calls=100, calls_overlapping=50)
        session.add_all([searches, chats])
        session.flush()
        session.add_all([EdgeVisitCalls(edge_id=searches.id, calls=2, visits=50),
                         EdgeVisitCalls(edge_id=searches.id, calls=4, visits=50)])
        session.commit()
        agent_id, tool_id, llm_id = str(agent.id), str(tool.id), str(llm.id)

        problem = build_problem(take_snapshot(session, NOW), 1.2, 2.0)

    capacity = {c.device_class: (c.devices, c.node_devices, c.sold_by_slice) for c in problem.device_classes}
    assert capacity == {"H100-SXM": (14, (8, 6), False), "CPU-EPYC-64C": (2, (2,), True)}
    edges = {(e.parent, e.child): (e.calls_per_parent_call, e.concurrent, e.calls_p99) for e in problem.edges}
    # Searches: rank ceil(0.99 x 100) = 99 falls among the 50 visits searching four times. Chats: never tallied.
    assert edges == {(agent_id, tool_id): (3.0, True, 4.0), (agent_id, llm_id): (1.0, False, None)}


def test_tail_tokens_come_from_the_token_histograms():
    from controlplane.planning import _tokens_p99

    # Buckets over the edges 0/25/100/250/500/1000/2000/inf, linear within a bucket. Input: all 100
    # visits in [250, 500): rank 99 of 100 is 250 + 250 x 99/100 = 497.5 tokens. Output: 98 visits in
    # [25, 100), 2 in [1000, 2000): rank 99 is the first of those 2, 1000 + 1000 x (99 - 98)/2 = 1500;
    # all 100 in the open bucket, taken to end at twice its edge: 2000 + 2000 x 0.99 = 3980.
    assert _tokens_p99({3: 100}, {1: 98, 5: 2}) == (497.5, 1500.0)
    assert _tokens_p99(None, {6: 100}) == (0.0, 3980.0)
    assert _tokens_p99(None, None) is None
