"""Prototypical Networks (Snell et al. 2017): classify queries by distance to class means.

A class prototype is the mean embedding of its support examples; a query's logits are the
negative squared Euclidean distances to the prototypes.  The support and query images of all T
episodes go through the backbone in *one* forward pass (one large batch keeps the convolutions
efficient); the backbone's BatchNorm therefore uses the statistics of the whole meta-batch.

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

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .maml import to_channels_last

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

    def __init__(self, backbone: nn.Module, *, channels_last: bool | None = None) -> None:
        super().__init__()
        self.backbone = backbone
        self.task = "classification"
        self.channels_last = channels_last

    def logits(self, support_x: Tensor, support_y: Tensor, query_x: Tensor, ways: int) -> Tensor:
        """(T, Q, ways) negative squared distances, support and query embedded in one pass."""
        t, s = support_x.shape[:2]
        x = torch.cat([support_x, query_x], 1).flatten(0, 1)  # (T*(S+Q), ...)
        if self._use_channels_last(x):
            x = to_channels_last(x)
        z = self.backbone(x)
        z = z.reshape(t, -1, z.shape[-1])  # (T, S+Q, F)
        z_support, z_query = z[:, :s], z[:, s:]  # (T, S, F), (T, Q, F)
        return -squared_distances(z_query, prototypes(z_support, support_y, ways))

    def loss(self, batch: Any) -> tuple[Tensor, Tensor]:
        """Mean query cross-entropy over the T episodes and the mean query accuracy."""
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

    def _use_channels_last(self, x: Tensor) -> bool:
        if self.channels_last is None:
            return x.dim() == 4 and x.device.type == "cpu"
        return self.channels_last and x.dim() == 4
