"""Search spaces: a YAML file -> a function ``build(choose) -> architecture graph``.

A space never builds modules: it makes a ``networkx.DiGraph`` (see ``nas_meta.graph``) from a few
named categorical choices, and ``nas_meta.model.network.build`` compiles it.  ``choose(name, options)``
may be ``optuna.Trial.suggest_categorical``, a seeded random choice (:meth:`Space.sample`) or a
look-up in stored params (:meth:`Space.from_params`); a name always comes with the same options.

    >>> import random
    >>> space = load_space("cell")
    >>> arch = space.sample(random.Random(0))
    >>> space.from_params(arch.graph["params"]).graph == arch.graph
    True

Kinds: ``cell`` (DARTS cells), ``chain`` (stacked conv blocks, Conv-4 is one point), ``mlp``.
The file format is documented in search_spaces/README.md.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from itertools import combinations
from pathlib import Path
from typing import Any, ClassVar, NoReturn

import networkx as nx
import yaml

from . import graph
from .errors import SpaceError
from .model.ops import DARTS_OPS, OPS, ZERO
from .registry import Registry

__all__ = ["Space", "CellSpace", "ChainSpace", "MlpSpace", "KINDS", "SPACES_DIR", "load_space", "list_spaces", "draw_space"]

Choose = Callable[[str, list], Any]


def _find_spaces_dir() -> Path:
    # Shipped as package data (nas_meta/search_spaces) in a wheel; the repo's top-level folder otherwise.
    here = Path(__file__).resolve().parent
    packaged = here / "search_spaces"
    return packaged if packaged.is_dir() else here.parent / "search_spaces"


SPACES_DIR = _find_spaces_dir()
KINDS: Registry[type[Space]] = Registry("space kind", error=SpaceError)
ACTIVATIONS = ("relu", "leaky_relu", "elu", "gelu", "silu", "tanh", "sigmoid")


class _Reader:
    """Typed access to a YAML mapping; every error names the file and the key."""

    def __init__(self, doc: dict[str, Any], path: Path, keys: tuple[str, ...]) -> None:
        self.doc, self.path = doc, path
        unknown = sorted(set(doc) - set(keys) - {"kind", "name", "description"})
        if unknown:
            self.fail(unknown[0], f"is not a key of a {doc['kind']} space; choose from {sorted(keys)}")

    def fail(self, key: str, message: str) -> NoReturn:
        raise SpaceError(f"{self.path}: key {key!r} {message}")

    def get(self, key: str, default: Any) -> Any:
        if key not in self.doc:
            if default is _REQUIRED:
                self.fail(key, "is missing")
            return default
        return self.doc[key]

    def options(self, key: str, default: Any, check: Callable[[Any], bool], what: str) -> list:
        """A value or a non-empty list of values (a choice); returns the list of options."""
        value = self.get(key, default)
        values = value if isinstance(value, list) else [value]
        if not values:
            self.fail(key, f"must be {what} or a non-empty list of them, got []")
        for item in values:
            if not check(item):
                self.fail(key, f"must be {what} or a list of them, got {item!r}")
        if len(set(map(repr, values))) != len(values):
            self.fail(key, f"lists an option twice: {values}")
        return values


_REQUIRED = object()


def _positive_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool) and x >= 1


def _one_of(*allowed: Any) -> Callable[[Any], bool]:
    # By type too: YAML's `true` must not pass for 1, nor 1 for `true`.
    return lambda x: any(type(x) is type(a) and x == a for a in allowed)


class Space:
    """A named search space.  Subclasses (one per kind) define ``choices`` and ``_build``."""

    kind: ClassVar[str]
    keys: ClassVar[tuple[str, ...]]

    def __init__(self, name: str, path: Path, doc: dict[str, Any]) -> None:
        self.name, self.path = name, path
        self.description = str(doc.get("description", ""))
        self._choices: dict[str, list] = {}

    def _add_choice(self, name: str, options: list) -> None:
        if len(options) > 1:  # a single option is a fixed value, not a choice
            self._choices[name] = list(options)

    def choices(self) -> dict[str, list]:
        """Every choice name -> its options (conditional ones included, e.g. block5_width)."""
        return {name: list(options) for name, options in self._choices.items()}

    def size(self) -> int:
        """Number of distinct architectures (distinct assignments of the choices that are asked)."""
        raise NotImplementedError

    def _build(self, choose: Callable[[str, list], Any]) -> nx.DiGraph:
        raise NotImplementedError

    def template(self) -> nx.DiGraph:
        """The space's graph for pictures: edges carry ``label`` (their candidate ops)."""
        raise NotImplementedError

    def build(self, choose: Choose) -> nx.DiGraph:
        """Make one architecture, asking ``choose(name, options)`` for each choice it needs."""
        params: dict[str, Any] = {}

        def ask(name: str, options: list) -> Any:
            if len(options) == 1:
                return options[0]
            if self._choices.get(name) != options:
                raise RuntimeError(f"bug: choice {name!r} asked with {options}, declared {self._choices.get(name)}")
            value = choose(name, list(options))
            params[name] = value
            return value

        arch = self._build(ask)
        # Nodes that cannot reach the output (an unused cell input) would be extra sinks.
        out = "output" if "output" in arch else graph.sink(arch)
        arch.remove_nodes_from(set(arch) - nx.ancestors(arch, out) - {out})
        arch.graph.update(space=self.name, kind=self.kind, params=params)
        graph.validate(arch)
        return arch

    def sample(self, rng: random.Random) -> nx.DiGraph:
        """One architecture drawn uniformly choice by choice from ``rng`` (same seed, same arch)."""
        return self.build(lambda name, options: options[rng.randrange(len(options))])

    def from_params(self, params: dict[str, Any]) -> nx.DiGraph:
        """Rebuild the architecture of stored params; keys the space does not ask are ignored."""

        def lookup(name: str, options: list) -> Any:
            if name not in params:
                raise SpaceError(f"space {self.name!r}: params lack choice {name!r} (options {options})")
            value = params[name]
            if not any(value == o and type(value) is type(o) for o in options):
                raise SpaceError(f"space {self.name!r}: choice {name!r} = {value!r} is not one of {options}")
            return value

        return self.build(lookup)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, choices={len(self._choices)}, size={self.size()})"


@KINDS.register("cell")
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
        r = _Reader(doc, path, self.keys)
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
        if not _positive_int(self.nodes):
            r.fail("nodes", f"must be a positive integer, got {self.nodes!r}")
        layout = r.get("layout", ["normal", "reduce", "normal", "reduce"])
        if not isinstance(layout, list) or not layout or any(t not in ("normal", "reduce") for t in layout):
            r.fail("layout", f"must be a non-empty list of 'normal' / 'reduce', got {layout!r}")
        self.layout: list[str] = layout
        self.channels = r.options("channels", 8, _positive_int, "a positive integer")
        self.stem_channels = r.options("stem_channels", 16, _positive_int, "a positive integer")
        self.stem_stride = r.options("stem_stride", 2, _one_of(1, 2), "1 or 2")
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
        g = nx.DiGraph(title=f"{self.name}: one cell (normal and reduce cells each pick their own genotype)",
                       legend=f"Every solid edge carries one op from: {', '.join(self.ops)}.  Each node keeps 2 of its "
                       f"incoming edges and sums them; dotted: concatenated into the output.  Layout {self.layout}; "
                       f"C = {_opts(self.channels)}, doubled at each reduce cell.")
        names = ["in0", "in1", *(f"n{k}" for k in range(2, self.nodes + 2)), "out"]
        labels = ["c_{k-2}", "c_{k-1}", *(f"node {k}\n(sum of 2)" for k in range(2, self.nodes + 2)), "cell output\n(concat)"]
        for i, (name, label) in enumerate(zip(names, labels)):
            # All nodes on one ellipse: every edge is a chord, so none runs through a node.
            angle = math.radians(215 - 250 * i / (len(names) - 1))
            g.add_node(name, label=label, pos=(6.0 * math.cos(angle), 3.2 * math.sin(angle)))
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
            genotype.append(list(zip(map(int, pair.split("-")), ops)))
        return genotype

    def _build(self, choose: Choose) -> nx.DiGraph:
        channels = choose("channels", self.channels)
        stem_channels = choose("stem_channels", self.stem_channels)
        stem_stride = choose("stem_stride", self.stem_stride)
        genotypes = {t: self._genotype(choose, t) for t in self.cell_types}
        return build_cells(genotypes, self.layout, channels=channels, stem_channels=stem_channels, stem_stride=stem_stride)


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
                arch.add_node(op_node, op=op, c_out=c, stride=2 if reduce and j < 2 else 1, **tag)
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


def _opts(options: list) -> str:
    text = [str(o).lower() if isinstance(o, bool) else str(o) for o in options]
    return text[0] if len(text) == 1 else "{" + ",".join(text) + "}"


def _stack_template(space: Space, unit: str, edge_text: Callable[[int], str]) -> nx.DiGraph:
    """A chain or mlp space drawn as input -> unit 1 -> ... -> unit D_max, options on the edges."""
    depths: list[int] = space.depth  # type: ignore[attr-defined]
    g = nx.DiGraph(title=f"{space.name}: {space.kind} of {_opts(depths)} {unit}s (options on the edges)", legend="")
    g.add_node("input", label="input", pos=(0.0, 0.0))
    for b in range(1, max(depths) + 1):
        note = "" if b <= min(depths) else f"\n(if depth >= {b})"
        g.add_node(b, label=f"{unit} {b}{note}", pos=(3.4 * b, 0.0))
        g.add_edge(b - 1 if b > 1 else "input", b, label=edge_text(b), label_pos=0.45)
    g.add_node("output", label="features", pos=(3.4 * (max(depths) + 1), -1.6))
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


@KINDS.register("chain")
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
        r = _Reader(doc, path, self.keys)
        self.depth = r.options("depth", _REQUIRED, _positive_int, "a positive integer")
        self.norm = r.options("norm", "batch", _one_of("batch", "instance", "none"), "'batch', 'instance' or 'none'")
        self.activation = r.options("activation", "relu", _one_of(*ACTIVATIONS), f"one of {list(ACTIVATIONS)}")
        self.per_block = {
            "width": r.options("width", _REQUIRED, _positive_int, "a positive integer"),
            "kernel": r.options("kernel", 3, _one_of(1, 3, 5, 7), "1, 3, 5 or 7"),
            "pool": r.options("pool", "max", _one_of("max", "avg", "none"), "'max', 'avg' or 'none'"),
            "skip": r.options("skip", False, _one_of(False, True), "true or false"),
        }
        for key in ("depth", "norm", "activation"):
            self._add_choice(key, getattr(self, key))
        _block_choices(self, "block", self.per_block, self.depth)

    def size(self) -> int:
        return _conditional_size(self, ["norm", "activation"], self.per_block, self.depth)

    def template(self) -> nx.DiGraph:
        p = self.per_block
        kernels = _opts([f"{k}x{k}" for k in p["kernel"]])

        def block(b: int) -> str:
            skip = f"\nresidual {_opts(p['skip'])}" if p["skip"] != [False] else ""
            return f"conv {kernels}, width {_opts(p['width'])}\nnorm {_opts(self.norm)}, {_opts(self.activation)}\npool {_opts(p['pool'])}{skip}"

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
            width, kernel, pool, skip = (choose(f"block{b}_{k}", self.per_block[k]) for k in ("width", "kernel", "pool", "skip"))
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


@KINDS.register("mlp")
class MlpSpace(Space):
    """Fully connected layers for vector inputs (images are flattened first).

    Choices ``depth``, ``activation`` and per layer l (1-based) ``layer<l>_width``.  The MAML
    sinusoid network (2 hidden layers of 40, ReLU) is depth 2, width 40; the learner adds the head.
    """

    kind = "mlp"
    keys = ("depth", "width", "activation")

    def __init__(self, name: str, path: Path, doc: dict[str, Any]) -> None:
        super().__init__(name, path, doc)
        r = _Reader(doc, path, self.keys)
        self.depth = r.options("depth", _REQUIRED, _positive_int, "a positive integer")
        self.activation = r.options("activation", "relu", _one_of(*ACTIVATIONS), f"one of {list(ACTIVATIONS)}")
        self.per_block = {"width": r.options("width", _REQUIRED, _positive_int, "a positive integer")}
        self._add_choice("depth", self.depth)
        self._add_choice("activation", self.activation)
        _block_choices(self, "layer", self.per_block, self.depth)

    def size(self) -> int:
        return _conditional_size(self, ["activation"], self.per_block, self.depth)

    def template(self) -> nx.DiGraph:
        return _stack_template(self, "layer", lambda _: f"linear {_opts(self.per_block['width'])}\n{_opts(self.activation)}")

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
            for node, attrs in ((f"l{layer}_linear", {"op": "linear", "c_out": width}), (f"l{layer}_act", {"op": activation})):
                arch.add_node(node, **attrs, group=f"layer{layer}")
                arch.add_edge(prev, node)
                prev = node
        return arch


# --- files ------------------------------------------------------------------------------------


def list_spaces() -> list[str]:
    """Names of the shipped spaces (the YAML files in ``SPACES_DIR``)."""
    return sorted(p.stem for p in SPACES_DIR.glob("*.yaml"))


def load_space(name_or_path: str | Path) -> Space:
    """A shipped space by name (``"cell"``) or any YAML file by path; SpaceError otherwise."""
    text = str(name_or_path)
    path = Path(text)
    if not (path.suffix in (".yaml", ".yml") or path.is_file() or "/" in text):
        path = SPACES_DIR / f"{text}.yaml"
        if not path.is_file():
            raise SpaceError(f"unknown space {text!r}; choose from {list_spaces()} or give a path to a .yaml file")
    try:
        doc = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise SpaceError(f"cannot read space file {str(path)!r}: {exc.strerror or exc}") from None
    except yaml.YAMLError as exc:
        first = str(exc).strip().splitlines()[0]
        raise SpaceError(f"{path}: not valid YAML: {first}") from None
    if not isinstance(doc, dict):
        raise SpaceError(f"{path}: a space file must be a mapping with a 'kind' key, got {type(doc).__name__}")
    if "kind" not in doc:
        raise SpaceError(f"{path}: missing key 'kind'; choose from {KINDS.names()}")
    if doc["kind"] not in KINDS:
        raise SpaceError(f"{path}: key 'kind' is {doc['kind']!r}; choose from {KINDS.names()}")
    name = doc.get("name", path.stem)
    if not isinstance(name, str) or not name:
        raise SpaceError(f"{path}: key 'name' must be a non-empty string, got {name!r}")
    return KINDS.get(doc["kind"])(name, path, doc)


def draw_space(space: Space, path: str | Path) -> None:
    """Draw a space's graph to a PNG: nodes, and on each edge its candidate ops or options."""
    from .draw import draw_space as draw

    draw(space, path)
