"""The dataset interface, the dataset registry and ``load_dataset``.

Every dataset is built by a function registered in ``DATASETS`` that takes a ``DataConfig`` and
returns a :class:`Dataset`.  Image datasets are one :class:`ImageDataset`: all images in memory as
one uint8 tensor, integer labels, class names (for error messages) and disjoint class splits.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from ..config import DataConfig
from ..errors import ConfigError, DataError
from ..registry import Registry
from .sampler import EpisodeSampler

__all__ = [
    "Dataset",
    "ImageDataset",
    "DATASETS",
    "SPLITS",
    "load_dataset",
    "split_by_fraction",
    "rotate_classes",
    "merge_train_val",
]

SPLITS = ("train", "val", "test")

DATASETS: Registry[Callable[[DataConfig], Dataset]] = Registry("dataset")


class Dataset(ABC):
    """What the learners and the search see of a dataset."""

    name: str
    task: str  # "classification" | "regression"
    input_shape: tuple[int, ...]  # (C, H, W) for images, (1,) for sinusoid
    splits: dict[str, list[int]]  # split -> class ids (empty lists for sinusoid)

    @abstractmethod
    def sampler(
        self,
        split: str,
        *,
        ways: int,
        shots: int,
        queries: int,
        seed: int,
        device: torch.device | str = "cpu",
        within_alphabet: bool = False,
        augment: bool = False,
    ):
        """An episode sampler over ``split``; its ``sample(tasks)`` returns :class:`Episodes`.
        ``within_alphabet``: every episode's classes from one alphabet (ConfigError where the
        dataset has none); ``augment``: random affine jitter of every image (ConfigError where
        the inputs are not images)."""

    def _check_split(self, split: str) -> None:
        if split not in SPLITS:
            raise ConfigError(f"unknown split {split!r}; choose from {list(SPLITS)}")


class ImageDataset(Dataset):
    """Few-shot image classes in memory.

    ``images`` (N, C, H, W) uint8 with ink/foreground high, ``labels`` (N,) int64 in
    [0, len(class_names)), ``splits`` maps train/val/test to disjoint lists of class ids.
    """

    task = "classification"

    def __init__(
        self,
        name: str,
        images: Tensor,
        labels: Tensor,
        class_names: Sequence[str],
        splits: dict[str, list[int]],
        *,
        rotated_classes: bool = False,
    ) -> None:
        if images.dtype != torch.uint8 or images.dim() != 4:
            raise ValueError(f"images must be (N, C, H, W) uint8, got {images.dtype} {tuple(images.shape)}")
        if labels.shape != (images.shape[0],):
            raise ValueError(f"labels {tuple(labels.shape)} do not match {images.shape[0]} images")
        if set(splits) != set(SPLITS):
            raise ValueError(f"splits must be {SPLITS}, got {sorted(splits)}")
        seen: set[int] = set()
        for split in SPLITS:
            ids = set(splits[split])
            if ids & seen:
                raise ValueError(f"split {split!r} shares classes with another split")
            if ids and (min(ids) < 0 or max(ids) >= len(class_names)):
                raise ValueError(f"split {split!r} has class ids outside [0, {len(class_names)})")
            seen |= ids
        self.name = name
        self.images = images
        self.labels = labels.to(torch.int64)
        self.class_names = list(class_names)
        self.splits = {s: [int(c) for c in splits[s]] for s in SPLITS}
        self.input_shape = tuple(int(d) for d in images.shape[1:])
        # True when rotations are already classes (Omniglot's vinyals protocol, or --rotations).
        self.rotated_classes = rotated_classes

    def sampler(
        self,
        split: str,
        *,
        ways: int,
        shots: int,
        queries: int,
        seed: int,
        device: torch.device | str = "cpu",
        within_alphabet: bool = False,
        augment: bool = False,
    ) -> EpisodeSampler:
        """N-way K-shot Q-query episodes from ``split``'s classes (DataError if too few).

        ``within_alphabet``: every episode's classes come from one alphabet, the first part of
        the class names ``alphabet/character`` (Lake et al. 2015's harder within-alphabet task).
        """
        self._check_split(split)
        groups = None
        if within_alphabet:
            groups = [self.class_names[c].split("/")[0] for c in self.splits[split]]
        return EpisodeSampler(
            self.images,
            self.labels,
            self.splits[split],
            ways=ways,
            shots=shots,
            queries=queries,
            seed=seed,
            device=device,
            class_names=self.class_names,
            split=split,
            groups=groups,
            augment=augment,
        )

    def __repr__(self) -> str:
        sizes = {s: len(c) for s, c in self.splits.items()}
        return f"ImageDataset({self.name!r}, images={tuple(self.images.shape)}, classes={sizes})"


def split_by_fraction(
    n: int, seed: int, fractions: tuple[float, float, float] = (0.6, 0.2, 0.2), *, shuffle: bool = True
) -> dict[str, list[int]]:
    """Split ``range(n)`` (classes or alphabets) into train/val/test by ``fractions``.

    Val and test get at least one item each when ``n >= 3`` and their fraction is positive; the
    order is a seeded permutation (or ``range(n)`` with ``shuffle=False``).

        >>> split_by_fraction(10, seed=0, shuffle=False)
        {'train': [0, 1, 2, 3, 4, 5], 'val': [6, 7], 'test': [8, 9]}
    """
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).tolist() if shuffle else list(range(n))
    n_val = math.floor(fractions[1] * n + 0.5)
    n_test = math.floor(fractions[2] * n + 0.5)
    if n >= 3:
        n_val = max(1, n_val) if fractions[1] > 0 else 0
        n_test = max(1, n_test) if fractions[2] > 0 else 0
    n_train = max(0, n - n_val - n_test)
    return {
        "train": sorted(order[:n_train]),
        "val": sorted(order[n_train : n_train + n_val]),
        "test": sorted(order[n_train + n_val :]),
    }


def rotate_classes(dataset: ImageDataset, split: str = "train") -> ImageDataset:
    """``dataset`` with every class of ``split`` also turned by 90, 180 and 270 degrees, each turn a
    new class of the same split, named ``<name>/rot<degrees>`` (so it keeps its alphabet).

    Class ids and images of the original classes are unchanged; the new classes come after them.
    A dataset whose rotations are already classes is returned as it is.
    """
    if dataset.rotated_classes:
        return dataset
    _, _, h, w = dataset.images.shape
    if h != w:
        raise ConfigError(f"--rotations needs square images, dataset {dataset.name!r} has {h}x{w}; drop --rotations")
    classes = dataset.splits[split]
    n = len(dataset.class_names)
    rows = torch.isin(dataset.labels, torch.tensor(classes, dtype=torch.int64)).nonzero().squeeze(1)
    images, labels = dataset.images[rows], dataset.labels[rows]  # (R, C, H, W), (R,)
    position = torch.full((n,), -1, dtype=torch.int64)
    position[torch.tensor(classes, dtype=torch.int64)] = torch.arange(len(classes))
    turned = [torch.rot90(images, k, dims=(2, 3)) for k in (1, 2, 3)]  # each (R, C, H, W)
    new_labels = [n + 3 * position[labels] + (k - 1) for k in (1, 2, 3)]  # class c, turn k -> n + 3i + k - 1
    names = list(dataset.class_names) + [f"{dataset.class_names[c]}/rot{90 * k}" for c in classes for k in (1, 2, 3)]
    splits = {s: list(ids) for s, ids in dataset.splits.items()}
    splits[split] = list(classes) + list(range(n, n + 3 * len(classes)))
    return ImageDataset(
        dataset.name,
        torch.cat([dataset.images, *turned]),
        torch.cat([dataset.labels, *new_labels]),
        names,
        splits,
        rotated_classes=True,
    )


def merge_train_val(dataset: Dataset) -> Dataset:
    """``dataset`` with its validation classes moved into training (for a refit); test untouched."""
    if not isinstance(dataset, ImageDataset):
        raise ConfigError(f"a refit on train+val needs a dataset of classes; {dataset.name!r} has none")
    splits = {"train": dataset.splits["train"] + dataset.splits["val"], "val": [], "test": dataset.splits["test"]}
    return ImageDataset(
        dataset.name,
        dataset.images,
        dataset.labels,
        dataset.class_names,
        splits,
        rotated_classes=dataset.rotated_classes,
    )


def load_dataset(cfg: DataConfig, *, refit: bool = False) -> Dataset:
    """The dataset ``cfg.dataset`` as CPU tensors; DataError for missing or bad data.

    ``cfg.rotations`` adds the training classes' rotations as classes (:func:`rotate_classes`);
    ``refit`` first moves the validation classes into training (:func:`merge_train_val`), so
    their rotations are training classes too.

    >>> from nas_meta.config import DataConfig
    >>> ds = load_dataset(DataConfig(glyph_classes=30, glyph_samples=4))
    >>> ds.name, ds.task, ds.input_shape
    ('glyphs', 'classification', (1, 28, 28))
    """
    if cfg.image_size is not None and (
        not isinstance(cfg.image_size, int) or isinstance(cfg.image_size, bool) or cfg.image_size < 4
    ):
        raise ConfigError(f"--image-size must be an integer >= 4, got {cfg.image_size!r}")
    dataset = DATASETS.get(cfg.dataset)(cfg)
    if (cfg.rotations or cfg.augment) and not isinstance(dataset, ImageDataset):
        option = "--rotations" if cfg.rotations else "--augment"
        raise ConfigError(f"{option} is for image datasets; dataset {cfg.dataset!r} has none: drop {option}")
    if refit:
        dataset = merge_train_val(dataset)
    if cfg.rotations:
        assert isinstance(dataset, ImageDataset)
        dataset = rotate_classes(dataset, "train")
    return dataset


def require_root(cfg: DataConfig, hint: str) -> str:
    """``cfg.data_root``, or a DataError saying that this dataset needs one and how to get it."""
    if not cfg.data_root:
        raise DataError(f"dataset {cfg.dataset!r} needs --data-root DIR; {hint}")
    return cfg.data_root
