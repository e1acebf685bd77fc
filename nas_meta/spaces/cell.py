"""The ``cell`` kind: DARTS cells (Liu et al., ICLR 2019) stacked after a conv stem."""

from __future__ import annotations

import math
from itertools import combinations
from pathlib import Path
from typing import Any

import networkx as nx

from ..model.ops import DARTS_OPS, OPS, ZERO
from .base import (
    MAX_CELL_NODES,
    MAX_CELLS,
    MAX_WIDTH,
    SPACE_KINDS,
    Choose,
    Reader,
    Space,
    bounded_int,
    one_of,
    options_text,
)

__all__ = ["CellSpace", "build_cells"]


@SPACE_KINDS.register("cell")
class CellSpace(Space):
    """DARTS-style cells (Liu et al., ICLR 2019) stacked after a conv stem.

    Each cell has two inputs (the two previous cells' outputs, 1x1 ReLU-conv-BN preprocessed, or
    FactorizedReduce after a reduce cell) and ``nodes`` intermediate nodes; node k sums two ops
    applied to two distinct earlier nodes (choice ``<type>_n<k>_inputs`` like "0-2", ops
    ``<type>_n<k>_op0`` / ``_op1``).  The cell output concatenates the intermediate nodes.  Every
    reduce cell halves the map (stride 2 on edges from the cell inputs) and doubles the channels.
    All cells of one type share one genotype.  Each op becomes a node of the architecture graph.

    The zero op ``none`` drops its edge.  A node all of whose inputs are dropped is zero and is
    dropped too (with its own outgoing edges; ``op(0)`` is taken as 0, the DARTS genotype reading).
    A cell left with no live node passes its previous cell on through ``skip_connect`` (with the
    cell's stride), so shapes still fit and the network still learns.
    """

    kind = "cell"
    keys = ("ops", "nodes", "layout", "channels", "stem_channels", "stem_stride")

    def __init__(self, name: str, path: Path, doc: dict[str, Any]) -> None:
        super().__init__(name, path, doc)
        r = Reader(doc, path, self.keys)
        ops = r.get("ops", list(DARTS_OPS))
        if not isinstance(ops, list) or not ops or not all(isinstance(o, str) for o in ops):
            r.fail("ops", f"must be a non-empty list of op names, got {ops!r}")
        for op in ops:
            if op != ZERO and op not in OPS:
                r.fail("ops", f"lists unknown op {op!r}; choose from {[ZERO, *OPS.names()]}")
        if len(set(ops)) != len(ops) or ops == [ZERO]:
            r.fail("ops", f"must list distinct ops, not only 'none', got {ops}")
        self.ops: list[str] = ops
        self.nodes: int = r.get("nodes", 4)
        if not bounded_int(MAX_CELL_NODES)(self.nodes):
            r.fail("nodes", f"must be a positive integer up to {MAX_CELL_NODES}, got {self.nodes!r}")
        layout = r.get("layout", ["normal", "reduce", "normal", "reduce"])
        if not isinstance(layout, list) or not layout or any(t not in ("normal", "reduce") for t in layout):
            r.fail("layout", f"must be a non-empty list of 'normal' / 'reduce', got {layout!r}")
        if len(layout) > MAX_CELLS:
            r.fail("layout", f"lists {len(layout)} cells; at most {MAX_CELLS} are allowed")
        self.layout: list[str] = layout
        width = bounded_int(MAX_WIDTH), f"a positive integer up to {MAX_WIDTH}"
        self.channels = r.options("channels", 8, *width)
        self.stem_channels = r.options("stem_channels", 16, *width)
        # Sizes that only combine into trouble: each reduce cell doubles C, and a cell's output
        # concatenates its nodes.  The widest output is estimated here, before anything is built.
        widest = max(self.channels) * 2 ** layout.count("reduce") * self.nodes
        if widest > MAX_WIDTH:
            r.fail(
                "layout",
                f"with channels {max(self.channels)}, {layout.count('reduce')} reduce cells and {self.nodes} nodes "
                f"makes cell outputs {widest:,} channels wide; at most {MAX_WIDTH} are allowed",
            )
        self.stem_stride = r.options("stem_stride", 2, one_of(1, 2), "1 or 2")
        self._add_choice("channels", self.channels)
        self._add_choice("stem_channels", self.stem_channels)
        self._add_choice("stem_stride", self.stem_stride)
        for cell_type in self.cell_types:
            for k in range(2, self.nodes + 2):
                self._add_choice(f"{cell_type}_n{k}_inputs", [f"{i}-{j}" for i, j in combinations(range(k), 2)])
                self._add_choice(f"{cell_type}_n{k}_op0", self.ops)
                self._add_choice(f"{cell_type}_n{k}_op1", self.ops)

    @property
    def cell_types(self) -> list[str]:
        return [t for t in ("normal", "reduce") if t in self.layout]

    def size(self) -> int:
        """Distinct choice assignments.  Input pairs are unordered, so swapped edges count once;
        assignments that differ only where 'none' dropped an edge still count apart (an upper bound)."""
        return math.prod(len(options) for options in self._choices.values())

    def template(self) -> nx.DiGraph:
        g = nx.DiGraph(
            title=f"{self.name}: one cell (normal and reduce cells each pick their own genotype)",
            legend=f"Every solid edge carries one op from: {', '.join(self.ops)}.  Each node keeps 2 of its "
            f"incoming edges and sums them; dotted: concatenated into the output.  Layout {self.layout}; "
            f"C = {options_text(self.channels)}, doubled at each reduce cell.",
        )
        names = ["in0", "in1", *(f"n{k}" for k in range(2, self.nodes + 2)), "out"]
        labels = [
            "c_{k-2}",
            "c_{k-1}",
            *(f"node {k}\n(sum of 2)" for k in range(2, self.nodes + 2)),
            "cell output\n(concat)",
        ]
        g.graph["layout"] = "ellipse"  # how viz.arch places the nodes (in this order)
        for name, label in zip(names, labels, strict=True):
            g.add_node(name, label=label)
        for k in range(2, self.nodes + 2):
            for j in range(k):
                g.add_edge(names[j], f"n{k}", label=f"1 of {len(self.ops)} ops", label_pos=0.7)
            g.add_edge(f"n{k}", "out", style="dotted")
        return g

    def _genotype(self, choose: Choose, cell_type: str) -> list[list[tuple[int, str]]]:
        genotype = []
        for k in range(2, self.nodes + 2):
            pair = choose(f"{cell_type}_n{k}_inputs", [f"{i}-{j}" for i, j in combinations(range(k), 2)])
            ops = [choose(f"{cell_type}_n{k}_op{e}", self.ops) for e in (0, 1)]
            genotype.append(list(zip(map(int, pair.split("-")), ops, strict=True)))
        return genotype

    def _build(self, choose: Choose) -> nx.DiGraph:
        channels = choose("channels", self.channels)
        stem_channels = choose("stem_channels", self.stem_channels)
        stem_stride = choose("stem_stride", self.stem_stride)
        genotypes = {t: self._genotype(choose, t) for t in self.cell_types}
        return build_cells(
            genotypes, self.layout, channels=channels, stem_channels=stem_channels, stem_stride=stem_stride
        )


def build_cells(
    genotypes: dict[str, list[list[tuple[int, str]]]],
    layout: list[str],
    *,
    channels: int,
    stem_channels: int,
    stem_stride: int = 1,
) -> nx.DiGraph:
    """A cell network graph from genotypes: ``{"normal": [[(input, op), ...] per node], ...}``.

    Inputs are DARTS indices: 0 and 1 are the cell inputs, k >= 2 the intermediate nodes.
    """
    arch = nx.DiGraph()
    arch.add_node("input", op="input")
    arch.add_node("stem", op="conv_bn_3x3", c_out=stem_channels, stride=stem_stride, group="stem")
    arch.add_edge("input", "stem")
    prev_prev, prev, c, reduction_prev = "stem", "stem", channels, False
    for index, cell_type in enumerate(layout):
        reduce = cell_type == "reduce"
        c = c * 2 if reduce else c
        cell = f"cell{index}"
        tag = {"group": cell, "cell_type": cell_type}
        states = [f"{cell}_in0", f"{cell}_in1"]
        if reduction_prev:  # the cell two back is twice as large: halve it
            arch.add_node(states[0], op="factorized_reduce", c_out=c, stride=2, **tag)
        else:
            arch.add_node(states[0], op="relu_conv_bn_1x1", c_out=c, **tag)
        arch.add_node(states[1], op="relu_conv_bn_1x1", c_out=c, **tag)
        arch.add_edge(prev_prev, states[0])
        arch.add_edge(prev, states[1])
        live = [True, True]
        for k, edges in enumerate(genotypes[cell_type], start=2):
            node = f"{cell}_n{k}"
            kept = [(j, op) for j, op in edges if op != ZERO and live[j]]
            live.append(bool(kept))
            states.append(node)
            if not kept:
                continue
            arch.add_node(node, op="identity", merge="sum", **tag)
            for e, (j, op) in enumerate(kept):
                op_node = f"{node}_e{e}"
                # In a supernet the op of edge j -> k keeps one set of weights, whichever of the
                # node's two slots it fills (model/supernet.py).
                share = f"{node}<-{states[j]}"
                arch.add_node(op_node, op=op, c_out=c, stride=2 if reduce and j < 2 else 1, share=share, **tag)
                arch.add_edge(states[j], op_node)
                arch.add_edge(op_node, node)
        out = f"{cell}_out"
        alive = [states[k] for k in range(2, len(states)) if live[k]]
        if alive:
            arch.add_node(out, op="identity", merge="concat", **tag)
            for slot, node in enumerate(alive):
                arch.add_edge(node, out, slot=slot)
        else:
            arch.add_node(out, op="skip_connect", c_out=c, stride=2 if reduce else 1, **tag)
            arch.add_edge(states[1], out)
        prev_prev, prev, reduction_prev = prev, out, reduce
    arch.add_node("output", op="global_avg_pool", group="head")
    arch.add_edge(prev, "output")
    return arch
