"""Figures the server builds with plotly (graph_objects) for pages that do not poll; a page embeds
each one's JSON in a `data-figure` attribute, which web/static/figures.js draws. No script is
inlined (the pages' Content-Security-Policy allows none)."""

import plotly.graph_objects as go
import plotly.io as pio

FONT = {"family": "system-ui, -apple-system, Segoe UI, sans-serif", "size": 12, "color": "#334155"}
PALETTE = ("#2563eb", "#db2777", "#059669", "#d97706", "#7c3aed", "#0891b2", "#dc2626", "#65a30d")
GRID = "#e2e8f0"


def layout(**extra) -> go.Layout:
    """The overview's look: transparent, small margins, horizontal legend under the plot."""
    base = {
        "template": "none", "height": 280, "margin": {"l": 56, "r": 16, "t": 8, "b": 40},
        "paper_bgcolor": "rgba(0,0,0,0)", "plot_bgcolor": "rgba(0,0,0,0)", "font": FONT,
        "legend": {"orientation": "h", "y": -0.2}, "hoverlabel": {"namelength": -1},
    }
    return go.Layout(**(base | extra))


def to_json(figure: go.Figure) -> str:
    return pio.to_json(figure, validate=False, pretty=False, engine="json")


def colour_of(names: list[str]) -> dict[str, str]:
    """A stable colour per name (sorted), cycling the palette."""
    return {name: PALETTE[i % len(PALETTE)] for i, name in enumerate(sorted(set(names)))}
