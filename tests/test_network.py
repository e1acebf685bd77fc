"""The compiler: hand-computed parameter counts, merge semantics, shape errors, the op table."""

from __future__ import annotations

import random

import networkx as nx
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from nas_meta import graph, spaces
from nas_meta.errors import SpaceError
from nas_meta.learners.base import to_channels_last
from nas_meta.model import fusion, network
from nas_meta.model.ops import OPS, BatchNorm, Pool2x2


def make_arch(nodes: dict[str, dict], edges: list[tuple]) -> nx.DiGraph:
    arch = nx.DiGraph(space="hand", kind="chain", params={})
    for node, attrs in nodes.items():
        arch.add_node(node, **attrs)
    for edge in edges:
        arch.add_edge(edge[0], edge[1], **(edge[2] if len(edge) > 2 else {}))
    return arch


def test_conv4_has_the_published_parameter_count():
    arch = spaces.load_space("conv4").sample(random.Random(0))
    backbone = network.build(arch, (1, 28, 28), seed=0)
    conv = lambda c_in, c_out: c_in * c_out * 3 * 3 + c_out  # weights + bias  # noqa: E731
    bn = lambda c: 2 * c  # affine gamma and beta, no running stats  # noqa: E731
    by_hand = conv(1, 64) + bn(64) + 3 * (conv(64, 64) + bn(64))
    assert by_hand == 111_936
    assert network.count_params(backbone) == by_hand
    assert backbone.feature_dim == 64  # 28 -> 14 -> 7 -> 3 -> 1
    assert list(backbone.buffers()) == []


def test_conv4_flops_match_the_conv_formula():
    backbone = network.build(spaces.load_space("conv4").sample(random.Random(0)), (1, 28, 28), seed=0)
    # 2 FLOPs per multiply-add, one example: 2 * C_in * C_out * k^2 * H_out * W_out per conv.
    by_hand = sum(2 * c_in * 64 * 9 * side * side for c_in, side in ((1, 28), (64, 14), (64, 7), (64, 3)))
    assert network.count_flops(backbone, (1, 28, 28)) == by_hand == 19_630_080


def tiny_concat_arch(slot_a: int = 0, slot_b: int = 1) -> nx.DiGraph:
    return make_arch(
        {
            "input": {"op": "input"},
            "a": {"op": "conv_3x3", "c_out": 4},
            "b": {"op": "conv_1x1", "c_out": 3},
            "cat": {"op": "identity", "merge": "concat"},
            "bn": {"op": "batch_norm"},
            "gap": {"op": "global_avg_pool"},
        },
        [
            ("input", "a"),
            ("input", "b"),
            ("a", "cat", {"slot": slot_a}),
            ("b", "cat", {"slot": slot_b}),
            ("cat", "bn"),
            ("bn", "gap"),
        ],
    )


def test_tiny_hand_made_arch_has_hand_computed_params_and_output():
    backbone = network.build(tiny_concat_arch(slot_a=1, slot_b=0), (2, 8, 8), seed=0)
    # conv 3x3 2->4 with bias: 2*4*9 + 4 = 76; conv 1x1 2->3: 2*3 + 3 = 9; BN on 7 channels: 14.
    assert network.count_params(backbone) == 76 + 9 + 14
    assert backbone.feature_dim == 7
    x = torch.randn(5, 2, 8, 8)
    mods = {node: backbone.nodes[backbone.keys[node]] for node in backbone.order}
    cat = torch.cat([mods["b"](x), mods["a"](x)], dim=1)  # slot 0 is b
    expected = mods["bn"](cat).mean(dim=(2, 3))
    torch.testing.assert_close(backbone(x), expected)


def test_sum_merge_adds_inputs():
    arch = make_arch(
        {"input": {"op": "input"}, "p": {"op": "relu"}, "q": {"op": "tanh"}, "s": {"op": "identity"}},
        [("input", "p"), ("input", "q"), ("p", "s"), ("q", "s")],
    )
    backbone = network.build(arch, (3,))
    x = torch.randn(4, 3)
    torch.testing.assert_close(backbone(x), torch.relu(x) + torch.tanh(x))
    assert network.count_params(backbone) == 0 and backbone.feature_dim == 3


def test_same_seed_same_weights_and_json_round_trip_keeps_them():
    arch = spaces.load_space("cell").sample(random.Random(3))
    a = network.build(arch, (1, 16, 16), seed=7).state_dict()
    b = network.build(graph.from_json(graph.to_json(arch)), (1, 16, 16), seed=7).state_dict()
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    state = torch.get_rng_state()
    network.build(arch, (1, 16, 16), seed=7)
    assert torch.equal(state, torch.get_rng_state())  # the global RNG is left alone


def test_sum_of_different_shapes_is_a_space_error():
    arch = make_arch(
        {
            "input": {"op": "input"},
            "a": {"op": "conv_3x3", "c_out": 4},
            "b": {"op": "conv_3x3", "c_out": 5},
            "s": {"op": "identity"},
        },
        [("input", "a"), ("input", "b"), ("a", "s"), ("b", "s")],
    )
    with pytest.raises(SpaceError, match=r"node 's' sums inputs of different shapes"):
        network.build(arch, (1, 8, 8))


def test_op_that_does_not_fit_its_input_is_a_space_error():
    arch = make_arch({"input": {"op": "input"}, "fc": {"op": "linear", "c_out": 4}}, [("input", "fc")])
    with pytest.raises(SpaceError, match=r"node 'fc' \(op 'linear'\) does not fit its input of shape \(1, 28, 28\)"):
        network.build(arch, (1, 28, 28))


def test_op_that_cannot_change_channels_is_a_space_error():
    arch = make_arch({"input": {"op": "input"}, "bn": {"op": "batch_norm", "c_out": 8}}, [("input", "bn")])
    with pytest.raises(SpaceError, match=r"op 'batch_norm' cannot change shape"):
        network.build(arch, (1, 8, 8))


def test_bad_input_shape_is_a_space_error():
    with pytest.raises(SpaceError, match="input_shape"):
        network.build(tiny_concat_arch(), (0, 8, 8))


def test_batch_norm_uses_batch_statistics_in_train_and_eval():
    bn = BatchNorm(3)
    with torch.no_grad():
        bn.weight.copy_(torch.tensor([1.0, 2.0, 0.5]))
        bn.bias.copy_(torch.tensor([0.0, -1.0, 3.0]))
    x = torch.randn(6, 3, 5, 5) * 3 + 1
    reference = F.batch_norm(x, None, None, bn.weight, bn.bias, training=True, eps=1e-5)
    torch.testing.assert_close(bn(x), reference, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(bn.eval()(x), reference, rtol=1e-5, atol=1e-5)


def test_batch_norm_native_kernel_is_exact_to_second_order():
    """Outside vmap BatchNorm runs the native kernel; its double backward equals mean/var ops'."""
    torch.manual_seed(0)
    bn = BatchNorm(3).double()
    with torch.no_grad():
        bn.weight.copy_(torch.tensor([1.0, 2.0, 0.5]))
        bn.bias.copy_(torch.tensor([0.0, -1.0, 3.0]))
    x = (torch.randn(4, 3, 5, 5, dtype=torch.float64) * 3 + 1).requires_grad_()

    def mean_var(x: torch.Tensor) -> torch.Tensor:
        centred = x - x.mean(dim=(0, 2, 3), keepdim=True)
        var = (centred * centred).mean(dim=(0, 2, 3), keepdim=True)
        return centred * (bn.weight.view(1, -1, 1, 1) * torch.rsqrt(var + bn.eps)) + bn.bias.view(1, -1, 1, 1)

    def second_order(norm) -> list[torch.Tensor]:
        first = torch.autograd.grad(norm(x).pow(3).sum(), [x, bn.weight], create_graph=True)
        return list(torch.autograd.grad(sum(g.pow(2).sum() for g in first), [x, bn.weight, bn.bias]))

    native, reference = second_order(bn), second_order(mean_var)
    assert native[0].abs().max() > 1e-3  # not a vacuous comparison
    for a, b in zip(native, reference, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-10)


# Op table: every op keeps or halves the map as its stride says, and DARTS ops have DARTS' sizes.
SHAPE_KEEPING = [
    "input",
    "identity",
    "batch_norm",
    "instance_norm",
    "relu",
    "leaky_relu",
    "elu",
    "gelu",
    "silu",
    "tanh",
    "sigmoid",
]
CONV_LIKE = [
    "skip_connect",
    "max_pool_3x3",
    "avg_pool_3x3",
    "sep_conv_3x3",
    "sep_conv_5x5",
    "dil_conv_3x3",
    "dil_conv_5x5",
    "conv_1x1",
    "conv_3x3",
    "conv_5x5",
    "conv_7x7",
    "relu_conv_bn_1x1",
    "conv_bn_3x3",
    "proj_1x1",
]


@pytest.mark.parametrize("name", CONV_LIKE)
@pytest.mark.parametrize("stride", [1, 2])
def test_conv_like_ops_follow_stride_and_channels(name, stride):
    module = OPS.get(name)(4, 6, stride)
    out = module(torch.randn(2, 4, 7, 7))
    side = 7 if stride == 1 else 4
    assert out.shape == (2, 6, side, side)


@pytest.mark.parametrize("name", SHAPE_KEEPING)
def test_shape_keeping_ops(name):
    assert OPS.get(name)(4, 4, 1)(torch.randn(2, 4, 5, 5)).shape == (2, 4, 5, 5)


def test_darts_op_parameter_counts_by_hand():
    c = 4
    dil = c * 9 + c * c + 2 * c  # depthwise 3x3, pointwise 1x1, BN
    assert network.count_params(OPS.get("dil_conv_3x3")(c, c, 1)) == dil
    assert network.count_params(OPS.get("sep_conv_3x3")(c, c, 1)) == 2 * dil  # SepConv = DilConv twice
    assert network.count_params(OPS.get("sep_conv_5x5")(c, c, 1)) == 2 * (c * 25 + c * c + 2 * c)
    assert network.count_params(OPS.get("skip_connect")(c, c, 1)) == 0
    assert network.count_params(OPS.get("skip_connect")(c, c, 2)) == 2 * (c * c // 2) + 2 * c  # FactorizedReduce
    assert network.count_params(OPS.get("max_pool_3x3")(c, c, 2)) == 0


def test_pool_2x2_passes_a_one_pixel_map_through():
    x = torch.randn(2, 3, 1, 1)
    assert torch.equal(OPS.get("max_pool_2x2")(3, 3, 1)(x), x)
    assert OPS.get("avg_pool_2x2")(3, 3, 1)(torch.randn(2, 3, 7, 7)).shape == (2, 3, 3, 3)


@OPS.register("test_double_conv_3x3")
def build_test_double_conv(c_in: int, c_out: int, stride: int) -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, stride, padding=1, bias=False),
        nn.ReLU(),
        nn.Conv2d(c_out, c_out, 3, padding=1, bias=False),
    )


def test_a_registered_user_op_is_usable_in_a_space(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text(
        "kind: cell\nops: [test_double_conv_3x3, skip_connect]\nnodes: 2\nlayout: [reduce]\n"
        "channels: 4\nstem_channels: 4\n"
    )
    space = spaces.load_space(path)
    arch = space.from_params(
        {
            "reduce_n2_inputs": "0-1",
            "reduce_n2_op0": "test_double_conv_3x3",
            "reduce_n2_op1": "skip_connect",
            "reduce_n3_inputs": "0-2",
            "reduce_n3_op0": "skip_connect",
            "reduce_n3_op1": "test_double_conv_3x3",
        }
    )
    backbone = network.build(arch, (1, 8, 8))
    assert backbone(torch.randn(3, 1, 8, 8)).shape == (3, 16)  # 2 nodes x 8 channels after reduce
    with pytest.raises(ValueError, match="already registered"):
        OPS.register("test_double_conv_3x3")(build_test_double_conv)


@pytest.mark.slow  # ~4 s on a quiet 2-core machine, >10 s when it is shared
def test_second_order_meta_gradient_under_vmap_equals_a_per_task_loop():
    # The trap of pytorch/functorch#534 (F.batch_norm under vmap): every op here must be exact.
    from torch.func import functional_call, grad, vmap

    from nas_meta.spaces import build_cells

    genotype = [
        [(0, "sep_conv_3x3"), (1, "sep_conv_5x5")],
        [(0, "dil_conv_3x3"), (2, "dil_conv_5x5")],
        [(1, "max_pool_3x3"), (3, "avg_pool_3x3")],
        [(2, "skip_connect"), (4, "sep_conv_3x3")],
    ]
    arch = build_cells({"normal": genotype, "reduce": genotype}, ["normal", "reduce"], channels=2, stem_channels=3)
    net = network.build(arch, (1, 8, 8), seed=0).double()
    params = dict(net.named_parameters())
    tasks = torch.rand(2, 4, 1, 8, 8, dtype=torch.float64)

    def loss(p, x):
        return functional_call(net, p, (x,)).pow(2).mean()

    def adapted_loss(p, x):
        g = grad(loss)(p, x)
        return loss({k: v - 0.1 * g[k] for k, v in p.items()}, x)

    batched = grad(lambda p: vmap(adapted_loss, in_dims=(None, 0))(p, tasks).mean())(params)
    looped = grad(lambda p: torch.stack([adapted_loss(p, x) for x in tasks]).mean())(params)
    for key in params:
        torch.testing.assert_close(batched[key], looped[key], rtol=1e-9, atol=1e-12)


def _conv4_and_op_by_op_reference() -> tuple[network.Backbone, nn.Module]:
    import random

    from nas_meta import spaces

    net = network.build(spaces.load_space("conv4").sample(random.Random(0)), (1, 28, 28), seed=0).double()
    reference = nn.Sequential(*[net.nodes[net.keys[node]] for node in net.order], nn.Flatten())
    return net, reference


def _output_and_second_order_grads(model: nn.Module, params: list[torch.Tensor]) -> list[torch.Tensor]:
    x = torch.rand(6, 1, 28, 28, dtype=torch.float64, generator=torch.Generator().manual_seed(0)) - 0.3
    out = model(x)
    first = torch.autograd.grad(out.pow(2).sum(), params, create_graph=True)
    return [out, *torch.autograd.grad(sum(g.pow(2).sum() for g in first), params)]


def test_relu_then_max_pool_runs_pool_first_with_identical_numbers():
    """The compiler pools before ReLU (a quarter of the ReLU work); outputs and 2nd-order grads are identical."""
    net, reference = _conv4_and_op_by_op_reference()
    net.fuse(False)
    assert len(net.pool_first) == 4 and set(net.pool_first.values()) == {f"b{i}_act" for i in range(1, 5)}
    assert net.norm_pool == {}
    params = list(net.parameters())
    for a, b in zip(
        _output_and_second_order_grads(net, params), _output_and_second_order_grads(reference, params), strict=True
    ):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_batch_norm_fused_with_its_max_pool_gives_the_same_numbers():
    net, reference = _conv4_and_op_by_op_reference()
    assert net.norm_pool == {f"b{i}_pool": f"b{i}_norm" for i in range(1, 5)}
    assert net.conv_norm_pool == {"b1_pool": "b1_conv"}  # the 1-channel first conv (fan-in 9), not the 64-channel ones
    params = list(net.parameters())
    fused = _output_and_second_order_grads(net, params)
    plain = _output_and_second_order_grads(reference, params)
    for a, b in zip(fused, plain, strict=True):
        # conv biases before BatchNorm have zero gradient: compare at the scale of all gradients
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12 * max(t.abs().max().item() for t in plain))


@pytest.mark.parametrize("space", ["conv4", "cell"])
def test_torch_compile_traces_a_compiled_network_as_one_graph(space: str) -> None:
    """The fused ops and the functorch query stay out of torch.compile's way: no graph breaks (each
    would also add guards, and a recompile per guard until dynamo's limit)."""
    import torch._dynamo

    net = network.build(spaces.load_space(space).sample(random.Random(0)), (1, 28, 28), seed=0)
    x = to_channels_last(torch.rand(6, 1, 28, 28, generator=torch.Generator().manual_seed(0)))
    assert net.norm_pool or space == "cell"  # Conv-4's eager network fuses (the cell's has no norm+pool pair)
    explained = torch._dynamo.explain(net)(x)
    assert (explained.graph_count, explained.graph_break_count) == (1, 0), explained.break_reasons


def test_activation_with_two_consumers_is_not_moved_after_the_pool():
    arch = make_arch(
        {"input": {"op": "input"}, "act": {"op": "relu"}, "pool": {"op": "max_pool_2x2"}, "out": {"op": "identity"}},
        [("input", "act"), ("act", "pool"), ("act", "out"), ("pool", "out")],
    )
    assert fusion.pool_first_pairs(arch, "out") == {}


def test_conv_feeding_something_else_is_not_fused_with_its_norm() -> None:
    arch = make_arch(
        {
            "input": {"op": "input"},
            "conv": {"op": "conv_3x3", "c_out": 4},
            "norm": {"op": "batch_norm"},
            "act": {"op": "relu"},
            "pool": {"op": "max_pool_2x2"},
            "out": {"op": "identity", "merge": "concat"},
            "down": {"op": "max_pool_2x2"},
        },
        [
            ("input", "conv"),
            ("conv", "norm"),
            ("norm", "act"),
            ("act", "pool"),
            ("conv", "down"),
            ("down", "out"),
            ("pool", "out"),
        ],
    )
    net = network.build(arch, (1, 8, 8), seed=0)
    assert net.norm_pool == {"pool": "norm"} and net.conv_norm_pool == {}
    arch.remove_edge("conv", "down")
    arch.add_edge("input", "down")
    net = network.build(arch, (1, 8, 8), seed=0)
    assert net.conv_norm_pool == {"pool": "conv"}
    x = to_channels_last(torch.rand(3, 1, 8, 8))
    assert "_ConvBatchNormMaxPool2x2Backward" in _autograd_nodes(net(x))
    torch.testing.assert_close(net(x), net.fuse(False)(x), rtol=1e-5, atol=1e-5)


# -- BatchNorm + 2x2 max-pool as one op (fused.batch_norm_max_pool) --------------------------------


def _norm_and_pool(channels: int, weight: torch.Tensor | None = None) -> tuple[nn.Module, nn.Module]:
    norm = BatchNorm(channels).double()
    with torch.no_grad():
        norm.weight.copy_(torch.linspace(0.5, 1.5, channels) if weight is None else weight)
        norm.bias.copy_(torch.linspace(-1, 1, channels))
    return norm, Pool2x2("max")


@pytest.mark.parametrize("size", [8, 7])  # odd maps drop their last row and column
def test_fused_norm_pool_has_exact_first_and_second_derivatives(size: int) -> None:
    from nas_meta.model.fused import _BatchNormMaxPool2x2, batch_norm_max_pool

    norm, pool = _norm_and_pool(3)
    g = torch.Generator().manual_seed(size)
    x = torch.randn(4, 3, size, size, dtype=torch.float64, generator=g).requires_grad_()
    torch.testing.assert_close(batch_norm_max_pool(norm, pool, x), pool(norm(x)), rtol=1e-12, atol=1e-12)

    def fused(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        return _BatchNormMaxPool2x2.apply(x, weight, bias, norm.eps)

    inputs = (x, norm.weight, norm.bias)
    assert torch.autograd.gradcheck(fused, inputs)
    assert torch.autograd.gradgradcheck(fused, inputs)
    grad = torch.randn(4, 3, size // 2, size // 2, dtype=torch.float64, generator=g)
    want = torch.autograd.grad(pool(norm(x)), inputs, grad)
    got = torch.autograd.grad(fused(*inputs), inputs, grad)
    for a, b in zip(got, want, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


def test_fused_norm_pool_sends_tied_gradients_where_max_pool_does() -> None:
    """Flat image regions make ties; the gradient goes to the window's first maximum, as max_pool2d's."""
    from nas_meta.model.fused import batch_norm_max_pool

    norm, pool = _norm_and_pool(2)
    x = torch.zeros(3, 2, 4, 4, dtype=torch.float64)
    x[:, :, :2, :2] = torch.tensor([[1.0, 1.0], [1.0, 0.0]])  # a tie in the top-left window
    x[0, 0, 3, 3] = 2.0
    x.requires_grad_()
    grad = torch.rand(3, 2, 2, 2, dtype=torch.float64)
    (got,) = torch.autograd.grad(batch_norm_max_pool(norm, pool, x), x, grad)
    (want,) = torch.autograd.grad(pool(norm(x)), x, grad)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)


def test_fused_norm_pool_falls_back_where_it_would_not_be_exact() -> None:
    from nas_meta.model.fused import batch_norm_max_pool, unfused

    def ran_fused(norm: nn.Module, pool: nn.Module, x: torch.Tensor) -> bool:
        out = batch_norm_max_pool(norm, pool, x)
        torch.testing.assert_close(out, pool(norm(x)), rtol=1e-12, atol=1e-12)
        return type(out.grad_fn).__name__.startswith("_BatchNormMaxPool2x2")

    x = torch.randn(4, 3, 6, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(0)).requires_grad_()
    norm, pool = _norm_and_pool(3)
    assert ran_fused(norm, pool, x)
    with unfused():
        assert not ran_fused(norm, pool, x)
    assert not ran_fused(*_norm_and_pool(3, weight=torch.tensor([1.0, -0.5, 2.0])), x)  # a negative scale: max -> min
    assert not ran_fused(norm, pool, x[:, :, :1])  # a map 1 pixel high passes the pool unchanged
    assert not ran_fused(norm, Pool2x2("avg"), x)


def test_norm_feeding_something_else_is_not_fused() -> None:
    arch = make_arch(
        {
            "input": {"op": "input"},
            "conv": {"op": "conv_3x3", "c_out": 4},
            "norm": {"op": "batch_norm"},
            "act": {"op": "relu"},
            "pool": {"op": "max_pool_2x2"},
            "out": {"op": "identity", "merge": "concat"},
        },
        [("input", "conv"), ("conv", "norm"), ("norm", "act"), ("act", "pool"), ("norm", "out"), ("pool", "out")],
    )
    assert fusion.norm_pool_pairs(arch, "out", fusion.pool_first_pairs(arch, "out")) == {}


def _autograd_nodes(out: torch.Tensor) -> set[str]:
    seen, stack = {}, [out.grad_fn]
    while stack:
        node = stack.pop()
        if node is not None and id(node) not in seen:
            seen[id(node)] = type(node).__name__
            stack.extend(parent for parent, _ in node.next_functions)
    return set(seen.values())


def test_first_conv_fused_with_norm_and_pool_gives_the_same_first_order_numbers():
    """The training path (no create_graph): the fused first layer's fast backward in the network."""
    net, reference = _conv4_and_op_by_op_reference()
    x = to_channels_last(torch.rand(6, 1, 28, 28, dtype=torch.float64, generator=torch.Generator().manual_seed(1)))
    out = net(x)
    assert "_ConvBatchNormMaxPool2x2Backward" in _autograd_nodes(out)
    want = reference(x)
    torch.testing.assert_close(out, want, rtol=1e-10, atol=1e-12)
    params = list(net.parameters())
    got = torch.autograd.grad(out.pow(2).sum(), params)
    plain = torch.autograd.grad(want.pow(2).sum(), params)
    scale = max(g.abs().max().item() for g in plain)
    for a, b in zip(got, plain, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12 * scale)
    assert got[1].abs().max().item() == 0.0  # the first conv's bias: BatchNorm removes any shift
    net.fuse(False)
    assert net.conv_norm_pool == {} and net.norm_pool == {}


# -- a small-fan-in conv + BatchNorm + 2x2 max-pool as one op (fused.conv_batch_norm_max_pool) -----


def _conv_norm_pool(c_in: int, c_out: int, k: int, **conv_options) -> tuple[nn.Module, nn.Module, nn.Module]:
    torch.manual_seed(c_in * 100 + c_out * 10 + k)
    conv = nn.Conv2d(c_in, c_out, k, padding=conv_options.pop("padding", k // 2), **conv_options).double()
    norm, pool = _norm_and_pool(c_out)
    return conv, norm, pool


@pytest.mark.parametrize(("c_in", "k", "size"), [(1, 3, 8), (3, 3, 6), (1, 5, 10), (1, 3, 7)])
def test_fused_conv_norm_pool_has_the_reference_derivatives(c_in: int, k: int, size: int) -> None:
    from nas_meta.model.fused import _ConvBatchNormMaxPool2x2, conv_batch_norm_max_pool

    conv, norm, pool = _conv_norm_pool(c_in, 4, k)
    g = torch.Generator().manual_seed(size)
    x = to_channels_last(torch.rand(5, c_in, size, size, dtype=torch.float64, generator=g))
    out = conv_batch_norm_max_pool(conv, norm, pool, x)
    assert type(out.grad_fn).__name__.startswith("_ConvBatchNormMaxPool2x2")
    torch.testing.assert_close(out, pool(norm(conv(x))), rtol=1e-12, atol=1e-12)

    def fused(weight: torch.Tensor, bias: torch.Tensor, gamma: torch.Tensor, beta: torch.Tensor) -> torch.Tensor:
        return _ConvBatchNormMaxPool2x2.apply(x, weight, bias, gamma, beta, norm.eps)

    inputs = (conv.weight, conv.bias, norm.weight, norm.bias)
    assert torch.autograd.gradcheck(fused, inputs)
    assert torch.autograd.gradgradcheck(fused, inputs)  # a differentiable backward recomputes the reference
    grad = torch.randn(out.shape, dtype=torch.float64, generator=g)
    want = torch.autograd.grad(pool(norm(conv(x))), inputs, grad)
    got = torch.autograd.grad(fused(*inputs), inputs, grad)
    for a, b in zip(got, want, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


def test_fused_conv_norm_pool_sends_tied_gradients_where_max_pool_does() -> None:
    """Blank image regions give equal conv outputs in a window: the same winners as max_pool2d."""
    from nas_meta.model.fused import conv_batch_norm_max_pool

    conv, norm, pool = _conv_norm_pool(1, 3, 3)
    x = torch.zeros(4, 1, 8, 8, dtype=torch.float64)
    x[:, :, 2:5, 2:5] = 1.0  # a stroke on a blank page
    x[0, 0, 7, 7] = 0.5
    x = to_channels_last(x)
    grad = torch.rand(4, 3, 4, 4, dtype=torch.float64)
    params = list(conv.parameters()) + list(norm.parameters())
    got = torch.autograd.grad(conv_batch_norm_max_pool(conv, norm, pool, x), params, grad)
    want = torch.autograd.grad(pool(norm(conv(x))), params, grad)
    for a, b in zip(got, want, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


def test_fused_conv_norm_pool_falls_back_where_it_does_not_apply() -> None:
    from nas_meta.model.fused import conv_batch_norm_max_pool, fusable_conv, unfused

    def ran(conv: nn.Module, norm: nn.Module, pool: nn.Module, x: torch.Tensor) -> str:
        out = conv_batch_norm_max_pool(conv, norm, pool, x)
        torch.testing.assert_close(out, pool(norm(conv(x))), rtol=1e-12, atol=1e-12)
        return type(out.grad_fn).__name__.split("Backward")[0]

    x = torch.rand(3, 1, 6, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    conv, norm, pool = _conv_norm_pool(1, 3, 3)
    assert ran(conv, norm, pool, x) == "_BatchNormMaxPool2x2"  # NCHW: the user's layout is kept
    x = to_channels_last(x)
    assert ran(conv, norm, pool, x) == "_ConvBatchNormMaxPool2x2"
    assert ran(conv, norm, pool, x.clone().requires_grad_()) == "_BatchNormMaxPool2x2"  # the input needs a gradient
    with unfused():
        assert ran(conv, norm, pool, x) == "MaxPool2DWithIndices"
    negative = _norm_and_pool(3, weight=torch.tensor([1.0, -0.5, 2.0]))[0]
    assert ran(conv, negative, pool, x) == "MaxPool2DWithIndices"  # a negative scale: max -> min
    assert ran(conv, norm, Pool2x2("avg"), x) == "AvgPool2D"
    for other in (
        _conv_norm_pool(4, 3, 3)[0],
        _conv_norm_pool(1, 3, 3, stride=2)[0],
        _conv_norm_pool(1, 3, 3, padding=0)[0],
        _conv_norm_pool(1, 3, 3, dilation=2, padding=2)[0],
    ):
        assert not fusable_conv(other)  # fan-in 36 > 32, a stride, a 'valid' conv, a dilation
    wide = _conv_norm_pool(4, 3, 3)[0]
    assert (
        ran(wide, norm, pool, to_channels_last(torch.rand(3, 4, 6, 6, dtype=torch.float64))) == "_BatchNormMaxPool2x2"
    )


def test_flops_of_a_network_whose_map_shrinks_to_one_pixel_before_a_batch_norm():
    # 4x4 -> conv stride 2 -> 2x2 -> conv stride 2 -> 1x1 -> batch norm: a norm over one value per
    # channel and example, which a batch of one cannot take (the search once crashed counting it).
    arch = make_arch(
        {
            "input": {"op": "input"},
            "c1": {"op": "conv_3x3", "c_out": 4, "stride": 2},
            "c2": {"op": "conv_3x3", "c_out": 8, "stride": 2},
            "bn": {"op": "batch_norm"},
        },
        [("input", "c1"), ("c1", "c2"), ("c2", "bn")],
    )
    backbone = network.build(arch, (1, 4, 4), seed=0)
    assert backbone.shapes["bn"] == (8, 1, 1)
    by_hand = 2 * 1 * 4 * 9 * 2 * 2 + 2 * 4 * 8 * 9 * 1 * 1  # per example, as for Conv-4
    assert network.count_flops(backbone, (1, 4, 4)) == by_hand


def test_an_architecture_without_parameters_is_a_candidate_failure_not_a_crash():
    from nas_meta.config import make_config
    from nas_meta.learners import build_learner
    from nas_meta.learners.train import meta_train

    arch = make_arch(
        {"input": {"op": "input"}, "pool": {"op": "max_pool_2x2"}, "gap": {"op": "global_avg_pool"}},
        [("input", "pool"), ("pool", "gap")],
    )
    backbone = network.build(arch, (1, 8, 8), seed=0)
    assert network.count_params(backbone) == 0
    cfg = make_config("smoke", learner={"algo": "protonet"})
    learner = build_learner(cfg.learner, backbone, feature_dim=backbone.feature_dim, ways=3, task="classification")
    with pytest.raises(SpaceError, match=r"^the architecture has nothing to train: .*no parameters"):
        meta_train(learner, iter(()), None, cfg.learner, seed=0)
