"""Architecture graphs: validate, fingerprint, JSON/GraphML io, pictures.  No torch here.

An architecture is a plain ``networkx.DiGraph`` (contract in /work/contracts.md):

- ``arch.graph``: ``{"space": name, "kind": "cell"|"chain"|"mlp", "params": {choice: value}}``;
- node ids are strings; node attributes ``op`` (a name in ``nas_meta.ops.OPS``; the one source has
  ``op="input"``), ``merge`` ("sum" default, or "concat"), ``c_out`` (absent = as merged input),
  ``stride`` (default 1); optional ``group`` (e.g. "cell2") and ``cell_type`` only for pictures;
- edge attribute ``slot`` (int) orders a concat's inputs;
- the one sink is the output.

    >>> import networkx as nx
    >>> arch = nx.DiGraph(space="toy", kind="chain", params={})
    >>> arch.add_node("input", op="input"); arch.add_node("fc", op="linear", c_out=4)
    >>> arch.add_edge("input", "fc")
    >>> validate(arch); from_json(to_json(arch)).nodes["fc"]["c_out"]
    4
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Collection
from pathlib import Path
from typing import Any

import networkx as nx

from .errors import SpaceError

__all__ = [
    "JSON_VERSION",
    "node_label",
    "fingerprint",
    "validate",
    "source",
    "sink",
    "ordered_inputs",
    "to_json",
    "from_json",
    "save_json",
    "load_json",
    "save_graphml",
    "load_graphml",
    "draw",
    "draw_panels",
    "node_text",
]

JSON_VERSION = 1
MERGES = ("sum", "concat")


def node_label(attrs: dict[str, Any]) -> str:
    """The label the fingerprint sees: op, merge, output width and stride (not the node id)."""
    c_out = attrs.get("c_out")
    return f"{attrs.get('op')}|{attrs.get('merge', 'sum')}|{'' if c_out is None else c_out}|{attrs.get('stride', 1)}"


def fingerprint(arch: nx.DiGraph) -> str:
    """Weisfeiler-Lehman hash over node labels (op, merge, c_out, stride); ids and slots are ignored.

    Isomorphic architectures (a cell with its two input edges swapped, nodes renamed) share it.
    Iterations = the longest path + 1, so every node's label covers the whole graph instead of the
    default 3 hops (two cells that differ deep inside a long network still get different hashes).
    The hash of directed graphs changed in networkx 3.5: fingerprints are comparable only under
    one networkx version range (>= 3.5).
    """
    labelled = nx.DiGraph()
    for node, attrs in arch.nodes(data=True):
        labelled.add_node(node, label=node_label(attrs))
    labelled.add_edges_from(arch.edges())
    depth = nx.dag_longest_path_length(labelled) if nx.is_directed_acyclic_graph(labelled) else len(labelled)
    with warnings.catch_warnings():  # networkx warns on every call that 3.5 changed directed hashes
        warnings.filterwarnings("ignore", message="The hashes produced for directed graphs")
        return nx.weisfeiler_lehman_graph_hash(labelled, node_attr="label", iterations=depth + 1)


def source(arch: nx.DiGraph) -> str:
    """The one node with op "input" (SpaceError if there is not exactly one)."""
    found = sorted((n for n, op in arch.nodes(data="op") if op == "input"), key=str)
    if len(found) != 1:
        raise SpaceError(f"an architecture needs exactly one node with op 'input', got {found}")
    return found[0]


def sink(arch: nx.DiGraph) -> str:
    """The one node without outputs (SpaceError if there is not exactly one)."""
    found = [n for n in arch.nodes if arch.out_degree(n) == 0]
    if len(found) != 1:
        raise SpaceError(f"an architecture needs exactly one output node (no outgoing edges), got {sorted(found)}")
    return found[0]


def ordered_inputs(arch: nx.DiGraph, node: str) -> list[str]:
    """A node's predecessors in concat order: by edge ``slot``, then by id (deterministic)."""
    return sorted(arch.predecessors(node), key=lambda p: (arch.edges[p, node].get("slot", 0), str(p)))


def validate(arch: nx.DiGraph, ops: Collection[str] | None = None) -> None:
    """Check structure and op names; raise SpaceError with a one-line reason.

    Rules: a DiGraph; acyclic; one node with op "input", without incoming edges; every node
    reachable from it; one output (the one node without outgoing edges); string node ids; every
    op known (``ops``, default ``nas_meta.ops.OPS``); merge "sum" or "concat"; c_out and stride
    positive integers.  Shapes are checked by ``nas_meta.network.build`` on a dummy input.
    """
    if not isinstance(arch, nx.DiGraph) or arch.is_multigraph():
        raise SpaceError(f"an architecture must be a networkx.DiGraph, got {type(arch).__name__}")
    if len(arch) == 0:
        raise SpaceError("an architecture needs at least an input node, got an empty graph")
    if not nx.is_directed_acyclic_graph(arch):
        cycle = " -> ".join(str(u) for u, _ in nx.find_cycle(arch))
        raise SpaceError(f"an architecture must be acyclic, found the cycle {cycle}")
    start = source(arch)
    if arch.in_degree(start):
        raise SpaceError(f"the input node {start!r} must have no incoming edges, got {sorted(arch.predecessors(start))}")
    unreachable = set(arch) - nx.descendants(arch, start) - {start}
    if unreachable:
        raise SpaceError(f"nodes not reachable from the input {start!r}: {sorted(map(str, unreachable))}")
    sink(arch)
    if ops is None:
        from .ops import OPS  # lazy: this module stays torch-free until an op name must be checked

        ops = OPS
    for node, attrs in arch.nodes(data=True):
        if not isinstance(node, str):
            raise SpaceError(f"node ids must be strings, got {node!r}")
        op = attrs.get("op")
        if op == "none":
            raise SpaceError(f"node {node!r} has op 'none' (zero): drop the edge instead of making a node")
        if op not in ops:
            raise SpaceError(f"node {node!r} has unknown op {op!r}; choose from {sorted(ops)}")
        if attrs.get("merge", "sum") not in MERGES:
            raise SpaceError(f"node {node!r} has merge {attrs.get('merge')!r}; choose from {list(MERGES)}")
        for key in ("c_out", "stride"):
            value = attrs.get(key, 1)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise SpaceError(f"node {node!r} has {key}={value!r}; it must be a positive integer")


# --- io -------------------------------------------------------------------------------------------


def to_json(arch: nx.DiGraph) -> dict[str, Any]:
    """A versioned node-link document: ``{"format": "nas_meta.arch", "version": 1, ...}``."""
    doc = nx.node_link_data(arch, edges="edges")
    return {"format": "nas_meta.arch", "version": JSON_VERSION, "fingerprint": fingerprint(arch), **doc}


def from_json(doc: dict[str, Any]) -> nx.DiGraph:
    """Inverse of :func:`to_json`; SpaceError for another format or an unknown version."""
    if not isinstance(doc, dict) or doc.get("format") != "nas_meta.arch":
        raise SpaceError("not a nas_meta architecture document (missing \"format\": \"nas_meta.arch\")")
    if doc.get("version") != JSON_VERSION:
        raise SpaceError(f"unsupported architecture document version {doc.get('version')!r}; this nas_meta reads version {JSON_VERSION}")
    body = {k: v for k, v in doc.items() if k not in ("format", "version", "fingerprint")}
    try:
        arch = nx.node_link_graph(body, directed=True, multigraph=False, edges="edges")
    except (KeyError, TypeError, nx.NetworkXError) as exc:
        raise SpaceError(f"malformed architecture document: {exc}") from None
    return nx.DiGraph(arch)


def save_json(arch: nx.DiGraph, path: str | Path) -> None:
    """Write :func:`to_json` to ``path`` (indented, keys in file order)."""
    Path(path).write_text(json.dumps(to_json(arch), indent=1) + "\n")


def load_json(path: str | Path) -> nx.DiGraph:
    """Read an architecture written by :func:`save_json`; SpaceError naming the file on failure."""
    try:
        doc = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise SpaceError(f"cannot read architecture {str(path)!r}: {exc}") from None
    try:
        return from_json(doc)
    except SpaceError as exc:
        raise SpaceError(f"{path}: {exc}") from None


def save_graphml(arch: nx.DiGraph, path: str | Path) -> None:
    """GraphML for other tools; graph attributes that are not scalars are stored as JSON strings."""
    out = arch.copy()
    out.graph = {k: (v if isinstance(v, (str, int, float, bool)) else json.dumps(v)) for k, v in arch.graph.items()}
    out.graph["nas_meta_version"] = JSON_VERSION
    nx.write_graphml(out, str(path))


def load_graphml(path: str | Path) -> nx.DiGraph:
    """Read :func:`save_graphml` output back (``params`` decoded from JSON)."""
    arch = nx.DiGraph(nx.read_graphml(str(path)))
    if "params" in arch.graph and isinstance(arch.graph["params"], str):
        arch.graph["params"] = json.loads(arch.graph["params"])
    arch.graph.pop("nas_meta_version", None)
    return arch


# --- pictures -------------------------------------------------------------------------------------


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
        nodes.sort(key=lambda n: sum(rank[p] for p in g.predecessors(n)) / max(1, g.in_degree(n)) if g.in_degree(n) else 0.0)
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
    panels.append({"graph": macro, "title": "network: cells in order (arcs: a cell's input from two back)", "height": 1.6})
    for cell_type in ("normal", "reduce"):
        members = [n for n in arch if types.get(n) == cell_type]
        if not members:
            continue
        first = groups[members[0]]
        cell = arch.subgraph(n for n in arch if groups.get(n) == first).copy()
        for node, attrs in cell.nodes(data=True):
            attrs["label"] = node_text(attrs)
        for node in cell:
            if node.endswith("_in0") or node.endswith("_in1"):
                cell.nodes[node]["label"] = ("c_{k-2}" if node.endswith("0") else "c_{k-1}") + "\n" + cell.nodes[node]["label"]
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


def draw(arch: nx.DiGraph, path: str | Path, title: str | None = None) -> None:
    """Draw an architecture to a PNG, nodes labelled by op (``-> c_out``, ``/stride`` when set).

    A cell network gets a macro panel and one panel per cell type (its first cell: the two
    inputs, one node per op, the sums, the concat); other graphs are drawn top-down.
    """
    if any("cell_type" in attrs for _, attrs in arch.nodes(data=True)):
        panels = _cell_panels(arch)
    else:
        g = arch.copy()
        for node, attrs in g.nodes(data=True):
            attrs["label"] = node_text(attrs)
        grouped = bool(nx.get_node_attributes(g, "group"))
        pos = grouped_positions(g) if grouped else layered_positions(g, horizontal=False)
        for node, xy in pos.items():
            g.nodes[node]["pos"] = xy
        rows = max(y for _, y in pos.values()) - min(y for _, y in pos.values())
        panels = [{"graph": g, "title": "one column per block, top to bottom" if grouped else "top to bottom", "height": 1.5 + 0.8 * rows, "unit": 1.0}]
    params = arch.graph.get("params", {})
    where = f"space {arch.graph['space']} ({arch.graph.get('kind', '?')})  " if "space" in arch.graph else ""
    head = title or f"{where}architecture {fingerprint(arch)[:12]}"
    draw_panels(panels, path, head, footer=", ".join(f"{k}={v}" for k, v in params.items()))


def draw_panels(panels: list[dict[str, Any]], path: str | Path, title: str, footer: str = "") -> None:
    """Render panels to a PNG, one above the other.

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
    fig.suptitle(title, fontsize=12)
    for ax, panel in zip(axes, panels):
        g = panel["graph"]
        pos = nx.get_node_attributes(g, "pos")
        for u, v, attrs in g.edges(data=True):
            style = attrs.get("style", "solid")
            ax.add_patch(FancyArrowPatch(pos[u], pos[v], arrowstyle="-|>", mutation_scale=12, color="#555555", lw=1.0,
                                         linestyle={"solid": "-", "dashed": "--", "dotted": ":"}[style],
                                         connectionstyle=f"arc3,rad={attrs.get('rad', 0.0)}", zorder=1,
                                         shrinkA=_box_shrink(g.nodes[u], pos[u], pos[v]), shrinkB=_box_shrink(g.nodes[v], pos[v], pos[u])))
            if attrs.get("label"):
                (x0, y0), (x1, y1) = pos[u], pos[v]
                f = attrs.get("label_pos", 0.5)
                ax.text(x0 + f * (x1 - x0), y0 + f * (y1 - y0), attrs["label"], fontsize=7, ha="center", va="center", color="#1f3d7a",
                        bbox={"boxstyle": "round,pad=0.2", "fc": "#eef3ff", "ec": "none", "alpha": 0.9}, zorder=2)
        for node, (x, y) in pos.items():
            label = g.nodes[node].get("label", str(node))
            ax.text(x, y, label, ha="center", va="center", fontsize=8, zorder=3,
                    bbox={"boxstyle": "round,pad=0.35", "fc": _node_color(g.nodes[node]), "ec": "#333333", "lw": 0.8})
        xs, ys = [x for x, _ in pos.values()], [y for _, y in pos.values()]
        ax.set_xlim(min(xs) - 0.7, max(xs) + 0.7)
        ax.set_ylim(min(ys) - 0.8, max(ys) + 0.8)
        ax.set_title(panel.get("title", ""), fontsize=10, loc="left")
        ax.axis("off")
    if footer:
        fig.text(0.01, 0.005, footer, fontsize=7, va="bottom", family="monospace")
    fig.tight_layout(rect=(0, 0.02 + 0.012 * (footer.count("\n") + 1) if footer else 0, 1, 0.97))
    fig.savefig(str(path), dpi=110)


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
