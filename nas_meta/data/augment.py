"""Augmentation of few-shot data: rotated classes and on-device affine jitter of training episodes.

Two kinds, both training-only, both part of the run's recipe (``DataConfig.rotations`` and
``DataConfig.augment``):

* **class augmentation**: a training class turned by 90, 180 and 270 degrees is three new classes
  (Santoro et al. 2016; Vinyals et al. 2016 on Omniglot).  The rotated classes stay in the
  training split; validation and test classes are the dataset's own.
* **instance augmentation**: every image of a training episode gets its own random affine map
  (shift, rotation, scale, shear), applied as one batched ``affine_grid`` + ``grid_sample`` on the
  episode's device.  The parameters come from the sampler's seeded CPU generator, so the same seed
  gives the same jitter on every device.

    >>> import torch
    >>> x = torch.zeros(2, 3, 1, 8, 8); x[..., 3:5, 3:5] = 1.0     # (T, N, C, H, W)
    >>> y = random_affine(x, torch.Generator().manual_seed(0))
    >>> tuple(y.shape), bool((y - x).abs().sum() > 0)
    ((2, 3, 1, 8, 8), True)
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["Jitter", "DEFAULT_JITTER", "random_affine", "affine_matrices"]


@dataclass(frozen=True)
class Jitter:
    """Ranges of the random affine map, each drawn uniformly and independently per image."""

    shift: float = 0.1  # fraction of the image side, each axis: +-10% is +-2.8 px at 28x28
    rotate: float = 15.0  # degrees, either way
    scale: float = 0.1  # relative: a factor in [0.9, 1.1]
    shear: float = 10.0  # degrees, either way (x shear)


# Small enough that a character stays itself, large enough to change every stroke's pixels:
# the ranges of the drawer-like jitter Lake et al. (2015) describe for Omniglot drawings.
DEFAULT_JITTER = Jitter()


def affine_matrices(u: Tensor, jitter: Jitter = DEFAULT_JITTER) -> Tensor:
    """(n, 2, 3) maps for ``affine_grid`` from ``u`` (n, 5) uniform in [-1, 1]: rotation, shear,
    scale, shift x, shift y.  ``u = 0`` is the identity."""
    angle = u[:, 0] * math.radians(jitter.rotate)  # (n,)
    shear = u[:, 1] * math.radians(jitter.shear)
    scale = 1.0 + u[:, 2] * jitter.scale
    cos, sin, tan = torch.cos(angle), torch.sin(angle), torch.tan(shear)
    # (rotation) @ (x shear) / scale: grid coordinates of the output pixel -> input pixel.
    a = torch.stack([cos, cos * tan - sin, sin, sin * tan + cos], -1).view(-1, 2, 2) / scale.view(-1, 1, 1)
    t = (2.0 * jitter.shift) * u[:, 3:5]  # grid coordinates span [-1, 1]: a side is 2
    return torch.cat([a, t.unsqueeze(-1)], -1)  # (n, 2, 3)


def random_affine(x: Tensor, rng: torch.Generator, jitter: Jitter = DEFAULT_JITTER) -> Tensor:
    """Each image of ``x`` (..., C, H, W) float under its own random affine map, on ``x``'s device.

    Pixels that come from outside the image are 0: the background of ink-high characters; RGB
    images are reflected at the border instead, so no black frame appears.
    """
    *lead, c, h, w = x.shape
    flat = x.reshape(-1, c, h, w)  # (n, C, H, W)
    u = torch.rand(flat.shape[0], 5, generator=rng) * 2.0 - 1.0  # (n, 5) on the CPU: device-independent
    theta = affine_matrices(u, jitter).to(device=x.device, dtype=x.dtype)
    grid = F.affine_grid(theta, list(flat.shape), align_corners=False)  # (n, H, W, 2)
    padding = "zeros" if c == 1 else "reflection"
    out = F.grid_sample(flat, grid, mode="bilinear", padding_mode=padding, align_corners=False)
    return out.reshape(*lead, c, h, w)
