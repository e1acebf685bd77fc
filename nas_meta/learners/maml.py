"""MAML (Finn et al. 2017) and first-order MAML, functional: fast weights are tensors, never clones.

The learner holds ``model = backbone -> linear head``; every task adapts its own *fast weights*
(a dict name -> tensor derived from the shared parameters) with ``inner_steps`` SGD steps on its
support set, and the query loss is computed at those fast weights with
``torch.func.functional_call``.  Second order by default: the support gradients are taken with
``create_graph=True`` so the meta-gradient flows through the adaptation.

Three execution paths compute the same numbers (tests compare each with a per-task reference
written with plain ``torch.autograd.grad``); this module holds the algorithm and the loop,
``maml_execution.py`` the two others:

* ``loop``: the T tasks one after the other with ``torch.autograd.grad``; the default on one
  CPU thread.  On the CPU batching tasks with ``vmap`` is slower than the loop (bench/README.md).
* ``threads``: the loop's per-task work on worker threads, one core each, meta-gradients
  averaged in task order (threads.py); the default on a multi-core CPU.  Each worker calls
  ``functional_call`` on its own tensor-less replica of the module (created once), because
  ``functional_call`` swaps tensors into the module it is given.
* ``vmap``: the T tasks batched with ``torch.func.vmap`` over ``torch.func.grad``; the default
  on CUDA, where one launch for T tasks pays.  BatchNorm inside the backbone must be written with
  mean/var ops: ``F.batch_norm(training=True)`` has wrong second-order gradients under vmap in
  torch 2.14.1 (pytorch/functorch#534).

    >>> import torch
    >>> from torch import nn
    >>> backbone = nn.Sequential(nn.Flatten(), nn.Linear(4, 8), nn.ReLU())
    >>> backbone.feature_dim = 8
    >>> learner = MAML(backbone, feature_dim=8, ways=2, task="classification")
    >>> learner.head.weight.abs().sum().item()   # zero head: no class is favoured before adapting
    0.0
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import torch
from torch import Tensor, nn
from torch.func import functional_call

from ..model.fused import unfused
from . import maml_execution as execution
from .base import EXECUTIONS, task_loss, task_metric, to_channels_last, use_channels_last, use_threads

__all__ = ["MAML", "task_loss", "task_metric"]

Params = dict[str, Tensor]
R = TypeVar("R")


def _call_model(model: nn.Module, params: Params, x: Tensor) -> Tensor:
    return functional_call(model, params, (x,))


class _HeadedModel(nn.Module):
    """backbone (B, ...) -> (B, F) followed by the learner's linear head (B, F) -> (B, outputs)."""

    def __init__(self, backbone: nn.Module, head: nn.Linear) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = head

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.backbone(x))


class MAML(nn.Module):
    """MAML / first-order MAML over any backbone with a ``feature_dim``.

    ``execution``: "loop", "threads", "vmap" or "auto" (vmap on CUDA, threads on a multi-core
    CPU, else loop; see the module doc).
    ``channels_last``: NHWC image layout, same numbers up to float rounding; None (default) = on
    the CPU (see :func:`use_channels_last`).  A user's op that calls ``.view`` on an activation
    needs ``.reshape`` instead, or ``channels_last=False``.
    ``compile``: torch.compile the passes that are differentiated at most once (with the loop);
    pays only over long runs (the first step compiles for tens of seconds).
    ``vmap_chunk``: at most this many tasks per vmap call (None: all of them).  Each chunk's
    meta-gradient is taken and its graph freed before the next, so memory grows with the chunk,
    not the meta-batch; the numbers are the same (tested).  A chunk that runs out of device
    memory is halved and retried; the halved size is kept (``vmap_chunk``) and counted
    (``oom_halvings``).
    """

    def __init__(
        self,
        backbone: nn.Module,
        *,
        feature_dim: int,
        ways: int,
        task: str,
        inner_steps: int = 1,
        inner_lr: float = 0.4,
        test_inner_steps: int = 3,
        first_order: bool = False,
        execution: str = "auto",
        channels_last: bool | None = None,
        compile: bool = False,
        vmap_chunk: int | None = None,
    ) -> None:
        super().__init__()
        if vmap_chunk is not None and vmap_chunk < 1:
            raise ValueError(f"vmap_chunk must be a positive number of tasks or None, got {vmap_chunk}")
        if task not in ("classification", "regression"):
            raise ValueError(f"task must be 'classification' or 'regression', got {task!r}")
        if execution not in EXECUTIONS:
            raise ValueError(f"execution must be one of {EXECUTIONS}, got {execution!r}")
        outputs = 1 if task == "regression" else ways
        # Zero-initialised head: every class starts equal, so the adapted model does not depend on
        # how labels were permuted in an episode (Ye & Chao, ICLR 2022), and no RNG is consumed.
        head = nn.Linear(feature_dim, outputs)
        nn.init.zeros_(head.weight)
        nn.init.zeros_(head.bias)
        self.model = _HeadedModel(backbone, head)
        self.task = task
        self.ways = outputs
        self.inner_steps = inner_steps
        self.inner_lr = inner_lr
        self.test_inner_steps = test_inner_steps
        self.first_order = first_order
        self.execution = execution
        self.channels_last = channels_last
        self.use_compile = compile  # not `compile`: nn.Module.compile is a method
        self._compiled: Callable[..., Tensor] | None = None
        self._thread_models: list[nn.Module] = []  # plain list: not submodules, not in state_dict
        self.vmap_chunk = vmap_chunk
        self.oom_halvings = 0
        # Under fp16 autocast the support loss is multiplied by this before its gradient is taken
        # (and the gradient divided after), so small gradients do not underflow in the inner loop;
        # a power of two, so the scaling itself is exact.  The outer loss has the GradScaler.
        self.fp16_inner_scale = 2.0**10

    @property
    def backbone(self) -> nn.Module:
        return self.model.backbone

    @property
    def head(self) -> nn.Linear:
        return self.model.head

    # -- the protocol ---------------------------------------------------------------------------

    def loss(self, batch: Any) -> tuple[Tensor, Tensor]:
        """Mean query loss over the T episodes at their adapted weights, and the mean metric."""
        self._check_batch(batch)
        if self._use_threads(batch.support_x, meta=True):
            return self._threaded_loss(batch)
        if self._use_vmap(batch.support_x):
            return self._halving_on_oom(lambda chunk: self._vmap_loss(batch, chunk), batch.support_x.shape[0])
        out = self.query_outputs(batch, self.inner_steps, meta=True)  # (T, Q, outputs)
        loss = task_loss(out.flatten(0, 1), batch.query_y.flatten(0, 1), self.task)
        return loss, task_metric(out, batch.query_y, self.task).mean().detach()

    def evaluate(self, batch: Any) -> Tensor:
        """(T,) query metric after ``test_inner_steps`` of adaptation; no meta-gradient."""
        self._check_batch(batch)
        with torch.enable_grad():  # the inner loop needs gradients even under no_grad
            if self._use_threads(batch.support_x, meta=False):
                return self._threaded_evaluate(batch)
            out = self.query_outputs(batch, self.test_inner_steps, meta=False)
        return task_metric(out.detach(), batch.query_y, self.task)

    def forward(self, x: Tensor) -> Tensor:
        """The unadapted network: (B, ...) -> (B, outputs)."""
        return self.model(x)

    def query_outputs(self, batch: Any, steps: int, *, meta: bool) -> Tensor:
        """(T, Q, outputs) query outputs of every episode after ``steps`` adaptation steps.

        ``meta=True`` keeps the graph from the shared parameters (second order unless
        ``first_order``); ``meta=False`` adapts detached copies (evaluation).
        The mean over episodes of the per-episode mean query loss equals the loss over the
        flattened (T*Q) outputs because every episode has the same number of queries.
        """
        self._check_batch(batch)
        params = self._params(meta)
        # A second-order graph only when a meta-gradient is wanted through the adaptation.
        create_graph = meta and not self.first_order
        sx, qx = self._inputs(batch, create_graph)
        if self._use_vmap(sx) and not meta:  # evaluation: chunks of tasks, outputs detached
            tasks = sx.shape[0]

            def run(chunk: int) -> Tensor:
                return torch.cat(
                    [
                        self._run_vmap(params, sx[c], batch.support_y[c], qx[c], steps, False).detach()
                        for c in execution.chunks(tasks, chunk)
                    ]
                )

            return self._halving_on_oom(run, tasks)
        if self._use_vmap(sx):
            return self._run_vmap(params, sx, batch.support_y, qx, steps, create_graph)
        outputs = []
        for t in range(sx.shape[0]):
            fast = self.adapt(params, sx[t], batch.support_y[t], steps, create_graph=create_graph)
            # The query pass is differentiated once (by the outer backward), so it may be compiled.
            outputs.append(self._forward(self.model, fast, qx[t], twice=False))
        return torch.stack(outputs)

    def adapt(
        self, params: Params, x: Tensor, y: Tensor, steps: int, *, create_graph: bool, model: nn.Module | None = None
    ) -> Params:
        """Fast weights after ``steps`` SGD steps of size ``inner_lr`` on one task's (x, y).

        With ``create_graph=False`` the step is first order: the gradient is a constant, so
        d(fast)/d(params) is the identity (FOMAML).  ``model``: a thread's replica (threads.py).
        """
        model = self.model if model is None else model
        names = list(params)
        scale = self._inner_scale(x)
        for _ in range(steps):
            loss = task_loss(self._forward(model, params, x, twice=create_graph), y, self.task)
            grads = torch.autograd.grad(
                loss * scale if scale != 1.0 else loss,
                [params[n] for n in names],
                create_graph=create_graph,
                allow_unused=True,
            )
            if scale != 1.0:
                grads = tuple(None if g is None else g / scale for g in grads)
            params = {
                n: params[n] if g is None else params[n] - self.inner_lr * g for n, g in zip(names, grads, strict=True)
            }
        return params

    # -- internals ------------------------------------------------------------------------------

    def _params(self, meta: bool) -> Params:
        params: Params = {n: p for n, p in self.model.named_parameters() if p.requires_grad}
        if not meta:
            params = {n: p.detach().requires_grad_() for n, p in params.items()}
        return params

    def _inputs(self, batch: Any, create_graph: bool) -> tuple[Tensor, Tensor]:
        """Support and query images, NHWC where it pays (see ``channels_last``).

        A support set that is differentiated twice (second order) stays NCHW: BatchNorm's double
        backward is a chain of reductions over (N, H, W), slow on NHWC tensors (bench/README.md).
        """
        sx, qx = batch.support_x, batch.query_x
        if self._use_channels_last(sx):
            sx, qx = (sx if create_graph else to_channels_last(sx)), to_channels_last(qx)
        return sx, qx

    # The threads and vmap executions of the same per-task work (maml_execution.py).

    def _threaded_loss(self, batch: Any) -> tuple[Tensor, Tensor]:
        return execution.threaded_loss(self, batch)

    def _threaded_evaluate(self, batch: Any) -> Tensor:
        return execution.threaded_evaluate(self, batch)

    def _halving_on_oom(self, run: Callable[[int], R], tasks: int) -> R:
        return execution.halving_on_oom(self, run, tasks)

    def _vmap_loss(self, batch: Any, chunk: int) -> tuple[Tensor, Tensor]:
        return execution.vmap_loss(self, batch, chunk)

    def _run_vmap(self, params: Params, sx: Tensor, sy: Tensor, qx: Tensor, steps: int, create_graph: bool) -> Tensor:
        return execution.run_vmap(self, params, sx, sy, qx, steps, create_graph)

    def _forward(self, model: nn.Module, params: Params, x: Tensor, *, twice: bool) -> Tensor:
        """The model at ``params``; compiled when asked and not differentiated twice.

        torch.compile (aot_autograd) does not support double backward, so the support pass of
        second-order MAML stays eager; the query pass (~85% of the work at 5-way 1-shot 15-query)
        and every first-order pass can be compiled.  Tested equal to the eager path.
        """
        params = {**self._fixed_tensors(), **params}
        if twice:  # fused ops would recompute their parts in the double backward: run them apart
            with unfused():
                return functional_call(model, params, (x,))
        if self.use_compile:
            if self._compiled is None:
                self._compiled = torch.compile(_call_model, dynamic=False)
            return self._compiled(model, params, x)
        return functional_call(model, params, (x,))

    def _inner_scale(self, x: Tensor) -> float:
        device = x.device.type
        fp16 = torch.is_autocast_enabled(device) and torch.get_autocast_dtype(device) == torch.float16
        return self.fp16_inner_scale if fp16 else 1.0

    def _fixed_tensors(self) -> Params:
        """Frozen parameters and buffers: passed explicitly so that thread replicas see them too."""
        fixed = {n: b for n, b in self.model.named_buffers()}
        fixed.update({n: p for n, p in self.model.named_parameters() if not p.requires_grad})
        return fixed

    def _use_vmap(self, x: Tensor) -> bool:
        if self.execution == "auto":
            return x.device.type == "cuda"
        return self.execution == "vmap"

    def _use_threads(self, x: Tensor, *, meta: bool) -> bool:
        return use_threads(self.execution, x, self.model, compile=self.use_compile, needs_grad=meta)

    def _use_channels_last(self, x: Tensor) -> bool:
        return use_channels_last(self.channels_last, x)

    def _check_batch(self, batch: Any) -> None:
        if self.task == "classification" and batch.ways != self.ways:
            raise ValueError(f"MAML head has {self.ways} outputs but the batch is {batch.ways}-way")
