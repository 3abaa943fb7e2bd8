"""A workload's call graph as a Plotly figure: fragments as markers coloured by the device class the
placement in force runs them on, calls as lines labelled with the bytes each call carries.

Layout, pure: a fragment's column is the length of the longest call chain from a root (a fragment
nothing calls) to it, so every call goes left to right in an acyclic graph; a cycle's back edge is
ignored for the layout. Within a column fragments are stacked in key order."""

from collections import defaultdict
from collections.abc import Mapping, Sequence

import plotly.graph_objects as go

from controlplane.models.workloads import EdgePublic, FragmentPublic
from web.figures import colour_of, layout, to_json

UNPLACED = "not placed"


def columns(fragment_ids: Sequence[int], edges: Sequence[tuple[int, int]]) -> dict[int, int]:
    """Longest-path depth of each fragment from the roots; fragments on a cycle get the depth the
    first visit reaches (the back edge does not push them further)."""
    children: dict[int, list[int]] = defaultdict(list)
    for parent, child in edges:
        if parent != child:
            children[parent].append(child)
    called = {child for _, child in edges}
    depth = {f: 0 for f in fragment_ids}
    on_path: set[int] = set()

    def visit(f: int, d: int) -> None:
        if f in on_path or d < depth.get(f, 0):
            return
        depth[f] = d
        on_path.add(f)
        for c in children.get(f, ()):
            visit(c, d + 1)
        on_path.discard(f)

    roots = [f for f in fragment_ids if f not in called] or list(fragment_ids[:1])
    for root in roots:
        visit(root, 0)
    return depth


def human_bytes(n: float | None) -> str:
    if n is None:
        return "—"
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:,.0f} {unit}" if unit == "B" else f"{n:,.1f} {unit}"
        n /= 1000
    return f"{n:,.1f} GB"


def graph_figure(fragments: Sequence[FragmentPublic], edges: Sequence[EdgePublic],
                 placed_on: Mapping[int, str]) -> str:
    """The figure's JSON; `placed_on` maps a fragment id to the class it runs on (absent: not placed)."""
    ids = [f.id for f in sorted(fragments, key=lambda f: f.key)]
    depth = columns(ids, [(e.parent_id, e.child_id) for e in edges])
    rows: dict[int, int] = defaultdict(int)
    where: dict[int, tuple[float, float]] = {}
    for f in ids:
        where[f] = (depth[f], -rows[depth[f]])
        rows[depth[f]] += 1
    figure = go.Figure(layout=layout(
        height=max(280, 90 * max(rows.values(), default=1)),
        xaxis={"visible": False}, yaxis={"visible": False}, hovermode="closest",
    ))
    lines_x: list[float | None] = []
    lines_y: list[float | None] = []
    for e in edges:
        (x0, y0), (x1, y1) = where[e.parent_id], where[e.child_id]
        lines_x += [x0, x1, None]
        lines_y += [y0, y1, None]
        figure.add_annotation(x=(x0 + x1) / 2, y=(y0 + y1) / 2, text=human_bytes(e.bytes_per_call) + "/call",
                              showarrow=False, font={"size": 11, "color": "#475569"}, bgcolor="rgba(255,255,255,0.85)")
    figure.add_trace(go.Scatter(x=lines_x, y=lines_y, mode="lines", line={"color": "#94a3b8", "width": 1.5},
                                hoverinfo="skip", showlegend=False))
    by_key = {f.id: f for f in fragments}
    classes = sorted({placed_on.get(f, UNPLACED) for f in ids})
    colours = colour_of([c for c in classes if c != UNPLACED]) | {UNPLACED: "#94a3b8"}
    for cls in classes:
        mine = [f for f in ids if placed_on.get(f, UNPLACED) == cls]
        figure.add_trace(go.Scatter(
            x=[where[f][0] for f in mine], y=[where[f][1] for f in mine], mode="markers+text", name=cls,
            text=[by_key[f].key for f in mine], textposition="top center",
            marker={"size": 18, "color": colours[cls], "line": {"color": "#fff", "width": 2}},
            customdata=[[by_key[f].visits] for f in mine],
            hovertemplate="%{text}<br>" + cls + "<br>%{customdata[0]:,} visits<extra></extra>",
        ))
    return to_json(figure)
