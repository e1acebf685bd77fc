"""From a run config to its episode samplers: training (jittered, of ``train_ways``), validation
and test episodes, each seeded so that every candidate of a run meets the same episodes."""

from __future__ import annotations

from typing import Any

from ..config import RunConfig
from .base import Dataset

__all__ = ["episode_samplers", "test_sampler", "TEST_SEED_OFFSET"]

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
