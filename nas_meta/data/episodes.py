"""From a run config to its episode samplers: training (jittered, of ``train_ways``), validation
and test episodes, each seeded so that every candidate of a run meets the same episodes."""

from __future__ import annotations

import math
import os
from typing import Any

from ..config import RunConfig
from ..errors import ConfigError
from .base import Dataset

__all__ = [
    "episode_samplers",
    "test_sampler",
    "TEST_SEED_OFFSET",
    "ACTIVATION_FACTOR",
    "batch_bytes",
    "available_bytes",
    "check_memory",
]

# A lower bound of a step's memory per input value: a backbone keeps several activations per layer
# for the backward, and a first layer of 64 channels alone has 64 values per input value.
ACTIVATION_FACTOR = 64

TEST_SEED_OFFSET = 104_729  # test episodes are the same for every architecture evaluated


def episode_samplers(
    cfg: RunConfig, dataset: Dataset, train_seed: int, val_seed: int, device: Any, *, validate: bool = True
) -> tuple[Any, Any]:
    """Train episodes (``train_ways`` for ProtoNet's wider training episodes, jittered with
    ``cfg.data.augment``) and validation episodes (the evaluation ways, never jittered) with the
    config's shots and queries; no validation sampler with ``validate=False`` (a refit)."""
    d = cfg.data
    classification = dataset.task == "classification"
    ways = d.episode_ways(dataset.task)
    train_ways = (cfg.learner.train_ways or ways) if classification else 1
    train = dataset.sampler(
        "train", ways=train_ways, shots=d.shots, queries=d.queries, seed=train_seed, device=device, augment=d.augment
    )
    if not validate:
        return train, None
    val = dataset.sampler("val", ways=ways, shots=d.shots, queries=d.queries, seed=val_seed, device=device)
    return train, val


def test_sampler(cfg: RunConfig, dataset: Dataset, device: Any) -> Any:
    """Test episodes of the evaluation shape, the same for every architecture of a run (the seed is
    the run's plus a fixed offset): both arms of a comparison meet the same episodes."""
    ways = cfg.data.episode_ways(dataset.task)
    d = cfg.data
    return dataset.sampler(
        "test",
        ways=ways,
        shots=d.shots,
        queries=d.queries,
        seed=cfg.seed + TEST_SEED_OFFSET,
        device=device,
        within_alphabet=d.within_alphabet,
    )


def batch_bytes(cfg: RunConfig, dataset: Dataset) -> int:
    """Bytes of one meta-training batch's float32 inputs: meta-batch x ways x (shots + queries) x
    the input's size (the wider of the training and evaluation episodes)."""
    d = cfg.data
    ways = d.episode_ways(dataset.task)
    if dataset.task == "classification":
        ways = max(ways, cfg.learner.train_ways or ways)
    return cfg.learner.meta_batch * ways * (d.shots + d.queries) * math.prod(dataset.input_shape) * 4


def available_bytes(device: Any) -> int | None:
    """Free memory of ``device`` (a torch.device): CUDA's free bytes, or the machine's available
    memory (/proc/meminfo, else the free pages); None where it cannot be told."""
    if getattr(device, "type", "cpu") == "cuda":
        import torch

        return int(torch.cuda.mem_get_info(device)[0])
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def check_memory(cfg: RunConfig, dataset: Dataset, device: Any, available: int | None = None) -> None:
    """ConfigError, before anything is allocated, when even a lower bound of one training step's
    memory (:func:`batch_bytes` x ACTIVATION_FACTOR) exceeds what ``device`` has free."""
    free = available_bytes(device) if available is None else available
    need = batch_bytes(cfg, dataset) * ACTIVATION_FACTOR
    if free is not None and need > free:
        d = cfg.data
        raise ConfigError(
            f"--meta-batch {cfg.learner.meta_batch} x {d.ways} ways x ({d.shots} shots + {d.queries} queries) of "
            f"{'x'.join(map(str, dataset.input_shape))} inputs needs at least {_size(need)} per step; "
            f"this {getattr(device, 'type', 'cpu')} has {_size(free)} free; lower one of them"
        )


def _size(n: int) -> str:
    return f"{n / 2**30:,.1f} GiB" if n >= 2**30 else f"{n / 2**20:,.1f} MiB"
