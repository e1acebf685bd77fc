"""The contract every registered learner keeps (parametrised over the registry, as timm tests its
models): an episode's loss does not depend on the other episodes of its meta-batch, the same
seed trains to the same weights, and scores have the protocol's shapes and ranges."""

from __future__ import annotations

import math

import pytest
import torch

from nas_meta.config import DataConfig, LearnerConfig
from nas_meta.data import load_dataset
from nas_meta.data.sampler import Episodes
from nas_meta.learners import LEARNERS, build_learner, meta_train
from nas_meta.model import network
from nas_meta.spaces import load_known_arch

WAYS = 3


@pytest.fixture(scope="module")
def glyphs():
    return load_dataset(DataConfig(glyph_classes=30, glyph_samples=6))


def make(name: str, ds, seed: int = 0):
    backbone = network.build(load_known_arch("conv4")[1], ds.input_shape, seed=seed).double()
    cfg = LearnerConfig(algo=name, inner_steps=1, test_inner_steps=1, iterations=2, meta_batch=3, eval_every=2)
    return build_learner(cfg, backbone, feature_dim=backbone.feature_dim, ways=WAYS, task="classification").double()


def episode(batch: Episodes, t: int) -> Episodes:
    return Episodes(
        batch.support_x[t : t + 1],
        batch.support_y[t : t + 1],
        batch.query_x[t : t + 1],
        batch.query_y[t : t + 1],
        batch.ways,
    )


def as_double(batch: Episodes) -> Episodes:
    return Episodes(batch.support_x.double(), batch.support_y, batch.query_x.double(), batch.query_y, batch.ways)


@pytest.mark.parametrize("name", LEARNERS.names())
def test_the_meta_batch_loss_is_the_mean_of_its_episodes(name, glyphs):
    learner = make(name, glyphs)
    batch = as_double(glyphs.sampler("train", ways=WAYS, shots=1, queries=2, seed=0).sample(3))
    loss, metric = learner.loss(batch)
    alone = [learner.loss(episode(batch, t)) for t in range(3)]
    assert loss.item() == pytest.approx(sum(x[0].item() for x in alone) / 3, rel=1e-10)
    assert metric.item() == pytest.approx(sum(x[1].item() for x in alone) / 3, rel=1e-6)  # accuracies are float32
    scores = learner.evaluate(batch)
    assert scores.shape == (3,) and bool(((scores >= 0) & (scores <= 1)).all())
    assert math.isfinite(loss.item()) and loss.requires_grad


@pytest.mark.parametrize("name", LEARNERS.names())
def test_same_seed_same_weights_after_training(name, glyphs):
    def trained(seed: int) -> list[torch.Tensor]:
        learner = make(name, glyphs, seed=seed)
        cfg = LearnerConfig(algo=name, iterations=2, meta_batch=2, eval_every=2, val_episodes=2)
        train = glyphs.sampler("train", ways=WAYS, shots=1, queries=2, seed=seed)
        learner.float()
        meta_train(learner, train, None, cfg, seed=seed)
        return [p.detach().clone() for p in learner.parameters()]

    a, b, c = trained(0), trained(0), trained(1)
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
    assert not all(torch.equal(x, y) for x, y in zip(a, c, strict=True))
