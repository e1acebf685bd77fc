"""Training-free proxies against values computed by hand on two-layer networks."""

from __future__ import annotations

import math
import random

import pytest
import torch
from torch import nn

from nas_meta import spaces
from nas_meta.config import DataConfig, LearnerConfig
from nas_meta.data import Episodes, load_dataset
from nas_meta.errors import ConfigError
from nas_meta.learners import build_learner
from nas_meta.model import network
from nas_meta.search.proxies import PROXIES, ProxyInputs, compute_proxies, grad_norm, naswot, proto_acc, snip, synflow

W1 = [[1.0, -2.0], [3.0, 0.0], [-1.0, 1.0]]
W2 = [[2.0, -1.0, 1.0]]


def two_layer(w1=W1, w2=W2, norm: bool = False) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Flatten(), nn.Linear(2, 3, bias=False)]
    if norm:
        layers.append(_batch_norm(3))
    layers += [nn.ReLU(), nn.Linear(3, 1, bias=False)]
    net = nn.Sequential(*layers)
    with torch.no_grad():
        net[1].weight.copy_(torch.tensor(w1))
        net[-1].weight.copy_(torch.tensor(w2))
    return net


def _batch_norm(channels: int) -> nn.Module:
    from nas_meta.model.ops import BatchNorm

    return BatchNorm(channels)


def test_synflow_is_layers_times_the_absolute_path_sum():
    # With |W| and an all-ones input, R = 1' |W2| |W1| 1 = 2*3 + 1*3 + 1*2 = 11.  R is linear in
    # each layer's weights, so sum_w w dR/dw = R per layer: 2 layers -> 22.
    assert synflow(two_layer(), (2,)) == pytest.approx(22.0)


def test_synflow_ignores_signs_and_the_norms_statistics():
    flipped = two_layer([[-a for a in row] for row in W1], [[-a for a in row] for row in W2])
    assert synflow(flipped, (2,)) == pytest.approx(22.0)
    # A BatchNorm keeps only its affine map (scale 1): R unchanged, and its scale is one more
    # layer R is linear in (its zero shift adds nothing): 3 * 11.
    assert synflow(two_layer(norm=True), (2,)) == pytest.approx(33.0)


def test_synflow_leaves_the_backbone_alone():
    net = two_layer()
    before = [p.clone() for p in net.parameters()]
    synflow(net, (2,))
    assert all(torch.equal(a, b) for a, b in zip(before, net.parameters(), strict=True))
    assert all(p.grad is None for p in net.parameters())


def test_naswot_on_four_images_by_hand():
    # Units: x1, x2, x1 + x2 (identity rows and their sum), codes = which pre-activations are > 0.
    net = nn.Sequential(nn.Flatten(), nn.Linear(2, 3, bias=False), nn.ReLU())
    with torch.no_grad():
        net[1].weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]))
    images = torch.tensor([[1.0, 1.0], [1.0, -1.0], [-1.0, 1.0], [-1.0, -1.0]])
    # codes 111, 100, 010, 000; K[i, j] = units where i and j agree.
    kernel = [[3, 1, 1, 0], [1, 3, 1, 2], [1, 1, 3, 2], [0, 2, 2, 3]]
    assert torch.linalg.det(torch.tensor(kernel, dtype=torch.float64)).item() == pytest.approx(12.0)
    assert naswot(net, images) == pytest.approx(math.log(12.0))


def test_naswot_of_images_the_net_cannot_tell_apart():
    net = nn.Sequential(nn.Flatten(), nn.Linear(2, 1, bias=False), nn.ReLU())
    with torch.no_grad():
        net[1].weight.fill_(1.0)
    same_code = torch.tensor([[1.0, 1.0], [2.0, 0.5]])  # both > 0 on the one unit: K = [[1, 1], [1, 1]]
    assert naswot(net, same_code) == -math.inf
    assert math.isnan(naswot(nn.Flatten(), same_code))  # no activation at all


class _Bilinear(nn.Module):
    """loss = w2 . (W1 x) on the batch's one input x: dL/dW1 = w2 x', dL/dw2 = W1 x."""

    def __init__(self) -> None:
        super().__init__()
        self.w1 = nn.Parameter(torch.tensor([[1.0, -2.0], [0.5, 3.0]]))
        self.w2 = nn.Parameter(torch.tensor([2.0, -1.0]))

    def loss(self, batch):
        return self.w2 @ (self.w1 @ batch), torch.tensor(0.0)


def test_grad_norm_and_snip_by_hand():
    learner, x = _Bilinear(), torch.tensor([3.0, 1.0])
    # dL/dW1 = w2 x' = [[6, 2], [-3, -1]]  (norm sqrt(50));  dL/dw2 = W1 x = [1, 4.5]  (norm sqrt(21.25))
    assert grad_norm(learner, x) == pytest.approx(math.sqrt(50) + math.sqrt(21.25))
    # |W1 * dW1| = 6 + 4 + 1.5 + 3;  |w2 * dw2| = 2 + 4.5
    assert snip(learner, x) == pytest.approx(14.5 + 6.5)
    assert learner.w1.grad is None  # computed on a copy


def _encoded_sampler(ways: int, dim: int = 6):
    """Episodes whose images are their class's one-hot code: an identity embedding classifies them all."""

    class Sampler:
        def sample(self, tasks: int) -> Episodes:
            eye = torch.eye(dim)[:ways]  # (ways, dim)
            x = eye.view(1, ways, 1, 1, dim).expand(tasks, ways, 1, 1, dim).contiguous()
            y = torch.arange(ways).expand(tasks, ways).contiguous()
            return Episodes(x, y, x.clone(), y.clone(), ways)

    return Sampler()


def test_proto_acc_is_the_untrained_nearest_prototype_accuracy():
    sampler = _encoded_sampler(ways=4)
    assert proto_acc(nn.Flatten(), sampler, episodes=8) == pytest.approx(1.0)

    class Constant(nn.Module):  # every image maps to one point: every query ties, argmax takes class 0
        def forward(self, x):
            return torch.zeros(x.shape[0], 3) + 0 * x.flatten(1)[:, :1]

    assert proto_acc(Constant(), sampler, episodes=8) == pytest.approx(1 / 4)


@pytest.fixture(scope="module")
def conv_inputs():
    ds = load_dataset(DataConfig(glyph_classes=30, glyph_samples=6))
    arch = spaces.load_space("conv4").sample(random.Random(0))
    backbone = network.build(arch, ds.input_shape, seed=0)
    learner = build_learner(
        LearnerConfig(algo="protonet"), backbone, feature_dim=backbone.feature_dim, ways=3, task="classification"
    )
    batch = ds.sampler("train", ways=3, shots=1, queries=2, seed=0).sample(2)
    val = ds.sampler("val", ways=3, shots=1, queries=2, seed=1)
    return ProxyInputs(backbone, learner, batch, ds.input_shape, val, val_episodes=6)


def test_every_registered_proxy_on_a_real_backbone(conv_inputs):
    before = {k: v.clone() for k, v in conv_inputs.learner.state_dict().items()}
    training_free = [name for name in PROXIES.names() if name != "supernet"]  # that one needs a trained supernet
    scores = compute_proxies(conv_inputs, training_free)
    assert set(scores) == set(training_free)
    assert scores["params"][0] == 111_936  # Conv-4 by hand (see test_network)
    for name, (value, seconds) in scores.items():
        assert math.isfinite(value), name
        assert seconds >= 0
    assert 0 <= scores["proto_acc"][0] <= 1
    assert scores["synflow"][0] > 0 and scores["grad_norm"][0] > 0 and scores["snip"][0] > 0
    after = conv_inputs.learner.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert all(p.grad is None for p in conv_inputs.learner.parameters())


def test_the_supernet_score_needs_a_trained_supernet(conv_inputs):
    with pytest.raises(ConfigError, match="needs --strategy supernet"):
        compute_proxies(conv_inputs, ["supernet"])


def test_proxies_are_deterministic(conv_inputs):
    names = ["naswot", "grad_norm", "snip", "synflow"]
    first = compute_proxies(conv_inputs, names)
    second = compute_proxies(conv_inputs, names)
    assert {k: v[0] for k, v in first.items()} == {k: v[0] for k, v in second.items()}
    # proto_acc draws its episodes: equal for samplers of one seed (what every candidate gets).
    ds = load_dataset(DataConfig(glyph_classes=30, glyph_samples=6))
    accs = [proto_acc(conv_inputs.backbone, ds.sampler("val", ways=3, shots=1, queries=2, seed=5), 6) for _ in range(2)]
    assert accs[0] == accs[1]


def test_unknown_proxy_names_the_choices(conv_inputs):
    with pytest.raises(ConfigError, match=r"unknown proxy 'synfloww'; choose from \[.*'synflow'"):
        compute_proxies(conv_inputs, ["params", "synfloww"])
