"""The ``chain`` kind (stacked conv blocks, Conv-4 is one point), the ``resnet`` kind (residual
blocks of three convs, ResNet-12 is one point) and the ``mlp`` kind."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import networkx as nx

from ..model.ops import ACTIVATIONS
from .base import (
    MAX_DEPTH,
    MAX_WIDTH,
    REQUIRED,
    SPACE_KINDS,
    Choose,
    Reader,
    Space,
    bounded_int,
    one_of,
    options_text,
)

DEPTH = bounded_int(MAX_DEPTH), f"a positive integer up to {MAX_DEPTH}"
WIDTH = bounded_int(MAX_WIDTH), f"a positive integer up to {MAX_WIDTH}"

__all__ = ["ChainSpace", "MlpSpace", "ResNetSpace"]


def _stack_template(space: Space, unit: str, edge_text: Callable[[int], str]) -> nx.DiGraph:
    """A chain or mlp space drawn as input -> unit 1 -> ... -> unit D_max, options on the edges."""
    depths: list[int] = space.depth  # type: ignore[attr-defined]
    g = nx.DiGraph(
        title=f"{space.name}: {space.kind} of {options_text(depths)} {unit}s (options on the edges)", legend=""
    )
    g.graph["layout"] = "row"  # how viz.arch places the nodes (in this order)
    g.add_node("input", label="input")
    for b in range(1, max(depths) + 1):
        note = "" if b <= min(depths) else f"\n(if depth >= {b})"
        g.add_node(b, label=f"{unit} {b}{note}")
        g.add_edge(b - 1 if b > 1 else "input", b, label=edge_text(b), label_pos=0.45)
    g.add_node("output", label="features")
    for d in depths:
        g.add_edge(d, "output", label=f"depth {d}" if len(depths) > 1 else "", style="dotted")
    return g


def _block_choices(space: Space, prefix: str, per_block: dict[str, list], depths: list[int]) -> None:
    for b in range(1, max(depths) + 1):
        for key, options in per_block.items():
            space._add_choice(f"{prefix}{b}_{key}", options)


def _conditional_size(space: Space, global_keys: list[str], per_block: dict[str, list], depths: list[int]) -> int:
    fixed = math.prod(len(space._choices.get(k, [None])) for k in global_keys)
    block = math.prod(len(options) for options in per_block.values())
    return fixed * sum(block**d for d in depths)


@SPACE_KINDS.register("chain")
class ChainSpace(Space):
    """Stacked conv blocks: conv k x k (bias) -> norm -> activation -> 2x2 pool, optional residual.

    Global choices ``depth``, ``norm``, ``activation``; per block b (1-based) ``block<b>_width``,
    ``_kernel``, ``_pool``, ``_skip``.  With a skip the activation sums the norm output and the
    block input (through ``proj_1x1``: identity when the shape fits, else a 1x1 conv), as in a
    ResNet block, and pooling follows.  Conv-4 (MAML / ProtoNets) is depth 4, width 64, kernel 3,
    batch norm, relu, max pool, no skip: search_spaces/conv4.yaml.
    """

    kind = "chain"
    keys = ("depth", "width", "kernel", "pool", "norm", "activation", "skip")

    def __init__(self, name: str, path: Path, doc: dict[str, Any]) -> None:
        super().__init__(name, path, doc)
        r = Reader(doc, path, self.keys)
        self.depth = r.options("depth", REQUIRED, *DEPTH)
        self.norm = r.options("norm", "batch", one_of("batch", "instance", "none"), "'batch', 'instance' or 'none'")
        self.activation = r.options("activation", "relu", one_of(*ACTIVATIONS), f"one of {list(ACTIVATIONS)}")
        self.per_block = {
            "width": r.options("width", REQUIRED, *WIDTH),
            "kernel": r.options("kernel", 3, one_of(1, 3, 5, 7), "1, 3, 5 or 7"),
            "pool": r.options("pool", "max", one_of("max", "avg", "none"), "'max', 'avg' or 'none'"),
            "skip": r.options("skip", False, one_of(False, True), "true or false"),
        }
        for key in ("depth", "norm", "activation"):
            self._add_choice(key, getattr(self, key))
        _block_choices(self, "block", self.per_block, self.depth)

    def size(self) -> int:
        return _conditional_size(self, ["norm", "activation"], self.per_block, self.depth)

    def template(self) -> nx.DiGraph:
        p = self.per_block
        kernels = options_text([f"{k}x{k}" for k in p["kernel"]])

        def block(b: int) -> str:
            skip = f"\nresidual {options_text(p['skip'])}" if p["skip"] != [False] else ""
            return (
                f"conv {kernels}, width {options_text(p['width'])}\n"
                f"norm {options_text(self.norm)}, {options_text(self.activation)}\n"
                f"pool {options_text(p['pool'])}{skip}"
            )

        g = _stack_template(self, "block", block)
        g.graph["legend"] = "every block: conv -> norm -> activation (+ the block input if residual) -> 2x2 pool"
        return g

    def _build(self, choose: Choose) -> nx.DiGraph:
        depth = choose("depth", self.depth)
        norm = choose("norm", self.norm)
        activation = choose("activation", self.activation)
        arch = nx.DiGraph()
        arch.add_node("input", op="input")
        prev = "input"
        for b in range(1, depth + 1):
            width, kernel, pool, skip = (
                choose(f"block{b}_{k}", self.per_block[k]) for k in ("width", "kernel", "pool", "skip")
            )
            tag = {"group": f"block{b}"}
            chain = [(f"b{b}_conv", {"op": f"conv_{kernel}x{kernel}", "c_out": width})]
            if norm != "none":
                chain.append((f"b{b}_norm", {"op": f"{norm}_norm"}))
            chain.append((f"b{b}_act", {"op": activation}))
            if pool != "none":
                chain.append((f"b{b}_pool", {"op": f"{pool}_pool_2x2"}))
            block_input = prev
            for node, attrs in chain:
                arch.add_node(node, **attrs, **tag)
                arch.add_edge(prev, node)
                prev = node
            if skip:
                arch.add_node(f"b{b}_skip", op="proj_1x1", c_out=width, **tag)
                arch.add_edge(block_input, f"b{b}_skip")
                arch.add_edge(f"b{b}_skip", f"b{b}_act")
        return arch


@SPACE_KINDS.register("mlp")
class MlpSpace(Space):
    """Fully connected layers for vector inputs (images are flattened first).

    Choices ``depth``, ``activation`` and per layer l (1-based) ``layer<l>_width``.  The MAML
    sinusoid network (2 hidden layers of 40, ReLU) is depth 2, width 40; the learner adds the head.
    """

    kind = "mlp"
    keys = ("depth", "width", "activation")

    def __init__(self, name: str, path: Path, doc: dict[str, Any]) -> None:
        super().__init__(name, path, doc)
        r = Reader(doc, path, self.keys)
        self.depth = r.options("depth", REQUIRED, *DEPTH)
        self.activation = r.options("activation", "relu", one_of(*ACTIVATIONS), f"one of {list(ACTIVATIONS)}")
        self.per_block = {"width": r.options("width", REQUIRED, *WIDTH)}
        self._add_choice("depth", self.depth)
        self._add_choice("activation", self.activation)
        _block_choices(self, "layer", self.per_block, self.depth)

    def size(self) -> int:
        return _conditional_size(self, ["activation"], self.per_block, self.depth)

    def template(self) -> nx.DiGraph:
        return _stack_template(
            self, "layer", lambda _: f"linear {options_text(self.per_block['width'])}\n{options_text(self.activation)}"
        )

    def _build(self, choose: Choose) -> nx.DiGraph:
        depth = choose("depth", self.depth)
        activation = choose("activation", self.activation)
        arch = nx.DiGraph()
        arch.add_node("input", op="input")
        arch.add_node("flatten", op="flatten")
        arch.add_edge("input", "flatten")
        prev = "flatten"
        for layer in range(1, depth + 1):
            width = choose(f"layer{layer}_width", self.per_block["width"])
            for node, attrs in (
                (f"l{layer}_linear", {"op": "linear", "c_out": width}),
                (f"l{layer}_act", {"op": activation}),
            ):
                arch.add_node(node, **attrs, group=f"layer{layer}")
                arch.add_edge(prev, node)
                prev = node
        return arch


@SPACE_KINDS.register("resnet")
class ResNetSpace(Space):
    """Residual blocks of the few-shot ResNet-12 (Oreshkin et al. 2018; Lee et al. 2019): per block
    three 3x3 conv + BatchNorm (no bias), the activation after the first two, a 1x1 conv +
    BatchNorm shortcut added before the third activation, then 2x2 max-pool.

    Choices ``depth``, ``activation`` and per block b ``block<b>_width``.  ResNet-12 is depth 4,
    widths 64, 160, 320, 640, leaky_relu (slope 0.1): search_spaces/resnet12.yaml.  A list of
    lists in ``width`` fixes one width per block (``[[64, 160, 320, 640]]``).
    """

    kind = "resnet"
    keys = ("depth", "width", "activation")

    def __init__(self, name: str, path: Path, doc: dict[str, Any]) -> None:
        super().__init__(name, path, doc)
        r = Reader(doc, path, self.keys)
        self.depth = r.options("depth", REQUIRED, *DEPTH)
        self.activation = r.options("activation", "leaky_relu", one_of(*ACTIVATIONS), f"one of {list(ACTIVATIONS)}")
        widths = r.get("width", REQUIRED)
        # A list of per-block widths (one per block, fixed), or width options shared by every block.
        per_block = isinstance(widths, list) and len(widths) == 1 and isinstance(widths[0], list)
        if per_block:
            fixed = widths[0]
            if len(fixed) != max(self.depth) or not all(WIDTH[0](w) for w in fixed):
                r.fail(
                    "width",
                    f"[[w1, ..., wD]] needs {max(self.depth)} positive integers up to {MAX_WIDTH}, got {fixed!r}",
                )
            self.block_widths: list[list[int]] = [[w] for w in fixed]
        else:
            options = r.options("width", REQUIRED, *WIDTH)
            self.block_widths = [list(options) for _ in range(max(self.depth))]
        self._add_choice("depth", self.depth)
        self._add_choice("activation", self.activation)
        for b, options in enumerate(self.block_widths, start=1):
            self._add_choice(f"block{b}_width", options)

    def size(self) -> int:
        activations = len(self.activation)
        return activations * sum(math.prod(len(o) for o in self.block_widths[:d]) for d in self.depth)

    def template(self) -> nx.DiGraph:
        return _stack_template(
            self,
            "block",
            lambda b: (
                f"3 x conv 3x3 + BN, width {options_text(self.block_widths[b - 1])}\n"
                f"{options_text(self.activation)}, 1x1 shortcut, max-pool"
            ),
        )

    def _build(self, choose: Choose) -> nx.DiGraph:
        depth = choose("depth", self.depth)
        activation = choose("activation", self.activation)
        arch = nx.DiGraph()
        arch.add_node("input", op="input")
        prev = "input"
        for b in range(1, depth + 1):
            width = choose(f"block{b}_width", self.block_widths[b - 1])
            tag = {"group": f"block{b}"}
            block_input = prev
            for i in (1, 2, 3):
                arch.add_node(f"b{b}_conv{i}", op="conv_bn_3x3", c_out=width, **tag)
                arch.add_edge(prev, f"b{b}_conv{i}")
                prev = f"b{b}_conv{i}"
                if i < 3:
                    arch.add_node(f"b{b}_act{i}", op=activation, **tag)
                    arch.add_edge(prev, f"b{b}_act{i}")
                    prev = f"b{b}_act{i}"
            arch.add_node(f"b{b}_shortcut", op="conv_bn_1x1", c_out=width, **tag)
            arch.add_edge(block_input, f"b{b}_shortcut")
            arch.add_node(f"b{b}_act3", op=activation, **tag)  # sums the third conv and the shortcut
            arch.add_edge(prev, f"b{b}_act3")
            arch.add_edge(f"b{b}_shortcut", f"b{b}_act3")
            arch.add_node(f"b{b}_pool", op="max_pool_2x2", **tag)
            arch.add_edge(f"b{b}_act3", f"b{b}_pool")
            prev = f"b{b}_pool"
        return arch
