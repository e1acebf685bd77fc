"""Architecture graphs: validate, fingerprint, JSON/GraphML io (pictures: nas_meta.viz.arch).  No torch here.

An architecture is a plain ``networkx.DiGraph``:

- ``arch.graph``: ``{"space": name, "kind": "cell"|"chain"|"mlp", "params": {choice: value}}``;
- node ids are strings; node attributes ``op`` (a name in ``nas_meta.model.ops.OPS``; the one source has
  ``op="input"``), ``merge`` ("sum" default, or "concat"), ``c_out`` (absent = as merged input),
  ``stride`` (default 1); optional ``group`` (e.g. "cell2") and ``cell_type`` only for pictures,
  and ``share``: the node's weight slot in a supernet (default: its id; model/supernet.py);
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

import hashlib
import json
import warnings
from collections.abc import Collection
from pathlib import Path
from typing import Any

import networkx as nx

from .errors import SpaceError
from .fileio import atomic_write, atomic_write_text, decode_utf8

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
]

JSON_VERSION = 1
MERGES = ("sum", "concat")
# Bounds that no few-shot backbone comes near; past them a file is a mistake, and building it
# would exhaust memory instead of saying so.
MAX_WIDTH = 4096
MAX_STRIDE = 8
MAX_NODES = 10_000


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
    one networkx version range (>= 3.5).  A candidate drawn with a training recipe
    (``arch.graph["recipe"]``, a space's ``recipe:`` block) hashes the recipe too.
    """
    labelled = nx.DiGraph()
    for node, attrs in arch.nodes(data=True):
        labelled.add_node(node, label=node_label(attrs))
    labelled.add_edges_from(arch.edges())
    depth = nx.dag_longest_path_length(labelled) if nx.is_directed_acyclic_graph(labelled) else len(labelled)
    with warnings.catch_warnings():  # networkx warns on every call that 3.5 changed directed hashes
        warnings.filterwarnings("ignore", message="The hashes produced for directed graphs")
        wl = nx.weisfeiler_lehman_graph_hash(labelled, node_attr="label", iterations=depth + 1)
    recipe = arch.graph.get("recipe")
    if not recipe:
        return wl
    # A candidate is an architecture and how it is trained: the same graph under another recipe
    # is another candidate (and an architecture without a recipe keeps its plain WL hash).
    text = wl + json.dumps(recipe, sort_keys=True)
    return hashlib.blake2b(text.encode(), digest_size=len(wl) // 2).hexdigest()


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
    op one of ``ops`` when given (the compiler and the spaces pass ``nas_meta.model.ops.OPS``: this
    module knows no op table); merge "sum" or "concat"; c_out and stride positive integers.  Shapes
    are checked by ``nas_meta.model.network.build`` on a dummy input.
    """
    if not isinstance(arch, nx.DiGraph) or arch.is_multigraph():
        raise SpaceError(f"an architecture must be a networkx.DiGraph, got {type(arch).__name__}")
    if len(arch) == 0:
        raise SpaceError("an architecture needs at least an input node, got an empty graph")
    if len(arch) > MAX_NODES:
        raise SpaceError(f"an architecture may have at most {MAX_NODES} nodes, got {len(arch)}")
    if not nx.is_directed_acyclic_graph(arch):
        cycle = " -> ".join(str(u) for u, _ in nx.find_cycle(arch))
        raise SpaceError(f"an architecture must be acyclic, found the cycle {cycle}")
    start = source(arch)
    if arch.in_degree(start):
        raise SpaceError(
            f"the input node {start!r} must have no incoming edges, got {sorted(arch.predecessors(start))}"
        )
    unreachable = set(arch) - nx.descendants(arch, start) - {start}
    if unreachable:
        raise SpaceError(f"nodes not reachable from the input {start!r}: {sorted(map(str, unreachable))}")
    sink(arch)
    for node, attrs in arch.nodes(data=True):
        if not isinstance(node, str):
            raise SpaceError(f"node ids must be strings, got {node!r}")
        op = attrs.get("op")
        if op == "none":
            raise SpaceError(f"node {node!r} has op 'none' (zero): drop the edge instead of making a node")
        if ops is not None and op not in ops:
            raise SpaceError(f"node {node!r} has unknown op {op!r}; choose from {sorted(ops)}")
        if attrs.get("merge", "sum") not in MERGES:
            raise SpaceError(f"node {node!r} has merge {attrs.get('merge')!r}; choose from {list(MERGES)}")
        for key, limit in (("c_out", MAX_WIDTH), ("stride", MAX_STRIDE)):
            value = attrs.get(key, 1)
            if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= limit:
                raise SpaceError(f"node {node!r} has {key}={value!r}; it must be an integer from 1 to {limit}")


# --- io -------------------------------------------------------------------------------------------


def to_json(arch: nx.DiGraph) -> dict[str, Any]:
    """A versioned node-link document: ``{"format": "nas_meta.arch", "version": 1, ...}``."""
    doc = nx.node_link_data(arch, edges="edges")
    return {"format": "nas_meta.arch", "version": JSON_VERSION, "fingerprint": fingerprint(arch), **doc}


def from_json(doc: dict[str, Any]) -> nx.DiGraph:
    """Inverse of :func:`to_json`; SpaceError for another format, an unknown version or a
    malformed body.  The document is data: nothing named in it is imported or executed."""
    if not isinstance(doc, dict) or doc.get("format") != "nas_meta.arch":
        raise SpaceError('not a nas_meta architecture document (missing "format": "nas_meta.arch")')
    if doc.get("version") != JSON_VERSION or isinstance(doc.get("version"), bool):
        raise SpaceError(
            f"unsupported architecture document version {doc.get('version')!r}; "
            f"this nas_meta reads version {JSON_VERSION}"
        )
    attrs, nodes, edges = doc.get("graph", {}), doc.get("nodes"), doc.get("edges")
    if not isinstance(attrs, dict):
        raise SpaceError(f"malformed architecture document: 'graph' must be an object, got {type(attrs).__name__}")
    if not isinstance(nodes, list) or not all(isinstance(n, dict) and isinstance(n.get("id"), str) for n in nodes):
        raise SpaceError("malformed architecture document: 'nodes' must be a list of objects with a string 'id'")
    if not isinstance(edges, list) or not all(isinstance(e, dict) for e in edges):
        raise SpaceError("malformed architecture document: 'edges' must be a list of objects")
    arch = nx.DiGraph(**attrs)
    for node in nodes:
        arch.add_node(node["id"], **{k: v for k, v in node.items() if k != "id"})
    for edge in edges:
        u, v = edge.get("source"), edge.get("target")
        if u not in arch or v not in arch:
            raise SpaceError(f"malformed architecture document: edge {u!r} -> {v!r} names a missing node")
        arch.add_edge(u, v, **{k: x for k, x in edge.items() if k not in ("source", "target")})
    return arch


def save_json(arch: nx.DiGraph, path: str | Path) -> None:
    """Write :func:`to_json` to ``path`` atomically (indented, keys in file order)."""
    atomic_write_text(path, json.dumps(to_json(arch), indent=1) + "\n")


def load_json(path: str | Path) -> nx.DiGraph:
    """Read an architecture written by :func:`save_json`; SpaceError naming the file on failure."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise SpaceError(f"cannot read architecture {str(path)!r}: {exc.strerror or exc}") from None
    text = decode_utf8(data, path, SpaceError)  # JSON is UTF-8 (RFC 8259)

    def refuse_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        # json.loads keeps the last of two equal keys silently: a hand-edited file that says two things is refused.
        obj: dict[str, Any] = {}
        for key, value in pairs:
            if key in obj:
                raise ValueError(f"key {key!r} is given twice in one object")
            obj[key] = value
        return obj

    try:
        doc = json.loads(text, object_pairs_hook=refuse_duplicate_keys)
    except RecursionError:
        raise SpaceError(f"cannot read architecture {str(path)!r}: arrays or objects nested too deeply") from None
    except ValueError as exc:  # JSONDecodeError, a duplicate key, an integer of thousands of digits
        reason = str(exc).split(";")[0]  # not Python's advice to raise its own limits
        raise SpaceError(f"cannot read architecture {str(path)!r}: {reason}") from None
    try:
        return from_json(doc)
    except SpaceError as exc:
        raise SpaceError(f"{path}: {exc}") from None


def save_graphml(arch: nx.DiGraph, path: str | Path) -> None:
    """GraphML for other tools; graph attributes that are not scalars are stored as JSON strings."""
    out = arch.copy()
    out.graph = {k: (v if isinstance(v, (str, int, float, bool)) else json.dumps(v)) for k, v in arch.graph.items()}
    out.graph["nas_meta_version"] = JSON_VERSION
    atomic_write(path, lambda f: nx.write_graphml(out, f))


def load_graphml(path: str | Path) -> nx.DiGraph:
    """Read :func:`save_graphml` output back (``params`` and ``recipe`` decoded from JSON);
    SpaceError naming the file when it is not GraphML.  XML declares its own encoding, which the
    parser honours; a file whose bytes do not match it is malformed XML."""
    try:
        arch = nx.DiGraph(nx.read_graphml(str(path)))
    except OSError as exc:
        raise SpaceError(f"cannot read architecture {str(path)!r}: {exc.strerror or exc}") from None
    except (SyntaxError, nx.NetworkXError, KeyError, ValueError, TypeError, AttributeError) as exc:
        # networkx's reader reports a malformed file with whatever failed inside it: ParseError (a
        # SyntaxError) for bad XML or encoding, KeyError for an unknown attr.type or a boolean that
        # is not true/false, ValueError for a number that is not one, AttributeError for an empty one.
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise SpaceError(f"{path}: not a GraphML architecture: {reason}") from None
    for key in ("params", "recipe"):
        if key in arch.graph and isinstance(arch.graph[key], str):
            try:
                arch.graph[key] = json.loads(arch.graph[key])
            except (ValueError, RecursionError) as exc:
                reason = str(exc).split(";")[0] if isinstance(exc, ValueError) else "nested too deeply"
                raise SpaceError(
                    f"{path}: graph attribute {key!r} is not the JSON save_graphml writes: {reason}"
                ) from None
    arch.graph.pop("nas_meta_version", None)
    return arch
