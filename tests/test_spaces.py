"""Every shipped space passes one contract; YAML errors name the file and the key."""

from __future__ import annotations

import json
import random

import networkx as nx
import pytest
import torch

from nas_meta import graph, spaces
from nas_meta.errors import SpaceError
from nas_meta.model import network
from nas_meta.model.ops import DARTS_OPS

SHIPPED = spaces.list_spaces()
BATCH = 3


def input_shape(space: spaces.Space) -> tuple[int, ...]:
    return (1,) if space.kind == "mlp" else (1, 28, 28)


def test_the_issue_spaces_are_shipped():
    assert {"cell", "chain", "mlp", "conv4"} <= set(SHIPPED)


# --- the shared contract ------------------------------------------------------------------------


@pytest.mark.parametrize("name", SHIPPED)
@pytest.mark.parametrize("seed", [0, 1])
def test_contract_sample_compile_forward(name, seed):
    space = spaces.load_space(name)
    arch = space.sample(random.Random(seed))
    assert isinstance(arch, nx.DiGraph) and arch.graph["space"] == space.name and arch.graph["kind"] == space.kind
    graph.validate(arch)
    backbone = network.build(arch, input_shape(space), seed=seed)
    out = backbone(torch.rand(BATCH, *input_shape(space)))
    assert out.shape == (BATCH, backbone.feature_dim)
    assert torch.isfinite(out).all()
    out.square().mean().backward()  # gradients reach every parameter without NaN
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in backbone.parameters())


@pytest.mark.parametrize("name", SHIPPED)
def test_contract_same_seed_same_arch_and_json_round_trip(name):
    space = spaces.load_space(name)
    a, b = space.sample(random.Random(5)), space.sample(random.Random(5))
    assert nx.utils.graphs_equal(a, b) and a.graph == b.graph
    back = graph.from_json(json.loads(json.dumps(graph.to_json(a))))
    assert graph.fingerprint(back) == graph.fingerprint(a)
    assert back.graph["params"] == a.graph["params"]
    assert graph.fingerprint(space.from_params(a.graph["params"])) == graph.fingerprint(a)


@pytest.mark.parametrize("name", SHIPPED)
def test_contract_graphs_are_plain_data(name):
    # A space never builds modules: every attribute is a str/int/float/bool (or the params dict).
    arch = spaces.load_space(name).sample(random.Random(0))
    scalars = (str, int, float, bool)
    assert all(isinstance(v, scalars) for _, attrs in arch.nodes(data=True) for v in attrs.values())
    assert all(isinstance(v, scalars) for *_, attrs in arch.edges(data=True) for v in attrs.values())
    assert all(isinstance(v, scalars) for v in arch.graph["params"].values())


@pytest.mark.parametrize("name", SHIPPED)
def test_contract_choices_are_consistent(name):
    space = spaces.load_space(name)
    choices = space.choices()
    for options in choices.values():
        assert len(options) > 1 and all(isinstance(o, (str, int, float, bool)) for o in options)
    for seed in range(5):
        params = space.sample(random.Random(seed)).graph["params"]
        assert set(params) <= set(choices)
        assert all(value in choices[key] for key, value in params.items())
    if space.size() > 1:
        prints = {graph.fingerprint(space.sample(random.Random(s))) for s in range(6)}
        assert len(prints) > 1  # a different seed gives a different architecture


def test_a_recorded_choose_sees_each_name_with_fixed_options():
    seen: dict[str, list] = {}

    def choose(name, options):
        assert seen.setdefault(name, options) == options  # optuna#2564: one name, one option list
        return options[-1]

    space = spaces.load_space("chain")
    space.build(choose)
    space.build(lambda name, options: options[0])
    assert set(seen) <= set(space.choices())


# --- size -----------------------------------------------------------------------------------


def enumerate_params(space: spaces.Space) -> list[dict]:
    """Every reachable params dict, by walking the choice tree depth first."""
    found, stack = [], [[]]
    while stack:
        prefix = stack.pop()
        asked: list[tuple[str, list]] = []

        def choose(name, options, prefix=prefix, asked=asked):
            i = len(asked)
            asked.append((name, options))
            return options[prefix[i]] if i < len(prefix) else options[0]

        arch = space.build(choose)
        if len(asked) == len(prefix):
            found.append(arch.graph["params"])
            continue
        for i in range(len(asked[len(prefix)][1])):
            stack.append([*prefix, i])
    return found


def write(tmp_path, text: str, name: str = "space.yaml"):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_size_counts_the_reachable_architectures(tmp_path):
    small_chain = write(
        tmp_path, "kind: chain\ndepth: [1, 2]\nwidth: [8, 16]\npool: [max, none]\nnorm: [batch, none]\n"
    )
    small_cell = write(
        tmp_path, "kind: cell\nops: [none, skip_connect, max_pool_3x3]\nnodes: 2\nlayout: [reduce]\n", "c.yaml"
    )
    for space in (spaces.load_space("mlp"), spaces.load_space(small_chain), spaces.load_space(small_cell)):
        params = enumerate_params(space)
        assert len(params) == space.size()
        assert len({json.dumps(p, sort_keys=True) for p in params}) == space.size()
    assert spaces.load_space(small_chain).size() == 2 * (4 + 4**2)
    assert spaces.load_space(small_cell).size() == (1 * 3 * 3) * (3 * 3 * 3)
    assert spaces.load_space("conv4").size() == 1


def test_mlp_architectures_are_all_different():
    space = spaces.load_space("mlp")
    prints = {graph.fingerprint(space.from_params(p)) for p in enumerate_params(space)}
    assert len(prints) == space.size()


def test_default_cell_space_has_the_darts_ops():
    space = spaces.load_space("cell")
    assert space.ops == DARTS_OPS and space.nodes == 4
    assert space.size() == (1 * 3 * 6 * 10 * 8**8) ** 2


# --- the shipped points -----------------------------------------------------------------------


def test_conv4_is_one_point_of_the_chain_space():
    conv4 = spaces.load_space("conv4").sample(random.Random(0))
    chain = spaces.load_space("chain")
    params = {"depth": 4, "norm": "batch"}
    for b in range(1, 5):
        params.update({f"block{b}_width": 64, f"block{b}_kernel": 3, f"block{b}_pool": "max", f"block{b}_skip": False})
    assert graph.fingerprint(chain.from_params(params)) == graph.fingerprint(conv4)


def test_maml_sinusoid_network_is_a_point_of_the_mlp_space():
    arch = spaces.load_space("mlp").from_params(
        {"depth": 2, "activation": "relu", "layer1_width": 40, "layer2_width": 40}
    )
    backbone = network.build(arch, (1,))
    assert backbone.feature_dim == 40
    assert network.count_params(backbone) == (1 * 40 + 40) + (40 * 40 + 40)


# --- the zero op --------------------------------------------------------------------------------


def cell_space(tmp_path):
    return spaces.load_space(
        write(
            tmp_path,
            "kind: cell\nops: [none, skip_connect, sep_conv_3x3]\nnodes: 2\nlayout: [normal, reduce]\n"
            "channels: 4\nstem_channels: 4\nstem_stride: 1\n",
        )
    )


def params(n2=("none", "none"), n3=("none", "skip_connect"), n3_inputs="0-2", reduce=("sep_conv_3x3", "skip_connect")):
    out = {
        "normal_n2_op0": n2[0],
        "normal_n2_op1": n2[1],
        "normal_n3_inputs": n3_inputs,
        "normal_n3_op0": n3[0],
        "normal_n3_op1": n3[1],
    }
    out.update(
        {
            "reduce_n2_op0": reduce[0],
            "reduce_n2_op1": reduce[1],
            "reduce_n3_inputs": "0-1",
            "reduce_n3_op0": "skip_connect",
            "reduce_n3_op1": "skip_connect",
        }
    )
    return out


def test_zero_op_never_becomes_a_node(tmp_path):
    space = cell_space(tmp_path)
    for seed in range(10):
        assert "none" not in {op for _, op in space.sample(random.Random(seed)).nodes(data="op")}


def test_node_with_only_zero_inputs_is_dropped_with_its_edges(tmp_path):
    # normal n2 = none + none: dead; n3 = none(0) + skip(n2): its only live input is dead, so n3 dies too;
    # the cell then forwards its previous cell through skip_connect.
    arch = cell_space(tmp_path).from_params(params())
    assert "cell0_n2" not in arch and "cell0_n3" not in arch
    assert arch.nodes["cell0_out"]["op"] == "skip_connect"
    backbone = network.build(arch, (1, 8, 8))
    assert backbone(torch.rand(2, 1, 8, 8)).shape == (2, backbone.feature_dim)


def test_cell_output_concatenates_only_live_nodes(tmp_path):
    arch = cell_space(tmp_path).from_params(params(n3=("skip_connect", "none"), n3_inputs="0-1"))
    assert sorted(arch.predecessors("cell0_out")) == ["cell0_n3"]
    assert network.build(arch, (1, 8, 8)).shapes["cell0_out"] == (4, 8, 8)  # 1 live node x 4 channels


# --- file errors --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("depth: [2]\nwidth: 8\n", r"space.yaml: missing key 'kind'; choose from \['cell', 'chain', 'mlp', 'resnet'\]"),
        ("kind: dag\n", r"space.yaml: key 'kind' is 'dag'; choose from \['cell', 'chain', 'mlp', 'resnet'\]"),
        ("kind: chain\nwidth: 8\n", r"space.yaml: key 'depth' is missing"),
        (
            "kind: chain\ndepth: four\nwidth: 8\n",
            r"space.yaml: key 'depth' must be a positive integer up to 64 or a list of them, got 'four'",
        ),
        (
            "kind: chain\ndepth: []\nwidth: 8\n",
            r"space.yaml: key 'depth' must be a positive integer up to 64 or a non-empty list",
        ),
        ("kind: chain\ndepth: 2\nwidth: 8\npool: mean\n", r"space.yaml: key 'pool' must be 'max', 'avg' or 'none'"),
        ("kind: chain\ndepth: 2\nwidth: 8\nwidht: 9\n", r"space.yaml: key 'widht' is not a key of a chain space"),
        (
            "kind: cell\nops: [sep_conv_3x3, sep_conv_9x9]\n",
            r"space.yaml: key 'ops' lists unknown op 'sep_conv_9x9'; choose from \[",
        ),
        ("kind: cell\nops: sep_conv_3x3\n", r"space.yaml: key 'ops' must be a non-empty list of op names"),
        ("kind: cell\nops: [none]\n", r"space.yaml: key 'ops' must list distinct ops, not only 'none'"),
        ("kind: cell\nnodes: 2.5\n", r"space.yaml: key 'nodes' must be a positive integer up to 16, got 2.5"),
        (
            "kind: cell\nlayout: [normal, big]\n",
            r"space.yaml: key 'layout' must be a non-empty list of 'normal' / 'reduce'",
        ),
        ("kind: mlp\ndepth: 2\nwidth: 40\nactivation: swish\n", r"space.yaml: key 'activation' must be one of \["),
        ("- just\n- a list\n", r"space.yaml: a space file must be a mapping with a 'kind' key, got list"),
        ("kind: [unclosed\n", r"space.yaml: not valid YAML"),
    ],
)
def test_malformed_yaml_names_the_file_and_the_key(tmp_path, text, message):
    with pytest.raises(SpaceError, match=message) as info:
        spaces.load_space(write(tmp_path, text))
    assert "\n" not in str(info.value)


def test_unknown_space_name_lists_the_shipped_ones():
    shipped = r"\['cell', 'chain', 'chain_recipe', 'conv4', 'mlp', 'mlp40', 'resnet12'\]"
    with pytest.raises(SpaceError, match=r"unknown space 'cel'; choose from " + shipped):
        spaces.load_space("cel")


def test_missing_file_is_a_space_error(tmp_path):
    with pytest.raises(SpaceError, match="cannot read space file"):
        spaces.load_space(tmp_path / "nope.yaml")


def test_from_params_rejects_missing_and_foreign_values():
    space = spaces.load_space("mlp")
    with pytest.raises(SpaceError, match=r"params lack choice 'depth'"):
        space.from_params({})
    with pytest.raises(SpaceError, match=r"choice 'depth' = 9 is not one of \[1, 2, 3, 4\]"):
        space.from_params({"depth": 9})


def test_user_copy_with_other_ops_nodes_and_widths(tmp_path):
    path = write(
        tmp_path,
        "kind: cell\nops: [skip_connect, sep_conv_3x3]\nnodes: 3\nlayout: [reduce, reduce]\nchannels: [4, 6]\n",
        "mine.yaml",
    )
    space = spaces.load_space(str(path))
    assert space.name == "mine" and space.choices()["channels"] == [4, 6]
    arch = space.sample(random.Random(0))
    backbone = network.build(arch, (1, 12, 12))
    assert backbone(torch.rand(2, 1, 12, 12)).shape == (2, backbone.feature_dim)


@pytest.mark.parametrize("name", SHIPPED)
def test_draw_space_writes_a_png_with_options_on_the_edges(tmp_path, name):
    space = spaces.load_space(name)
    template = space.template()
    assert any(label for *_, label in template.edges(data="label"))
    spaces.draw_space(space, tmp_path / "space.png")
    assert (tmp_path / "space.png").read_bytes()[:4] == b"\x89PNG"


def test_cell_template_has_every_candidate_edge():
    template = spaces.load_space("cell").template()
    solid = [e for e in template.edges(data=True) if e[2].get("style", "solid") == "solid"]
    assert len(solid) == 2 + 3 + 4 + 5  # node k has k candidate inputs


# --- the papers' reference networks as one-architecture spaces ----------------------------------


def test_resnet12_has_the_published_parameter_count():
    from nas_meta.model import network

    space = spaces.load_space("resnet12")
    assert space.size() == 1
    arch = space.sample(random.Random(0))
    # MetaOptNet (Lee et al. 2019) reports 12.4M for its ResNet-12 on 3-channel 84x84 images:
    # per block (c_in -> c) 3 convs 3x3 + 1x1 shortcut, no bias, and 4 BatchNorms (2c each).
    by_hand = sum(
        c_in * c * 9 + 2 * c * c * 9 + c_in * c + 4 * 2 * c for c_in, c in [(3, 64), (64, 160), (160, 320), (320, 640)]
    )
    backbone = network.build(arch, (3, 84, 84), seed=0)
    assert network.count_params(backbone) == by_hand == 12_424_320
    assert backbone.feature_dim == 640 * 5 * 5  # 84 -> 42 -> 21 -> 10 -> 5
    assert network.build(arch, (1, 28, 28)).feature_dim == 640


def test_mlp40_is_the_maml_sinusoid_network():
    from nas_meta.config import LearnerConfig
    from nas_meta.learners import build_learner
    from nas_meta.model import network

    arch = spaces.load_space("mlp40").sample(random.Random(0))
    backbone = network.build(arch, (1,), seed=0)
    learner = build_learner(LearnerConfig(algo="maml"), backbone, feature_dim=40, ways=1, task="regression")
    # 1-40-40-1 with biases (Finn et al. 2017): 80 + 1640 + 41
    assert network.count_params(backbone) == 1_720
    assert network.count_params(learner) == 1_761


def test_a_resnet_space_with_choices_is_searchable(tmp_path):
    path = tmp_path / "res.yaml"
    path.write_text("kind: resnet\ndepth: [2, 3]\nwidth: [8, 16]\n")
    space = spaces.load_space(path)
    assert space.size() == 2**2 + 2**3
    arch = space.sample(random.Random(1))
    assert sum(1 for _, op in arch.nodes(data="op") if op == "conv_bn_3x3") == 3 * arch.graph["params"]["depth"]
    bad = tmp_path / "bad.yaml"
    bad.write_text("kind: resnet\ndepth: 4\nwidth: [[64, 160]]\n")
    with pytest.raises(SpaceError, match=r"width.*needs 4 positive integers up to 4096"):
        spaces.load_space(bad)
