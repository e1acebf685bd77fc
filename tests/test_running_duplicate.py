"""Two processes on one study do not both train a candidate: one that another process is
training right now (a RUNNING trial with its fingerprint) is pruned as a duplicate, untrained and
not counted."""

from __future__ import annotations

import random
import warnings
from types import SimpleNamespace

import optuna
import pytest
from optuna.trial import TrialState

from nas_meta import graph
from nas_meta.config import make_config
from nas_meta.data import load_dataset
from nas_meta.learners import resolve_device
from nas_meta.record import Attr, counted_trials
from nas_meta.search import objective as objective_module
from nas_meta.search.objective import Objective
from nas_meta.spaces import load_space


@pytest.fixture
def setup(tmp_path, monkeypatch):
    cfg = make_config(
        "smoke",
        data={"dataset": "sinusoid", "cache_dir": str(tmp_path / "cache")},
        search={"space": "mlp"},
        results_dir=str(tmp_path / "results"),
    )
    space = load_space("mlp")
    objective = Objective(cfg, space, load_dataset(cfg.data), resolve_device("cpu"))
    trained: list[int] = []

    def fake_train(*args, **kwargs):  # the score of a training, without its seconds
        trained.append(1)
        return SimpleNamespace(val_metric=0.25, weights_step=cfg.learner.iterations)

    monkeypatch.setattr(objective_module, "meta_train", fake_train)
    # Another process's study object on the same SQLite file: what it does, this one sees.
    study = optuna.create_study(storage=f"sqlite:///{tmp_path / 's.db'}", study_name="s")
    arch = space.sample(random.Random(0))
    return study, objective, arch, trained


def _other_process_starts(study: optuna.Study, fingerprint: str, **attrs: object) -> optuna.Trial:
    with warnings.catch_warnings():  # RDB storages warn that heartbeats need optimize()
        warnings.simplefilter("ignore", UserWarning)
        trial = study.ask()
    for key, value in {Attr.FINGERPRINT: fingerprint, **attrs}.items():
        trial.set_user_attr(key, value)
    return trial


def test_a_candidate_another_process_is_training_is_pruned_untrained_and_not_counted(setup):
    study, objective, arch, trained = setup
    running = _other_process_starts(study, graph.fingerprint(arch))
    study.enqueue_trial(arch.graph["params"])
    study.optimize(objective, n_trials=1)
    dup = study.trials[-1]
    assert trained == []
    assert dup.state == TrialState.PRUNED
    assert dup.user_attrs[Attr.DUPLICATE_OF] == running.number and dup.user_attrs[Attr.DUPLICATE_OF_RUNNING]
    assert counted_trials(study) == []

    # Once the other process has its score, the candidate is a duplicate whose score is copied.
    study.tell(running, 0.75)
    study.enqueue_trial(arch.graph["params"])
    study.optimize(objective, n_trials=1)
    copied = study.trials[-1]
    assert trained == [] and copied.state == TrialState.COMPLETE and copied.value == 0.75
    assert [t.number for t in counted_trials(study)] == [running.number]


def test_a_screening_candidate_is_not_being_trained(setup):
    study, objective, arch, trained = setup
    _other_process_starts(study, graph.fingerprint(arch), **{Attr.SCREENING: {"proxy": "synflow"}})
    study.enqueue_trial(arch.graph["params"])
    study.optimize(objective, n_trials=1)
    assert trained == [1] and study.trials[-1].state == TrialState.COMPLETE


def test_the_running_duplicate_mark_alone_keeps_a_pruned_trial_out_of_the_budget():
    def prune(trial: optuna.Trial) -> float:
        raise optuna.TrialPruned()

    study = optuna.create_study()
    study.enqueue_trial({}, user_attrs={Attr.DUPLICATE_OF_RUNNING: True})
    study.enqueue_trial({})
    study.optimize(prune, n_trials=2)
    assert [t.number for t in counted_trials(study)] == [1]  # an ordinary pruned trial counts
