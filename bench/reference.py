"""What the learner benches share: random episode batches, a meta-gradient, a device sync, and
learn2learn's MAML as the reference implementation.

Imports torch and nas_meta only: ``gpu.py`` runs on a machine with its own torch and the
repository, ``learners.py`` in the learn2learn venv; learn2learn itself is imported when its MAML
is built, so the benches run without it.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from nas_meta.data.sampler import Episodes

__all__ = ["L2LMaml", "episodes", "meta_gradient", "sync"]


def episodes(
    ways: int,
    shots: int,
    queries: int,
    tasks: int,
    device: torch.device,
    *,
    seed: int,
    size: int = 28,
    dtype: torch.dtype = torch.float32,
) -> Episodes:
    """``tasks`` episodes of random one-channel ``size`` x ``size`` images (Omniglot's shape),
    labels in order, the same for the same seed."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(ways)
    return Episodes(
        torch.rand(tasks, ways * shots, 1, size, size, generator=g, dtype=dtype),
        labels.repeat_interleave(shots).repeat(tasks, 1),
        torch.rand(tasks, ways * queries, 1, size, size, generator=g, dtype=dtype),
        labels.repeat_interleave(queries).repeat(tasks, 1),
        ways,
    ).to(device)


def meta_gradient(learner: nn.Module, batch: Episodes) -> Tensor:
    """The meta-gradient of ``learner.loss(batch)`` over its parameters, flattened (unused skipped)."""
    loss, _ = learner.loss(batch)
    grads = torch.autograd.grad(loss, list(learner.parameters()), allow_unused=True)
    return torch.cat([g.flatten() for g in grads if g is not None])


def sync(device: torch.device) -> None:
    """Wait for the device's queued work (a no-op on the CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class L2LMaml(nn.Module):
    """learn2learn's documented MAML loop over a copy of ``model``: clone, adapt ``steps`` times on
    the support set, query loss, mean over the tasks."""

    def __init__(self, model: nn.Module, *, first_order: bool, lr: float, steps: int = 1) -> None:
        import learn2learn as l2l  # the learn2learn venv only (bench/setup_l2l.sh)

        super().__init__()
        self.maml = l2l.algorithms.MAML(copy.deepcopy(model), lr=lr, first_order=first_order)
        self.steps = steps

    def loss(self, batch: Episodes) -> tuple[Tensor, Tensor]:
        losses = []
        for t in range(batch.support_x.shape[0]):
            learner = self.maml.clone()
            for _ in range(self.steps):
                learner.adapt(F.cross_entropy(learner(batch.support_x[t]), batch.support_y[t]))
            losses.append(F.cross_entropy(learner(batch.query_x[t]), batch.query_y[t]))
        return torch.stack(losses).mean(), torch.zeros(())
