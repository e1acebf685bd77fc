"""Fidelities: rank statistics by hand, the architecture draw, and budgets read off one run."""

from __future__ import annotations

import dataclasses
import math
import random

import pytest

from nas_meta import graph
from nas_meta.config import make_config
from nas_meta.data import load_dataset
from nas_meta.errors import ConfigError
from nas_meta.learners import build_learner, evaluate_episodes, meta_train
from nas_meta.model import network
from nas_meta.search.fidelity import Budget, draw_architectures, score_architecture
from nas_meta.spaces import load_known_arch, load_space
from nas_meta.stats import bootstrap_ci, kendall_tau, spearman_rho, top_recall


def test_kendall_tau_b_with_a_tie_by_hand():
    # Pairs of (x, y) = (1,1) (2,3) (2,2) (3,4): 5 concordant, 0 discordant, one tie in x.
    # tau-b = 5 / sqrt(5 * 6).
    assert kendall_tau([1, 2, 2, 3], [1, 3, 2, 4]) == pytest.approx(5 / math.sqrt(30))
    assert kendall_tau([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
    assert math.isnan(kendall_tau([1, 1, 1], [1, 2, 3]))  # a constant estimator ranks nothing
    # Non-finite values (a diverged candidate) drop their pair.
    assert kendall_tau([1, float("nan"), 2, 3], [1, 5, 2, 3]) == pytest.approx(1.0)


def test_spearman_rho_with_ties_by_hand():
    # Ranks of x: 1, 2.5, 2.5, 4; of y: 1, 3, 2, 4.  Pearson of the ranks, by hand:
    # centred x ranks (-1.5, 0, 0, 1.5), y ranks (-1.5, 0.5, -0.5, 1.5): sum xy = 4.5,
    # sum x^2 = 4.5, sum y^2 = 5 -> rho = 4.5 / sqrt(22.5).
    assert spearman_rho([1, 2, 2, 3], [1, 3, 2, 4]) == pytest.approx(4.5 / math.sqrt(22.5))
    assert spearman_rho([5, 6, 7], [1, 2, 3]) == pytest.approx(1.0)


def test_top_recall_by_hand():
    reference = list(range(20))  # the top 10% are indices 19 and 18
    estimate = [0.0] * 20
    estimate[19], estimate[3] = 10, 9  # finds one of the two
    assert top_recall(estimate, reference) == 0.5
    assert top_recall(reference, reference) == 1.0
    assert top_recall([3, 2, 1], [1, 2, 3], fraction=0.1) == 0.0  # at least one architecture


def test_bootstrap_ci_brackets_the_statistic():
    x = list(range(30))
    assert bootstrap_ci(kendall_tau, x, x, resamples=200) == (1.0, 1.0)
    noisy = [v + (7 if v % 3 == 0 else -5) for v in x]
    lo, hi = bootstrap_ci(kendall_tau, x, noisy, resamples=500)
    assert lo < kendall_tau(x, noisy) < hi < 1.0


def test_draw_architectures_is_seeded_distinct_and_keeps_included_first():
    space = load_space("chain")
    conv4 = load_known_arch("conv4")[1]
    archs = draw_architectures(space, 12, seed=3, include=[conv4])
    keys = [graph.fingerprint(a) for a in archs]
    assert len(set(keys)) == 12 and keys[0] == graph.fingerprint(conv4)
    assert keys == [graph.fingerprint(a) for a in draw_architectures(space, 12, seed=3, include=[conv4])]
    assert keys != [graph.fingerprint(a) for a in draw_architectures(space, 12, seed=4, include=[conv4])]
    with pytest.raises(ConfigError, match="fewer than 2 distinct"):
        draw_architectures(load_space("conv4"), 2, seed=0)


def test_budget_parse():
    assert Budget.parse("80:40") == Budget(80, 40) and str(Budget(80, 40)) == "80:40"
    for bad in ("80", "a:b", "0:40"):
        with pytest.raises(ConfigError, match="bad budget"):
            Budget.parse(bad)


@pytest.fixture(scope="module")
def smoke():
    cfg = make_config("smoke", learner={"algo": "protonet"}, data={"ways": 3})
    return cfg, load_dataset(cfg.data)


def test_each_budget_scores_what_a_run_of_that_length_gives(smoke):
    cfg, dataset = smoke
    arch = load_space("chain").sample(random.Random(1))
    record = score_architecture(
        cfg,
        arch,
        dataset,
        budgets=[Budget(2, 4), Budget(4, 6)],
        reference=Budget(5, 8),
        proxies=["params", "synflow"],
        seed=11,
        val_seed=21,
        reference_seed=31,
    )
    assert [(b["steps"], b["val_episodes"]) for b in record["budgets"]] == [(2, 4), (4, 6)]
    assert (record["reference"]["steps"], record["reference"]["val_episodes"]) == (5, 8)
    assert record["fingerprint"] == graph.fingerprint(arch)
    assert record["proxies"]["params"]["value"] == record["params"]
    costs = [b["cpu_s"] for b in record["budgets"]] + [record["reference"]["cpu_s"]]
    assert all(c >= 0 for c in costs)

    d = cfg.data
    for budget, val_seed, got in [
        (Budget(2, 4), 21, record["budgets"][0]),
        (Budget(4, 6), 21, record["budgets"][1]),
        (Budget(5, 8), 31, record["reference"]),
    ]:
        # The same training, stopped at the budget's step, scored on that budget's episodes.
        backbone = network.build(arch, dataset.input_shape, seed=11)
        learner = build_learner(cfg.learner, backbone, feature_dim=backbone.feature_dim, ways=3, task="classification")
        train = dataset.sampler("train", ways=3, shots=d.shots, queries=d.queries, seed=11, device="cpu")
        meta_train(learner, train, None, dataclasses.replace(cfg.learner, iterations=budget.steps), seed=11)
        val = dataset.sampler("val", ways=3, shots=d.shots, queries=d.queries, seed=val_seed, device="cpu")
        per_episode = evaluate_episodes(learner, val, budget.val_episodes, tasks_per_batch=cfg.learner.meta_batch)
        assert got["score"] == pytest.approx(float(per_episode.double().mean()), abs=1e-12)
        # the episodes' 95% CI half-width: 1.96 x population std / sqrt(episodes)
        std = float(per_episode.double().std(correction=0))
        assert got["ci95"] == pytest.approx(1.96 * std / budget.val_episodes**0.5, abs=1e-12)


def test_budgets_need_a_constant_rate_and_the_last_weights(smoke):
    cfg, dataset = smoke
    arch = load_known_arch("conv4")[1]
    for change in ({"lr_schedule": "cosine"}, {"checkpoint": "best"}):
        with pytest.raises(ConfigError, match="prefixes of one run"):
            score_architecture(
                cfg.replace(learner=change),
                arch,
                dataset,
                budgets=[],
                reference=Budget(2, 2),
                proxies=[],
                seed=0,
                val_seed=1,
                reference_seed=2,
            )
    with pytest.raises(ConfigError, match="at most the reference"):
        score_architecture(
            cfg,
            arch,
            dataset,
            budgets=[Budget(9, 2)],
            reference=Budget(2, 2),
            proxies=[],
            seed=0,
            val_seed=1,
            reference_seed=2,
        )
