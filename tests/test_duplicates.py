"""Duplicates do not use up the budget: ``--trials`` counts distinct trained candidates."""

from __future__ import annotations

import io

import optuna
from optuna.trial import TrialState

from nas_meta.config import make_config
from nas_meta.record import Attr, counted_trials
from nas_meta.search import objective as objective_module
from nas_meta.search.runner import run_search
from nas_meta.search.samplers import SAMPLERS
from nas_meta.search.workers import DUPLICATE_STREAK


class RepeatingSampler(optuna.samplers.BaseSampler):
    """Proposes the same architecture every time: the first option of every choice."""

    def infer_relative_search_space(self, study, trial):
        return {}

    def sample_relative(self, study, trial, search_space):
        return {}

    def sample_independent(self, study, trial, name, distribution):
        return distribution.choices[0]


def test_a_sampler_that_repeats_itself_still_trains_distinct_candidates(tmp_path, monkeypatch):
    trained = []
    real = objective_module.meta_train

    def counting(*args, **kwargs):
        trained.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(objective_module, "meta_train", counting)
    SAMPLERS.add("repeat", lambda seed: RepeatingSampler())
    try:
        cfg = make_config(
            "smoke",
            data={"cache_dir": str(tmp_path / "cache")},
            search={"space": "chain", "sampler": "repeat", "trials": 3},
            results_dir=str(tmp_path / "results"),
        )
        study = run_search(cfg, stream=io.StringIO()).study
    finally:
        SAMPLERS.remove("repeat")
    counted = counted_trials(study)
    assert len(counted) == 3 and len(trained) == 3
    assert len({t.user_attrs[Attr.FINGERPRINT] for t in counted}) == 3
    duplicates = [t for t in study.trials if Attr.DUPLICATE_OF in t.user_attrs]
    unstuck = [t for t in study.trials if Attr.UNSTUCK in t.user_attrs]
    # Each random draw comes after DUPLICATE_STREAK duplicates in a row; the duplicates stay in the
    # study (the sampler learns from them) and are not counted.
    assert len(unstuck) == 2 and all(t.user_attrs[Attr.UNSTUCK] == DUPLICATE_STREAK for t in unstuck)
    assert len(duplicates) == 2 * DUPLICATE_STREAK
    assert all(t.state == TrialState.COMPLETE for t in study.trials)


def test_a_space_smaller_than_the_budget_stops_with_one_line(tmp_path):
    cfg = make_config(
        "smoke",
        data={"cache_dir": str(tmp_path / "cache")},
        search={"space": "conv4", "sampler": "random", "trials": 3},
        results_dir=str(tmp_path / "results"),
    )
    out = io.StringIO()
    study = run_search(cfg, stream=out).study
    assert len(counted_trials(study)) == 1
    # Told as soon as a run of duplicates shows it: every choice of the space was tried.
    assert len(study.trials) == 1 + DUPLICATE_STREAK
    assert "space 'conv4' holds 1 architecture and the study has trained 1 distinct ones" in out.getvalue()
    assert "the search stops here" in out.getvalue()


class FourPoints:
    """A space of four points, x in a..d."""

    name = "four"
    options = ["a", "b", "c", "d"]

    def candidates(self, algo):
        return len(self.options)

    def draw(self, choose, algo):
        import networkx as nx

        return nx.DiGraph(params={"x": choose("x", self.options)})


def test_a_pile_of_duplicates_from_many_workers_does_not_end_the_search_while_points_are_left():
    from nas_meta.search.workers import SpaceExhausted, unstick

    study = optuna.create_study()
    dist = {"x": optuna.distributions.CategoricalDistribution(FourPoints.options)}
    for x in ("a", "b"):
        study.add_trial(optuna.create_trial(value=0.5, params={"x": x}, distributions=dist))
    # Seven workers' samplers proposed "a" again and again while one new candidate trained.
    for _ in range(40):
        study.add_trial(
            optuna.create_trial(value=0.5, params={"x": "a"}, distributions=dist, user_attrs={Attr.DUPLICATE_OF: 0})
        )
    study.enqueue_trial({"x": "c"})
    running = study.ask()
    assert running.suggest_categorical("x", FourPoints.options) == "c"

    assert unstick(study, FourPoints(), seed=0, algo="protonet") is True
    queued = study.get_trials(states=(TrialState.WAITING,))
    assert [t.system_attrs["fixed_params"] for t in queued] == [{"x": "d"}]  # the one point not held
    try:
        unstick(study, FourPoints(), seed=0, algo="protonet")
    except SpaceExhausted as exc:
        assert "holds 4 architectures and the study has trained 2 distinct ones; every one has been tried" in str(exc)
    else:
        raise AssertionError("every point is held: the space is exhausted")
