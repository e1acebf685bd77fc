"""Prototypical Networks (Snell et al. 2017): classify queries by distance to class means.

A class prototype is the mean embedding of its support examples; a query's logits are the
negative squared Euclidean distances to the prototypes.  Support and query images of an episode
are embedded in one forward pass, and BatchNorm statistics are those of the episode (as in the
paper, which trained on one episode per batch): an episode's result does not depend on which
other episodes share its meta-batch.  The T episodes go through the backbone as

* ``vmap`` -- one batched forward pass over all T episodes (the default on CUDA);
* ``threads`` -- episodes on worker threads, one core each (the default on a multi-core CPU,
  see threads.py);
* ``loop`` -- one forward pass per episode (the default on one CPU thread); faster than one
  (T*80)-image pass, whose activations exceed glibc's largest mmap threshold (32 MB) and
  page-fault on every allocation (bench/README.md).

Both give the same numbers (tested).

    >>> import torch
    >>> from torch import nn
    >>> backbone = nn.Flatten(); backbone.feature_dim = 2
    >>> protonet = ProtoNet(backbone)
    >>> support = torch.tensor([[[0.0, 0.0], [4.0, 0.0]]])     # (T=1, 2 shots, 2) one per class
    >>> query = torch.tensor([[[1.0, 0.0]]])
    >>> protonet.logits(support, torch.tensor([[0, 1]]), query, ways=2)
    tensor([[[-1., -9.]]])
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import vmap

from .base import EXECUTIONS, combine_task_results, to_channels_last, use_channels_last, use_threads
from .threads import run_tasks

__all__ = ["ProtoNet", "prototypes", "squared_distances"]


def prototypes(z: Tensor, y: Tensor, ways: int) -> Tensor:
    """Class means of support embeddings: z (T, S, F), y (T, S) in [0, ways) -> (T, ways, F).

    Written as a one-hot matmul so it does not rely on the class-major order of the support set.
    """
    onehot = F.one_hot(y, ways).to(z.dtype)  # (T, S, ways)
    counts = onehot.sum(1).clamp_min(1).unsqueeze(-1)  # (T, ways, 1)
    return onehot.transpose(1, 2) @ z / counts


def squared_distances(q: Tensor, p: Tensor) -> Tensor:
    """||q_i - p_j||^2: q (T, Q, F), p (T, W, F) -> (T, Q, W).

    The difference form, not ||q||^2 - 2 q.p + ||p||^2: that expansion cancels catastrophically
    when a query lies on its prototype, and the (T, Q, W, F) tensor is small here.
    """
    return (q.unsqueeze(2) - p.unsqueeze(1)).pow(2).sum(-1)


class ProtoNet(nn.Module):
    """ProtoNet over any backbone; no head, no parameters of its own."""

    def __init__(
        self, backbone: nn.Module, *, execution: str = "auto", channels_last: bool | None = None, compile: bool = False
    ) -> None:
        super().__init__()
        if execution not in EXECUTIONS:
            raise ValueError(f"execution must be one of {EXECUTIONS}, got {execution!r}")
        self.backbone = backbone
        self.task = "classification"
        self.execution = execution
        self.channels_last = channels_last
        self.use_compile = compile  # not `compile`: nn.Module.compile is a method
        self._compiled: Callable[[Tensor], Tensor] | None = None

    def embed(self, x: Tensor) -> Tensor:
        """(T, N, ...) -> (T, N, F), BatchNorm statistics per episode."""
        if self._use_channels_last(x):
            x = to_channels_last(x)
        if self.execution == "vmap" or (self.execution == "auto" and x.device.type == "cuda"):
            if self.use_compile:
                raise ValueError("compile=True applies to the per-episode passes; the vmap-batched episodes are not")
            return vmap(self.backbone)(x)
        backbone: Callable[[Tensor], Tensor] = self.backbone
        if self.use_compile:  # one graph for an episode's shape; pays over long runs only
            if self._compiled is None:
                self._compiled = torch.compile(self.backbone, dynamic=False)
            backbone = self._compiled
        return torch.stack([backbone(x[t]) for t in range(x.shape[0])])

    def logits(self, support_x: Tensor, support_y: Tensor, query_x: Tensor, ways: int) -> Tensor:
        """(T, Q, ways) negative squared distances; an episode's support and query in one pass."""
        s = support_x.shape[1]
        # Prototypes and distances in fp32 also under autocast (their sums of squares lose most of
        # their digits in bf16); the backbone runs in the autocast dtype.
        z = self.embed(torch.cat([support_x, query_x], 1))  # (T, S+Q, F)
        if z.dtype in (torch.float16, torch.bfloat16):
            z = z.float()
        z_support, z_query = z[:, :s], z[:, s:]  # (T, S, F), (T, Q, F)
        return -squared_distances(z_query, prototypes(z_support, support_y, ways))

    def loss(self, batch: Any) -> tuple[Tensor, Tensor]:
        """Mean query cross-entropy over the T episodes and the mean query accuracy."""
        if self._use_threads(batch.support_x):
            return self._threaded_loss(batch)
        logits = self.logits(batch.support_x, batch.support_y, batch.query_x, batch.ways)
        loss = F.cross_entropy(logits.flatten(0, 1), batch.query_y.flatten())
        accuracy = (logits.argmax(-1) == batch.query_y).float().mean()
        return loss, accuracy.detach()

    def evaluate(self, batch: Any) -> Tensor:
        """(T,) query accuracy per episode."""
        with torch.no_grad():
            logits = self.logits(batch.support_x, batch.support_y, batch.query_x, batch.ways)
        return (logits.argmax(-1) == batch.query_y).float().mean(-1)

    def forward(self, x: Tensor) -> Tensor:
        """The embedding: (B, ...) -> (B, F)."""
        return self.backbone(x)

    def _threaded_loss(self, batch: Any) -> tuple[Tensor, Tensor]:
        # Episodes on worker threads (threads.py); the backbone is called as a module, which is
        # safe to share: nothing is swapped into it, and BatchNorm here keeps no running state.
        leaves = [p for p in self.backbone.parameters() if p.requires_grad]

        def one_episode(t: int, _: nn.Module) -> tuple[Tensor, Tensor, tuple[Tensor | None, ...]]:
            sl = slice(t, t + 1)
            logits = self.logits(batch.support_x[sl], batch.support_y[sl], batch.query_x[sl], batch.ways)[0]
            loss = F.cross_entropy(logits, batch.query_y[t])
            grads = torch.autograd.grad(loss, leaves, allow_unused=True)
            return loss.detach(), (logits.argmax(-1) == batch.query_y[t]).float().mean(), grads

        tasks = batch.support_x.shape[0]
        results = run_tasks(one_episode, tasks, [self.backbone] * min(tasks, torch.get_num_threads()))
        return combine_task_results(results, leaves)

    def _use_threads(self, x: Tensor) -> bool:
        return use_threads(self.execution, x, self.backbone, compile=self.use_compile, needs_grad=True)

    def _use_channels_last(self, x: Tensor) -> bool:
        return use_channels_last(self.channels_last, x)
