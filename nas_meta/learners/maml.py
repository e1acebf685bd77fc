"""MAML (Finn et al. 2017) and first-order MAML, functional: no module cloning, no deepcopy.

The learner holds ``model = backbone -> linear head``; every task adapts its own *fast weights*
(a dict name -> tensor derived from the shared parameters) with ``inner_steps`` SGD steps on its
support set, and the query loss is computed at those fast weights with
``torch.func.functional_call``.  Second order by default: the support gradients are taken with
``create_graph=True`` so the meta-gradient flows through the adaptation.

Two execution paths compute the same numbers (tests compare both with a per-task reference):

* ``loop``: the T tasks one after the other with ``torch.autograd.grad``.  On the CPU the
  convolutions dominate and batching tasks gains nothing (measured: ``vmap`` did not beat the
  loop), so this is the CPU default.
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
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call, grad, vmap

__all__ = ["MAML", "task_loss", "task_metric", "to_channels_last"]

Params = dict[str, Tensor]


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


def to_channels_last(x: Tensor) -> Tensor:
    """Images in NHWC memory (oneDNN convolutions ran 1.3-1.9x faster so); other shapes unchanged."""
    if x.dim() == 4:
        return x.contiguous(memory_format=torch.channels_last)
    if x.dim() == 5:
        # (T, N, C, H, W) stored as (T, N, H, W, C): every x[t] is then an NHWC view.
        return x.permute(0, 1, 3, 4, 2).contiguous().permute(0, 1, 4, 2, 3)
    return x


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

    ``execution``: "loop", "vmap" or "auto" (vmap on CUDA, loop elsewhere; see module doc).
    ``channels_last``: None = on for image inputs on the CPU (exact up to float rounding).
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
    ) -> None:
        super().__init__()
        if task not in ("classification", "regression"):
            raise ValueError(f"task must be 'classification' or 'regression', got {task!r}")
        if execution not in ("auto", "loop", "vmap"):
            raise ValueError(f"execution must be 'auto', 'loop' or 'vmap', got {execution!r}")
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

    @property
    def backbone(self) -> nn.Module:
        return self.model.backbone

    @property
    def head(self) -> nn.Linear:
        return self.model.head

    # -- the protocol ---------------------------------------------------------------------------

    def loss(self, batch: Any) -> tuple[Tensor, Tensor]:
        """Mean query loss over the T episodes at their adapted weights, and the mean metric."""
        out = self.query_outputs(batch, self.inner_steps, meta=True)  # (T, Q, outputs)
        loss = task_loss(out.flatten(0, 1), batch.query_y.flatten(0, 1), self.task)
        return loss, task_metric(out, batch.query_y, self.task).mean().detach()

    def evaluate(self, batch: Any) -> Tensor:
        """(T,) query metric after ``test_inner_steps`` of adaptation; no meta-gradient."""
        with torch.enable_grad():  # the inner loop needs gradients even under no_grad
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
        params = {n: p for n, p in self.model.named_parameters() if p.requires_grad}
        if not meta:
            params = {n: p.detach().requires_grad_() for n, p in params.items()}
        # A second-order graph only when a meta-gradient is wanted through the adaptation.
        create_graph = meta and not self.first_order
        sx, qx = batch.support_x, batch.query_x
        if self._use_channels_last(sx):
            sx, qx = to_channels_last(sx), to_channels_last(qx)
        if self._use_vmap(sx):
            return self._run_vmap(params, sx, batch.support_y, qx, steps, create_graph)
        outputs = []
        for t in range(sx.shape[0]):
            fast = self.adapt(params, sx[t], batch.support_y[t], steps, create_graph=create_graph)
            outputs.append(functional_call(self.model, fast, (qx[t],)))
        return torch.stack(outputs)

    # -- internals ------------------------------------------------------------------------------

    def adapt(self, params: Params, x: Tensor, y: Tensor, steps: int, *, create_graph: bool) -> Params:
        """Fast weights after ``steps`` SGD steps of size ``inner_lr`` on one task's (x, y).

        With ``create_graph=False`` the step is first order: the gradient is a constant, so
        d(fast)/d(params) is the identity (FOMAML).
        """
        names = list(params)
        for _ in range(steps):
            loss = task_loss(functional_call(self.model, params, (x,)), y, self.task)
            grads = torch.autograd.grad(loss, [params[n] for n in names], create_graph=create_graph, allow_unused=True)
            params = {n: params[n] if g is None else params[n] - self.inner_lr * g for n, g in zip(names, grads)}
        return params

    def _run_vmap(self, params: Params, sx: Tensor, sy: Tensor, qx: Tensor, steps: int, create_graph: bool) -> Tensor:
        model, task, lr = self.model, self.task, self.inner_lr

        def support_loss(p: Params, x: Tensor, y: Tensor) -> Tensor:
            return task_loss(functional_call(model, p, (x,)), y, task)

        def one_task(p: Params, x: Tensor, y: Tensor, xq: Tensor) -> Tensor:
            for _ in range(steps):
                g = grad(support_loss)(p, x, y)
                if not create_graph:  # first order: the outer graph must not see through g
                    g = {n: v.detach() for n, v in g.items()}
                p = {n: p[n] - lr * g[n] for n in p}
            return functional_call(model, p, (xq,))

        fn: Callable[..., Tensor] = vmap(one_task, in_dims=(None, 0, 0, 0))
        return fn(params, sx, sy, qx)

    def _use_vmap(self, x: Tensor) -> bool:
        if self.execution == "auto":
            return x.device.type == "cuda"
        return self.execution == "vmap"

    def _use_channels_last(self, x: Tensor) -> bool:
        if self.channels_last is None:
            return x.dim() == 5 and x.device.type == "cpu"
        return self.channels_last and x.dim() == 5

    def _check_batch(self, batch: Any) -> None:
        if self.task == "classification" and batch.ways != self.ways:
            raise ValueError(f"MAML head has {self.ways} outputs but the batch is {batch.ways}-way")
