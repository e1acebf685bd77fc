"""One trainer for every learner, one meta-test, device selection.

Every learner follows one protocol: ``loss(batch) -> (loss, metric)`` with the meta-gradient
flowing into ``loss``, and ``evaluate(batch) -> (T,)`` per-episode metric.  The metric is an
accuracy in [0, 1] for classification (higher is better) and an MSE for regression (lower is better).

    >>> result = meta_train(learner, train_sampler, val_sampler, cfg, seed=0)  # doctest: +SKIP
    >>> mean, ci95 = meta_test(learner, test_sampler, episodes=600)            # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, cast

import torch
from torch import Tensor, nn

from ..config import BF16_SPACE_KINDS, LearnerConfig
from ..errors import ConfigError, SpaceError
from .base import Learner

__all__ = [
    "Diverged",
    "TrainResult",
    "meta_train",
    "meta_test",
    "evaluate_episodes",
    "confidence_interval",
    "resolve_device",
    "amp_dtype",
    "candidate_precision",
    "cuda_amp_dtype",
    "cpu_has_bf16",
    "check_compile",
    "outer_step",
    "deferred_step",
    "check_finite",
    "make_optimizer",
    "make_schedule",
    "forked_rng",
]


class Diverged(RuntimeError):
    """The meta-training loss (or its gradient) became NaN or infinite; the message says at which step."""


class Sampler(Protocol):
    def sample(self, tasks: int) -> Any: ...


@dataclass(frozen=True)
class TrainResult:
    val_metric: float  # validation metric of the weights training ended with (NaN without validation)
    curve: list[tuple[int, float]] = field(default_factory=list)  # (step, val_metric) per checkpoint
    seconds: float = 0.0  # wall time of meta_train, checkpoints included
    iterations: int = 0  # outer steps done
    train_losses: list[float] = field(default_factory=list)  # outer loss per step (a learning curve)
    best_step: int = 0  # the validation curve's best checkpoint (the first of equal ones; last step without one)
    best_metric: float = math.nan  # the curve's best validation metric (NaN without validation)
    weights_step: int = 0  # the step whose weights the learner ends with: best_step or the last step


def resolve_device(name: str, *, visible: int | None = None, flag: str = "--device") -> torch.device:
    """ "auto" -> CUDA when present, else CPU; "cpu"; "cuda" or "cuda:N" (ConfigError when there is
    no such GPU, naming ``flag``, the option the name came from).  ``visible`` overrides the number
    of visible GPUs (tests)."""
    count = torch.cuda.device_count() if visible is None else visible
    if name == "auto":
        return torch.device("cuda" if count > 0 else "cpu")
    if name == "cpu":
        return torch.device("cpu")
    if name == "cuda" or name.startswith("cuda:"):
        index = name.partition(":")[2]
        if count == 0:
            # --devices places workers on named devices: "auto" is not one of them.
            usable = ["auto", "cpu"] if flag == "--device" else ["cpu"]
            raise ConfigError(f"{flag} {name}: no CUDA device is available here; choose from {usable}")
        if index and (not index.isdigit() or int(index) >= count):
            raise ConfigError(f"{flag} {name}: this machine has {count} GPU(s): cuda:0 to cuda:{count - 1}")
        return torch.device(name)
    raise ConfigError(f"unknown device {name!r}; choose from ['auto', 'cpu', 'cuda', 'cuda:N']")


def cuda_amp_dtype(capability: tuple[int, int]) -> torch.dtype:
    """bf16 from compute capability 8.0 (Ampere: bf16 in the tensor cores), fp16 with loss scaling
    below.  Not ``torch.cuda.is_bf16_supported()``, which also counts emulated bf16 on older GPUs."""
    return torch.bfloat16 if tuple(capability) >= (8, 0) else torch.float16


def cpu_has_bf16() -> bool:
    """Whether this CPU has bf16 instructions (AVX-512 BF16 or AMX) for oneDNN's kernels."""
    return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


def amp_dtype(device: torch.device, amp: bool, *, cpu_bf16: bool | None = None) -> torch.dtype | None:
    """The autocast dtype for ``--amp`` on ``device``: on CUDA :func:`cuda_amp_dtype`; on a CPU with
    bf16 instructions bf16; refused on a CPU without them (emulated bf16 is slower than fp32).
    ``cpu_bf16`` overrides the CPU detection (tests)."""
    if not amp:
        return None
    if device.type == "cuda":
        return cuda_amp_dtype(torch.cuda.get_device_capability(device))
    if device.type == "cpu" and (cpu_has_bf16() if cpu_bf16 is None else cpu_bf16):
        return torch.bfloat16
    raise ConfigError(
        f"--amp needs bf16 instructions on the CPU (AVX-512 BF16 or AMX) or a CUDA device; this {device.type} "
        f"({torch.backends.cpu.get_cpu_capability()}) has neither; drop --amp"
    )


def candidate_precision(
    amp: str, device: torch.device, *, kind: str | None = None, cpu_bf16: bool | None = None
) -> str:
    """The precision search candidates of a space of ``kind`` train in under ``--amp amp`` on
    ``device`` (one of config.PRECISIONS): "auto" is bf16 on a CPU with bf16 instructions for the
    kinds of config.BF16_SPACE_KINDS, fp32 elsewhere (CUDA included: the checks behind it ran on
    CPUs); "on" is :func:`amp_dtype`'s (refused where there is none); "off" is fp32.  ``cpu_bf16``
    overrides the CPU detection (tests)."""
    if amp == "auto":
        bf16 = device.type == "cpu" and kind in BF16_SPACE_KINDS
        return "bf16" if bf16 and (cpu_has_bf16() if cpu_bf16 is None else cpu_bf16) else "fp32"
    dtype = amp_dtype(device, amp == "on", cpu_bf16=cpu_bf16)
    return {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[dtype]


def check_compile(device: torch.device, compile: bool) -> None:
    """``--compile`` is applied to the per-task passes; on CUDA the tasks are batched with vmap,
    which it does not compile, so the flag is refused there rather than silently ignored."""
    if compile and device.type == "cuda":
        raise ConfigError(
            "--compile compiles the per-task passes of the CPU; on CUDA the tasks run batched with vmap, "
            "which it does not compile; drop --compile"
        )


def _autocast(device: torch.device, dtype: torch.dtype | None) -> contextlib.AbstractContextManager[Any]:
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def outer_step(
    learner: nn.Module,
    optimizer: torch.optim.Optimizer,
    batch: Any,
    *,
    grad_clip: float,
    step: int,
    autocast_dtype: torch.dtype | None = None,
    scaler: torch.amp.GradScaler | None = None,
) -> float:
    """One meta-update: loss, backward, clip, step.  Raises Diverged on a non-finite loss or gradient.

    ``autocast_dtype``/``scaler`` are the ``--amp`` path; they take a device-independent form so
    the CPU tests run the same code (with bf16 autocast on the CPU).
    """
    loss, _ = _update(learner, optimizer, batch, grad_clip, autocast_dtype, scaler, step=step)
    return float(loss)


def deferred_step(
    learner: nn.Module,
    optimizer: torch.optim.Optimizer,
    batch: Any,
    *,
    grad_clip: float,
    autocast_dtype: torch.dtype | None = None,
    scaler: torch.amp.GradScaler | None = None,
) -> tuple[Tensor, Tensor]:
    """:func:`outer_step` without waiting for the device: returns the (loss, gradient norm) tensors
    unchecked, so a GPU runs ahead of the host; the caller checks them later
    (:func:`check_finite`), at validation points."""
    return _update(learner, optimizer, batch, grad_clip, autocast_dtype, scaler, step=None)


def _update(
    learner: nn.Module,
    optimizer: torch.optim.Optimizer,
    batch: Any,
    grad_clip: float,
    autocast_dtype: torch.dtype | None,
    scaler: torch.amp.GradScaler | None,
    *,
    step: int | None,
) -> tuple[Tensor, Tensor]:
    # ``step`` None: no check here (no host round trip); else Diverged naming it.
    device = next(learner.parameters()).device
    optimizer.zero_grad(set_to_none=True)
    with _autocast(device, autocast_dtype):
        loss, _ = cast(Learner, learner).loss(batch)
    if step is not None and not math.isfinite(value := float(loss.detach())):
        raise Diverged(f"meta-training diverged: loss is {value} at step {step}")
    if scaler is not None:
        scaler.scale(loss).backward()
        scaler.unscale_(optimizer)
    else:
        loss.backward()
    norm = torch.nn.utils.clip_grad_norm_(learner.parameters(), grad_clip)
    # With a scaler a non-finite norm is fp16 overflow: the scaler skips the step and lowers its scale.
    if step is not None and scaler is None and not math.isfinite(value := float(norm)):
        raise Diverged(f"meta-training diverged: gradient norm is {value} at step {step}")
    if scaler is not None:
        scaler.step(optimizer)
        scaler.update()
    else:
        optimizer.step()
    return loss.detach(), norm.detach()


def check_finite(pending: list[tuple[int, Tensor, Tensor]], scaled: bool) -> list[float]:
    """The losses of deferred steps ``(step, loss, norm)`` as floats, in one transfer; Diverged
    naming the first step whose loss (or, without a loss scaler, gradient norm) is not finite."""
    if not pending:
        return []
    values = torch.stack([torch.stack([loss.float(), norm.float()]) for _, loss, norm in pending]).cpu().tolist()
    for (step, _, _), (loss, norm) in zip(pending, values, strict=True):
        if not math.isfinite(loss):
            raise Diverged(f"meta-training diverged: loss is {loss} at step {step}")
        if not scaled and not math.isfinite(norm):
            raise Diverged(f"meta-training diverged: gradient norm is {norm} at step {step}")
    return [loss for loss, _ in values]


def _checkpoints(iterations: int, every: int) -> list[int]:
    steps = list(range(every, iterations + 1, every))
    if not steps or steps[-1] != iterations:
        steps.append(iterations)
    return steps


def meta_train(
    learner: nn.Module,
    train_sampler: Sampler,
    val_sampler: Sampler | None,
    cfg: LearnerConfig,
    *,
    seed: int,
    device: torch.device | None = None,
    report: Callable[[int, float], None] | None = None,
    progress: Callable[[int, int, float | None], None] | None = None,
    checkpoints: Sequence[tuple[int, int]] | None = None,
    defer: bool | None = None,
) -> TrainResult:
    """Meta-train ``learner`` in place with Adam (AdamW with ``cfg.weight_decay``) for
    ``cfg.iterations`` outer steps, the learning rate constant or cosine-decayed (``cfg.lr_schedule``).

    At every checkpoint (each ``cfg.eval_every`` steps and the last step) the mean validation
    metric over ``cfg.val_episodes`` episodes is computed and passed to ``report(step, metric)``;
    whatever ``report`` raises (``optuna.TrialPruned``) propagates.  With ``cfg.checkpoint ==
    "best"`` the learner ends with the weights of the best checkpoint (the first, on a tie: higher
    accuracy, or lower MSE for regression), and ``val_metric`` is that checkpoint's score.
    ``val_sampler=None`` trains without validation (a refit) and ends with the last step's weights.
    ``checkpoints``, a list of (step, validation episodes), replaces that plan (the
    rungs of successive halving, whose later checkpoints are scored on more episodes).
    ``progress(step, iterations, val_metric_or_None)`` is called after every step.  ``defer``
    (default: on CUDA) checks the losses for divergence at validation points instead of every
    step, so the device is never waited for between them (the Diverged message still names the
    first bad step).  ``seed`` seeds the stochastic ops a
    backbone may contain (e.g. dropout) inside a forked RNG, so the caller's global RNG state is
    untouched and the same seed gives the same weights on the CPU; episodes come from the
    samplers, which the caller seeded.
    """
    first = next(learner.parameters(), None)
    if first is None:
        raise SpaceError(
            "the architecture has nothing to train: its backbone and learner have no parameters "
            "(only parameter-free ops such as pooling and skips)"
        )
    device = device or first.device
    # "auto" is fp32 here: a search's candidates reach this with "on" or "off" (their study's
    # precision, search/objective.py); final models train in fp32 unless --amp on asked.
    dtype = amp_dtype(device, cfg.amp == "on")
    scaler = torch.amp.GradScaler(device.type) if dtype == torch.float16 else None
    optimizer = make_optimizer(learner, cfg)
    schedule = make_schedule(optimizer, cfg)
    plan: dict[int, int] = {}  # step -> validation episodes
    if val_sampler is not None and checkpoints is not None:
        plan = {int(step): int(episodes) for step, episodes in checkpoints if 1 <= step <= cfg.iterations}
    elif val_sampler is not None:
        plan = dict.fromkeys(_checkpoints(cfg.iterations, cfg.eval_every), cfg.val_episodes)
    higher_is_better = getattr(learner, "task", "classification") == "classification"
    keep_best = cfg.checkpoint == "best"
    curve: list[tuple[int, float]] = []
    losses: list[float] = []
    best: tuple[int, float, dict[str, Tensor] | None] = (cfg.iterations, math.nan, None)
    # On CUDA the steps' losses stay on the device until a validation point (or the end): no host
    # round trip per step, so the GPU is not left waiting for the host.
    deferred = device.type == "cuda" if defer is None else defer
    pending: list[tuple[int, Tensor, Tensor]] = []
    start = time.perf_counter()
    with forked_rng(device, seed):
        for step in range(1, cfg.iterations + 1):
            learner.train()
            batch = train_sampler.sample(cfg.meta_batch)
            if deferred:
                loss, norm = deferred_step(
                    learner, optimizer, batch, grad_clip=cfg.grad_clip, autocast_dtype=dtype, scaler=scaler
                )
                pending.append((step, loss, norm))
                if step in plan or step == cfg.iterations:
                    losses += check_finite(pending, scaled=scaler is not None)
                    pending = []
            else:
                losses.append(
                    outer_step(
                        learner,
                        optimizer,
                        batch,
                        grad_clip=cfg.grad_clip,
                        step=step,
                        autocast_dtype=dtype,
                        scaler=scaler,
                    )
                )
            if schedule is not None:
                schedule.step()
            val: float | None = None
            if step in plan:
                assert val_sampler is not None
                per_episode = evaluate_episodes(learner, val_sampler, plan[step], tasks_per_batch=cfg.meta_batch)
                val = float(per_episode.mean())
                curve.append((step, val))
                if _improves(val, best[1], higher_is_better):
                    # A copy, not a reference: the optimizer updates the parameters in place.
                    state = {k: v.detach().clone() for k, v in learner.state_dict().items()} if keep_best else None
                    best = (step, val, state)
                if report is not None:
                    report(step, val)
            if progress is not None:
                progress(step, cfg.iterations, val)
    best_step, best_metric, best_state = best
    if keep_best and best_state is not None:
        learner.load_state_dict(best_state)
        val_metric, kept_step = best_metric, best_step
    else:
        val_metric, kept_step = (curve[-1][1] if curve else math.nan), cfg.iterations
    return TrainResult(
        val_metric=val_metric,
        curve=curve,
        seconds=time.perf_counter() - start,
        iterations=cfg.iterations,
        train_losses=losses,
        best_step=best_step,
        best_metric=best_metric,
        weights_step=kept_step,
    )


def _improves(value: float, best: float, higher_is_better: bool) -> bool:
    if math.isnan(value):
        return False
    if math.isnan(best):
        return True
    return value > best if higher_is_better else value < best


def make_optimizer(
    learner: nn.Module, cfg: LearnerConfig, *, params: Sequence[nn.Parameter] | None = None
) -> torch.optim.Optimizer:
    """Adam (Finn et al.; Snell et al.), or AdamW when ``cfg.weight_decay`` > 0 (decoupled decay,
    Loshchilov & Hutter 2019, so the decay does not pass through Adam's per-parameter scaling),
    over the learner's parameters or the given ``params`` of it."""
    chosen = list(learner.parameters()) if params is None else list(params)
    if cfg.weight_decay > 0:
        return torch.optim.AdamW(chosen, lr=cfg.outer_lr, weight_decay=cfg.weight_decay)
    return torch.optim.Adam(chosen, lr=cfg.outer_lr)


def make_schedule(optimizer: torch.optim.Optimizer, cfg: LearnerConfig) -> torch.optim.lr_scheduler.LRScheduler | None:
    """None for a constant rate; cosine: ``outer_lr`` at step 1 down to 0 after ``cfg.iterations``
    steps (Loshchilov & Hutter 2017, one cycle, no restart)."""
    if cfg.lr_schedule == "constant":
        return None
    return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=cfg.iterations)


@contextlib.contextmanager
def forked_rng(device: torch.device, seed: int) -> Iterator[None]:
    """Only the generators of the training device are forked and seeded (the caller's are untouched)."""
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.default_generator.manual_seed(seed)
        if devices:
            torch.cuda.manual_seed(seed)
        yield


def evaluate_episodes(learner: nn.Module, sampler: Sampler, episodes: int, *, tasks_per_batch: int = 16) -> Tensor:
    """(episodes,) per-episode metric, drawn in batches of at most ``tasks_per_batch`` episodes."""
    if episodes < 1 or tasks_per_batch < 1:
        raise ConfigError(f"episodes and tasks_per_batch must be positive, got {episodes=}, {tasks_per_batch=}")
    was_training = learner.training
    learner.eval()
    values: list[Tensor] = []
    done = 0
    try:
        while done < episodes:
            tasks = min(tasks_per_batch, episodes - done)
            values.append(cast(Learner, learner).evaluate(sampler.sample(tasks)).detach().float().cpu())
            done += tasks
    finally:
        learner.train(was_training)
    return torch.cat(values)


def confidence_interval(values: Sequence[float] | Tensor) -> tuple[float, float]:
    """(mean, 1.96 * std / sqrt(n)): the 95% CI the few-shot papers quote (population std, ddof=0)."""
    x = torch.as_tensor(values, dtype=torch.float64).flatten()
    if x.numel() == 0:
        raise ValueError("confidence_interval needs at least one value")
    std = x.std(correction=0)
    return float(x.mean()), float(1.96 * std / math.sqrt(x.numel()))


def meta_test(learner: nn.Module, sampler: Sampler, episodes: int, *, tasks_per_batch: int = 16) -> tuple[float, float]:
    """Mean metric over ``episodes`` test episodes and its 95% confidence interval half-width."""
    return confidence_interval(evaluate_episodes(learner, sampler, episodes, tasks_per_batch=tasks_per_batch))
