"""The search loop as a library: reproducibility, duplicates, failed candidates, the stored record."""

from __future__ import annotations

import io
import math

import optuna
import pytest

from nas_meta import graph
from nas_meta.config import RunConfig, make_config
from nas_meta.learners import Diverged
from nas_meta.record import counted_trials
from nas_meta.search import objective as objective_module
from nas_meta.search.runner import prepare, run_search
from nas_meta.search.study import create_study, load_study, redact_url, stored_config


def smoke(tmp_path, name="s", **search) -> RunConfig:
    return make_config(
        "smoke",
        data={"cache_dir": str(tmp_path / "cache")},
        search={"space": "chain", "study": name, **search},
        results_dir=str(tmp_path / "results"),
    )


def test_same_seed_same_trials_different_seed_different_architectures(tmp_path):
    runs = []
    for name, seed in (("a", 3), ("b", 3), ("c", 4)):
        cfg = smoke(tmp_path, name, trials=3).replace(seed=seed)
        outcome = run_search(cfg, stream=io.StringIO())
        runs.append([(t.params, t.user_attrs["fingerprint"], t.values[0]) for t in outcome.study.trials])
    assert runs[0] == runs[1]  # params, architectures and scores (CPU is deterministic)
    assert [r[1] for r in runs[0]] != [r[1] for r in runs[2]]


def test_study_records_config_and_every_trial_attribute(tmp_path):
    cfg = smoke(tmp_path, trials=2)
    outcome = run_search(cfg, stream=io.StringIO())
    study = load_study("s", outcome.storage)
    # The config as given, with the precision its candidates trained in (conftest: an fp32 host).
    assert stored_config(study) == cfg.replace(search={"precision": "fp32"})
    for t in study.trials:
        assert set(t.user_attrs) >= {"fingerprint", "arch", "params", "flops", "seconds", "curve", "weights_step"}
        arch = graph.from_json(t.user_attrs["arch"])
        assert graph.fingerprint(arch) == t.user_attrs["fingerprint"]
        curve = t.user_attrs["curve"]
        assert [step for step, _ in curve][-1] == cfg.learner.iterations
        # The score is that of the checkpoint whose weights training kept (the last by default).
        assert t.user_attrs["weights_step"] == cfg.learner.iterations
        assert t.values[0] == pytest.approx(dict(curve)[t.user_attrs["weights_step"]])


def test_with_best_checkpoint_the_score_is_the_curves_best_point(tmp_path):
    cfg = smoke(tmp_path, trials=2).replace(learner={"checkpoint": "best", "iterations": 6, "eval_every": 1})
    outcome = run_search(cfg, stream=io.StringIO())
    for t in load_study("s", outcome.storage).trials:
        curve = t.user_attrs["curve"]
        best = max(curve, key=lambda point: point[1])  # the first of equal maxima
        assert t.values[0] == pytest.approx(best[1]) and t.user_attrs["weights_step"] == best[0]
    assert list(outcome.table["number"]) == [0, 1]


def test_a_known_architecture_is_not_trained_twice(tmp_path, monkeypatch):
    cfg = smoke(tmp_path, trials=1)
    first = run_search(cfg, stream=io.StringIO())
    params = first.study.trials[0].params
    calls = []
    real = objective_module.meta_train

    def counting(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(objective_module, "meta_train", counting)
    first.study.enqueue_trial(params)
    second = run_search(smoke(tmp_path, trials=2), stream=io.StringIO())
    dup = second.study.trials[1]
    # The duplicate is not trained and does not use up the budget: one new candidate is trained.
    assert len(calls) == 1 and len(counted_trials(second.study)) == 2
    assert dup.user_attrs["duplicate_of"] == 0
    assert dup.values == first.study.trials[0].values
    assert dup.user_attrs["fingerprint"] == first.study.trials[0].user_attrs["fingerprint"]


def test_a_diverging_candidate_fails_with_its_reason_and_the_search_goes_on(tmp_path, monkeypatch):
    real = objective_module.meta_train
    state = {"n": 0}

    def diverge_first(*args, **kwargs):
        state["n"] += 1
        if state["n"] == 1:
            raise Diverged("loss is nan at step 4")
        return real(*args, **kwargs)

    monkeypatch.setattr(objective_module, "meta_train", diverge_first)
    outcome = run_search(smoke(tmp_path, trials=3), stream=io.StringIO())
    states = [t.state for t in outcome.study.trials]
    assert states == [optuna.trial.TrialState.FAIL] + [optuna.trial.TrialState.COMPLETE] * 2
    assert outcome.study.trials[0].user_attrs["failure"] == "diverged: loss is nan at step 4"
    assert math.isnan(outcome.table["val_acc"].iloc[0]) or outcome.table["val_acc"].iloc[0] is None


def test_pruner_and_nsga2_together_are_refused(tmp_path):
    from nas_meta.errors import ConfigError

    cfg = smoke(tmp_path, sampler="nsga2", pruner="median")
    with pytest.raises(ConfigError, match="Optuna cannot prune multi-objective studies"):
        create_study(cfg, "s", "classification")


def test_prepare_writes_nothing(tmp_path):
    prepare(smoke(tmp_path))
    assert not (tmp_path / "results").exists()


def test_storage_password_is_redacted():
    assert redact_url("postgresql://bob:s3cret@db:5432/nas") == "postgresql://bob:***@db:5432/nas"
    assert redact_url("sqlite:///x.db") == "sqlite:///x.db"


def _sinusoid(tmp_path, **search) -> RunConfig:
    return make_config(
        "smoke",
        data={"dataset": "sinusoid", "cache_dir": str(tmp_path / "cache")},
        search={"space": "mlp", "study": "m", **search},
        results_dir=str(tmp_path / "results"),
    )


def test_nsga2_scores_accuracy_and_size_and_keeps_a_pareto_front(tmp_path):
    outcome = run_search(_sinusoid(tmp_path, sampler="nsga2", trials=4), stream=io.StringIO())
    study = outcome.study
    assert [d.name for d in study.directions] == ["MINIMIZE", "MINIMIZE"]  # MSE down, parameters down
    for t in study.trials:
        assert t.values[1] == t.user_attrs["params"]
    front = {t.number for t in study.best_trials}
    for t in study.trials:
        dominated = any(
            o.values[0] <= t.values[0] and o.values[1] <= t.values[1] and o.values != t.values for o in study.trials
        )
        assert (t.number in front) == (not dominated)


def test_pruned_trials_keep_their_partial_curve(tmp_path):
    from nas_meta.data import load_dataset
    from nas_meta.learners import resolve_device
    from nas_meta.search.objective import Objective
    from nas_meta.spaces import load_space

    cfg = smoke(tmp_path).replace(learner={"iterations": 6, "eval_every": 2})
    objective = Objective(cfg, load_space("chain"), load_dataset(cfg.data), resolve_device("cpu"))
    # Accuracy is never above 2.0: this pruner stops every trial at its first checkpoint.
    study = optuna.create_study(direction="maximize", pruner=optuna.pruners.ThresholdPruner(lower=2.0))
    study.optimize(objective, n_trials=2)
    for t in study.trials:
        assert t.state == optuna.trial.TrialState.PRUNED
        assert t.user_attrs["pruned_at"] == 2
        assert [step for step, _ in t.user_attrs["curve"]] == [2]
        assert t.intermediate_values == {2: t.user_attrs["curve"][0][1]}
