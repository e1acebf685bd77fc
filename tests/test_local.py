"""Local search from the best known candidate, on cheap scores over the real spaces' choices."""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna
import pytest

from nas_meta import graph
from nas_meta.config import make_config
from nas_meta.record import Attr, StudyAttr
from nas_meta.search.local import FROM, RESTART, LocalSearchSampler
from nas_meta.search.runner import run_search
from nas_meta.spaces import load_space

CHAIN = load_space("chain")
# Depth 3 sits in the middle of the chain space's depths: a neighbour can add block 4 or drop block 3.
START = {"depth": 3, "norm": "batch"} | {
    f"block{b}_{key}": value
    for b in (1, 2, 3)
    for key, value in {"width": 32, "kernel": 3, "pool": "max", "skip": False}.items()
}
# depth: 2 other options, norm: 1, and per block width 2, kernel 1, pool 1, skip 1.
NEIGHBOURS = {(name, option) for name, value in START.items() for option in CHAIN.choices()[name] if option != value}
assert len(NEIGHBOURS) == 2 + 1 + 3 * 5


def study_of(direction: str = "maximize", seed: int = 0, storage: str | None = None) -> optuna.Study:
    return optuna.create_study(
        direction=direction, sampler=LocalSearchSampler(seed=seed), storage=storage, study_name="local"
    )


def run(study: optuna.Study, score: Callable[[dict[str, Any]], float], n: int) -> None:
    def objective(trial: optuna.Trial) -> float:
        return score(CHAIN.build(trial.suggest_categorical).graph["params"])

    study.optimize(objective, n_trials=n)


def move(start: dict[str, Any], params: dict[str, Any]) -> tuple[str, Any]:
    """The one choice in which ``params`` differs from ``start``; blocks it adds or drops only
    with a change of depth."""
    changed = [name for name in start if name in params and params[name] != start[name]]
    assert len(changed) == 1, f"{params} differs from {start} in {changed}"
    name = changed[0]
    if set(params) - set(start):
        assert name == "depth" and params["depth"] > start["depth"]
    if set(start) - set(params):
        assert name == "depth" and params["depth"] < start["depth"]
    return name, params[name]


def test_after_one_trial_it_proposes_every_one_choice_neighbour_once():
    study = study_of()
    study.enqueue_trial(START)
    run(study, lambda p: 0.0, n=1 + len(NEIGHBOURS))  # nothing improves (a tie keeps the start)
    moves = [move(START, t.params) for t in study.trials[1:]]
    assert len(moves) == len(set(moves)) == 18
    assert set(moves) == NEIGHBOURS
    assert {t.system_attrs[FROM] for t in study.trials[1:]} == {0}
    # A neighbour of depth 4 drew its new block 4 (at random) and dropped nothing.
    deeper = next(t.params for t in study.trials if t.params["depth"] == 4)
    assert {f"block4_{k}" for k in ("width", "kernel", "pool", "skip")} <= set(deeper)


@pytest.mark.parametrize("direction", ["maximize", "minimize"])
def test_it_moves_to_a_neighbour_that_finished_better_in_the_studys_direction(direction):
    better = {**START, "block2_width": 64}
    worse = {**START, "block1_kernel": 5}
    gain = 1.0 if direction == "maximize" else -1.0
    study = study_of(direction)
    study.enqueue_trial(START)
    # The start scores 0; one neighbour is better, another worse (a sampler that read the
    # direction backwards would move there), the others tie with the start.
    run(study, lambda p: gain * (p == better) - gain * (p == worse), n=1 + len(NEIGHBOURS) + 10)
    found = next(t.number for t in study.trials if t.params == better)
    assert found <= len(NEIGHBOURS)
    for t in study.trials[1 : found + 1]:
        move(START, t.params)  # until then: the start's neighbours
    after = study.trials[found + 1 : found + 11]
    assert len(after) == 10
    moves = [move(better, t.params) for t in after]  # then: the better one's neighbours, none twice
    assert len(set(moves)) == 10 and ("block2_width", 32) not in moves  # (the start was tried)
    assert {t.system_attrs[FROM] for t in after} == {found}


def test_it_restarts_from_a_random_point_when_the_start_is_a_strict_local_optimum():
    study = study_of()
    study.enqueue_trial(START)
    run(study, lambda p: float(p == START), n=1 + len(NEIGHBOURS) + 2)
    assert all(RESTART not in t.system_attrs for t in study.trials[: 1 + len(NEIGHBOURS)])
    restart = study.trials[1 + len(NEIGHBOURS)]
    assert restart.system_attrs[RESTART] is True and FROM not in restart.system_attrs
    differ = {name for name in START if restart.params.get(name) != START[name]}
    assert len(differ) > 1  # neither the start nor one of its neighbours
    # Then it climbs from the restart point, although the old start scored better.
    nxt = study.trials[-1]
    assert nxt.system_attrs[FROM] == restart.number
    move(restart.params, nxt.params)


def shallower(params: dict[str, Any]) -> float:
    return -float(params["depth"])  # from START: a move to depth 2, a plateau, then a restart


def test_a_killed_search_resumes_with_the_proposals_an_uninterrupted_one_makes(tmp_path):
    whole = study_of()
    whole.enqueue_trial(START)
    run(whole, shallower, n=23)
    url = f"sqlite:///{tmp_path}/local.db"
    killed = study_of(storage=url)
    killed.enqueue_trial(START)
    run(killed, shallower, n=14)
    del killed  # the process dies; a new one opens the study with a new sampler of the same seed
    resumed = optuna.load_study(study_name="local", storage=url, sampler=LocalSearchSampler(seed=0))
    run(resumed, shallower, n=9)
    assert [t.params for t in resumed.trials] == [t.params for t in whole.trials]
    attrs = [{k: v for k, v in t.system_attrs.items() if k.startswith("local:")} for t in resumed.trials]
    assert attrs == [{k: v for k, v in t.system_attrs.items() if k.startswith("local:")} for t in whole.trials]
    # The story: a move to trial 8 (depth 2); before the kill, trial 13 went to depth 4 and drew
    # its blocks 3 and 4 at random (so a generator's position would differ after the kill); after
    # it, the rest of trial 8's neighbours, a random restart at trial 21, a neighbour of that.
    assert [t.system_attrs.get(FROM) for t in whole.trials[1:]] == [0] * 8 + [8] * 12 + [None, 21]
    assert whole.trials[8].params["depth"] == 2 and whole.trials[13].params["depth"] == 4
    assert whole.trials[21].system_attrs[RESTART] is True


def test_running_trials_claim_their_neighbours_and_a_restart_waits_for_them():
    def choose(trial: optuna.Trial) -> tuple[int, int]:
        return trial.suggest_categorical("x", [0, 1]), trial.suggest_categorical("y", [0, 1])

    study = study_of()
    study.enqueue_trial({"x": 0, "y": 0})
    study.optimize(lambda t: float(sum(choose(t)) == 0), n_trials=1)  # the start: (0, 0), the best
    # A second worker with the same seed walks the same order: only the first's plan, stored with
    # its running trial, keeps it from taking the same neighbour.
    other = optuna.load_study(study_name="local", storage=study._storage, sampler=LocalSearchSampler(seed=0))
    first, second = study.ask(), other.ask()  # both running, nothing drawn yet
    assert {choose(first), choose(second)} == {(0, 1), (1, 0)}
    third = study.ask()  # every neighbour is taken but not finished: random, and no restart yet
    assert not {RESTART, FROM} & set(study.trials[third.number].system_attrs)
    for trial in (first, second, third):
        choose(trial)
        study.tell(trial, 0.0)
    fourth = study.ask()  # all finished and none better: now it restarts
    assert study.trials[fourth.number].system_attrs[RESTART] is True


def test_a_known_architecture_queued_whole_is_never_the_start_even_when_it_scores_best():
    conv4 = graph.to_json(load_space("conv4").build(lambda _name, options: options[0]))
    study = study_of()
    study.enqueue_trial({}, user_attrs={Attr.ENQUEUED_ARCH: conv4})

    def objective(trial: optuna.Trial) -> float:
        if Attr.ENQUEUED_ARCH in trial.user_attrs:
            return 100.0  # trained as it is: no choices
        return float(len(CHAIN.build(trial.suggest_categorical).graph["params"]))

    study.optimize(objective, n_trials=4)
    baseline, first, *rest = study.trials
    assert baseline.params == {} and baseline.value == 100.0
    assert FROM not in first.system_attrs and RESTART not in first.system_attrs  # no start yet: random
    assert [t.system_attrs[FROM] for t in rest] == [1, 1]
    for t in rest:
        move(first.params, t.params)


def test_a_duplicate_is_tried_but_never_the_start_even_when_its_copied_score_is_best():
    study = study_of()
    study.enqueue_trial(START)

    def objective(trial: optuna.Trial) -> float:
        CHAIN.build(trial.suggest_categorical)
        if trial.number == 1:  # as the objective records an architecture it trained before
            trial.set_user_attr(Attr.DUPLICATE_OF, 0)
            return 100.0
        return 0.0

    study.optimize(objective, n_trials=1 + len(NEIGHBOURS))
    duplicate = move(START, study.trials[1].params)
    moves = [move(START, t.params) for t in study.trials[2:]]
    assert {t.system_attrs[FROM] for t in study.trials[2:]} == {0}
    assert duplicate not in moves and set(moves) | {duplicate} == NEIGHBOURS


def tiny_cell_space(path: Path) -> Path:
    # Node 3 of this cell may be dead (both its ops `none`): then which inputs it takes does not
    # change the architecture.
    path.write_text(
        "kind: cell\nops: [none, skip_connect]\nnodes: 2\nlayout: [normal]\nchannels: 4\nstem_channels: 4\n"
    )
    return path


CELL_START = {
    "normal_n2_op0": "skip_connect",
    "normal_n2_op1": "skip_connect",
    "normal_n3_inputs": "0-1",
    "normal_n3_op0": "none",
    "normal_n3_op1": "none",
}


@pytest.mark.parametrize("stored", [True, False])
def test_a_change_that_leaves_the_fingerprint_as_it_was_is_no_neighbour(tmp_path, stored):
    space = load_space(tiny_cell_space(tmp_path / "tiny.yaml"))
    assert set(space.choices()) == set(CELL_START)  # the space is what this test thinks it is
    study = study_of()
    if stored:
        cfg = make_config("smoke", search={"space": str(tmp_path / "tiny.yaml")})
        study.set_user_attr(StudyAttr.CONFIG, cfg.to_dict())
    study.enqueue_trial(CELL_START)
    # The start is a strict local optimum: its neighbours, then a restart.
    study.optimize(lambda t: float(space.build(t.suggest_categorical).graph["params"] == CELL_START), 7)
    moves = [move(CELL_START, t.params) for t in study.trials[1:] if t.system_attrs.get(FROM) == 0]
    same_graph = {("normal_n3_inputs", "0-2"), ("normal_n3_inputs", "1-2")}
    for name, option in same_graph:  # (a fact about the space, checked here)
        changed = space.from_params({**CELL_START, name: option})
        assert graph.fingerprint(changed) == graph.fingerprint(space.from_params(CELL_START))
    ops = {(f"normal_n{n}_op{k}", "none" if n == 2 else "skip_connect") for n in (2, 3) for k in (0, 1)}
    if stored:
        assert sorted(moves) == sorted(ops)
        assert study.trials[5].system_attrs[RESTART] is True
    else:  # a plain Optuna study names no space: every change is a neighbour
        assert sorted(moves) == sorted(ops | same_graph)


def test_a_stored_chain_space_keeps_every_neighbour():
    study = study_of()
    study.set_user_attr(StudyAttr.CONFIG, make_config("smoke", search={"space": "chain"}).to_dict())
    study.enqueue_trial(START)
    run(study, lambda p: float(p == START), n=1 + len(NEIGHBOURS))
    assert {move(START, t.params) for t in study.trials[1:]} == NEIGHBOURS


def test_multi_objective_is_refused():
    study = optuna.create_study(directions=["maximize", "minimize"], sampler=LocalSearchSampler(seed=0))
    with pytest.raises(ValueError, match="single-objective"):
        study.optimize(lambda t: (float(t.suggest_categorical("x", [0, 1])), 1.0), n_trials=1)


@pytest.mark.slow  # a real search of 3 smoke trials: ~9 s on a quiet 2-core machine, more when shared
def test_a_smoke_search_with_a_baseline_moves_from_its_own_candidate(tmp_path):
    cfg = make_config(
        "smoke",
        learner={"algo": "protonet"},
        # The baseline, trained first (no race), is one of the 3 trials.
        search={"space": "chain", "sampler": "local", "trials": 3, "baselines": ["conv4"]},
        data={"cache_dir": str(tmp_path / "c")},
        results_dir=str(tmp_path / "r"),
    )
    study = run_search(cfg, stream=io.StringIO()).study
    baseline, *candidates = study.trials
    assert Attr.ENQUEUED_ARCH in baseline.user_attrs and baseline.params == {}
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials)
    first, second = candidates
    assert FROM not in first.system_attrs  # the baseline is no start: a random first candidate
    assert second.system_attrs[FROM] == first.number
    move(first.params, second.params)
    assert second.user_attrs[Attr.FINGERPRINT] != first.user_attrs[Attr.FINGERPRINT]
