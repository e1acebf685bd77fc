"""Few-shot datasets in memory and the on-device episode sampler.

    >>> from nas_meta.config import DataConfig
    >>> from nas_meta.data import load_dataset, DATASETS
    >>> ds = load_dataset(DataConfig(dataset="glyphs", glyph_classes=30, glyph_samples=4))
    >>> batch = ds.sampler("train", ways=5, shots=1, queries=2, seed=0).sample(tasks=3)
    >>> tuple(batch.support_x.shape), batch.ways
    ((3, 5, 1, 28, 28), 5)

Registered datasets: ``glyphs`` (built in, procedural), ``omniglot``, ``folder``, ``cifar_fs`` and
``sinusoid`` (regression).  Importing this package registers them all.
"""

from __future__ import annotations

from . import benchmarks, cifar_fs, folder, glyphs, omniglot, sinusoid  # noqa: F401  (registers the datasets)
from .base import DATASETS, SPLITS, Dataset, ImageDataset, load_dataset
from .sampler import Episodes, EpisodeSampler

__all__ = ["load_dataset", "DATASETS", "SPLITS", "Dataset", "ImageDataset", "Episodes", "EpisodeSampler"]
