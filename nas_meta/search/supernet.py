"""Weight-sharing search: meta-train one supernet per space, score candidates on inherited weights.

``search --strategy supernet`` first meta-trains a :class:`~nas_meta.model.supernet.SuperNet` of
the space with the search's own learner and episodes (single-path one-shot: every meta-batch runs
one architecture drawn uniformly from the space, Guo et al. 2020), then searches as screening does
(search/screening.py): before each meta-trained trial the sampler proposes ``prescreen_pool``
candidates, each is scored in seconds by the ``supernet`` proxy (its validation score with the
weights, and for MAML the head, it inherits from the supernet) and recorded in the study; the
best is meta-trained from scratch like any trial, so ``analyze`` and ``export`` work unchanged.

The supernet is saved beside the study (``supernet.pt``) every ``SAVE_EVERY`` steps; each block of
steps draws its episodes and paths from a seed of its own, so a killed run that resumes from the
file ends with the same weights as one that was never stopped.
"""

from __future__ import annotations

import contextlib
import math
import random
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import networkx as nx
import torch
from torch import nn

from ..config import RunConfig
from ..data import Dataset
from ..data.episodes import episode_samplers
from ..errors import ConfigError
from ..fileio import atomic_write
from ..learners import build_learner
from ..learners.train import make_optimizer, outer_step
from ..model import network
from ..model.supernet import SuperNet
from ..spaces import Space

__all__ = [
    "SUPERNET_FILE",
    "SAVE_EVERY",
    "architectures",
    "probe_architectures",
    "build_supernet",
    "PathSampler",
    "train_supernet",
    "inherit_learner",
]

SUPERNET_FILE = "supernet.pt"
SAVE_EVERY = 50  # steps between checkpoints (and between the per-block seeds)
PROBE_SAMPLES = 512  # architectures sampled to size the bank of a space too large to list
EXHAUSTIVE = 4096  # spaces up to this size are listed in full: every architecture is a path
PATH_SEED_OFFSET = 104_729


def architectures(space: Space, limit: int) -> Iterator[nx.DiGraph]:
    """Every architecture of ``space`` (each assignment of the choices it asks), in a fixed order;
    ConfigError if there are more than ``limit``."""
    if space.size() > limit:
        raise ConfigError(f"space {space.name!r} has {space.size():,} architectures, more than {limit:,} to list")
    digits: list[int] = []  # option index per choice asked, in the order asked
    while True:
        sizes: list[int] = []

        def choose(_name: str, options: list, sizes: list[int] = sizes) -> Any:
            depth = len(sizes)
            sizes.append(len(options))
            if depth == len(digits):
                digits.append(0)
            return options[digits[depth]]

        yield space.build(choose)
        del digits[len(sizes) :]  # choices no longer asked (a shallower depth) are forgotten
        while digits and digits[-1] + 1 >= sizes[len(digits) - 1]:
            digits.pop()
        if not digits:
            return
        digits[-1] += 1


def probe_architectures(space: Space, *, seed: int, samples: int = PROBE_SAMPLES) -> list[nx.DiGraph]:
    """The architectures a supernet's bank is sized from: all of a small space; else ``samples``
    drawn uniformly, plus as many with every numeric choice at its largest option (the widest
    slices), the rest drawn."""
    if space.size() <= EXHAUSTIVE:
        return list(architectures(space, EXHAUSTIVE))
    rng = random.Random(seed + PATH_SEED_OFFSET)

    def widest(_name: str, options: list) -> Any:
        numbers = [o for o in options if isinstance(o, int) and not isinstance(o, bool)]
        return max(numbers) if len(numbers) == len(options) else options[rng.randrange(len(options))]

    drawn = [space.sample(rng) for _ in range(samples)]
    return drawn + [space.build(widest) for _ in range(samples // 8)]


def build_supernet(space: Space, input_shape: tuple[int, ...], *, seed: int) -> SuperNet:
    """The supernet of ``space`` for inputs of ``input_shape``, its weights seeded by ``seed``."""
    return SuperNet(probe_architectures(space, seed=seed), input_shape, seed=seed)


class PathSampler:
    """Episode batches, each run by one path: before every batch the supernet switches to an
    architecture drawn uniformly from the space (single-path one-shot)."""

    def __init__(self, episodes: Any, supernet: SuperNet, space: Space, rng: random.Random) -> None:
        self.episodes, self.supernet, self.space, self.rng = episodes, supernet, space, rng

    def sample(self, tasks: int) -> Any:
        self.supernet.set_path(self.space.sample(self.rng))
        return self.episodes.sample(tasks)


def _block_seed(run_seed: int, start: int) -> int:
    return (run_seed * 1_000_003 + start * 104_729 + 17) % (2**31 - 1)


def _identity(cfg: RunConfig, space: Space) -> dict[str, Any]:
    """What a checkpoint must have been trained with to be continued (the step count may grow)."""
    d, lc = cfg.data, cfg.learner
    return {
        "space": space.name,
        "algo": lc.algo,
        "ways": d.ways,
        "shots": d.shots,
        "train_ways": lc.train_ways,
        "queries": d.queries,
        "meta_batch": lc.meta_batch,
        "outer_lr": lc.outer_lr,
        "seed": cfg.seed,
    }


def supernet_learner(cfg: RunConfig, space: Space, dataset: Dataset, device: torch.device) -> nn.Module:
    """The search's learner around a freshly initialised supernet of ``space``."""
    supernet = build_supernet(space, dataset.input_shape, seed=cfg.seed)
    ways = cfg.data.episode_ways(dataset.task)
    learner = build_learner(cfg.learner, supernet, feature_dim=supernet.feature_dim, ways=ways, task=dataset.task)
    # The path is a property of the module, so its episodes run one after the other (not on
    # worker threads, whose replicas would keep the path they were copied with); CUDA batches them.
    learner.execution = "vmap" if device.type == "cuda" else "loop"  # type: ignore[assignment]
    return learner.to(device)


def train_supernet(
    cfg: RunConfig,
    space: Space,
    dataset: Dataset,
    device: torch.device,
    steps: int,
    checkpoint: Path | None = None,
    *,
    progress: Callable[[int, int, float], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> tuple[nn.Module, dict[str, Any]]:
    """Meta-train the supernet of ``space`` for ``steps`` outer steps (continuing ``checkpoint``
    when it exists); returns the learner around it and a record: steps, CPU seconds, last loss.

    ``progress(step, steps, loss)`` after every step; ``should_stop()`` True stops at the next
    step with KeyboardInterrupt (the last checkpoint is kept).
    """
    learner = supernet_learner(cfg, space, dataset, device)
    supernet = learner.backbone
    assert isinstance(supernet, SuperNet)
    optimizer = make_optimizer(learner, cfg.learner)
    identity = _identity(cfg, space)
    record: dict[str, Any] = {"steps": 0, "cpu_seconds": 0.0, "loss": math.nan, "paths": supernet.architectures}
    if checkpoint is not None and checkpoint.is_file():
        state = torch.load(checkpoint, map_location=device, weights_only=False)
        if state.get("identity") != identity:
            raise ConfigError(
                f"{checkpoint} holds a supernet trained with {state.get('identity')}, not {identity}; "
                "delete it or use another --study"
            )
        learner.load_state_dict(state["learner"])
        optimizer.load_state_dict(state["optimizer"])
        record = state["record"]
    lc = cfg.learner
    val_seed = cfg.seed + 7_919
    while record["steps"] < steps:
        start = record["steps"]
        seed = _block_seed(cfg.seed, start)
        train, _ = episode_samplers(cfg, dataset, seed, val_seed, device)
        paths = PathSampler(train, supernet, space, random.Random(seed))
        clock = time.process_time()
        end = min(start + SAVE_EVERY, steps)
        with _seeded(device, seed):
            for step in range(start + 1, end + 1):
                if should_stop is not None and should_stop():
                    raise KeyboardInterrupt
                learner.train()
                loss = outer_step(learner, optimizer, paths.sample(lc.meta_batch), grad_clip=lc.grad_clip, step=step)
                if progress is not None:
                    progress(step, steps, loss)
        record = {
            **record,
            "steps": end,
            "cpu_seconds": record["cpu_seconds"] + time.process_time() - clock,
            "loss": loss,
        }
        if checkpoint is not None:
            state = {
                "identity": identity,
                "learner": learner.state_dict(),
                "optimizer": optimizer.state_dict(),
                "record": record,
            }
            atomic_write(checkpoint, lambda f, state=state: torch.save(state, f))  # type: ignore[misc]
    return learner, record


@contextlib.contextmanager
def _seeded(device: torch.device, seed: int) -> Iterator[None]:
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield


def inherit_learner(learner: nn.Module, trained: nn.Module) -> nn.Module:
    """Give a candidate's learner the weights it inherits from the trained supernet learner:
    its backbone's path through the bank, and every other parameter (MAML's head) as the leading
    slice of the trained one of the same name.  In place; returns ``learner``."""
    backbone, supernet = learner.backbone, trained.backbone
    assert isinstance(backbone, network.Backbone) and isinstance(supernet, SuperNet)
    supernet.inherit(backbone)
    own_backbone = {id(p) for p in backbone.parameters()}
    theirs = dict(trained.named_parameters())
    with torch.no_grad():
        for name, param in learner.named_parameters():
            if id(param) in own_backbone:
                continue
            source = theirs[name]
            param.copy_(source[tuple(slice(0, s) for s in param.shape)])
    return learner
