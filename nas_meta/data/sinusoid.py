"""``sinusoid``: the regression tasks of MAML (Finn et al. 2017, section 5.1).

A task is ``y = A sin(x - phi)`` with amplitude ``A ~ U[0.1, 5]``, phase ``phi ~ U[0, pi]``; its
examples have ``x ~ U[-5, 5]``.  There are no classes: splits differ only in their random stream
(each split's generator is seeded from ``(seed, split)``), and episodes have ``ways == 1``;
``shots`` and ``queries`` are the numbers of support and query points per task.  The metric is
mean squared error.
"""

from __future__ import annotations

import hashlib
import math

import torch

from ..config import DataConfig
from ..errors import ConfigError
from .base import DATASETS, SPLITS, Dataset
from .sampler import Episodes, check_episode_shape

__all__ = ["SinusoidDataset", "SinusoidSampler", "AMPLITUDE", "PHASE", "X_RANGE"]

AMPLITUDE = (0.1, 5.0)
PHASE = (0.0, math.pi)
X_RANGE = (-5.0, 5.0)


def _split_seed(seed: int, split: str) -> int:
    # Distinct, stable streams per (seed, split); a hash, so seed + 1 is not another split's seed.
    return int.from_bytes(hashlib.sha256(f"sinusoid/{seed}/{split}".encode()).digest()[:8], "little") >> 1


class SinusoidSampler:
    """Draws ``T`` sinusoid tasks at once; ``sample(T)`` returns Episodes with (T, K, 1) tensors."""

    def __init__(self, *, shots: int, queries: int, seed: int, split: str, device: torch.device | str = "cpu") -> None:
        check_episode_shape(1, shots, queries)
        self.ways, self.shots, self.queries = 1, shots, queries
        self.device = torch.device(device)
        self.rng = torch.Generator().manual_seed(_split_seed(seed, split))

    def sample(self, tasks: int) -> Episodes:
        """``tasks`` regression episodes: support/query x and y, each (T, K, 1) float32."""
        check_episode_shape(1, tasks, 1)
        n = self.shots + self.queries
        u = torch.rand(tasks, 2, generator=self.rng)
        amplitude = AMPLITUDE[0] + (AMPLITUDE[1] - AMPLITUDE[0]) * u[:, :1, None]  # (T, 1, 1)
        phase = PHASE[0] + (PHASE[1] - PHASE[0]) * u[:, 1:, None]  # (T, 1, 1)
        x = X_RANGE[0] + (X_RANGE[1] - X_RANGE[0]) * torch.rand(tasks, n, 1, generator=self.rng)  # (T, n, 1)
        y = amplitude * torch.sin(x - phase)  # (T, n, 1)
        x, y = x.to(self.device), y.to(self.device)
        k = self.shots
        return Episodes(x[:, :k], y[:, :k], x[:, k:], y[:, k:], 1)


class SinusoidDataset(Dataset):
    """The task family; no data in memory."""

    name = "sinusoid"
    task = "regression"
    input_shape = (1,)

    def __init__(self) -> None:
        self.splits = {s: [] for s in SPLITS}

    def sampler(
        self,
        split: str,
        *,
        ways: int = 1,
        shots: int,
        queries: int,
        seed: int,
        device: torch.device | str = "cpu",
        within_alphabet: bool = False,
        augment: bool = False,
    ) -> SinusoidSampler:
        """Episodes of ``split``'s task stream; ``ways`` is accepted for a uniform call and unused
        (a regression task has one output), the episodes report ``ways == 1``."""
        self._check_split(split)
        if within_alphabet:
            raise ConfigError("--within-alphabet needs a dataset of alphabets, not 'sinusoid'")
        if augment:
            raise ConfigError("--augment is for image datasets, not 'sinusoid': drop --augment")
        return SinusoidSampler(shots=shots, queries=queries, seed=seed, split=split, device=device)

    def __repr__(self) -> str:
        return "SinusoidDataset()"


@DATASETS.register("sinusoid")
def build_sinusoid(cfg: DataConfig) -> SinusoidDataset:
    """MAML's sinusoid regression tasks (nothing to load; ``cfg`` has no sinusoid parameters)."""
    return SinusoidDataset()
