"""What every learner shares: the protocol the trainer calls, and how a meta-batch is executed.

A learner is an ``nn.Module`` with ``task`` ("classification" or "regression"),
``loss(batch) -> (loss, metric)`` (the meta-gradient flows into ``loss``) and
``evaluate(batch) -> (T,)`` per-episode metric.  Its T episodes run one of three ways, the same
numbers each way (tests compare them):

* ``loop``: one episode after the other; the default on one CPU thread;
* ``threads``: episodes on worker threads, one core each, gradients averaged in episode order
  (threads.py); the default on a multi-core CPU;
* ``vmap``: the T episodes batched with ``torch.func.vmap``; the default on CUDA.

Images run NHWC (channels-last) on the CPU, where oneDNN's kernels for them are faster.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .threads import PrecomputedGradient, is_stochastic, mean_in_order

__all__ = [
    "Learner",
    "EXECUTIONS",
    "to_channels_last",
    "use_channels_last",
    "use_threads",
    "combine_task_results",
    "task_loss",
    "task_metric",
]

EXECUTIONS = ("auto", "loop", "threads", "vmap")


@runtime_checkable
class Learner(Protocol):
    """The protocol of ``meta_train``, ``meta_test`` and the search (the learners are nn.Modules)."""

    task: str

    def loss(self, batch: Any) -> tuple[Tensor, Tensor]: ...

    def evaluate(self, batch: Any) -> Tensor: ...


def to_channels_last(x: Tensor) -> Tensor:
    """Images in NHWC memory, (N, C, H, W) or (T, N, C, H, W); other shapes unchanged.

    The strides are set explicitly: ``x.contiguous(memory_format=torch.channels_last)`` leaves a
    one-channel image (Omniglot) as it is, since its NCHW strides already count as NHWC, and
    oneDNN then keeps every later activation in NCHW.
    """
    if x.dim() not in (4, 5):
        return x
    *lead, c, h, w = x.shape
    strides = [h * w * c, 1, w * c, c]
    if lead[:-1]:
        strides.insert(0, lead[-1] * h * w * c)
    out = torch.empty_strided(x.shape, strides, dtype=x.dtype, device=x.device)
    return out.copy_(x)


def use_channels_last(setting: bool | None, x: Tensor) -> bool:
    """Whether a learner runs its (T, N, C, H, W) images NHWC: ``setting``, or on the CPU when None.

    On the CPU oneDNN's NHWC kernels for max-pool, BatchNorm and the first convolution's weight
    gradient are several times faster than their NCHW ones; the numbers are the same up to float
    rounding.  On CUDA the layout is left to the user (``True``).
    """
    if x.dim() != 5:
        return False
    return x.device.type == "cpu" if setting is None else setting


def use_threads(execution: str, x: Tensor, model: nn.Module, *, compile: bool, needs_grad: bool) -> bool:
    """Whether the T episodes of ``x`` (T, ...) go to worker threads: ``execution`` "threads", or
    "auto" on a multi-core CPU with at least two episodes, unless grad mode would be lost on the
    way (autocast is carried over by run_tasks), torch.compile'd code (not documented
    thread-safe) or a stochastic module (dropout on worker threads would make same-seed runs differ)."""
    if execution == "threads":
        return True
    if execution != "auto" or x.device.type != "cpu" or x.shape[0] < 2 or torch.get_num_threads() < 2:
        return False
    if compile or (needs_grad and not torch.is_grad_enabled()):
        return False
    return not is_stochastic(model)


def combine_task_results(
    results: Sequence[tuple[Tensor, Tensor, Sequence[Tensor | None]]], leaves: Sequence[Tensor]
) -> tuple[Tensor, Tensor]:
    """Per-episode (loss, metric, gradients of ``leaves``) from worker threads -> the mean loss,
    carrying the mean gradient (averaged in episode order) for ``loss.backward()``, and the mean metric."""
    tasks = len(results)
    grads = [mean_in_order([r[2][i] for r in results], tasks) for i in range(len(leaves))]
    loss = PrecomputedGradient.apply(torch.stack([r[0] for r in results]).mean(), grads, *leaves)
    return loss, torch.stack([r[1] for r in results]).mean()


def task_loss(out: Tensor, y: Tensor, task: str) -> Tensor:
    """Cross-entropy for classification, MSE for regression (mean over the examples)."""
    if task == "regression":
        return F.mse_loss(out, y)
    return F.cross_entropy(out, y)


def task_metric(out: Tensor, y: Tensor, task: str) -> Tensor:
    """Accuracy in [0, 1] for classification, MSE for regression; over the last two dims' examples."""
    if task == "regression":
        return (out - y).pow(2).flatten(-2).mean(-1)
    return (out.argmax(-1) == y).float().mean(-1)
