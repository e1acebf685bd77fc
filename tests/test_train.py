"""The trainer, meta_test and devices: seeds, checkpoints, divergence, confidence intervals."""

from __future__ import annotations

import math
import random
import traceback

import pytest
import torch
from torch import Tensor, nn

import nas_meta.learners.train as train_module
from nas_meta.config import LearnerConfig
from nas_meta.data.sampler import Episodes
from nas_meta.errors import ConfigError
from nas_meta.learners import Diverged, build_learner, confidence_interval, meta_test, meta_train, resolve_device
from nas_meta.learners.train import amp_dtype, check_compile, cpu_has_bf16, cuda_amp_dtype, outer_step

WAYS, SHOTS, QUERIES, SIZE = 2, 1, 3, 8


class Backbone(nn.Module):
    """Conv + mean/var BatchNorm + dropout (dropout draws from the RNG meta_train seeds)."""

    def __init__(self, seed: int = 0, dropout: float = 0.2) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 3, 3, padding=1)
        self.weight = nn.Parameter(torch.ones(3))
        self.dropout = nn.Dropout(dropout)
        self.feature_dim = 3 * 4 * 4
        with torch.no_grad():
            g = torch.Generator().manual_seed(seed)
            self.conv.weight.copy_(torch.randn(self.conv.weight.shape, generator=g) * 0.5)
            self.conv.bias.zero_()

    def forward(self, x: Tensor) -> Tensor:
        x = self.conv(x)
        x = (x - x.mean((0, 2, 3), keepdim=True)) * torch.rsqrt(x.var((0, 2, 3), keepdim=True, unbiased=False) + 1e-5)
        x = torch.relu(x * self.weight.view(1, -1, 1, 1))
        return self.dropout(nn.functional.max_pool2d(x, 2).flatten(1))


class RandomEpisodes:
    """A stand-in sampler: seeded random images, class-major labels; ``poison_at`` gives NaNs."""

    def __init__(self, seed: int, *, poison_at: int | None = None, size: int = SIZE) -> None:
        self.rng = torch.Generator().manual_seed(seed)
        self.size = size
        self.calls = 0
        self.poison_at = poison_at

    def sample(self, tasks: int) -> Episodes:
        self.calls += 1
        labels = torch.arange(WAYS)
        sx = torch.rand(tasks, WAYS * SHOTS, 1, self.size, self.size, generator=self.rng)
        if self.calls == self.poison_at:
            sx = sx * math.nan
        qx = torch.rand(tasks, WAYS * QUERIES, 1, self.size, self.size, generator=self.rng)
        return Episodes(
            sx,
            labels.repeat_interleave(SHOTS).repeat(tasks, 1),
            qx,
            labels.repeat_interleave(QUERIES).repeat(tasks, 1),
            WAYS,
        )


CFG = LearnerConfig(meta_batch=2, iterations=5, eval_every=2, val_episodes=3, inner_lr=0.1, test_inner_steps=1)


def make(algo: str = "maml", dropout: float = 0.2) -> nn.Module:
    backbone = Backbone(dropout=dropout)
    return build_learner(
        LearnerConfig(algo=algo), backbone, feature_dim=backbone.feature_dim, ways=WAYS, task="classification"
    )


@pytest.mark.parametrize("algo", ["maml", "fomaml", "protonet"])
def test_same_seed_gives_the_same_weights_and_another_seed_does_not(algo: str) -> None:
    cfg = LearnerConfig(**{**CFG.__dict__, "algo": algo})
    weights = []
    for seed in (0, 0, 1):
        learner = make(algo)
        meta_train(learner, RandomEpisodes(7), RandomEpisodes(8), cfg, seed=seed)
        weights.append(torch.cat([p.detach().flatten() for p in learner.parameters()]))
    assert torch.equal(weights[0], weights[1])
    assert not torch.equal(weights[0], weights[2])  # the dropout masks differ


@pytest.mark.parametrize("algo", ["maml", "protonet"])
def test_same_seed_gives_the_same_weights_on_worker_threads(algo: str) -> None:
    """Without dropout the CPU default runs tasks on worker threads; the result must not depend
    on their scheduling."""
    cfg = LearnerConfig(**{**CFG.__dict__, "algo": algo})
    weights = []
    for _ in range(3):
        learner = make(algo, dropout=0.0)
        learner.execution = "threads"  # what "auto" picks on a multi-core CPU without dropout
        meta_train(learner, RandomEpisodes(7), RandomEpisodes(8), cfg, seed=0)
        weights.append(torch.cat([p.detach().flatten() for p in learner.parameters()]))
    assert torch.equal(weights[0], weights[1]) and torch.equal(weights[0], weights[2])


def test_checkpoints_report_and_progress() -> None:
    reports, progress = [], []
    result = meta_train(
        make(), RandomEpisodes(1), RandomEpisodes(2), CFG, seed=0,
        report=lambda step, value: reports.append((step, value)),
        progress=lambda step, total, value: progress.append((step, total, value)),
    )  # fmt: skip
    assert [step for step, _ in reports] == [2, 4, 5]  # every eval_every steps and at the end
    assert result.curve == reports and result.val_metric == reports[-1][1]
    assert all(0 <= value <= 1 for _, value in reports)
    assert [p[0] for p in progress] == [1, 2, 3, 4, 5] and all(p[1] == 5 for p in progress)
    assert [p[2] is None for p in progress] == [True, False, True, False, False]
    assert result.iterations == 5 and len(result.train_losses) == 5 and result.seconds > 0


def test_report_exceptions_propagate() -> None:
    class Pruned(Exception):
        pass

    def report(step: int, value: float) -> None:
        raise Pruned(f"pruned at {step}")

    train = RandomEpisodes(1)
    with pytest.raises(Pruned, match="pruned at 2"):
        meta_train(make(), train, RandomEpisodes(2), CFG, seed=0, report=report)
    assert train.calls == 2  # training stopped at the first checkpoint


@pytest.mark.parametrize("defer", [False, True])
@pytest.mark.parametrize("algo", ["maml", "protonet"])
def test_nan_loss_raises_diverged_naming_the_step(algo: str, defer: bool) -> None:
    with pytest.raises(Diverged, match="at step 3"):
        meta_train(make(algo), RandomEpisodes(1, poison_at=3), RandomEpisodes(2), CFG, seed=0, defer=defer)
    assert issubclass(Diverged, RuntimeError)


def test_deferred_steps_train_the_same_and_wait_for_the_device_only_at_validation(monkeypatch) -> None:
    """The CUDA trainer's path, on the CPU: no loss or norm reaches the host between validation
    points (the GPU runs ahead), and the weights and losses are those of the checked path."""
    results = {}
    for defer in (False, True):
        learner = make("protonet", dropout=0.0)
        results[defer] = (learner, meta_train(learner, RandomEpisodes(1), RandomEpisodes(2), CFG, seed=0, defer=defer))
    (eager, a), (lazy, b) = results[False], results[True]
    assert a.train_losses == b.train_losses and a.curve == b.curve
    assert all(torch.equal(p, q) for p, q in zip(eager.parameters(), lazy.parameters(), strict=True))
    transfers: list[int] = []
    real_float, real_item, real_tolist = torch.Tensor.__float__, torch.Tensor.item, torch.Tensor.tolist
    counter = {"steps": 0}

    def progress(step: int, total: int, val: float | None) -> None:
        counter["steps"] = step

    def spy(real):
        def wrapped(self, *args):
            # Adam reads its step count (a CPU tensor even on CUDA: no wait for the device).
            if not any("torch/optim" in frame.filename for frame in traceback.extract_stack()):
                transfers.append(counter["steps"] + 1)  # the step in progress when the host waited
            return real(self, *args)

        return wrapped

    monkeypatch.setattr(torch.Tensor, "__float__", spy(real_float))
    monkeypatch.setattr(torch.Tensor, "item", spy(real_item))
    monkeypatch.setattr(torch.Tensor, "tolist", spy(real_tolist))
    learner = make("protonet", dropout=0.0)
    meta_train(learner, RandomEpisodes(1), None, CFG, seed=0, defer=True, progress=progress)
    assert set(transfers) <= {CFG.iterations}  # without validation: one transfer, after the last step
    assert transfers


def test_confidence_interval_is_the_formula() -> None:
    values = [1.0, 0.0, 1.0, 1.0, 0.5]
    mean = sum(values) / 5
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / 5)
    got_mean, ci = confidence_interval(values)
    assert got_mean == pytest.approx(0.7) and ci == pytest.approx(1.96 * std / math.sqrt(5))
    assert confidence_interval([0.25]) == (0.25, 0.0)
    with pytest.raises(ValueError):
        confidence_interval([])


def test_meta_test_uses_every_episode_in_batches() -> None:
    class Known(nn.Module):
        """evaluate returns 0, 1, 2, ... over successive episodes."""

        def __init__(self) -> None:
            super().__init__()
            self.seen = 0
            self.batches: list[int] = []

        def evaluate(self, batch: Episodes) -> Tensor:
            t = batch.support_x.shape[0]
            self.batches.append(t)
            self.seen += t
            return torch.arange(self.seen - t, self.seen, dtype=torch.float32)

    learner = Known()
    mean, ci = meta_test(learner, RandomEpisodes(0), episodes=10, tasks_per_batch=4)
    assert learner.batches == [4, 4, 2]
    values = torch.arange(10, dtype=torch.float64)
    assert mean == pytest.approx(4.5) and ci == pytest.approx(1.96 * values.std(correction=0).item() / math.sqrt(10))


def test_meta_test_on_a_learner() -> None:
    learner = make("maml")
    mean, ci = meta_test(learner, RandomEpisodes(3), episodes=6, tasks_per_batch=4)
    # The same episodes (a sampler of the same seed), scored one batch at a time by hand.
    episodes = RandomEpisodes(3)
    learner.eval()
    values = torch.cat([learner.evaluate(episodes.sample(4)), learner.evaluate(episodes.sample(2))]).double()
    assert mean == pytest.approx(values.mean().item())
    assert ci == pytest.approx(1.96 * values.std(correction=0).item() / math.sqrt(6))


def test_resolve_device() -> None:
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="no CUDA device"):
            resolve_device("cuda")
    with pytest.raises(ConfigError, match=r"unknown device 'tpu'; choose from \['auto', 'cpu', 'cuda', 'cuda:N'\]"):
        resolve_device("tpu")


def test_amp_dtype_follows_the_hardware() -> None:
    cpu = torch.device("cpu")
    assert amp_dtype(cpu, False) is None
    assert amp_dtype(cpu, True, cpu_bf16=True) is torch.bfloat16  # a CPU with AVX-512 BF16 or AMX
    with pytest.raises(ConfigError, match=r"--amp needs bf16 instructions on the CPU .* drop --amp"):
        amp_dtype(cpu, True, cpu_bf16=False)
    # CUDA: bf16 where the tensor cores have it (Ampere, 8.0, and later), fp16 with scaling before;
    # is_bf16_supported() would also say yes to emulated bf16 on a V100 (7.0).
    assert cuda_amp_dtype((7, 0)) is torch.float16 and cuda_amp_dtype((7, 5)) is torch.float16
    assert cuda_amp_dtype((8, 0)) is torch.bfloat16 and cuda_amp_dtype((9, 0)) is torch.bfloat16


def _fake_cpu_bf16(monkeypatch, present: bool) -> None:
    """Make oneDNN's bf16 probe (what cpu_has_bf16 asks) answer ``present``."""
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: present)
    monkeypatch.setattr(train_module, "cpu_has_bf16", cpu_has_bf16)  # the real probe, not conftest's
    assert cpu_has_bf16() is present


def test_amp_on_a_cpu_without_bf16_is_refused_before_the_first_step(monkeypatch, outer_steps) -> None:
    steps = outer_steps
    _fake_cpu_bf16(monkeypatch, False)
    with pytest.raises(ConfigError, match=r"--amp needs bf16 instructions on the CPU .* drop --amp"):
        amp_dtype(torch.device("cpu"), True)
    train = RandomEpisodes(1)
    with pytest.raises(ConfigError, match=r"--amp needs bf16 instructions on the CPU .* drop --amp"):
        meta_train(make(), train, RandomEpisodes(2), LearnerConfig(amp=True, iterations=1), seed=0)
    assert train.calls == 0 and steps == []


def test_amp_on_a_cpu_with_bf16_trains_every_step_in_bf16(monkeypatch, outer_steps) -> None:
    steps = outer_steps
    _fake_cpu_bf16(monkeypatch, True)
    assert amp_dtype(torch.device("cpu"), True) is torch.bfloat16
    train = RandomEpisodes(1)
    result = meta_train(make(), train, None, LearnerConfig(amp=True, iterations=2, meta_batch=2), seed=0)
    assert train.calls == 2 and steps == [torch.bfloat16, torch.bfloat16]
    assert len(result.train_losses) == 2 and all(math.isfinite(loss) for loss in result.train_losses)
    # Without --amp the same probe changes nothing: fp32 steps.
    meta_train(make(), RandomEpisodes(1), None, LearnerConfig(iterations=1, meta_batch=2), seed=0)
    assert steps[2:] == [None]


def test_compile_is_refused_where_tasks_are_batched_with_vmap() -> None:
    check_compile(torch.device("cpu"), True)  # the per-task passes: compiled
    check_compile(torch.device("cuda"), False)
    with pytest.raises(ConfigError, match="on CUDA the tasks run batched with vmap.*drop --compile"):
        check_compile(torch.device("cuda"), True)
    for algo in ("maml", "protonet"):
        learner = make(algo, dropout=0.0)
        learner.execution, learner.use_compile = "vmap", True
        with pytest.raises(ValueError, match="vmap-batched .* not"):
            learner.loss(RandomEpisodes(3).sample(2))


def _amp_step_gradients(algo: str, dtype: torch.dtype | None, *, episodes: int = 4) -> torch.Tensor:
    learner = make(algo, dropout=0.0)
    batch = RandomEpisodes(episodes).sample(2)
    optimizer = torch.optim.SGD(learner.parameters(), lr=0.0)  # the step changes nothing: compare gradients
    outer_step(learner, optimizer, batch, grad_clip=1e9, step=1, autocast_dtype=dtype)
    return torch.cat([p.grad.flatten() for p in learner.parameters() if p.grad is not None])


@pytest.mark.parametrize("algo", ["maml", "protonet"])
def test_bf16_autocast_gives_the_fp32_meta_gradient_to_its_rounding(algo: str) -> None:
    """The --amp path on the CPU (bf16 runs everywhere, emulated where the host lacks it)."""
    fp32 = _amp_step_gradients(algo, None)
    bf16 = _amp_step_gradients(algo, torch.bfloat16)
    relative = ((bf16 - fp32).norm() / fp32.norm()).item()
    assert 0 < relative < 0.1  # rounded (not equal), but the same gradient to within bf16 rounding
    # The tolerance tells gradients apart: a wrong one (of other episodes) is far outside it.
    wrong = _amp_step_gradients(algo, torch.bfloat16, episodes=5)
    assert ((wrong - fp32).norm() / fp32.norm()).item() > 0.3


@pytest.mark.parametrize("algo", ["maml", "fomaml", "protonet"])
def test_bf16_autocast_on_a_compiled_conv4_gives_the_fp32_meta_gradient(algo: str) -> None:
    """The trainer's --amp step on what the compiler builds (fused BatchNorm + pool, NHWC images).

    At initialisation on random images a Conv-4's gradient is sensitive: rounding only its weights
    and images to bf16 (then computing in fp32) moves it by 9-14% (maml 14%, fomaml 12%, protonet
    9%); autocast, which also rounds every activation, by 17-20% on an AVX-512 CPU (maml 20%,
    fomaml 19%, protonet 17%).  Autocast must stay within twice the rounding's error and under 30%;
    a gradient of other episodes lies 140-170% away."""
    from nas_meta.model import network
    from nas_meta.spaces import load_space

    def gradient(dtype: torch.dtype | None, episodes: int = 4, *, rounded: bool = False) -> Tensor:
        backbone = network.build(load_space("conv4").sample(random.Random(0)), (1, 16, 16), seed=0)
        learner = build_learner(
            LearnerConfig(algo=algo), backbone, feature_dim=backbone.feature_dim, ways=WAYS, task="classification"
        )
        batch = RandomEpisodes(episodes, size=16).sample(2)
        if rounded:
            with torch.no_grad():
                for p in learner.parameters():
                    p.copy_(p.bfloat16().float())
            batch = Episodes(
                batch.support_x.bfloat16().float(),
                batch.support_y,
                batch.query_x.bfloat16().float(),
                batch.query_y,
                batch.ways,
            )
        optimizer = torch.optim.SGD(learner.parameters(), lr=0.0)
        outer_step(learner, optimizer, batch, grad_clip=1e9, step=1, autocast_dtype=dtype)
        return torch.cat([p.grad.flatten() for p in learner.parameters() if p.grad is not None])

    fp32 = gradient(None)

    def distance(g: Tensor) -> float:
        return ((g - fp32).norm() / fp32.norm()).item()

    rounding = distance(gradient(None, rounded=True))
    bf16 = distance(gradient(torch.bfloat16))
    assert 0.05 < rounding < 0.2  # fp32 arithmetic on rounded inputs: the same on every CPU
    assert 0 < bf16 < min(2 * rounding, 0.3)
    assert distance(gradient(torch.bfloat16, episodes=5)) > 1.0


def test_maml_inner_loop_under_fp16_scales_its_loss_so_small_gradients_survive() -> None:
    from nas_meta.learners import MAML

    torch.manual_seed(0)
    backbone = nn.Sequential(nn.Flatten(), nn.Linear(4, 4))
    backbone.feature_dim = 4
    learner = MAML(backbone, feature_dim=4, ways=2, task="classification", inner_lr=1.0)
    with torch.no_grad():
        learner.head.weight.copy_(1e-5 * torch.randn(2, 4))  # dL/dfeatures ~ 1e-6
    x, y = 1e-3 * torch.randn(6, 4), torch.tensor([0, 1] * 3)  # x * dL/dfeatures ~ 1e-9: below fp16's range
    params = dict(learner.model.named_parameters())
    moved = {}
    for scale in (2.0**10, 1.0):
        learner.fp16_inner_scale = scale
        with torch.autocast("cpu", dtype=torch.float16):
            fast = learner.adapt(params, x, y, 1, create_graph=False)
        moved[scale] = not torch.equal(fast["backbone.1.weight"], params["backbone.1.weight"])
    assert moved == {2.0**10: True, 1.0: False}  # unscaled, the weight's gradient underflows to 0
    # In fp32 the (power-of-two) scale changes nothing at all.
    learner.fp16_inner_scale = 2.0**10
    scaled = learner.adapt(params, x, y, 1, create_graph=False)
    learner.fp16_inner_scale = 1.0
    plain = learner.adapt(params, x, y, 1, create_graph=False)
    assert all(torch.equal(scaled[n], plain[n]) for n in plain)


def test_gradient_clipping_bounds_the_update() -> None:
    learner = make("maml")
    optimizer = torch.optim.SGD(learner.parameters(), lr=1.0)
    before = torch.cat([p.detach().flatten() for p in learner.parameters()])
    outer_step(learner, optimizer, RandomEpisodes(5).sample(2), grad_clip=1e-3, step=1)
    after = torch.cat([p.detach().flatten() for p in learner.parameters()])
    assert (after - before).norm() <= 1e-3 * (1 + 1e-4)


def test_resolve_device_names_one_gpu_of_several() -> None:
    assert resolve_device("cuda:1", visible=2) == torch.device("cuda:1")
    assert resolve_device("auto", visible=0) == torch.device("cpu")
    with pytest.raises(ConfigError, match=r"--device cuda:2: this machine has 2 GPU\(s\): cuda:0 to cuda:1"):
        resolve_device("cuda:2", visible=2)
    with pytest.raises(ConfigError, match="--device cuda:0: no CUDA device is available here"):
        resolve_device("cuda:0", visible=0)
