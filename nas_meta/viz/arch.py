"""Pictures of architectures and of search spaces (matplotlib: PNG, SVG or PDF by the path's suffix).

>>> from nas_meta import spaces
>>> from nas_meta.viz import arch as draw
>>> draw.draw_arch(spaces.load_space("cell").sample(random.Random(0)), "arch.png")  # doctest: +SKIP
>>> draw.draw_space(spaces.load_space("cell"), "cell.png")                          # doctest: +SKIP
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import networkx as nx

from ..graph import fingerprint
from .style import DPI, SMALL_SIZE, TEXT_SIZE, TITLE_SIZE, save_figure

__all__ = ["draw_arch", "draw_space", "draw_panels", "node_text", "layered_positions", "grouped_positions"]


def node_text(attrs: dict[str, Any]) -> str:
    """A node's picture label: its op, then ``-> c_out`` and ``/stride`` when set."""
    text = str(attrs.get("op"))
    if attrs.get("merge") == "concat":
        text = "concat" if text == "identity" else f"concat, {text}"
    elif text == "identity":
        text = "+"
    if attrs.get("c_out") is not None:
        text += f"\n-> {attrs['c_out']}"
    if attrs.get("stride", 1) != 1:
        text += f" /{attrs['stride']}"
    return text


def _layers(g: nx.DiGraph) -> dict[Any, int]:
    layer: dict[Any, int] = {}
    for node in nx.topological_sort(g):
        layer[node] = max((layer[p] + 1 for p in g.predecessors(node)), default=0)
    return layer


def layered_positions(g: nx.DiGraph, *, horizontal: bool = True, spread: float = 1.2) -> dict[Any, tuple[float, float]]:
    """Longest-path layers as columns (or rows); inside a layer, nodes ordered by the mean
    position of their predecessors (a barycentre sweep keeps crossings and overlaps down)."""
    layer = _layers(g)
    columns: dict[int, list] = {}
    for node in nx.topological_sort(g):
        columns.setdefault(layer[node], []).append(node)
    rank: dict[Any, float] = {}
    for x in sorted(columns):
        nodes = columns[x]
        nodes.sort(
            key=lambda n: sum(rank[p] for p in g.predecessors(n)) / max(1, g.in_degree(n)) if g.in_degree(n) else 0.0
        )
        for i, node in enumerate(nodes):
            rank[node] = i - (len(nodes) - 1) / 2
    pos = {}
    for x, nodes in columns.items():
        for node in nodes:
            pos[node] = (float(x), -rank[node] * spread) if horizontal else (rank[node] * spread, -float(x))
    return pos


def grouped_positions(g: nx.DiGraph) -> dict[Any, tuple[float, float]]:
    """One column per ``group`` (blocks, layers) in network order, top-down inside a column;
    nodes without a group get a column of their own."""
    groups = nx.get_node_attributes(g, "group")
    order = list(dict.fromkeys(groups.get(n, f"_{n}") for n in nx.topological_sort(g)))
    pos = {}
    for column, group in enumerate(order):
        sub = g.subgraph(n for n in g if groups.get(n, f"_{n}") == group)
        layer, main = _layers(sub), set(nx.dag_longest_path(sub))
        rows: dict[int, int] = {}
        # The block's main path stays in the column; a side node (a skip's projection) goes right
        # and a little down, so the edge into the block's first node does not seem to run on to it.
        for node in sorted(nx.topological_sort(sub), key=lambda n: (layer[n], n not in main)):
            side = rows.get(layer[node], 0)
            rows[layer[node]] = side + 1
            pos[node] = (column * 2.2 + 1.0 * side, -0.9 * layer[node] - (0.6 if side else 0.0))
    return pos


def _cell_panels(arch: nx.DiGraph) -> list[dict[str, Any]]:
    groups = nx.get_node_attributes(arch, "group")
    types = nx.get_node_attributes(arch, "cell_type")
    panels, order = [], list(dict.fromkeys(groups[n] for n in nx.topological_sort(arch) if n in groups))
    # The macro view: one box per group; edges that skip a cell bend so they stay visible.
    macro = nx.DiGraph()
    for group in ["input", *order]:
        kind = next((types[n] for n in arch if groups.get(n) == group and n in types), None)
        macro.add_node(group, label=group if kind is None else f"{group}\n{kind}")
    for u, v in arch.edges:
        gu, gv = groups.get(u, "input"), groups.get(v, "input")
        if gu != gv:
            macro.add_edge(gu, gv, rad=0.35 if order.index(gv) - (order.index(gu) if gu in order else -1) > 1 else 0.0)
    for i, group in enumerate(["input", *order]):
        macro.nodes[group]["pos"] = (float(i), 0.0)
    panels.append(
        {"graph": macro, "title": "network: cells in order (arcs: a cell's input from two back)", "height": 1.6}
    )
    for cell_type in ("normal", "reduce"):
        members = [n for n in arch if types.get(n) == cell_type]
        if not members:
            continue
        first = groups[members[0]]
        cell = arch.subgraph(n for n in arch if groups.get(n) == first).copy()
        for _node, attrs in cell.nodes(data=True):
            attrs["label"] = node_text(attrs)
        for node in cell:
            if node.endswith("_in0") or node.endswith("_in1"):
                cell.nodes[node]["label"] = (
                    ("c_{k-2}" if node.endswith("0") else "c_{k-1}") + "\n" + cell.nodes[node]["label"]
                )
            elif "_n" in node and cell.nodes[node].get("op") == "identity" and "_e" not in node.rsplit("_n", 1)[1]:
                cell.nodes[node]["label"] = f"node {node.rsplit('_n', 1)[1]}\n(sum)"
            elif node.endswith("_out"):
                cell.nodes[node]["label"] = "cell output\n" + cell.nodes[node]["label"]
        pos = layered_positions(cell)
        for node, xy in pos.items():
            cell.nodes[node]["pos"] = xy
        for u, v, attrs in cell.edges(data=True):
            # An edge that skips columns would run through the boxes between: bend it away from the middle.
            if pos[v][0] - pos[u][0] > 1.5:
                attrs["rad"] = -0.2 if pos[u][1] + pos[v][1] > 0 else 0.2
        cells = sorted({groups[n] for n in members}, key=order.index)
        panels.append({"graph": cell, "title": f"{cell_type} cell ({', '.join(cells)})", "height": 4.5})
    return panels


def draw_arch(arch: nx.DiGraph, path: str | Path, title: str | None = None) -> None:
    """Draw an architecture to ``path`` (PNG, SVG or PDF by its suffix), nodes labelled by op
    (``-> c_out``, ``/stride`` when set).

    A cell network gets a macro panel and one panel per cell type (its first cell: the two
    inputs, one node per op, the sums, the concat); other graphs are drawn top-down.
    """
    if any("cell_type" in attrs for _, attrs in arch.nodes(data=True)):
        panels = _cell_panels(arch)
    else:
        g = arch.copy()
        for _node, attrs in g.nodes(data=True):
            attrs["label"] = node_text(attrs)
        grouped = bool(nx.get_node_attributes(g, "group"))
        pos = grouped_positions(g) if grouped else layered_positions(g, horizontal=False)
        for node, xy in pos.items():
            g.nodes[node]["pos"] = xy
        rows = max(y for _, y in pos.values()) - min(y for _, y in pos.values())
        panels = [
            {
                "graph": g,
                "title": "one column per block, top to bottom" if grouped else "top to bottom",
                "height": 1.5 + 0.8 * rows,
                "unit": 1.0,
            }
        ]
    params = arch.graph.get("params", {})
    where = f"space {arch.graph['space']} ({arch.graph.get('kind', '?')})  " if "space" in arch.graph else ""
    head = title or f"{where}architecture {fingerprint(arch)[:12]}"
    draw_panels(panels, path, head, footer=", ".join(f"{k}={v}" for k, v in params.items()))


def draw_panels(panels: list[dict[str, Any]], path: str | Path, title: str, footer: str = "") -> None:
    """Render panels to ``path`` (PNG, SVG or PDF by its suffix), one above the other.

    A panel is ``{"graph": g, "title": str, "height": inches, "unit": inches per x unit}``; nodes of
    ``g`` carry ``pos`` (x, y) and ``label``; edges may carry ``label``, ``style`` ("solid",
    "dashed", "dotted"), ``rad`` (curvature) and ``label_pos`` (0..1 along the edge).
    """
    import textwrap

    from matplotlib.backends.backend_agg import FigureCanvasAgg  # no pyplot: no global backend state
    from matplotlib.figure import Figure
    from matplotlib.patches import FancyArrowPatch

    spans = []
    for panel in panels:
        xs = [x for x, _ in nx.get_node_attributes(panel["graph"], "pos").values()]
        spans.append(panel.get("unit", 1.6) * max(1.0, max(xs) - min(xs)))
    fig_w = min(30.0, max(8.0, max(spans) + 2))
    heights = [p.get("height", 4.0) for p in panels]
    footer = textwrap.fill(footer, width=int(fig_w * 14)) if footer else ""
    fig = Figure(figsize=(fig_w, sum(heights) + 0.8 + 0.2 * footer.count("\n") + (0.4 if footer else 0)))
    FigureCanvasAgg(fig)
    axes = fig.subplots(len(panels), 1, squeeze=False, gridspec_kw={"height_ratios": heights})[:, 0]
    fig.suptitle(title, fontsize=TITLE_SIZE)
    for ax, panel in zip(axes, panels, strict=True):
        g = panel["graph"]
        pos = nx.get_node_attributes(g, "pos")
        for u, v, attrs in g.edges(data=True):
            style = attrs.get("style", "solid")
            ax.add_patch(
                FancyArrowPatch(
                    pos[u],
                    pos[v],
                    arrowstyle="-|>",
                    mutation_scale=12,
                    color="#555555",
                    lw=1.0,
                    linestyle={"solid": "-", "dashed": "--", "dotted": ":"}[style],
                    connectionstyle=f"arc3,rad={attrs.get('rad', 0.0)}",
                    zorder=1,
                    shrinkA=_box_shrink(g.nodes[u], pos[u], pos[v]),
                    shrinkB=_box_shrink(g.nodes[v], pos[v], pos[u]),
                )
            )
            if attrs.get("label"):
                (x0, y0), (x1, y1) = pos[u], pos[v]
                f = attrs.get("label_pos", 0.5)
                ax.text(
                    x0 + f * (x1 - x0),
                    y0 + f * (y1 - y0),
                    attrs["label"],
                    fontsize=SMALL_SIZE,
                    ha="center",
                    va="center",
                    color="#1f3d7a",
                    bbox={"boxstyle": "round,pad=0.2", "fc": "#eef3ff", "ec": "none", "alpha": 0.9},
                    zorder=2,
                )
        for node, (x, y) in pos.items():
            label = g.nodes[node].get("label", str(node))
            ax.text(
                x,
                y,
                label,
                ha="center",
                va="center",
                fontsize=TEXT_SIZE,
                zorder=3,
                bbox={"boxstyle": "round,pad=0.35", "fc": _node_color(g.nodes[node]), "ec": "#333333", "lw": 0.8},
            )
        xs, ys = [x for x, _ in pos.values()], [y for _, y in pos.values()]
        ax.set_xlim(min(xs) - 0.7, max(xs) + 0.7)
        ax.set_ylim(min(ys) - 0.8, max(ys) + 0.8)
        ax.set_title(panel.get("title", ""), fontsize=TITLE_SIZE - 2, loc="left")
        ax.axis("off")
    if footer:
        fig.text(0.01, 0.005, footer, fontsize=SMALL_SIZE, va="bottom", family="monospace")
    fig.tight_layout(rect=(0, 0.02 + 0.012 * (footer.count("\n") + 1) if footer else 0, 1, 0.97))
    save_figure(fig, path, dpi=DPI)


def _box_shrink(attrs: dict[str, Any], at: tuple[float, float], towards: tuple[float, float]) -> float:
    """Points from a node's centre to its box edge in the direction of an edge (arrows end on the box)."""
    import math

    lines = str(attrs.get("label", "")).split("\n")
    half_w, half_h = 2.6 * max(len(line) for line in lines) + 7, 5.5 * len(lines) + 6
    angle = math.atan2(towards[1] - at[1], towards[0] - at[0])
    cos, sin = abs(math.cos(angle)), abs(math.sin(angle))
    return min(half_w / cos if cos > 1e-6 else math.inf, half_h / sin if sin > 1e-6 else math.inf) + 2


def _node_color(attrs: dict[str, Any]) -> str:
    op = str(attrs.get("op", ""))
    if op in ("input", "identity") or attrs.get("merge") == "concat":
        return "#f2f2f2"
    if "conv" in op or op in ("linear", "factorized_reduce", "proj_1x1"):
        return "#ffe8b3"
    if "pool" in op:
        return "#cfe8cf"
    if "norm" in op:
        return "#e3d7f5"
    if op == "skip_connect":
        return "#d7ecf7"
    return "#fbe0e0"


def template_positions(g: nx.DiGraph) -> None:
    """Set ``pos`` on a space template's nodes, in their order, by ``g.graph["layout"]``: "ellipse"
    (every edge a chord, so none runs through a node: DARTS cells) or "row" (a chain left to right,
    its last node, the output, below the end)."""
    nodes = list(g.nodes)
    if g.graph.get("layout") == "ellipse":
        for i, node in enumerate(nodes):
            angle = math.radians(215 - 250 * i / max(1, len(nodes) - 1))
            g.nodes[node]["pos"] = (6.0 * math.cos(angle), 3.2 * math.sin(angle))
        return
    for i, node in enumerate(nodes):
        g.nodes[node]["pos"] = (3.4 * i, 0.0) if i < len(nodes) - 1 else (3.4 * i, -1.6)


def draw_space(space: Any, path: str | Path) -> None:
    """Draw a space's graph to ``path`` (PNG, SVG or PDF by its suffix): nodes, and on each edge
    its candidate ops or options."""
    g = space.template()
    template_positions(g)
    panel = {"graph": g, "title": g.graph["title"], "height": 7.0 if space.kind == "cell" else 3.0, "unit": 1.0}
    draw_panels(
        [panel],
        path,
        f"search space {space.name!r} ({space.kind}): {space.size():,} architectures",
        footer=g.graph["legend"],
    )
