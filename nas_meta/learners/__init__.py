"""Meta-learners (MAML, first-order MAML, Prototypical Networks), one trainer, one meta-test.

>>> import torch
>>> from torch import nn
>>> from nas_meta.config import LearnerConfig
>>> backbone = nn.Sequential(nn.Flatten(), nn.Linear(4, 8), nn.ReLU()); backbone.feature_dim = 8
>>> learner = build_learner(LearnerConfig(algo="fomaml"), backbone, feature_dim=8, ways=2,
...                         task="classification")
>>> type(learner).__name__, learner.first_order
('MAML', True)
>>> LEARNERS.names()
['fomaml', 'maml', 'protonet']
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from ..config import LearnerConfig, RunConfig
from ..errors import ConfigError
from ..model import network
from ..registry import Registry
from .base import Learner
from .maml import MAML
from .protonet import ProtoNet
from .train import (
    Diverged,
    TrainResult,
    confidence_interval,
    evaluate_episodes,
    meta_test,
    meta_train,
    resolve_device,
)

__all__ = [
    "LEARNERS",
    "TASKS",
    "build_learner",
    "learner_for",
    "Learner",
    "MAML",
    "ProtoNet",
    "Diverged",
    "TrainResult",
    "meta_train",
    "meta_test",
    "evaluate_episodes",
    "confidence_interval",
    "resolve_device",
]

TASKS = ("classification", "regression")

# name -> builder(cfg, backbone, feature_dim=, ways=, task=) -> learner module
Builder = Callable[..., nn.Module]
LEARNERS: Registry[Builder] = Registry("learner")


@LEARNERS.register("maml")
def build_maml(cfg: LearnerConfig, backbone: nn.Module, *, feature_dim: int, ways: int, task: str) -> MAML:
    """Second-order MAML (Finn et al. 2017)."""
    return _maml(cfg, backbone, feature_dim=feature_dim, ways=ways, task=task, first_order=False)


@LEARNERS.register("fomaml")
def build_fomaml(cfg: LearnerConfig, backbone: nn.Module, *, feature_dim: int, ways: int, task: str) -> MAML:
    """First-order MAML: the meta-gradient ignores the inner loop's second derivatives."""
    return _maml(cfg, backbone, feature_dim=feature_dim, ways=ways, task=task, first_order=True)


@LEARNERS.register("protonet")
def build_protonet(cfg: LearnerConfig, backbone: nn.Module, *, feature_dim: int, ways: int, task: str) -> ProtoNet:
    """Prototypical Networks (Snell et al. 2017); classification only."""
    if task != "classification":
        valid = sorted(name for name in LEARNERS.names() if name != "protonet")
        raise ConfigError(f"algo 'protonet' is classification-only, the task is {task!r}; choose from {valid}")
    return ProtoNet(backbone, compile=cfg.compile)


def _maml(
    cfg: LearnerConfig, backbone: nn.Module, *, feature_dim: int, ways: int, task: str, first_order: bool
) -> MAML:
    return MAML(
        backbone,
        feature_dim=feature_dim,
        ways=ways,
        task=task,
        inner_steps=cfg.inner_steps,
        inner_lr=cfg.inner_lr,
        test_inner_steps=cfg.test_inner_steps,
        first_order=first_order,
        compile=cfg.compile,
    )


def build_learner(cfg: LearnerConfig, backbone: nn.Module, *, feature_dim: int, ways: int, task: str) -> nn.Module:
    """The learner ``cfg.algo`` around ``backbone`` (an nn.Module mapping x -> (B, feature_dim)).

    ``ways`` is the number of classes of the MAML head (ignored by ProtoNet, which takes the ways
    of each batch); ``task`` is "classification" or "regression".
    """
    if task not in TASKS:
        raise ConfigError(f"unknown task {task!r}; choose from {list(TASKS)}")
    return LEARNERS.get(cfg.algo)(cfg, backbone, feature_dim=feature_dim, ways=ways, task=task)


def learner_for(
    cfg: RunConfig,
    arch: Any,
    input_shape: tuple[int, ...],
    task: str,
    *,
    seed: int | None = None,
    device: torch.device | str | None = None,
) -> tuple[RunConfig, nn.Module, nn.Module]:
    """The learner that meta-trains ``arch``: its backbone compiled for ``input_shape`` (initial
    weights from ``seed``; the global generator when None) under the architecture's own training
    choices (``arch.graph["recipe"]``), one head of ``cfg.data.episode_ways(task)`` outputs where
    the learner has one, on ``device``.  Returns the config with those choices applied, the
    backbone and the learner that holds it.  SpaceError when ``arch`` does not compile."""
    cfg = cfg.with_recipe(arch.graph.get("recipe"))
    backbone = network.build(arch, input_shape, seed=seed)
    ways = cfg.data.episode_ways(task)
    learner = build_learner(cfg.learner, backbone, feature_dim=backbone.feature_dim, ways=ways, task=task)
    if device is not None:
        learner = learner.to(device)
    return cfg, backbone, learner
