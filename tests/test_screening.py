"""Screening by a training-free proxy, and successive halving's rungs."""

from __future__ import annotations

import io

import optuna
import pytest
from optuna.trial import TrialState

from nas_meta import graph
from nas_meta.analyze import summary_frame, trials_frame
from nas_meta.cli import main
from nas_meta.config import LearnerConfig, RunConfig, make_config
from nas_meta.errors import ConfigError
from nas_meta.learners import build_learner, meta_train
from nas_meta.record import counted_trials
from nas_meta.search import screening as screening_module
from nas_meta.search.proxies import compute_proxies
from nas_meta.search.runner import SearchInterrupted, prepare, run_search
from nas_meta.search.samplers import halving_rungs
from nas_meta.search.study import load_study


def smoke(tmp_path, name="s", **search) -> RunConfig:
    return make_config(
        "smoke",
        learner={"algo": "protonet"},
        data={"cache_dir": str(tmp_path / "cache")},
        search={"space": "chain", "study": name, **search},
        results_dir=str(tmp_path / "results"),
    )


def _screening(study):
    return [t for t in study.trials if "screening" in t.user_attrs]


def test_screened_candidates_are_in_the_study_with_their_proxy_score(tmp_path):
    cfg = smoke(tmp_path, trials=2, prescreen="synflow", prescreen_pool=3, sampler="random")
    outcome = run_search(cfg, stream=io.StringIO())
    study = load_study("s", outcome.storage)
    trained = [t for t in study.trials if "screening" not in t.user_attrs]
    assert len(trained) == 2 and all(t.state == TrialState.COMPLETE for t in trained)
    assert len(counted_trials(study)) == 2  # screening does not use up the budget
    screened = _screening(study)
    assert len(screened) == 2 * 3
    objective = prepare(cfg).objective
    for t in screened:
        # The recorded score is the proxy of that candidate, as the trial would initialise it.
        arch = graph.from_json(t.user_attrs["arch"])
        expected = compute_proxies(objective.proxy_inputs(arch, t.number), ["synflow"])["synflow"][0]
        assert t.user_attrs["screening"] == {"proxy": "synflow", "value": pytest.approx(expected)}
    for pool in (screened[:3], screened[3:]):
        winner = max(pool, key=lambda t: t.user_attrs["screening"]["value"])
        promoted = study.trials[winner.user_attrs["promoted_to"]]
        assert winner.state == TrialState.FAIL  # its choices count once, in the trained trial
        assert promoted.params == winner.params
        assert promoted.user_attrs["fingerprint"] == winner.user_attrs["fingerprint"]
        assert promoted.user_attrs["promoted_from"]["trial"] == winner.number
        for loser in (t for t in pool if t is not winner):
            # Pruned at step 0 with the proxy as its reported value: what TPE ranks pruned trials by.
            assert loser.state == TrialState.PRUNED
            assert loser.intermediate_values == {0: pytest.approx(loser.user_attrs["screening"]["value"])}
    # analyze shows them, with no validation score of their own.
    frame = trials_frame(study)
    rows = frame.set_index("number")
    assert rows.loc[screened[0].number, "screened"].startswith("synflow=")
    assert rows.loc[[t.number for t in screened], "val_acc"].isna().all()
    notes = summary_frame(frame, "classification")["note"].tolist()
    assert sum(n.startswith("screened out") for n in notes) == 4
    assert sum("best of its pool" in n for n in notes) == 2


def test_a_search_interrupted_mid_screening_resumes_to_the_requested_total(tmp_path, monkeypatch):
    cfg = smoke(tmp_path, trials=3, prescreen="params", prescreen_pool=3, sampler="random")
    calls = {"n": 0}
    real = screening_module.compute_proxies

    def interrupt_on_the_fifth(inputs, names):
        calls["n"] += 1
        if calls["n"] == 5:  # second pool, second candidate
            raise KeyboardInterrupt
        return real(inputs, names)

    monkeypatch.setattr(screening_module, "compute_proxies", interrupt_on_the_fifth)
    with pytest.raises(SearchInterrupted):
        run_search(cfg, stream=io.StringIO())
    monkeypatch.setattr(screening_module, "compute_proxies", real)
    study = load_study("s", f"sqlite:///{tmp_path}/results/s/study.db")
    assert len(counted_trials(study)) == 1
    interrupted = [t for t in _screening(study) if "interrupted" in t.user_attrs]
    assert len(interrupted) == 2 and all(t.state == TrialState.FAIL for t in interrupted)

    outcome = run_search(cfg, stream=io.StringIO())
    study = load_study("s", outcome.storage)
    assert len(counted_trials(study)) == 3
    assert not study.get_trials(states=(TrialState.WAITING, TrialState.RUNNING))
    # The interrupted pool's candidates are not replayed: only promoted winners were trained.
    trained = [t for t in study.trials if "screening" not in t.user_attrs]
    assert all("promoted_from" in t.user_attrs for t in trained)


def test_a_winner_is_a_new_architecture(tmp_path):
    # A one-architecture space: after the first pool every candidate is a duplicate; a pool of
    # duplicates promotes one (which reuses the score, as any duplicate does, and is not counted),
    # and the search stops once it is clear that the space holds nothing new.
    cfg = smoke(tmp_path, trials=2, prescreen="params", prescreen_pool=2, space="conv4", sampler="random")
    out = io.StringIO()
    study = run_search(cfg, stream=out).study
    trained = [t for t in study.trials if "screening" not in t.user_attrs]
    assert "duplicate_of" not in trained[0].user_attrs
    assert len(trained) > 1 and all("duplicate_of" in t.user_attrs for t in trained[1:])
    assert len(counted_trials(study)) == 1 and "the search stops here" in out.getvalue()


def test_screening_options_are_checked(tmp_path):
    with pytest.raises(ConfigError, match="needs --prescreen PROXY"):
        smoke(tmp_path, prescreen_pool=4)
    with pytest.raises(ConfigError, match="at least 2"):
        smoke(tmp_path, prescreen="synflow", prescreen_pool=1)
    with pytest.raises(ConfigError, match=r"unknown proxy 'synfloww'; choose from \["):
        prepare(smoke(tmp_path, prescreen="synfloww", prescreen_pool=4))
    with pytest.raises(ConfigError, match="nsga2"):
        run_search(smoke(tmp_path, prescreen="synflow", prescreen_pool=2, sampler="nsga2"), stream=io.StringIO())


def test_cli_prescreen_mistakes_are_one_line(tmp_path, capsys):
    code = main(
        [
            "search",
            "--space",
            "chain",
            "--preset",
            "smoke",
            "--prescreen",
            "synfloww",
            "--results-dir",
            str(tmp_path / "r"),
        ]
    )
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "unknown proxy 'synfloww'" in err and "Traceback" not in err
    assert not (tmp_path / "r").exists()


def stated_rungs(iterations: int, val_episodes: int) -> list[tuple[int, int]]:
    """The rule README.md states: s = max(1, iterations // 9) steps, 3 * s and iterations, on
    val_episodes, twice and four times as many episodes; a rung that would pass ``iterations`` or
    repeat an earlier step is left out."""
    s = max(1, iterations // 9)
    rungs: list[tuple[int, int]] = []
    for k, step in enumerate((s, 3 * s, iterations)):
        if step <= iterations and step not in [earlier for earlier, _ in rungs]:
            rungs.append((step, val_episodes * 2**k))
    return rungs


def readme_before_rungs(iterations: int, val_episodes: int) -> list[tuple[int, int]]:
    """A wrong rule: iterations // 9, iterations // 3 and iterations (dropping a step of 0)."""
    steps = (iterations // 9, iterations // 3, iterations)
    return [(step, val_episodes * 2**k) for k, step in enumerate(steps) if step > 0]


def no_floor_rungs(iterations: int, val_episodes: int) -> list[tuple[int, int]]:
    """A wrong rule: plain iterations // 9, with no floor of one step (a rung at step 0)."""
    s = iterations // 9
    return [(s, val_episodes), (3 * s, 2 * val_episodes), (iterations, 4 * val_episodes)]


# 80: the default, where iterations // 3 (26) is not 3 * (80 // 9) (24); 1-8: where plain
# iterations // 9 is 0; 1-3: where a rung is left out.
HALVING_ITERATIONS = [1, 2, 3, 4, 5, 8, 9, 10, 26, 27, 80, 100, 600]


@pytest.mark.parametrize("iterations", HALVING_ITERATIONS)
@pytest.mark.parametrize("val_episodes", [8, 40])
def test_halving_rungs_follow_the_stated_rule(iterations, val_episodes):
    cfg = make_config(
        "smoke", learner={"iterations": iterations, "val_episodes": val_episodes}, search={"pruner": "halving"}
    )
    rungs = halving_rungs(cfg)
    assert rungs == stated_rungs(iterations, val_episodes)
    steps = [step for step, _ in rungs]
    assert steps == sorted(set(steps)) and steps[-1] == iterations  # growing, ending at the full budget


def test_the_halving_cases_tell_the_stated_rule_from_wrong_ones():
    for wrong in (readme_before_rungs, no_floor_rungs):
        differ = [n for n in HALVING_ITERATIONS if wrong(n, 40) != stated_rungs(n, 40)]
        assert differ, f"no case tells {wrong.__name__} apart"
    assert readme_before_rungs(80, 40)[1] == (26, 80) and stated_rungs(80, 40)[1] == (24, 80)
    assert no_floor_rungs(5, 40)[0] == (0, 40) and stated_rungs(5, 40)[0] == (1, 40)


def test_halving_rungs_of_the_measured_searches():
    # results/README.md, section 5: the quick preset (80 steps, 40 episodes) ran on 8/24/80 steps
    # and 40/80/160 validation episodes.
    quick = make_config("quick", search={"pruner": "halving"})
    assert (quick.learner.iterations, quick.learner.val_episodes) == (80, 40)
    assert halving_rungs(quick) == [(8, 40), (24, 80), (80, 160)]


class _CountingSampler:
    def __init__(self, inner):
        self.inner, self.episodes = inner, 0

    def sample(self, tasks):
        self.episodes += tasks
        return self.inner.sample(tasks)


def test_a_schedule_validates_each_checkpoint_on_its_episodes():
    from torch import nn

    from nas_meta.config import DataConfig
    from nas_meta.data import load_dataset

    ds = load_dataset(DataConfig(glyph_classes=30, glyph_samples=6))
    backbone = nn.Sequential(nn.Flatten(), nn.Linear(28 * 28, 8))
    learner = build_learner(LearnerConfig(algo="protonet"), backbone, feature_dim=8, ways=3, task="classification")
    val = _CountingSampler(ds.sampler("val", ways=3, shots=1, queries=2, seed=1))
    cfg = LearnerConfig(algo="protonet", iterations=4, meta_batch=2, eval_every=1, val_episodes=100)
    result = meta_train(
        learner,
        ds.sampler("train", ways=3, shots=1, queries=2, seed=0),
        val,
        cfg,
        seed=0,
        checkpoints=[(1, 4), (3, 10)],
    )
    assert [step for step, _ in result.curve] == [1, 3]
    assert val.episodes == 4 + 10


def test_halving_trains_survivors_longer(tmp_path):
    cfg = smoke(tmp_path, trials=8, pruner="halving", sampler="random").replace(learner={"iterations": 9})
    study = run_search(cfg, stream=io.StringIO()).study
    rungs = halving_rungs(cfg)
    steps = [step for step, _ in rungs]
    pruned = [t for t in study.trials if t.state == TrialState.PRUNED]
    done = [t for t in study.trials if t.state == TrialState.COMPLETE and "duplicate_of" not in t.user_attrs]
    assert pruned and done
    for t in pruned + done:
        assert [list(r) for r in t.user_attrs["rungs"]] == [list(r) for r in rungs]
        curve_steps = [step for step, _ in t.user_attrs["curve"]]
        assert curve_steps == steps[: len(curve_steps)]  # the rungs, in order, as far as it got
    assert all(len(t.user_attrs["curve"]) < len(steps) for t in pruned)
    assert all(t.user_attrs["curve"][-1][0] == cfg.learner.iterations for t in done)
    # Survivors of a rung were among the best there: each pruned trial scored below a trial that went on.
    for t in pruned:
        step, value = t.user_attrs["curve"][-1]
        went_on = [
            dict(u.user_attrs["curve"]).get(step)
            for u in done + pruned
            if len(u.user_attrs["curve"]) > len(t.user_attrs["curve"])
        ]
        assert any(v is not None and v >= value for v in went_on)


def test_optuna_pruned_trials_rank_behind_complete_ones_in_tpe():
    # What screening relies on: TPE puts pruned trials (screened out) among the worse ones.
    from optuna.samplers._tpe.sampler import _split_trials

    study = optuna.create_study(direction="maximize")
    study.add_trial(optuna.trial.create_trial(params={}, distributions={}, value=0.2))
    study.add_trial(
        optuna.trial.create_trial(params={}, distributions={}, state=TrialState.PRUNED, intermediate_values={0: 1e9})
    )
    try:
        below, above = _split_trials(study, study.trials, 1)
    except TypeError:  # optuna 4.x had a constraints flag
        below, above = _split_trials(study, study.trials, 1, False)
    assert [t.state for t in below] == [TrialState.COMPLETE] and [t.state for t in above] == [TrialState.PRUNED]
