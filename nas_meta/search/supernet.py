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
from ..learners.train import forked_rng, make_optimizer, outer_step
from ..model import network
from ..model.darts import DartsNetwork
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
    "derived_params",
]

SUPERNET_FILE = "supernet.pt"  # beside the study (for DARTS too: the relaxed network)
SAVE_EVERY = 50  # steps between checkpoints (and between the per-block seeds)
PROBE_SAMPLES = 512  # architectures sampled to size the bank of a space too large to list
EXHAUSTIVE = 4096  # spaces up to this size are listed in full: every architecture is a path
PATH_SEED_OFFSET = 104_729
DARTS_ARCH_LR = 3e-4


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
        "strategy": cfg.search.strategy,
    }


def supernet_learner(cfg: RunConfig, space: Space, dataset: Dataset, device: torch.device) -> nn.Module:
    """The search's learner around a freshly initialised shared network of ``space``: the
    weight-sharing supernet, or for ``--strategy darts`` the continuous relaxation of the cell."""
    if cfg.search.strategy == "darts":
        backbone: SuperNet | DartsNetwork = DartsNetwork.from_space(space, dataset.input_shape, seed=cfg.seed)
        execution = "auto"
    else:
        backbone = build_supernet(space, dataset.input_shape, seed=cfg.seed)
        # The path is a property of the module, so its episodes run one after the other (not on
        # worker threads, whose replicas would keep the path they were copied with); CUDA batches them.
        execution = "vmap" if device.type == "cuda" else "loop"
    ways = cfg.data.episode_ways(dataset.task)
    learner = build_learner(cfg.learner, backbone, feature_dim=backbone.feature_dim, ways=ways, task=dataset.task)
    learner.execution = execution  # type: ignore[assignment]
    return learner.to(device)


def _optimizers(learner: nn.Module, cfg: RunConfig) -> list[torch.optim.Optimizer]:
    """One optimizer for the supernet; for DARTS the network weights' and the architecture
    weights' (Adam, lr 3e-4, betas (0.5, 0.999), weight decay 1e-3: Liu et al.'s settings)."""
    backbone = learner.backbone
    if not isinstance(backbone, DartsNetwork):
        return [make_optimizer(learner, cfg.learner)]
    alphas = {id(p) for p in backbone.arch_parameters()}
    weights = [p for p in learner.parameters() if id(p) not in alphas]
    return [
        make_optimizer(learner, cfg.learner, params=weights),
        torch.optim.Adam(backbone.arch_parameters(), lr=DARTS_ARCH_LR, betas=(0.5, 0.999), weight_decay=1e-3),
    ]


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
    """Meta-train the shared network of ``space`` (``cfg.search.strategy``: the supernet, one
    path per meta-batch; or DARTS, network weights on a training batch then architecture weights
    on a validation batch, first order, per step) for ``steps`` outer steps, continuing
    ``checkpoint`` when it exists; returns the learner around it and a record: steps, CPU
    seconds, last loss.

    ``progress(step, steps, loss)`` after every step; ``should_stop()`` True stops at the next
    step with KeyboardInterrupt (the last checkpoint is kept).
    """
    learner = supernet_learner(cfg, space, dataset, device)
    shared = learner.backbone
    optimizers = _optimizers(learner, cfg)
    identity = _identity(cfg, space)
    paths = shared.architectures if isinstance(shared, SuperNet) else 0
    record: dict[str, Any] = {"steps": 0, "cpu_seconds": 0.0, "loss": math.nan, "paths": paths}
    if checkpoint is not None and checkpoint.is_file():
        try:
            state = torch.load(checkpoint, map_location=device, weights_only=True)
        except Exception as exc:  # truncated, damaged, or not ours
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ConfigError(f"cannot read {checkpoint}: {first}; delete it to train the network again") from None
        if not isinstance(state, dict) or state.get("identity") != identity:
            raise ConfigError(
                f"{checkpoint} holds a network trained with {dict(state).get('identity')}, not {identity}; "
                "delete it or use another --study"
            )
        learner.load_state_dict(state["learner"])
        for optimizer, saved in zip(optimizers, state["optimizers"], strict=True):
            optimizer.load_state_dict(saved)
        record = state["record"]
    lc = cfg.learner
    while record["steps"] < steps:
        start = record["steps"]
        seed = _block_seed(cfg.seed, start)
        train, val = episode_samplers(cfg, dataset, seed, seed + 1, device)
        if isinstance(shared, SuperNet):
            train = PathSampler(train, shared, space, random.Random(seed))
        clock = time.process_time()
        end = min(start + SAVE_EVERY, steps)
        with forked_rng(device, seed):
            for step in range(start + 1, end + 1):
                if should_stop is not None and should_stop():
                    raise KeyboardInterrupt
                learner.train()
                learner.zero_grad(set_to_none=True)
                loss = outer_step(
                    learner, optimizers[0], train.sample(lc.meta_batch), grad_clip=lc.grad_clip, step=step
                )
                if len(optimizers) > 1:  # DARTS: the architecture step, on validation episodes
                    learner.zero_grad(set_to_none=True)
                    outer_step(learner, optimizers[1], val.sample(lc.meta_batch), grad_clip=lc.grad_clip, step=step)
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
                "optimizers": [optimizer.state_dict() for optimizer in optimizers],
                "record": record,
            }
            atomic_write(checkpoint, lambda f, state=state: torch.save(state, f))  # type: ignore[misc]
    return learner, record


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


def derived_params(learner: nn.Module, space: Space) -> dict[str, Any]:
    """The choices of the architecture a trained DARTS network discretises to (only the names
    that are choices of ``space``: a node with one possible input pair asks none)."""
    backbone = learner.backbone
    assert isinstance(backbone, DartsNetwork)
    choices = space.choices()
    return {name: value for name, value in backbone.genotype().items() if name in choices}
