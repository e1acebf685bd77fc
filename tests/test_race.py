"""Common random numbers and the final race: what candidates share, who the race drops, keeps and picks."""

from __future__ import annotations

import dataclasses
import io
import json
import zlib

import optuna
import pytest
import torch

from nas_meta import graph
from nas_meta.cli import main
from nas_meta.config import LEGACY_SEARCH, RunConfig, make_config
from nas_meta.export import choose_exports
from nas_meta.record import StudyAttr
from nas_meta.search import objective as objective_module
from nas_meta.search import race as race_module
from nas_meta.search.race import race_pick, race_state, verdict_lines
from nas_meta.search.runner import SearchInterrupted, run_search, run_worker
from nas_meta.search.study import load_study, stored_config


def smoke(tmp_path, name="s", **search) -> RunConfig:
    return make_config(
        "smoke",
        data={"cache_dir": str(tmp_path / "cache")},
        search={"space": "chain", "study": name, **search},
        results_dir=str(tmp_path / "results"),
    )


# --- common random numbers ------------------------------------------------------------------------


def _first_batches(tmp_path, monkeypatch, crn: str) -> tuple[list, list]:
    """(each trial's first training batch, each trial's first conv weight) of a 3-trial search."""
    batches, weights = [], []
    real_samplers, real_build = objective_module.episode_samplers, objective_module.network.build

    def samplers(cfg, dataset, train_seed, val_seed, device, **kw):
        # A twin of the trial's sampler draws the batch the trial will see first.
        twin, _ = real_samplers(cfg, dataset, train_seed, val_seed, device, **kw)
        batches.append(twin.sample(2).query_x.clone())
        return real_samplers(cfg, dataset, train_seed, val_seed, device, **kw)

    def build(arch, input_shape, **kw):
        backbone = real_build(arch, input_shape, **kw)
        first = next(p for p in backbone.parameters() if p.dim() == 4)
        weights.append(first.detach().clone().flatten()[:16])
        return backbone

    monkeypatch.setattr(objective_module, "episode_samplers", samplers)
    monkeypatch.setattr(objective_module.network, "build", build)
    # One architecture three times would be a duplicate: three distinct ones of equal first layers.
    run_search(smoke(tmp_path, crn, trials=3, crn=crn), stream=io.StringIO())
    monkeypatch.undo()
    # prepare() draws and builds before the trials (its checks): the trials' are the last three.
    return batches[-3:], weights[-3:]


def test_under_crn_every_candidate_trains_on_the_same_episodes(tmp_path, monkeypatch):
    batches, _ = _first_batches(tmp_path, monkeypatch, "episodes")
    assert all(torch.equal(batches[0], b) for b in batches[1:])
    # The switch restores each trial's own stream.
    off, _ = _first_batches(tmp_path, monkeypatch, "off")
    assert not torch.equal(off[0], off[1]) and not torch.equal(off[1], off[2])


def test_crn_all_shares_the_initial_weights_seed_too(tmp_path, monkeypatch):
    def same_draws(a, b) -> bool:  # the same uniform draws, scaled by each layer's own fan-in
        return torch.allclose(a / a.norm(), b / b.norm(), atol=1e-6)

    _, own = _first_batches(tmp_path, monkeypatch, "episodes")
    _, shared = _first_batches(tmp_path, monkeypatch, "all")
    assert not same_draws(own[0], own[1]) and not same_draws(own[1], own[2])
    assert same_draws(shared[0], shared[1]) and same_draws(shared[1], shared[2])


def test_a_study_started_before_crn_and_the_race_resumes_as_it_started(tmp_path):
    cfg = smoke(tmp_path, trials=2)
    outcome = run_search(cfg, stream=io.StringIO())
    study = outcome.study
    doc = study.user_attrs[StudyAttr.CONFIG]
    for name in LEGACY_SEARCH:  # what a study written by the version before these settings holds
        del doc["search"][name]
    study.set_user_attr(StudyAttr.CONFIG, doc)
    assert stored_config(study).search.crn == "off" and stored_config(study).search.race == 0
    assert stored_config(study).search.race_rule == "mean"
    out = io.StringIO()
    resumed = run_search(cfg.replace(search={"trials": 3, "race": 2}), stream=out)
    assert "keeps crn='off' from its first run (not 'episodes')" in out.getvalue()
    assert "keeps race=0" in out.getvalue()
    assert race_state(resumed.study) is None  # no race: the study never had one
    assert json.loads((tmp_path / "results" / "s" / "config.json").read_text())["search"]["crn"] == "off"
    # It reads and exports as before: the best trial first.
    [first] = choose_exports(resumed.study, "classification")
    best = max((t for t in resumed.study.trials if t.values), key=lambda t: t.values[0])
    assert first.number == best.number and first.race is None


# --- the race, on planted scores ------------------------------------------------------------------


def _plant(monkeypatch, means: list[float], spread: float = 0.01) -> list[tuple[str, int]]:
    """Replace the race's training by planted per-episode scores: the i-th entrant (finalists by
    search score, then the baselines) scores ``means[i]`` plus a little noise per block; returns
    the (key, block) calls made."""
    calls, order = [], {}

    def score(cfg, entrant, block, dataset, device, step, should_stop):
        calls.append((entrant.key, block))
        index = order.setdefault(entrant.key, len(order))
        g = torch.Generator().manual_seed(1000 * block + index)
        noise = spread * torch.randn(cfg.race_episodes(), generator=g)
        return (means[index] + noise).clamp(0, 1).tolist()

    monkeypatch.setattr(race_module, "_score", score)
    return calls


def _race(tmp_path, name, **search):
    cfg = smoke(tmp_path, name, trials=3, race=2, race_blocks=3, **search)
    out = io.StringIO()
    outcome = run_search(cfg, stream=out)
    ranked = sorted((t for t in outcome.study.trials if t.values), key=lambda t: -t.values[0])
    return outcome, ranked, race_state(outcome.study), out.getvalue()


def test_the_race_drops_a_planted_worse_candidate_and_picks_the_better_one(tmp_path, monkeypatch):
    # The search's best trial is planted worse, its second better than it and than conv4.
    calls = _plant(monkeypatch, [0.40, 0.80, 0.60])
    outcome, ranked, state, text = _race(tmp_path, "planted")
    first, second = ranked[0].number, ranked[1].number
    assert state["done"] and state["pick"] == f"trial-{second}"
    assert set(state["dropped"]) == {f"trial-{first}", "baseline-conv4"}
    assert state["dropped"][f"trial-{first}"]["block"] == 1  # as soon as a paired test can say so
    assert state["dropped"][f"trial-{first}"]["behind"] == f"trial-{second}"
    # Dropped entrants train no further block.
    assert (f"trial-{first}", 2) not in calls and (f"trial-{second}", 2) not in calls
    [verdict] = state["verdicts"]
    assert verdict["beats"] and verdict["difference"] == pytest.approx(0.20, abs=0.01)
    assert "dropped" in text.splitlines()[-1]  # the block lines say who left when
    lines = verdict_lines(state, "classification")
    assert any(line.startswith(f"#{second} beats conv4 by +") for line in lines)
    assert any(line.startswith(f"race: #{first} dropped after block 2, behind #{second}") for line in lines)
    # The pick is what best/arch.json and export say.
    best = graph.load_json(tmp_path / "results" / "planted" / "best" / "arch.json")
    assert graph.fingerprint(best) == ranked[1].user_attrs["fingerprint"]
    assert choose_exports(outcome.study, "classification")[0].number == second


def test_a_race_won_by_the_baseline_returns_the_baseline_and_says_so(tmp_path, monkeypatch):
    _plant(monkeypatch, [0.5, 0.5, 0.9])
    outcome, _, state, text = _race(tmp_path, "base")
    pick = race_pick(state)
    assert pick is not None and pick.baseline == "conv4" and pick.trial is None
    assert "no candidate beat conv4: conv4 is the pick" in verdict_lines(state, "classification")
    conv4 = graph.load_json(tmp_path / "results" / "base" / "best" / "arch.json")
    assert graph.fingerprint(conv4) == pick.fingerprint
    [first, *_] = choose_exports(outcome.study, "classification", top=2)
    assert first.number is None and first.baseline == "conv4"


def test_two_copies_of_one_architecture_are_not_told_apart(tmp_path, monkeypatch):
    _plant(monkeypatch, [0.7, 0.7, 0.7], spread=0.2)
    _, _, state, _ = _race(tmp_path, "tie", race_rule="mean")
    assert state["dropped"] == {}
    assert not state["verdicts"][0]["beats"]
    assert "are not told apart" in state["verdicts"][0]["text"]


@pytest.mark.parametrize("rule", ["beats", "mean"])
def test_a_lead_the_race_cannot_tell_from_noise_replaces_the_baseline_only_under_the_mean_rule(
    tmp_path, monkeypatch, rule
):
    # The search's best trial is planted a little ahead of conv4, within the blocks' noise.
    _plant(monkeypatch, [0.74, 0.40, 0.70], spread=0.25)
    _, ranked, state, _ = _race(tmp_path, rule, **({"race_rule": rule} if rule == "mean" else {}))
    assert state["settings"]["rule"] == rule  # "beats" is the default
    leader = f"trial-{ranked[0].number}"
    means = {e["key"]: race_module._block_means(state, e["key"]) for e in state["entrants"]}
    assert sum(means[leader]) > sum(means["baseline-conv4"])  # ahead on the mean ...
    [verdict] = state["verdicts"]
    if rule == "mean":
        assert state["pick"] == leader and not verdict["beats"]
        assert verdict["text"].startswith(f"#{ranked[0].number} and conv4 are not told apart: +")
    else:  # ... but not with 95% confidence: conv4 stays the pick, and the line says why
        assert state["pick"] == "baseline-conv4"
        assert verdict["text"].startswith(
            f"no candidate beat conv4 with 95% confidence: conv4 is the pick (#{ranked[0].number} led it by +"
        )
        assert "over 3 training seed(s), not enough)" in verdict["text"]


def test_a_race_stored_before_race_rules_picks_by_the_mean():
    entrants = [
        race_module.Entrant(key="trial-0", label="#0", arch={}, fingerprint="a", trial=0),
        race_module.Entrant(key="baseline-conv4", label="conv4", arch={}, fingerprint="b", baseline="conv4"),
    ]
    scores = {"trial-0": [0.72, 0.60], "baseline-conv4": [0.65, 0.64]}  # ahead on the mean, not with confidence
    state = {
        "settings": {"blocks": 2},
        "entrants": [dataclasses.asdict(e) for e in entrants],
        "scores": {f"{k}/{b}": {"mean": v} for k, vs in scores.items() for b, v in enumerate(vs)},
        "dropped": {},
    }
    leader = race_module._leader(state, entrants, 1.0)
    assert race_module._pick(state, entrants, entrants, leader, 1.0).key == "trial-0"  # no rule stored
    assert race_module.pick_by_rule(state, "beats") == "baseline-conv4"
    # A candidate ahead with confidence replaces the baseline under either rule.
    state["scores"] = {
        f"{k}/{b}": {"mean": v}
        for k, vs in {"trial-0": [0.80, 0.79], "baseline-conv4": [0.60, 0.61]}.items()
        for b, v in enumerate(vs)
    }
    assert race_module.pick_by_rule(state, "beats") == race_module.pick_by_rule(state, "mean") == "trial-0"


# --- the race, for real ---------------------------------------------------------------------------


def test_a_race_killed_midway_resumes_to_the_same_pick(tmp_path):
    cfg = smoke(tmp_path, "whole", trials=3, race=2, race_blocks=2, race_iterations=4, race_episodes=8)
    whole = run_search(cfg, stream=io.StringIO())
    expected = race_state(whole.study)
    assert expected["done"] and len(expected["scores"]) == 6  # 3 entrants x 2 blocks, nobody dropped

    killed = cfg.replace(search={"study": "killed"})
    steps = {"race": 0}
    real_score = race_module._score

    def score(cfg, entrant, block, dataset, device, step, should_stop):
        def stop() -> bool:
            steps["race"] += 1
            return steps["race"] > 10  # mid-way through the third entrant's training in block 1

        return real_score(cfg, entrant, block, dataset, device, step, stop)

    race_module._score = score
    try:
        with pytest.raises(SearchInterrupted):
            run_search(killed, stream=io.StringIO())
    finally:
        race_module._score = real_score
    partial = race_state(load_study("killed", f"sqlite:///{tmp_path}/results/killed/study.db"))
    assert not partial["done"] and 0 < len(partial["scores"]) < 6
    trained = []

    def counting(cfg, entrant, block, dataset, device, step, should_stop):
        trained.append((entrant.key, block))
        return real_score(cfg, entrant, block, dataset, device, step, should_stop)

    race_module._score = counting
    try:
        resumed = race_state(run_search(killed, stream=io.StringIO()).study)
    finally:
        race_module._score = real_score
    assert len(trained) == 6 - len(partial["scores"])  # only what the killed run had not finished
    assert resumed["pick"] == expected["pick"]
    assert {k: v["episodes"] for k, v in resumed["scores"].items()} == {
        k: v["episodes"] for k, v in expected["scores"].items()
    }


def test_a_worker_never_runs_the_race(tmp_path):
    cfg = smoke(tmp_path, "w", trials=2, race=2, race_iterations=2, race_episodes=4)
    outcome = run_search(cfg.replace(search={"race": 0}), stream=io.StringIO())
    # A study whose config asks for a race, joined by a worker after its trials: no race there.
    doc = outcome.study.user_attrs[StudyAttr.CONFIG]
    doc["search"]["race"] = 2
    outcome.study.set_user_attr(StudyAttr.CONFIG, doc)
    run_worker("w", outcome.storage, stream=io.StringIO())
    assert race_state(load_study("w", outcome.storage)) is None


def test_search_command_races_and_prints_the_verdict(tmp_path, capsys):
    args = ["search", "--space", "chain", "--algo", "protonet", "--preset", "smoke", "--trials", "2"]
    args += ["--race", "1", "--race-iterations", "3", "--race-episodes", "4", "--race-rule", "mean"]
    args += ["--results-dir", str(tmp_path / "r"), "--cache-dir", str(tmp_path / "c")]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "race: 2 entrants (#" in out and ", conv4)" in out
    assert "race pick: " in out and "race cost: " in out
    study = optuna.load_study(
        study_name="chain-protonet-glyphs", storage=f"sqlite:///{tmp_path}/r/chain-protonet-glyphs/study.db"
    )
    state = race_state(study)
    expected = {"iterations": 3, "episodes": 4, "blocks": 2, "finalists": 1, "rule": "mean"}
    assert state["settings"] == {**state["settings"], **expected}
    assert main(["analyze", "--study", "chain-protonet-glyphs", "--results-dir", str(tmp_path / "r")]) == 0
    assert "### race" in capsys.readouterr().out


def test_a_grown_study_races_again_and_keeps_the_blocks_it_has(tmp_path, monkeypatch):
    calls = []

    def score(cfg, entrant, block, dataset, device, step, should_stop):
        calls.append((entrant.key, block))
        return [0.5 + zlib.crc32(f"{entrant.key}/{block}".encode()) % 100 / 1000] * cfg.race_episodes()

    monkeypatch.setattr(race_module, "_score", score)
    cfg = smoke(tmp_path, "grow", trials=2, race=1, race_blocks=2)
    first = race_state(run_search(cfg, stream=io.StringIO()).study)
    assert first["trials"] == 2 and len(calls) == 4  # 2 entrants x 2 blocks
    before = set(calls)
    calls.clear()
    grown = run_search(cfg.replace(search={"trials": 4}), stream=io.StringIO())
    state = race_state(grown.study)
    assert state["trials"] == 4 and state["done"]
    entrants = {e["key"] for e in state["entrants"]}
    assert all(key not in {k for k, _ in before} for key, _ in calls)  # only new entrants trained
    assert {k.partition("/")[0] for k in state["scores"]} == entrants
    # Read again without growth: nothing trains.
    calls.clear()
    run_search(cfg.replace(search={"trials": 4}), stream=io.StringIO())
    assert calls == []
