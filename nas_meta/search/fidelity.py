"""Fidelities: cheap estimators of the score a long meta-training gives, and how well they rank.

A *fidelity* is any way to score a candidate that costs less than the reference (a long
meta-training scored on many validation episodes): a training-free proxy at initialisation
(proxies.py) or a reduced meta-training budget (fewer steps, fewer validation episodes).
``score_architecture`` trains one backbone once and reads every reduced budget off the way: with
a constant learning rate and the last step's weights, the first k steps of a long run *are* a
k-step run (same seed, same episodes, same optimizer state), so the budgets cost nothing extra
but their own validation.  ``bench/fidelity.py`` runs it over many architectures; the rank
statistics of ``nas_meta.stats`` turn its records into the table of ``results/README.md``.
"""

from __future__ import annotations

import dataclasses
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import networkx as nx
import torch

from .. import graph
from ..config import RunConfig
from ..data import Dataset
from ..errors import ConfigError
from ..learners import confidence_interval, evaluate_episodes, learner_for, meta_train
from ..model import network
from ..spaces import Space
from .proxies import ProxyInputs, compute_proxies

__all__ = [
    "Budget",
    "draw_architectures",
    "score_architecture",
]


@dataclass(frozen=True)
class Budget:
    """A reduced (or the reference) meta-training: ``steps`` outer steps, then the mean validation
    score over ``val_episodes`` episodes."""

    steps: int
    val_episodes: int

    @classmethod
    def parse(cls, text: str) -> Budget:
        """``"80:40"`` -> Budget(80, 40)."""
        try:
            steps, episodes = (int(v) for v in text.split(":"))
        except ValueError:
            raise ConfigError(f"bad budget {text!r}: write STEPS:VAL_EPISODES, e.g. 80:40") from None
        if steps < 1 or episodes < 1:
            raise ConfigError(f"bad budget {text!r}: steps and episodes must be positive")
        return cls(steps, episodes)

    def __str__(self) -> str:
        return f"{self.steps}:{self.val_episodes}"


def draw_architectures(space: Space, n: int, seed: int, *, include: Sequence[nx.DiGraph] = ()) -> list[nx.DiGraph]:
    """``n`` architectures with distinct fingerprints: ``include`` first, then uniform draws of
    ``space`` from ``random.Random(seed)``.  The same arguments give the same list, in order."""
    rng = random.Random(seed)
    out: list[nx.DiGraph] = []
    seen: set[str] = set()
    for arch in include:
        key = graph.fingerprint(arch)
        if key not in seen:
            seen.add(key)
            out.append(arch)
    attempts = 0
    while len(out) < n:
        attempts += 1
        if attempts > 100 * n:
            raise ConfigError(f"space {space.name!r} has fewer than {n} distinct architectures to draw")
        arch = space.sample(rng)
        key = graph.fingerprint(arch)
        if key not in seen:
            seen.add(key)
            out.append(arch)
    return out[:n]


def score_architecture(
    cfg: RunConfig,
    arch: nx.DiGraph,
    dataset: Dataset,
    *,
    budgets: Sequence[Budget],
    reference: Budget,
    proxies: Sequence[str],
    seed: int,
    val_seed: int,
    reference_seed: int,
    device: torch.device | str = "cpu",
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, Any]:
    """Every fidelity of one architecture, with its CPU seconds.

    The backbone is built from ``seed`` and trained for ``reference.steps`` steps with
    ``cfg``'s learner and recipe (which must keep a constant rate and the last step's weights, so
    that each budget's score is exactly what a run of that many steps gives).  After step
    ``b.steps`` of each budget ``b`` the learner is scored on ``b.val_episodes`` validation
    episodes drawn from ``val_seed`` (the same episodes for every architecture); the reference is
    scored on episodes from ``reference_seed``, a different draw, so its noise is independent of
    the budgets'.  A budget's CPU seconds are the training up to its step plus its own
    validation; the proxies are computed first, on the untrained backbone, one batch of training
    episodes (``cfg.learner.meta_batch`` of them, no jitter) and validation episodes from ``val_seed``.
    A candidate drawn with training choices (``arch.graph["recipe"]``) trains with them.
    """
    cfg = cfg.with_recipe(arch.graph.get("recipe"))
    lc = cfg.learner
    if lc.lr_schedule != "constant" or lc.checkpoint != "last":
        raise ConfigError("fidelity budgets are prefixes of one run: use lr_schedule 'constant' and checkpoint 'last'")
    steps = sorted({b.steps for b in budgets} | {reference.steps})
    if steps[-1] != reference.steps:
        raise ConfigError(f"every budget must be at most the reference's {reference.steps} steps, got {steps[-1]}")
    device = torch.device(device)
    d = cfg.data
    ways = d.ways
    cfg, backbone, learner = learner_for(cfg, arch, dataset.input_shape, dataset.task, seed=seed, device=device)
    record: dict[str, Any] = {
        "fingerprint": graph.fingerprint(arch),
        "arch": graph.to_json(arch),
        "params": network.count_params(backbone),
    }

    def val_sampler(val: int) -> Any:
        return dataset.sampler("val", ways=ways, shots=d.shots, queries=d.queries, seed=val, device=device)

    if proxies:
        batch = dataset.sampler(
            "train", ways=lc.train_ways or ways, shots=d.shots, queries=d.queries, seed=seed, device=device
        ).sample(lc.meta_batch)
        inputs = ProxyInputs(
            backbone, learner, batch, tuple(dataset.input_shape), val_sampler(val_seed), val_episodes=lc.val_episodes
        )
        record["proxies"] = {
            name: {"value": v, "cpu_s": round(s, 3)} for name, (v, s) in compute_proxies(inputs, proxies).items()
        }

    train = dataset.sampler(
        "train",
        ways=lc.train_ways or ways,
        shots=d.shots,
        queries=d.queries,
        seed=seed,
        device=device,
        augment=d.augment,
    )
    by_step: dict[int, list[Budget]] = {}
    for b in budgets:
        by_step.setdefault(b.steps, []).append(b)
    results: list[dict[str, Any]] = []
    ref: dict[str, Any] = {}
    eval_cpu = 0.0  # validation CPU so far, not charged to later budgets
    start = time.process_time()

    def checkpoint(step: int, total: int, _value: float | None) -> None:
        nonlocal eval_cpu
        if progress is not None:
            progress(step, total)
        todo = [(b, val_seed) for b in by_step.get(step, [])]
        if step == reference.steps:
            todo.append((reference, reference_seed))
        for b, val in todo:
            train_cpu = time.process_time() - start - eval_cpu
            t0 = time.process_time()
            score, ci95 = confidence_interval(
                evaluate_episodes(learner, val_sampler(val), b.val_episodes, tasks_per_batch=lc.meta_batch)
            )
            spent = time.process_time() - t0
            eval_cpu += spent
            entry = {
                "steps": b.steps,
                "val_episodes": b.val_episodes,
                "score": score,
                "ci95": ci95,
                "cpu_s": round(train_cpu + spent, 2),
            }
            if b is reference and val == reference_seed:
                ref.update(entry)
            else:
                results.append(entry)

    meta_train(
        learner,
        train,
        None,
        dataclasses.replace(lc, iterations=reference.steps),
        seed=seed,
        device=device,
        progress=checkpoint,
    )
    record["budgets"] = results
    record["reference"] = ref
    return record
