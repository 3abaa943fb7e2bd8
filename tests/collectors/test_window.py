"""Trace assembly across batches: out-of-order spans of one trace still make one graph; stale traces go."""

from collectors.assembly import assemble
from collectors.normalise import normalise_request
from collectors.window import Links, TraceWindow
from tests.collectors.otlp_builders import agent_loop, make_request, make_span

BOT = ("default", "support-bot")


def records(spans, resource=None):
    return normalise_request(make_request(spans, resource)).records


def test_children_before_their_parent_in_later_batches_still_make_edges():
    spans = agent_loop(tool_calls=3)
    root, chat, tools = spans[0], spans[1], spans[2:]
    window, links = TraceWindow(), Links()
    # Exporters send children first (they end first), split over three requests, the root last.
    window.link(records(tools[:2]), now_s=0, into=links)
    window.link(records([tools[2], chat]), now_s=1, into=links)
    assert links.edges == {}  # nothing can be linked before the parent is seen
    window.link(records([root]), now_s=2, into=links)
    assert links.edges == {(BOT, "agent:triage", "llm:gpt-4o"): [1, 0], (BOT, "agent:triage", "tool:search"): [3, 0]}
    assert window.orphan_spans == 0


def test_an_agent_loop_is_one_fragment_with_n_visits_across_batches():
    spans = agent_loop(tool_calls=5)
    window, links = TraceWindow(), Links()
    for i, span in enumerate(reversed(spans)):  # one span per batch, fully reversed
        window.link(records([span]), now_s=i, into=links)
    batch = assemble(records(spans), links)
    tool = [v for v in batch.visits if v.key == "tool:search"]
    assert len(tool) == 1 and tool[0].visits == 5
    assert {(e.parent_key, e.child_key): e.calls for e in batch.edges}[("agent:triage", "tool:search")] == 5


def test_complete_traces_leave_at_once_and_stale_or_surplus_ones_are_evicted():
    def waiting(trace):  # a tool span whose parent has not arrived: the trace stays open
        return make_span("execute_tool", trace=trace, span=5, parent=99, attrs={"gen_ai.operation.name": "execute_tool"})

    window = TraceWindow(max_traces=2, idle_s=60)
    window.link(records(agent_loop(trace=9)), now_s=0)  # root and children together: complete
    assert (window.open_traces, window.completed_traces) == (0, 1)
    window.link(records([waiting(1)]), now_s=0)
    window.link(records([waiting(2)]), now_s=10)
    window.link(records([waiting(3)]), now_s=20)  # three open: trace 1, the least recently active, goes
    assert (window.open_traces, window.evicted_traces, window.orphan_spans) == (2, 1, 1)
    window.evict(now_s=71, into=Links())  # trace 2 idle for 61 s > 60 s; trace 3 for 51 s stays
    assert (window.open_traces, window.evicted_traces, window.orphan_spans) == (1, 2, 2)


def test_edge_bytes_are_summed_when_telemetry_reports_them():
    spans = [
        make_span("invoke_agent a", span=1, attrs={"gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": "a"}),
        make_span("GET", span=2, parent=1, attrs={"heteroplane.bytes": 300}),
        make_span("GET", span=3, parent=1, attrs={"heteroplane.bytes": 500}),
    ]
    links = TraceWindow().link(records(spans), now_s=0)
    assert links.edges == {(BOT, "agent:a", "cpu:GET"): [2, 800]}


AGENT = {"gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": "a"}
CHAT = {"gen_ai.operation.name": "chat", "gen_ai.request.model": "m"}
TOOL = {"gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": "t"}


def test_a_visit_is_tallied_once_its_trace_leaves_the_window():
    # The chat [0, 200 ms) and the first tool call [100, 140 ms) share time; the second call [300, 340 ms) does not.
    chat = make_span("chat", span=2, parent=1, duration_ms=200, attrs=CHAT)
    tools = [make_span("tool", span=3, parent=1, start_ms=100, duration_ms=40, attrs=TOOL),
             make_span("tool", span=4, parent=1, start_ms=300, duration_ms=40, attrs=TOOL)]
    root = make_span("agent", span=1, duration_ms=500, attrs=AGENT)
    window, links = TraceWindow(), Links()
    window.link(records([chat, *tools]), now_s=0, into=links)
    assert links.visits == {} and links.overlapping == {}  # the visit may still make calls
    window.link(records([root, tools[0]]), now_s=1, into=links)  # the root closes the trace; a resent span counts once
    assert links.edges == {(BOT, "agent:a", "llm:m"): [1, 0], (BOT, "agent:a", "tool:t"): [2, 0]}
    assert links.visits == {(BOT, "agent:a", "llm:m"): {1: 1}, (BOT, "agent:a", "tool:t"): {2: 1}}
    assert links.overlapping == {(BOT, "agent:a", "llm:m"): 1, (BOT, "agent:a", "tool:t"): 1}


def test_a_trace_whose_root_never_comes_is_tallied_when_evicted():
    # An agent span under a root that never arrives: its calls are linked at once, its visit tallied on eviction.
    agent = make_span("agent", span=2, parent=1, duration_ms=500, attrs=AGENT)
    tools = [make_span("tool", span=10 + i, parent=2, start_ms=50 * i, duration_ms=40, attrs=TOOL) for i in range(3)]
    window, links = TraceWindow(idle_s=60), Links()
    window.link(records([agent, *tools]), now_s=0, into=links)
    assert links.edges == {(BOT, "agent:a", "tool:t"): [3, 0]} and links.visits == {}
    window.evict(now_s=61, into=links)
    assert links.visits == {(BOT, "agent:a", "tool:t"): {3: 1}} and links.overlapping == {}
    assert window.orphan_spans == 1  # the agent span itself waited for its parent
