"""The graph toolkit: fingerprints, validation errors, JSON / GraphML io, pictures."""

from __future__ import annotations

import json
import random
import subprocess
import sys

import networkx as nx
import pytest

from nas_meta import graph, spaces
from nas_meta.errors import SpaceError
from nas_meta.model.ops import OPS
from nas_meta.spaces import build_cells
from nas_meta.viz import arch as draw

NORMAL = [[(0, "sep_conv_3x3"), (1, "skip_connect")], [(0, "max_pool_3x3"), (2, "dil_conv_3x3")]]
REDUCE = [[(0, "avg_pool_3x3"), (1, "sep_conv_5x5")], [(1, "skip_connect"), (2, "max_pool_3x3")]]


def cells(normal=NORMAL, reduce=REDUCE, channels=4) -> nx.DiGraph:
    return build_cells({"normal": normal, "reduce": reduce}, ["normal", "reduce"], channels=channels, stem_channels=8)


def chain(*ops: str) -> nx.DiGraph:
    arch = nx.DiGraph(space="hand", kind="chain", params={})
    arch.add_node("input", op="input")
    prev = "input"
    for i, op in enumerate(ops):
        arch.add_node(f"n{i}", op=op)
        arch.add_edge(prev, f"n{i}")
        prev = f"n{i}"
    return arch


# --- fingerprint -----------------------------------------------------------------------------


def test_swapping_a_nodes_two_input_edges_keeps_the_fingerprint():
    swapped = [list(reversed(NORMAL[0])), NORMAL[1]]
    a, b = cells(), cells(normal=swapped)
    assert a.nodes["cell0_n2_e0"]["op"] != b.nodes["cell0_n2_e0"]["op"]  # built differently...
    assert graph.fingerprint(a) == graph.fingerprint(b)  # ...but the same architecture


def test_renamed_nodes_keep_the_fingerprint():
    arch = cells()
    renamed = nx.relabel_nodes(arch, {n: f"x{i}" for i, n in enumerate(reversed(list(arch)))})
    assert graph.fingerprint(renamed) == graph.fingerprint(arch)


@pytest.mark.parametrize(
    "other",
    [
        pytest.param(
            lambda: cells(normal=[[(0, "sep_conv_5x5"), (1, "skip_connect")], NORMAL[1]]), id="one-op-changed"
        ),
        pytest.param(
            lambda: cells(normal=[NORMAL[0], [(1, "max_pool_3x3"), (2, "dil_conv_3x3")]]), id="one-input-changed"
        ),
        pytest.param(lambda: cells(normal=REDUCE, reduce=NORMAL), id="cell-types-exchanged"),
        pytest.param(lambda: cells(channels=8), id="wider"),
    ],
)
def test_different_architectures_get_different_fingerprints(other):
    assert graph.fingerprint(other()) != graph.fingerprint(cells())


def test_fingerprint_sees_width_stride_and_merge():
    base = chain("conv_3x3", "relu")
    variants = []
    for key, value in (("c_out", 16), ("stride", 2), ("merge", "concat")):
        v = base.copy()
        v.nodes["n0"][key] = value
        variants.append(graph.fingerprint(v))
    assert len({graph.fingerprint(base), *variants}) == 4


def test_sampled_architectures_are_distinct_by_fingerprint():
    space = spaces.load_space("cell")
    prints = {graph.fingerprint(space.sample(random.Random(seed))) for seed in range(20)}
    assert len(prints) == 20


# --- validation ------------------------------------------------------------------------------


def at_the_limits() -> nx.DiGraph:
    """A chain whose every attribute sits on an accepted bound: MAX_NODES nodes, widths 1 and
    MAX_WIDTH, strides 1 and MAX_STRIDE, both merges."""
    arch = chain(*["relu"] * (graph.MAX_NODES - 1))
    arch.nodes["n0"].update(op="conv_3x3", c_out=graph.MAX_WIDTH, stride=graph.MAX_STRIDE, merge="concat")
    arch.nodes["n1"].update(op="conv_1x1", c_out=1, stride=1, merge="sum")
    return arch


@pytest.mark.parametrize(
    ("make", "nodes"),
    [
        pytest.param(cells, 21, id="cells"),
        pytest.param(lambda: chain("linear", "relu"), 3, id="chain"),
        pytest.param(at_the_limits, graph.MAX_NODES, id="at-the-limits"),
    ],
)
def test_valid_graphs_pass(make, nodes):
    arch, reference = make(), make()
    assert len(arch) == nodes
    for ops in (None, OPS):  # the structure only, and with the compiler's op table
        assert graph.validate(arch, ops) is None
    # Validation only reads: the graph is left exactly as it was.
    assert nx.utils.graphs_equal(arch, reference) and arch.graph == reference.graph


def test_cycle_is_rejected():
    arch = chain("relu", "tanh", "relu")
    arch.add_edge("n2", "n0")
    with pytest.raises(SpaceError, match=r"acyclic, found the cycle .*n0"):
        graph.validate(arch)


def test_two_inputs_are_rejected():
    arch = chain("relu")
    arch.add_node("other", op="input")
    arch.add_edge("other", "n0")
    with pytest.raises(SpaceError, match=r"exactly one node with op 'input', got \['input', 'other'\]"):
        graph.validate(arch)


def test_no_input_is_rejected():
    arch = chain("relu")
    arch.nodes["input"]["op"] = "relu"
    with pytest.raises(SpaceError, match=r"exactly one node with op 'input', got \[\]"):
        graph.validate(arch)


def test_two_outputs_are_rejected():
    arch = chain("relu", "tanh")
    arch.add_node("dangling", op="relu")
    arch.add_edge("n0", "dangling")
    with pytest.raises(SpaceError, match=r"exactly one output node .* got \['dangling', 'n1'\]"):
        graph.validate(arch)


def test_unreachable_node_is_rejected():
    arch = chain("relu", "tanh")
    arch.add_node("orphan", op="relu")
    arch.add_edge("orphan", "n1")
    with pytest.raises(SpaceError, match=r"not reachable from the input 'input': \['orphan'\]"):
        graph.validate(arch)


def test_unknown_op_is_rejected_with_the_choices():
    with pytest.raises(SpaceError, match=r"node 'n0' has unknown op 'sep_conv_9x9'; choose from \[.*'sep_conv_3x3'"):
        graph.validate(chain("sep_conv_9x9"), OPS)
    graph.validate(chain("sep_conv_9x9"))  # without an op table: the structure only


def test_zero_op_node_is_rejected():
    with pytest.raises(SpaceError, match=r"op 'none' \(zero\): drop the edge"):
        graph.validate(chain("none"))


@pytest.mark.parametrize(("key", "value"), [("merge", "max"), ("c_out", 0), ("stride", "2")])
def test_bad_attributes_are_rejected(key, value):
    arch = chain("conv_3x3")
    arch.nodes["n0"][key] = value
    with pytest.raises(SpaceError, match=rf"node 'n0' has {key}"):
        graph.validate(arch)


# --- io ----------------------------------------------------------------------------------------


def test_json_round_trip_is_exact(tmp_path):
    arch = spaces.load_space("cell").sample(random.Random(1))
    doc = graph.to_json(arch)
    assert doc["version"] == graph.JSON_VERSION and doc["fingerprint"] == graph.fingerprint(arch)
    back = graph.from_json(json.loads(json.dumps(doc)))
    assert nx.utils.graphs_equal(back, arch) and back.graph == arch.graph
    graph.save_json(arch, tmp_path / "arch.json")
    assert graph.fingerprint(graph.load_json(tmp_path / "arch.json")) == graph.fingerprint(arch)


def test_unknown_json_version_is_rejected(tmp_path):
    doc = graph.to_json(chain("relu"))
    doc["version"] = 99
    (tmp_path / "a.json").write_text(json.dumps(doc))
    with pytest.raises(
        SpaceError, match=r"a.json: unsupported architecture document version 99; this nas_meta reads version 1"
    ):
        graph.load_json(tmp_path / "a.json")
    with pytest.raises(SpaceError, match="not a nas_meta architecture document"):
        graph.from_json({"nodes": []})


def test_unreadable_json_is_a_space_error(tmp_path):
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(SpaceError, match="cannot read architecture"):
        graph.load_json(tmp_path / "bad.json")


def test_graphml_round_trip_keeps_fingerprint_and_params(tmp_path):
    arch = spaces.load_space("chain").sample(random.Random(2))
    graph.save_graphml(arch, tmp_path / "arch.graphml")
    back = graph.load_graphml(tmp_path / "arch.graphml")
    assert graph.fingerprint(back) == graph.fingerprint(arch)
    assert back.graph["params"] == arch.graph["params"]
    graph.validate(back)


def test_graph_module_does_not_import_torch():
    code = "import sys, nas_meta.graph; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


# --- pictures ----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["cell", "chain", "mlp"])
def test_draw_writes_a_png(tmp_path, name):
    arch = spaces.load_space(name).sample(random.Random(0))
    draw.draw_arch(arch, tmp_path / "arch.png")
    data = (tmp_path / "arch.png").read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000


def test_draw_labels_cell_nodes_by_op():
    arch = cells()
    assert draw.node_text(arch.nodes["cell0_n2_e0"]) == "sep_conv_3x3\n-> 4"
    assert draw.node_text(arch.nodes["cell1_n2_e0"]) == "avg_pool_3x3\n-> 8 /2"
    assert draw.node_text(arch.nodes["cell0_out"]) == "concat"
