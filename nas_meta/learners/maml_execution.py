"""How MAML's tasks run besides the loop: on worker threads, or batched with ``torch.func.vmap``.

``maml.py`` holds the algorithm (functional adaptation, the per-task loop, which pass may be
compiled); these functions run the same per-task work the two other ways its ``execution`` names
and hand back what the loop would (tests compare all three).  Each takes the :class:`MAML` whose
tasks it runs.

* threads: each task's adaptation and meta-gradient on a worker thread with its own tensor-less
  replica of the model (threads.py), the gradients averaged in task order;
* vmap: the tasks batched over ``torch.func.grad``, in chunks of ``vmap_chunk`` tasks whose
  meta-gradients are taken one chunk at a time; a chunk that runs out of device memory is halved.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

import torch
from torch import Tensor, nn
from torch.func import functional_call, grad, vmap

from .base import combine_task_results, task_loss, task_metric
from .threads import PrecomputedGradient, make_replica, run_tasks

if TYPE_CHECKING:
    from .maml import MAML

__all__ = ["chunks", "threaded_loss", "threaded_evaluate", "halving_on_oom", "vmap_loss", "run_vmap"]

Params = dict[str, Tensor]
R = TypeVar("R")


def chunks(tasks: int, chunk: int) -> list[slice]:
    """Slices of at most ``chunk`` tasks covering ``tasks``, in order."""
    return [slice(start, min(start + chunk, tasks)) for start in range(0, tasks, chunk)]


def threaded_loss(learner: MAML, batch: Any) -> tuple[Tensor, Tensor]:
    """The meta-training loss and metric, each task on a worker thread (one core each)."""
    params = learner._params(meta=True)
    leaves = list(params.values())
    create_graph = not learner.first_order
    sx, qx = learner._inputs(batch, create_graph)

    def one_task(t: int, model: nn.Module) -> tuple[Tensor, Tensor, tuple[Tensor | None, ...]]:
        fast = learner.adapt(
            params, sx[t], batch.support_y[t], learner.inner_steps, create_graph=create_graph, model=model
        )
        out = learner._forward(model, fast, qx[t], twice=False)
        loss = task_loss(out, batch.query_y[t], learner.task)
        grads = torch.autograd.grad(loss, leaves, allow_unused=True)
        return loss.detach(), task_metric(out.detach(), batch.query_y[t], learner.task), grads

    return combine_task_results(run_tasks(one_task, sx.shape[0], _replicas(learner, sx.shape[0])), leaves)


def threaded_evaluate(learner: MAML, batch: Any) -> Tensor:
    """(T,) query metrics after the test-time adaptation, each task on a worker thread."""
    params = learner._params(meta=False)
    sx, qx = learner._inputs(batch, create_graph=False)

    def one_task(t: int, model: nn.Module) -> Tensor:
        fast = learner.adapt(
            params, sx[t], batch.support_y[t], learner.test_inner_steps, create_graph=False, model=model
        )
        out = learner._forward(model, fast, qx[t], twice=False).detach()
        return task_metric(out, batch.query_y[t], learner.task)

    return torch.stack(run_tasks(one_task, sx.shape[0], _replicas(learner, sx.shape[0])))


def _replicas(learner: MAML, tasks: int) -> list[nn.Module]:
    """One tensor-less replica of the model per worker thread, made once and kept."""
    workers = min(tasks, torch.get_num_threads())
    while len(learner._thread_models) < workers:
        learner._thread_models.append(make_replica(learner.model))
    return learner._thread_models[:workers]


def halving_on_oom(learner: MAML, run: Callable[[int], R], tasks: int) -> R:
    """``run(chunk)`` with ``vmap_chunk`` tasks per chunk (all when None), halving the chunk on an
    out-of-memory error until one task per chunk fails too."""
    while True:
        chunk = min(learner.vmap_chunk or tasks, tasks)
        try:
            return run(chunk)
        except torch.OutOfMemoryError:
            if chunk == 1:
                raise
            learner.vmap_chunk = chunk // 2
            learner.oom_halvings += 1
            if torch.cuda.is_available():
                torch.cuda.empty_cache()


def vmap_loss(learner: MAML, batch: Any, chunk: int) -> tuple[Tensor, Tensor]:
    """The vmap path's loss; with chunks, each chunk's meta-gradient is taken at once (its graph
    freed) and the sum carried to ``loss.backward()`` as in the threaded path."""
    tasks = batch.support_x.shape[0]
    if chunk >= tasks:
        out = learner.query_outputs(batch, learner.inner_steps, meta=True)
        loss = task_loss(out.flatten(0, 1), batch.query_y.flatten(0, 1), learner.task)
        return loss, task_metric(out, batch.query_y, learner.task).mean().detach()
    params = learner._params(meta=True)
    leaves = list(params.values())
    create_graph = not learner.first_order
    sx, qx = learner._inputs(batch, create_graph)
    total: Tensor | None = None
    metric: Tensor | None = None
    grads: list[Tensor | None] = [None] * len(leaves)
    for c in chunks(tasks, chunk):
        out = learner._run_vmap(params, sx[c], batch.support_y[c], qx[c], learner.inner_steps, create_graph)
        share = out.shape[0] / tasks  # every task has as many queries: the mean over tasks is exact
        loss = task_loss(out.flatten(0, 1), batch.query_y[c].flatten(0, 1), learner.task) * share
        chunk_grads = torch.autograd.grad(loss, leaves, allow_unused=True)
        grads = [a if b is None else (b if a is None else a + b) for a, b in zip(grads, chunk_grads, strict=True)]
        part = task_metric(out.detach(), batch.query_y[c], learner.task).sum() / tasks
        total = loss.detach() if total is None else total + loss.detach()
        metric = part if metric is None else metric + part
    assert total is not None and metric is not None
    return PrecomputedGradient.apply(total, grads, *leaves), metric


def run_vmap(
    learner: MAML, params: Params, sx: Tensor, sy: Tensor, qx: Tensor, steps: int, create_graph: bool
) -> Tensor:
    """(T, Q, outputs) query outputs of the T tasks after ``steps`` adaptation steps, batched."""
    if learner.use_compile:
        raise ValueError("compile=True applies to the per-task passes; the vmap-batched tasks are not compiled")
    model, task, lr = learner.model, learner.task, learner.inner_lr
    scale = learner._inner_scale(sx)

    def support_loss(p: Params, x: Tensor, y: Tensor) -> Tensor:
        return task_loss(functional_call(model, p, (x,)), y, task) * scale

    def one_task(p: Params, x: Tensor, y: Tensor, xq: Tensor) -> Tensor:
        for _ in range(steps):
            g = grad(support_loss)(p, x, y)
            if scale != 1.0:
                g = {n: v / scale for n, v in g.items()}
            if not create_graph:  # first order: the outer graph must not see through g
                g = {n: v.detach() for n, v in g.items()}
            p = {n: p[n] - lr * g[n] for n in p}
        return functional_call(model, p, (xq,))

    fn: Callable[..., Tensor] = vmap(one_task, in_dims=(None, 0, 0, 0))
    return fn(params, sx, sy, qx)
