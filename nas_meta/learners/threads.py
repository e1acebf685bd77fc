"""Task parallelism on the CPU: the T tasks of a meta-batch on worker threads, one core each.

A MAML task is a chain of small convolutions (5 support images) and one medium one (75 query
images).  Splitting every op over 2 cores (intra-op parallelism) synchronises the cores hundreds
of times per task; running two whole tasks at once, each on one core, does not (the measured
gains, largest on cells of many small ops, are in bench/README.md); the default is the same for
every learner.  torch ops release the GIL, so Python threads suffice.

Each task's meta-gradient is computed on its worker with ``torch.autograd.grad`` and the T
gradients are averaged in task order (deterministic, independent of scheduling).  The loss handed
back to the trainer carries that gradient through :class:`PrecomputedGradient`, so
``loss.backward()`` fills ``.grad`` exactly as the single-threaded loop does.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import torch
from torch import Tensor, nn

__all__ = ["PrecomputedGradient", "is_stochastic", "make_replica", "mean_in_order", "run_tasks", "single_threaded_ops"]

R = TypeVar("R")


class PrecomputedGradient(torch.autograd.Function):
    """``value`` in the forward; ``grads * grad_output`` for ``params`` in the backward."""

    @staticmethod
    def forward(ctx: Any, value: Tensor, grads: Sequence[Tensor | None], *params: Tensor) -> Tensor:
        ctx.grads = grads
        return value.detach().clone()

    @staticmethod
    def backward(ctx: Any, grad_output: Tensor) -> tuple[Tensor | None, ...]:
        return (None, None, *(None if g is None else g * grad_output for g in ctx.grads))


def mean_in_order(grads: Sequence[Tensor | None], tasks: int) -> Tensor | None:
    """Sum of the per-task gradients in task order, divided by ``tasks`` (None where all are None)."""
    present = [g for g in grads if g is not None]
    if not present:
        return None
    total = present[0]
    for g in present[1:]:
        total = total + g
    return total / tasks


def is_stochastic(module: nn.Module) -> bool:
    """True when the module draws random numbers in training (dropout): worker threads would
    consume the global generator in a scheduling-dependent order and break same-seed runs."""
    return any(isinstance(m, nn.modules.dropout._DropoutNd) and m.p > 0 for m in module.modules())


def make_replica(model: nn.Module) -> nn.Module:
    """A copy of the module's *structure* for one worker thread, with every tensor on "meta".

    ``functional_call`` swaps tensors into the module it is given for the length of a call, so two
    threads may not share a module.  The replica's own tensors are placeholders that cannot be
    computed with: every call passes the shared parameters and buffers explicitly.
    """
    return copy.deepcopy(model).to("meta")


@contextlib.contextmanager
def single_threaded_ops() -> Iterator[None]:
    """One intra-op thread for the duration (process-wide in torch), restored afterwards."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def run_tasks(fn: Callable[[int, nn.Module], R], tasks: int, replicas: Sequence[nn.Module]) -> list[R]:
    """``[fn(t, replica) for t in range(tasks)]`` on ``len(replicas)`` worker threads, in task order.

    Worker ``w`` takes tasks ``w, w + W, ...`` with its own replica.  Exceptions propagate.  The
    caller's CPU autocast (``--amp``'s bf16), which torch keeps per thread, holds in the workers too.
    """
    workers = len(replicas)
    amp = torch.get_autocast_dtype("cpu") if torch.is_autocast_enabled("cpu") else None

    def worker(w: int) -> list[tuple[int, R]]:
        with torch.autocast("cpu", dtype=amp) if amp is not None else contextlib.nullcontext():
            return [(t, fn(t, replicas[w])) for t in range(w, tasks, workers)]

    with single_threaded_ops(), ThreadPoolExecutor(max_workers=workers) as pool:
        done = [item for chunk in pool.map(worker, range(workers)) for item in chunk]
    return [result for _, result in sorted(done, key=lambda item: item[0])]
