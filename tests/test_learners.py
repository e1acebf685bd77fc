"""Learners: exact maths (zero steps, meta-gradients against references, hand-derived gradients)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call

from nas_meta.config import LearnerConfig
from nas_meta.data.sampler import Episodes
from nas_meta.errors import ConfigError
from nas_meta.learners import LEARNERS, MAML, ProtoNet, build_learner
from nas_meta.learners.base import to_channels_last

WAYS, SHOTS, QUERIES, TASKS, SIZE, CHANNELS = 3, 2, 4, 3, 8, 4


class MeanVarBatchNorm(nn.Module):
    """BatchNorm from mean/var ops with batch statistics always, as the ops table writes it."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x: Tensor) -> Tensor:
        return batch_norm(x, self.weight, self.bias)


def batch_norm(x: Tensor, weight: Tensor, bias: Tensor) -> Tensor:
    mean = x.mean(dim=(0, 2, 3), keepdim=True)
    var = x.var(dim=(0, 2, 3), keepdim=True, unbiased=False)
    return (x - mean) * torch.rsqrt(var + 1e-5) * weight.view(1, -1, 1, 1) + bias.view(1, -1, 1, 1)


class TinyConv(nn.Module):
    """Two conv-BN-ReLU-pool blocks: (B, 1, 8, 8) -> (B, CHANNELS * 2 * 2)."""

    def __init__(self, generator: torch.Generator) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, CHANNELS, 3, padding=1)
        self.bn1 = MeanVarBatchNorm(CHANNELS)
        self.conv2 = nn.Conv2d(CHANNELS, CHANNELS, 3, padding=1)
        self.bn2 = MeanVarBatchNorm(CHANNELS)
        self.feature_dim = CHANNELS * (SIZE // 4) ** 2
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(
                    torch.randn(p.shape, generator=generator) * 0.5
                    + (1.0 if p.dim() == 1 and p is self.bn1.weight else 0.0)
                )

    def forward(self, x: Tensor) -> Tensor:
        x = F.max_pool2d(F.relu(self.bn1(self.conv1(x))), 2)
        x = F.max_pool2d(F.relu(self.bn2(self.conv2(x))), 2)
        return x.flatten(1)


def reference_forward(p: dict[str, Tensor], x: Tensor) -> Tensor:
    """TinyConv + head written out by hand, independent of nn.Module and functional_call."""
    x = F.conv2d(x, p["backbone.conv1.weight"], p["backbone.conv1.bias"], padding=1)
    x = F.max_pool2d(F.relu(batch_norm(x, p["backbone.bn1.weight"], p["backbone.bn1.bias"])), 2)
    x = F.conv2d(x, p["backbone.conv2.weight"], p["backbone.conv2.bias"], padding=1)
    x = F.max_pool2d(F.relu(batch_norm(x, p["backbone.bn2.weight"], p["backbone.bn2.bias"])), 2)
    return x.flatten(1) @ p["head.weight"].T + p["head.bias"]


def make_batch(seed: int, *, tasks: int = TASKS, dtype: torch.dtype = torch.float32) -> Episodes:
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(WAYS)
    return Episodes(
        support_x=torch.rand(tasks, WAYS * SHOTS, 1, SIZE, SIZE, generator=g, dtype=dtype),
        support_y=labels.repeat_interleave(SHOTS).repeat(tasks, 1),
        query_x=torch.rand(tasks, WAYS * QUERIES, 1, SIZE, SIZE, generator=g, dtype=dtype),
        query_y=labels.repeat_interleave(QUERIES).repeat(tasks, 1),
        ways=WAYS,
    )


def make_maml(*, seed: int = 0, dtype: torch.dtype = torch.float32, **kwargs) -> MAML:
    g = torch.Generator().manual_seed(seed)
    backbone = TinyConv(g)
    learner = MAML(backbone, feature_dim=backbone.feature_dim, ways=WAYS, task="classification", **kwargs)
    with torch.no_grad():  # a non-zero head, so that every parameter matters in the tests
        learner.head.weight.copy_(torch.randn(learner.head.weight.shape, generator=g) * 0.3)
        learner.head.bias.copy_(torch.randn(learner.head.bias.shape, generator=g) * 0.3)
    return learner.to(dtype)


def flat_grad(loss: Tensor, params: list[Tensor]) -> Tensor:
    return torch.cat([g.flatten() for g in torch.autograd.grad(loss, params)])


# -- MAML: exactness ----------------------------------------------------------------------------


@pytest.mark.parametrize("execution", ["loop", "vmap"])
@pytest.mark.parametrize("first_order", [False, True])
def test_maml_with_zero_inner_steps_is_the_plain_network(execution: str, first_order: bool) -> None:
    learner = make_maml(inner_steps=0, execution=execution, first_order=first_order, channels_last=False)
    batch = make_batch(1)
    outputs = learner.query_outputs(batch, 0, meta=True)
    plain = torch.stack([learner(batch.query_x[t]) for t in range(TASKS)])
    loss, accuracy = learner.loss(batch)
    plain_loss = torch.stack([F.cross_entropy(plain[t], batch.query_y[t]) for t in range(TASKS)]).mean()
    if execution == "loop":
        assert torch.equal(outputs, plain)
    torch.testing.assert_close(outputs, plain, rtol=1e-6, atol=1e-6)  # vmap batches the matmuls
    torch.testing.assert_close(loss, plain_loss, rtol=1e-6, atol=1e-6)
    assert accuracy.item() == pytest.approx((plain.argmax(-1) == batch.query_y).float().mean().item())


def reference_meta_gradient(learner: MAML, batch: Episodes, *, steps: int, second_order: bool) -> Tensor:
    """Per-task loop with plain autograd.grad over the hand-written forward."""
    names = [n for n, _ in learner.model.named_parameters()]
    theta = dict(learner.model.named_parameters())
    losses = []
    for t in range(batch.support_x.shape[0]):
        fast = dict(theta)
        for _ in range(steps):
            loss = F.cross_entropy(reference_forward(fast, batch.support_x[t]), batch.support_y[t])
            grads = torch.autograd.grad(loss, [fast[n] for n in names], create_graph=second_order)
            fast = {n: fast[n] - learner.inner_lr * g for n, g in zip(names, grads, strict=True)}
        losses.append(F.cross_entropy(reference_forward(fast, batch.query_x[t]), batch.query_y[t]))
    return flat_grad(torch.stack(losses).mean(), [theta[n] for n in names])


@pytest.mark.parametrize("execution", ["loop", "threads", "vmap"])
@pytest.mark.parametrize("first_order", [False, True])
def test_meta_gradient_equals_per_task_reference(execution: str, first_order: bool) -> None:
    learner = make_maml(inner_steps=2, inner_lr=0.3, execution=execution, first_order=first_order)
    batch = make_batch(2)
    loss, _ = learner.loss(batch)
    got = flat_grad(loss, list(learner.parameters()))
    want = reference_meta_gradient(learner, batch, steps=2, second_order=not first_order)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-6)


def test_second_and_first_order_meta_gradients_differ() -> None:
    batch = make_batch(3)
    grads = {}
    for first_order in (False, True):
        learner = make_maml(inner_steps=1, inner_lr=0.5, first_order=first_order)
        grads[first_order] = flat_grad(learner.loss(batch)[0], list(learner.parameters()))
    difference = (grads[False] - grads[True]).norm() / grads[False].norm()
    assert difference > 0.01


class Polynomial(nn.Module):
    """Fixed features [x, x^2] (no parameters): the only parameters are MAML's linear head."""

    feature_dim = 2

    def forward(self, x: Tensor) -> Tensor:
        return torch.cat([x, x * x], dim=-1)


def regression_batch() -> Episodes:
    g = torch.Generator().manual_seed(4)
    sx, qx = torch.rand(2, 5, 1, generator=g) * 2 - 1, torch.rand(2, 7, 1, generator=g) * 2 - 1
    return Episodes(sx, 3 * sx - 1 + sx**2, qx, 3 * qx - 1 + qx**2, ways=1)


def test_linear_head_meta_gradients_equal_the_hand_derived_ones() -> None:
    """MSE with a linear head y = w.f + c: every derivative is in closed form.

    Support gradient  g_s(theta) = 2/n A_s^T (A_s theta - y_s), A = [f, 1], theta = (w, c);
    fast weights      phi = theta - a g_s(theta);  Hessian H_s = 2/n A_s^T A_s (constant);
    first order       dL_q/dtheta ~ g_q(phi) = 2/m A_q^T (A_q phi - y_q);
    second order      dL_q/dtheta = (I - a H_s) g_q(phi).
    """
    batch, lr = regression_batch(), 0.1
    got = {}
    for first_order in (False, True):
        learner = MAML(Polynomial(), feature_dim=2, ways=1, task="regression", inner_lr=lr, first_order=first_order)
        with torch.no_grad():
            learner.head.weight.copy_(torch.tensor([[0.5, -0.2]]))
            learner.head.bias.fill_(0.3)
        got[first_order] = flat_grad(learner.loss(batch)[0], [learner.head.weight, learner.head.bias])
    theta = torch.tensor([0.5, -0.2, 0.3], dtype=torch.float64)
    first, second = torch.zeros(3, dtype=torch.float64), torch.zeros(3, dtype=torch.float64)
    for t in range(2):
        a_s = torch.cat([Polynomial()(batch.support_x[t]), torch.ones(5, 1)], 1).double()
        a_q = torch.cat([Polynomial()(batch.query_x[t]), torch.ones(7, 1)], 1).double()
        y_s, y_q = batch.support_y[t, :, 0].double(), batch.query_y[t, :, 0].double()
        phi = theta - lr * 2 / 5 * a_s.T @ (a_s @ theta - y_s)
        g_q = 2 / 7 * a_q.T @ (a_q @ phi - y_q)
        first += g_q / 2
        second += (torch.eye(3, dtype=torch.float64) - lr * 2 / 5 * a_s.T @ a_s) @ g_q / 2
    torch.testing.assert_close(got[True].double(), first, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(got[False].double(), second, rtol=1e-5, atol=1e-6)
    assert (first - second).abs().max() > 1e-2


@pytest.mark.parametrize("execution", ["threads", "vmap"])
def test_every_execution_gives_the_loops_outputs_loss_and_evaluation(execution: str) -> None:
    batch = make_batch(5)
    loop = make_maml(execution="loop", test_inner_steps=3)
    other = make_maml(execution=execution, test_inner_steps=3)
    torch.testing.assert_close(
        other.query_outputs(batch, 2, meta=True), loop.query_outputs(batch, 2, meta=True), rtol=1e-5, atol=1e-5
    )
    torch.testing.assert_close(other.loss(batch), loop.loss(batch), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(other.evaluate(batch), loop.evaluate(batch))


@pytest.mark.parametrize("algo", ["maml", "protonet"])
def test_bf16_autocast_holds_on_the_worker_threads(algo: str) -> None:
    """Autocast is per thread in torch: the tasks on worker threads must run in bf16 as the loop does."""
    batch = make_batch(12)
    grads = {}
    for execution, amp in (("loop", True), ("threads", True), ("threads", False)):
        if algo == "maml":
            learner = make_maml(execution=execution)
            params = list(learner.model.parameters())
        else:
            backbone = TinyConv(torch.Generator().manual_seed(0))
            learner = ProtoNet(backbone, execution=execution)
            params = list(backbone.parameters())
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
            loss = learner.loss(batch)[0]
        grads[execution, amp] = flat_grad(loss, params)

    def distance(key: tuple[str, bool]) -> float:
        return ((grads[key] - grads["loop", True]).norm() / grads["loop", True].norm()).item()

    # bf16 rounds the per-task gradients otherwise than the loop's one backward (~1%); fp32 on the
    # workers, as torch leaves them without the caller's autocast, is several times further away.
    assert 4 * distance(("threads", True)) < distance(("threads", False))


def test_threads_are_chosen_on_a_multicore_cpu_only_when_safe() -> None:
    learner, x = make_maml(), make_batch(0).support_x
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        assert learner._use_threads(x, meta=True)
        torch.set_num_threads(1)
        assert not learner._use_threads(x, meta=True)
    finally:
        torch.set_num_threads(threads)
    assert not learner._use_threads(x[:1], meta=True)  # one task: nothing to share out
    with torch.no_grad():
        assert not learner._use_threads(x, meta=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):  # carried to the workers by run_tasks
        assert learner._use_threads(x, meta=True) == (torch.get_num_threads() > 1)
    learner.model.backbone.add_module("dropout", nn.Dropout(0.1))  # RNG order would depend on scheduling
    assert not learner._use_threads(x, meta=True)


def test_support_loss_falls_after_adaptation() -> None:
    learner = make_maml(inner_lr=0.4, channels_last=False)
    batch = make_batch(6)
    params = dict(learner.model.named_parameters())
    for t in range(TASKS):
        x, y = batch.support_x[t], batch.support_y[t]
        losses = [
            F.cross_entropy(
                functional_call(learner.model, learner.adapt(params, x, y, steps, create_graph=False), (x,)), y
            ).item()
            for steps in (0, 1, 5)
        ]
        assert losses[0] > losses[1] > losses[2]


def memorisation_batch(seed: int) -> Episodes:
    """Episodes whose queries are their support images (each twice): adapting on the support
    must change the answers on the query."""
    batch = make_batch(seed)
    return Episodes(
        support_x=batch.support_x,
        support_y=batch.support_y,
        query_x=batch.support_x.repeat_interleave(QUERIES // SHOTS, dim=1),
        query_y=batch.query_y,
        ways=WAYS,
    )


def hand_adapted_accuracy(learner: MAML, batch: Episodes, steps: int) -> Tensor:
    """(T,) query accuracy after ``steps`` plain SGD steps on each support set, with the
    hand-written forward and detached copies of the weights."""
    names = [n for n, _ in learner.model.named_parameters()]
    accuracies = []
    for t in range(batch.support_x.shape[0]):
        fast = {n: p.detach().clone().requires_grad_() for n, p in learner.model.named_parameters()}
        for _ in range(steps):
            loss = F.cross_entropy(reference_forward(fast, batch.support_x[t]), batch.support_y[t])
            grads = torch.autograd.grad(loss, [fast[n] for n in names])
            fast = {n: fast[n] - learner.inner_lr * g for n, g in zip(names, grads, strict=True)}
        out = reference_forward(fast, batch.query_x[t])
        accuracies.append((out.argmax(-1) == batch.query_y[t]).float().mean())
    return torch.stack(accuracies)


@pytest.mark.parametrize("execution", ["loop", "threads", "vmap"])
def test_evaluate_adapts_without_meta_gradient_even_under_no_grad(execution: str) -> None:
    # MAML's own zero head: every logit of the unadapted network is 0, so it answers class 0
    # (argmax of a tie) for every query and scores exactly 1/WAYS on class-balanced queries.
    backbone = TinyConv(torch.Generator().manual_seed(0))
    learner = MAML(
        backbone,
        feature_dim=backbone.feature_dim,
        ways=WAYS,
        task="classification",
        inner_lr=0.4,
        test_inner_steps=3,
        execution=execution,
        channels_last=False,
    )
    batch = memorisation_batch(7)
    before = {k: v.clone() for k, v in learner.state_dict().items()}
    plain = torch.stack(
        [(learner(batch.query_x[t]).argmax(-1) == batch.query_y[t]).float().mean() for t in range(TASKS)]
    )
    torch.testing.assert_close(plain, torch.full((TASKS,), 1 / WAYS))
    with torch.no_grad():
        accuracy = learner.evaluate(batch)
    # Three steps of adaptation on the support, as a hand-run inner loop computes them: 4 of 6
    # queries right on the first and third episode, 3 of 6 on the second.
    expected = hand_adapted_accuracy(learner, batch, 3)
    torch.testing.assert_close(expected, torch.tensor([4 / 6, 3 / 6, 4 / 6]))
    torch.testing.assert_close(accuracy, expected)
    assert (accuracy > plain).all()
    # The steps are test_inner_steps, not the training's inner_steps: one step scores otherwise.
    assert learner.inner_steps == 1
    torch.testing.assert_close(hand_adapted_accuracy(learner, batch, 1), torch.tensor([2 / 6, 3 / 6, 2 / 6]))
    # No meta-gradient, and the shared weights are left as they were.
    assert all(p.grad is None for p in learner.parameters())
    assert all(torch.equal(v, before[k]) for k, v in learner.state_dict().items())
    # 0 test steps is the unadapted network.
    learner.test_inner_steps = 0
    torch.testing.assert_close(learner.evaluate(batch), plain)


def test_maml_head_starts_at_zero_and_has_ways_outputs() -> None:
    backbone = TinyConv(torch.Generator().manual_seed(0))
    learner = build_learner(
        LearnerConfig(algo="maml"), backbone, feature_dim=backbone.feature_dim, ways=5, task="classification"
    )
    assert learner.head.weight.shape == (5, backbone.feature_dim)
    assert learner.head.weight.abs().sum() == 0 and learner.head.bias.abs().sum() == 0


def test_maml_regression_head_outputs_one_value_and_mse_metric() -> None:
    learner = build_learner(
        LearnerConfig(algo="maml", inner_lr=0.01), Polynomial(), feature_dim=2, ways=1, task="regression"
    )
    with torch.no_grad():
        learner.head.weight.fill_(0.5)
    batch = regression_batch()
    for execution in ("threads", "vmap"):
        other = MAML(Polynomial(), feature_dim=2, ways=1, task="regression", inner_lr=0.01, execution=execution)
        other.load_state_dict(learner.state_dict())
        learner.execution = "loop"
        torch.testing.assert_close(other.loss(batch), learner.loss(batch))
        torch.testing.assert_close(other.evaluate(batch), learner.evaluate(batch))
    assert learner.head.out_features == 1
    outputs = learner.query_outputs(batch, 1, meta=True)
    loss, metric = learner.loss(batch)
    torch.testing.assert_close(loss, F.mse_loss(outputs, batch.query_y))
    torch.testing.assert_close(metric, loss.detach())
    per_episode = learner.evaluate(batch)
    assert per_episode.shape == (2,) and (per_episode > 0).all()


def test_channels_last_changes_only_the_rounding() -> None:
    batch = make_batch(8)
    plain, fast = make_maml(channels_last=False), make_maml(channels_last=True)
    torch.testing.assert_close(
        fast.query_outputs(batch, 1, meta=True), plain.query_outputs(batch, 1, meta=True), rtol=1e-5, atol=1e-5
    )
    backbone = TinyConv(torch.Generator().manual_seed(0))
    torch.testing.assert_close(
        ProtoNet(backbone, channels_last=True).loss(batch)[0],
        ProtoNet(backbone, channels_last=False).loss(batch)[0],
        rtol=1e-5,
        atol=1e-6,
    )


def test_one_channel_images_really_go_nhwc() -> None:
    """.contiguous(channels_last) is a no-op on 1-channel images, and oneDNN then stays NCHW."""
    x = make_batch(0).query_x  # (T, N, 1, H, W)
    assert x[0].contiguous(memory_format=torch.channels_last).stride(1) != 1  # the trap
    nhwc = to_channels_last(x)
    assert torch.equal(nhwc, x) and nhwc[0].stride(1) == 1
    out = F.conv2d(nhwc[0], torch.randn(CHANNELS, 1, 3, 3), padding=1)
    assert out.is_contiguous(memory_format=torch.channels_last)
    assert not F.conv2d(x[0], torch.randn(CHANNELS, 1, 3, 3), padding=1).is_contiguous(
        memory_format=torch.channels_last
    )
    assert to_channels_last(torch.ones(3, 4)).stride() == (4, 1)  # not images: unchanged


def test_nhwc_is_the_cpu_default_and_second_order_support_stays_nchw() -> None:
    batch = make_batch(2)
    maml = make_maml()
    assert maml._use_channels_last(batch.support_x) and not make_maml(channels_last=False)._use_channels_last(
        batch.support_x
    )
    assert ProtoNet(TinyConv(torch.Generator().manual_seed(0)))._use_channels_last(batch.query_x)
    sx, qx = maml._inputs(batch, create_graph=True)
    assert sx is batch.support_x and qx[0].stride(1) == 1
    sx, _ = maml._inputs(batch, create_graph=False)
    assert sx[0].stride(1) == 1


@pytest.mark.parametrize("first_order", [False, True])
def test_default_layout_gives_the_reference_meta_gradient(first_order: bool) -> None:
    learner = make_maml(inner_lr=0.3, first_order=first_order, dtype=torch.float64)
    batch = make_batch(21, dtype=torch.float64)
    got = flat_grad(learner.loss(batch)[0], list(learner.parameters()))
    want = reference_meta_gradient(learner, batch, steps=1, second_order=not first_order)
    torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-12)


@pytest.mark.slow
@pytest.mark.parametrize("first_order", [False, True])
def test_compiled_passes_give_the_reference_meta_gradient(first_order: bool) -> None:
    """torch.compile covers the passes differentiated once; second order stays exact."""
    learner = make_maml(inner_steps=1, inner_lr=0.3, first_order=first_order, compile=True)
    batch = make_batch(13)
    got = flat_grad(learner.loss(batch)[0], list(learner.parameters()))
    want = reference_meta_gradient(learner, batch, steps=1, second_order=not first_order)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(learner.evaluate(batch), make_maml(inner_steps=1, inner_lr=0.3).evaluate(batch))


@pytest.mark.slow
def test_compiled_protonet_equals_eager() -> None:
    backbone = TinyConv(torch.Generator().manual_seed(0))
    batch = make_batch(14)
    eager, compiled = ProtoNet(backbone), ProtoNet(backbone, compile=True)
    torch.testing.assert_close(compiled.loss(batch)[0], eager.loss(batch)[0], rtol=1e-5, atol=1e-6)


def test_wrong_ways_is_refused() -> None:
    learner = make_maml()
    batch = make_batch(9)
    with pytest.raises(ValueError, match="3 outputs but the batch is 5-way"):
        learner.loss(Episodes(batch.support_x, batch.support_y, batch.query_x, batch.query_y, ways=5))


# -- ProtoNet ----------------------------------------------------------------------------------


class Flat(nn.Module):
    feature_dim = 2

    def forward(self, x: Tensor) -> Tensor:
        return x.flatten(1)


def test_protonet_logits_are_negative_squared_distances_2way_1shot() -> None:
    protonet = ProtoNet(Flat())
    support = torch.tensor([[[0.0, 0.0], [3.0, 4.0]]])  # (T=1, 2 classes x 1 shot, 2)
    query = torch.tensor([[[1.0, 1.0], [3.0, 3.0]]])
    logits = protonet.logits(support, torch.tensor([[0, 1]]), query, ways=2)
    # by hand: |(1,1)-(0,0)|^2 = 2, |(1,1)-(3,4)|^2 = 13; |(3,3)|^2 = 18, |(3,3)-(3,4)|^2 = 1
    torch.testing.assert_close(logits, torch.tensor([[[-2.0, -13.0], [-18.0, -1.0]]]))
    batch = Episodes(support, torch.tensor([[0, 1]]), query, torch.tensor([[0, 1]]), ways=2)
    loss, accuracy = protonet.loss(batch)
    want = (math.log(1 + math.exp(-11)) + math.log(1 + math.exp(-17))) / 2
    assert loss.item() == pytest.approx(want, abs=1e-7) and accuracy.item() == 1.0


def test_protonet_prototypes_are_class_means_in_any_order() -> None:
    protonet = ProtoNet(Flat())
    support = torch.tensor([[[2.0, 0.0], [0.0, 0.0], [4.0, 0.0], [0.0, 2.0]]])
    labels = torch.tensor([[1, 0, 1, 0]])  # shuffled, 2 shots each: means (0, 1) and (3, 0)
    logits = protonet.logits(support, labels, torch.tensor([[[0.0, 1.0]]]), ways=2)
    torch.testing.assert_close(logits, torch.tensor([[[0.0, -10.0]]]))


@pytest.mark.parametrize("execution", ["loop", "threads", "vmap"])
def test_protonet_embeds_an_episode_in_one_pass_and_trains(execution: str) -> None:
    calls = []
    backbone = TinyConv(torch.Generator().manual_seed(0))
    backbone.register_forward_hook(lambda module, args, out: calls.append(args[0].shape))
    protonet = ProtoNet(backbone, execution=execution)
    loss, accuracy = protonet.loss(make_batch(10))
    episode = WAYS * (SHOTS + QUERIES)  # support and query of one episode together
    assert [shape[0] for shape in calls] == ([episode] if execution == "vmap" else [episode] * TASKS)
    assert torch.isfinite(loss) and 0 <= accuracy <= 1
    loss.backward()
    assert all(p.grad is not None for p in backbone.parameters())


def test_protonet_vmap_equals_loop_and_episodes_do_not_see_each_other() -> None:
    """BatchNorm statistics are per episode: an episode scores the same in any meta-batch."""
    backbone = TinyConv(torch.Generator().manual_seed(0))
    batch = make_batch(11)
    loop, batched = ProtoNet(backbone, execution="loop"), ProtoNet(backbone, execution="vmap")
    torch.testing.assert_close(
        batched.logits(batch.support_x, batch.support_y, batch.query_x, WAYS),
        loop.logits(batch.support_x, batch.support_y, batch.query_x, WAYS), rtol=1e-5, atol=1e-5,
    )  # fmt: skip
    alone = loop.logits(batch.support_x[1:2], batch.support_y[1:2], batch.query_x[1:2], WAYS)
    torch.testing.assert_close(loop.logits(batch.support_x, batch.support_y, batch.query_x, WAYS)[1:2], alone)
    torch.testing.assert_close(loop.evaluate(batch), batched.evaluate(batch))
    threaded = ProtoNet(backbone, execution="threads")
    params = list(backbone.parameters())
    want, got = loop.loss(batch), threaded.loss(batch)
    torch.testing.assert_close(got, want)
    torch.testing.assert_close(flat_grad(got[0], params), flat_grad(want[0], params), rtol=1e-5, atol=1e-6)


def test_protonet_refuses_regression_naming_the_valid_algos() -> None:
    with pytest.raises(ConfigError, match=r"classification-only.*\['fomaml', 'maml'\]"):
        build_learner(LearnerConfig(algo="protonet"), Polynomial(), feature_dim=2, ways=1, task="regression")


# -- the registry ------------------------------------------------------------------------------


def test_registry_names_and_unknown_names() -> None:
    assert LEARNERS.names() == ["fomaml", "maml", "protonet"]
    with pytest.raises(ConfigError, match=r"unknown learner 'mamll'; choose from \['fomaml', 'maml', 'protonet'\]"):
        LEARNERS.get("mamll")
    with pytest.raises(ConfigError, match="unknown task 'ranking'"):
        build_learner(LearnerConfig(), Flat(), feature_dim=2, ways=2, task="ranking")


@pytest.mark.parametrize("algo", ["fomaml", "maml", "protonet"])
def test_every_learner_trains_on_one_batch(algo: str) -> None:
    backbone = TinyConv(torch.Generator().manual_seed(0))
    learner = build_learner(
        LearnerConfig(algo=algo), backbone, feature_dim=backbone.feature_dim, ways=WAYS, task="classification"
    )
    assert learner.loss(make_batch(12))[0].isfinite()
    before = [p.detach().clone() for p in learner.parameters()]
    optimizer = torch.optim.Adam(learner.parameters(), lr=1e-2)
    loss, metric = learner.loss(make_batch(12))
    loss.backward()
    optimizer.step()
    assert any(not torch.equal(b, p) for b, p in zip(before, learner.parameters(), strict=True))
    assert 0 <= metric <= 1


# -- backbones compiled from the search spaces --------------------------------------------------


def space_backbone(space: str, input_shape: tuple[int, ...]) -> nn.Module:
    import random

    from nas_meta import spaces
    from nas_meta.model import network

    return network.build(spaces.load_space(space).sample(random.Random(0)), input_shape, seed=0)


@pytest.mark.parametrize("space", ["cell", "conv4"])
def test_batched_meta_gradients_agree_on_compiled_backbones(space: str) -> None:
    """vmap, threads and loop over the ops table's BatchNorm (the vmap trap of functorch#534)."""
    backbone = space_backbone(space, (1, SIZE, SIZE)).double()
    batch = make_batch(15, tasks=2, dtype=torch.float64)
    grads = {}
    for execution in ("loop", "threads", "vmap"):
        learner = MAML(
            backbone, feature_dim=backbone.feature_dim, ways=WAYS, task="classification", execution=execution
        )
        with torch.no_grad():
            learner.head.weight.copy_(torch.linspace(-1, 1, learner.head.weight.numel()).view_as(learner.head.weight))
        learner.double()
        grads[execution] = flat_grad(learner.loss(batch)[0], list(learner.parameters()))
    # float64: the three agree to rounding (worst element ~1e-8 relative, where terms cancel).
    torch.testing.assert_close(grads["vmap"], grads["loop"], rtol=1e-7, atol=1e-10)
    torch.testing.assert_close(grads["threads"], grads["loop"], rtol=1e-7, atol=1e-10)


def test_maml_regression_on_an_mlp_space_backbone() -> None:
    backbone = space_backbone("mlp", (1,))
    learner = build_learner(
        LearnerConfig(algo="maml", inner_lr=0.01), backbone, feature_dim=backbone.feature_dim, ways=1, task="regression"
    )
    batch = regression_batch()
    loss, mse = learner.loss(batch)
    loss.backward()
    assert torch.isfinite(loss) and mse > 0 and learner.head.weight.grad is not None


# -- MAML: tasks in vmap chunks -----------------------------------------------------------------


@pytest.mark.parametrize("first_order", [False, True])
@pytest.mark.parametrize("chunk", [1, 2, 3])
def test_vmap_chunks_give_the_unchunked_loss_metric_and_meta_gradient(first_order: bool, chunk: int) -> None:
    batch = make_batch(7, tasks=5, dtype=torch.float64)
    whole = make_maml(inner_steps=2, inner_lr=0.3, execution="vmap", first_order=first_order, dtype=torch.float64)
    chunked = make_maml(
        inner_steps=2, inner_lr=0.3, execution="vmap", first_order=first_order, dtype=torch.float64, vmap_chunk=chunk
    )
    loss, metric = whole.loss(batch)
    loss.backward()
    chunk_loss, chunk_metric = chunked.loss(batch)
    (chunk_loss * 2.0).backward()  # the carried gradient follows the outer factor (an AMP loss scale)
    torch.testing.assert_close(chunk_loss, loss.detach(), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(chunk_metric, metric, rtol=1e-6, atol=1e-7)  # accuracies are float32
    for a, b in zip(whole.parameters(), chunked.parameters(), strict=True):
        torch.testing.assert_close(b.grad, 2.0 * a.grad, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(chunked.evaluate(batch), whole.evaluate(batch), rtol=0, atol=0)


def test_a_chunk_out_of_memory_is_halved_and_the_size_kept(monkeypatch) -> None:
    batch = make_batch(8, tasks=6, dtype=torch.float64)
    reference = make_maml(execution="vmap", dtype=torch.float64)
    want = flat_grad(reference.loss(batch)[0], list(reference.parameters()))
    learner = make_maml(execution="vmap", dtype=torch.float64)
    real = learner._run_vmap

    def small_device(params, sx, *args):
        if sx.shape[0] > 2:  # a device that holds two tasks' second-order graphs at a time
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return real(params, sx, *args)

    monkeypatch.setattr(learner, "_run_vmap", small_device)
    got = flat_grad(learner.loss(batch)[0], list(learner.parameters()))
    assert (learner.vmap_chunk, learner.oom_halvings) == (1, 2)  # 6 -> 3 -> 1: three tasks failed too
    torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-12)
    learner.vmap_chunk = 1
    monkeypatch.setattr(learner, "_run_vmap", lambda *a: (_ for _ in ()).throw(torch.OutOfMemoryError("x")))
    with pytest.raises(torch.OutOfMemoryError):  # one task that does not fit is the user's error to see
        learner.loss(batch)
    with pytest.raises(ValueError, match="vmap_chunk must be a positive"):
        make_maml(vmap_chunk=0)


def test_learner_for_an_architecture_applies_its_recipe_and_its_seed():
    import random

    from nas_meta import spaces
    from nas_meta.config import make_config
    from nas_meta.learners import MAML, learner_for

    arch = spaces.load_space("chain").sample(random.Random(0))
    arch.graph["recipe"] = {"inner_lr": 0.2}
    cfg = make_config("smoke", learner={"algo": "fomaml", "inner_lr": 0.4}, data={"ways": 3})
    run_cfg, backbone, learner = learner_for(cfg, arch, (1, 28, 28), "classification", seed=7)
    assert run_cfg.learner.inner_lr == 0.2 and cfg.learner.inner_lr == 0.4  # the recipe, not the run's
    assert isinstance(learner, MAML) and learner.backbone is backbone and learner.head.out_features == 3

    def same(a, b):
        return all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values(), strict=True))

    assert same(backbone, learner_for(cfg, arch, (1, 28, 28), "classification", seed=7)[1])
    assert not same(backbone, learner_for(cfg, arch, (1, 28, 28), "classification", seed=8)[1])
    assert learner_for(cfg, arch, (1, 28, 28), "regression", seed=7)[2].head.out_features == 1
