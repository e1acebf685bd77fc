"""Episodes and the on-device N-way K-shot episode sampler.

A batch of ``T`` episodes is drawn with a handful of tensor ops: a random permutation of the
split's classes per episode, then a random ranking of each chosen class's images (padded to the
largest class so classes of different sizes share one table).  No DataLoader and no per-image
Python, so sampling costs microseconds next to a meta-training step.

    >>> from nas_meta.config import DataConfig
    >>> from nas_meta.data import load_dataset
    >>> ds = load_dataset(DataConfig(glyph_classes=30, glyph_samples=6))
    >>> batch = ds.sampler("train", ways=3, shots=1, queries=2, seed=0).sample(4)
    >>> tuple(batch.support_x.shape), tuple(batch.query_y.shape)
    ((4, 3, 1, 28, 28), (4, 6))
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from ..errors import ConfigError, DataError
from .augment import random_affine

__all__ = ["Episodes", "EpisodeSampler", "check_episode_shape"]

AUGMENT_SEED_OFFSET = 15_485_863


@dataclass(frozen=True)
class Episodes:
    """A batch of ``T`` episodes, already on the sampler's device.

    Classification: ``support_x`` (T, ways*shots, C, H, W) float32 in [0, 1], ``support_y``
    (T, ways*shots) int64 in [0, ways); queries likewise.  Examples are class-major: class 0's
    shots, then class 1's.  Regression: ``support_x``/``support_y`` (T, shots, 1) float32 and
    ``ways == 1``.
    """

    support_x: Tensor
    support_y: Tensor
    query_x: Tensor
    query_y: Tensor
    ways: int

    def to(self, device: torch.device | str) -> Episodes:
        """The same episodes on ``device`` (no copy when already there)."""
        return Episodes(
            self.support_x.to(device),
            self.support_y.to(device),
            self.query_x.to(device),
            self.query_y.to(device),
            self.ways,
        )

    @property
    def tasks(self) -> int:
        """T, the number of episodes in the batch."""
        return self.support_x.shape[0]


def check_episode_shape(ways: int, shots: int, queries: int) -> None:
    """ConfigError unless ways, shots and queries are positive integers."""
    for name, value in (("ways", ways), ("shots", shots), ("queries", queries)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ConfigError(f"{name} must be a positive integer, got {value!r}")


class EpisodeSampler:
    """Draws N-way K-shot Q-query classification episodes from one split's classes.

    The split's images are moved to ``device`` once; every ``sample`` is index arithmetic there.
    Random numbers come from a CPU ``torch.Generator`` seeded with ``seed`` so that the same seed
    gives the same episodes on every device.
    """

    def __init__(
        self,
        images: Tensor,  # (N, C, H, W) uint8, the whole dataset
        labels: Tensor,  # (N,) int64 class ids
        classes: Sequence[int],  # the split's class ids
        *,
        ways: int,
        shots: int,
        queries: int,
        seed: int,
        device: torch.device | str = "cpu",
        class_names: Sequence[str] | None = None,
        split: str = "?",
        groups: Sequence[str] | None = None,  # per class of ``classes``: episodes stay in one group
        augment: bool = False,  # random affine jitter per image (training episodes only)
    ) -> None:
        check_episode_shape(ways, shots, queries)
        if ways < 2:
            raise ConfigError(f"ways must be at least 2 for classification, got {ways}")
        classes = list(dict.fromkeys(int(c) for c in classes))  # a repeated id would be drawn twice
        if len(classes) < ways:
            raise DataError(
                f"split {split!r} has {len(classes)} classes, fewer than ways={ways}; lower --ways or add classes"
            )
        self.ways, self.shots, self.queries = ways, shots, queries
        self.device = torch.device(device)
        self.rng = torch.Generator().manual_seed(int(seed))
        # Jitter draws from a generator of its own, so the classes and images drawn are the same
        # with augmentation on or off: an ablation changes one thing.
        self.augment = bool(augment)
        self.augment_rng = torch.Generator().manual_seed(int(seed) + AUGMENT_SEED_OFFSET)

        labels = labels.cpu()
        wanted = torch.tensor(classes, dtype=torch.int64)  # (n_classes,)
        index = torch.isin(labels, wanted).nonzero().squeeze(1)  # dataset rows of this split
        # Sort the rows by class so each class is one contiguous run of the split's images.
        index = index[torch.argsort(labels[index], stable=True)]
        sorted_labels = labels[index]
        starts = torch.searchsorted(sorted_labels, wanted)  # (n_classes,) first row of each class
        counts = torch.searchsorted(sorted_labels, wanted, right=True) - starts  # (n_classes,)
        need = shots + queries
        small = (counts < need).nonzero().squeeze(1).tolist()
        if small:
            k = small[0]
            name = class_names[classes[k]] if class_names is not None else str(classes[k])
            more = f" ({len(small)} such classes)" if len(small) > 1 else ""
            raise DataError(
                f"class {name!r} in split {split!r} has {int(counts[k])} images, fewer than shots+queries={need}{more}"
            )
        self._starts, self._counts = starts, counts
        self._max_count = int(counts.max())
        self.images = images[index].to(self.device)  # (n, C, H, W) uint8, this split only
        self.n_classes = len(classes)
        self._group_masks: Tensor | None = None  # (n_groups, n_classes) True where a class is out
        if groups is not None:
            sizes = Counter(groups)  # insertion-ordered: groups in the order of the split's classes
            usable = [g for g, n in sizes.items() if n >= ways]
            if not usable:
                raise DataError(
                    f"split {split!r}: no alphabet has {ways} classes for within-alphabet episodes "
                    f"(largest has {max(sizes.values())}); lower --ways"
                )
            self._group_masks = torch.tensor([[g != u for g in groups] for u in usable])

    def sample(self, tasks: int) -> Episodes:
        """``tasks`` episodes; labels are relabelled 0..ways-1 in the order classes were drawn."""
        if not isinstance(tasks, int) or isinstance(tasks, bool) or tasks < 1:
            raise ConfigError(f"tasks must be a positive integer, got {tasks!r}")
        ways, shots, queries = self.ways, self.shots, self.queries
        need = shots + queries
        # ways distinct classes per episode: the first `ways` of a random permutation.
        keys = torch.rand(tasks, self.n_classes, generator=self.rng)
        if self._group_masks is not None:  # one group per episode, uniformly among those with enough classes
            group = torch.randint(len(self._group_masks), (tasks,), generator=self.rng)
            keys = keys.masked_fill(self._group_masks[group], float("inf"))
        chosen = keys.argsort(1)[:, :ways]  # (T, ways)
        counts = self._counts[chosen]  # (T, ways)
        # need distinct images per class: rank random keys, padding rows beyond a class's count
        # get +inf so they are never among the first `need`.
        keys = torch.rand(tasks, ways, self._max_count, generator=self.rng)
        slots = torch.arange(self._max_count)
        keys = keys.masked_fill(slots >= counts.unsqueeze(-1), float("inf"))
        picks = keys.argsort(-1)[..., :need]  # (T, ways, need) positions within each class
        rows = self._starts[chosen].unsqueeze(-1) + picks  # (T, ways, need) rows of self.images
        rows = rows.to(self.device)
        support_rows = rows[..., :shots].reshape(tasks, ways * shots)
        query_rows = rows[..., shots:].reshape(tasks, ways * queries)
        label = torch.arange(ways, device=self.device)
        support_y = label.repeat_interleave(shots).expand(tasks, -1).contiguous()  # (T, ways*shots)
        query_y = label.repeat_interleave(queries).expand(tasks, -1).contiguous()  # (T, ways*queries)
        scale = 1.0 / 255.0
        support_x = self.images[support_rows].float().mul_(scale)  # (T, ways*shots, C, H, W)
        query_x = self.images[query_rows].float().mul_(scale)  # (T, ways*queries, C, H, W)
        if self.augment:
            support_x = random_affine(support_x, self.augment_rng)
            query_x = random_affine(query_x, self.augment_rng)
        return Episodes(support_x, support_y, query_x, query_y, ways)
