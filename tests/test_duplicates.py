"""Duplicates do not use up the budget: ``--trials`` counts distinct trained candidates."""

from __future__ import annotations

import io

import optuna
from optuna.trial import TrialState

from nas_meta.config import make_config
from nas_meta.record import Attr, counted_trials
from nas_meta.search import objective as objective_module
from nas_meta.search.runner import run_search
from nas_meta.search.study import SAMPLER_BUILDERS
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
    SAMPLER_BUILDERS.add("repeat", lambda seed: RepeatingSampler())
    try:
        cfg = make_config(
            "smoke",
            data={"cache_dir": str(tmp_path / "cache")},
            search={"space": "chain", "sampler": "repeat", "trials": 3},
            results_dir=str(tmp_path / "results"),
        )
        study = run_search(cfg, stream=io.StringIO()).study
    finally:
        SAMPLER_BUILDERS.remove("repeat")
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
