"""The final race: how a search chooses its pick among its best candidates and the baselines.

A candidate's search score is one short training scored on the episodes that ranked it against
every other candidate, so the best score of a study is biased upwards (the winner's curse), and the
noise of one training is about the size of the differences between good candidates.  The race
answers both, as SMAC's intensification and racing algorithms do (Birattari et al. 2002): the
``race`` best candidates by search score and the baselines (Conv-4) are meta-trained again, in
blocks; block ``b`` trains every entrant still in the race from the block's own seed on the same
training episodes (common random numbers) for ``race_iterations`` steps and scores it on the same
``race_episodes`` *fresh* validation episodes, which picked nobody.  After each block from the
second on, an entrant whose difference to the leader has its whole 95% interval below zero is
dropped.  The unit of the comparison is the block, not the episode: each block is one training of
each entrant, so the training noise is in the comparison, not only the episodes'; the noise is
pooled over the entrants as in a randomized complete block design (with two entrants, the paired
t-test; ``nas_meta.stats.blocked_differences``).  The pick (``search.race_rule``): under
"beats", the best-mean candidate among those that beat every baseline with 95% confidence, and
the best baseline when none does (a lead the race cannot tell from noise does not replace the
hand-designed network); under "mean", the survivor with the best mean.  Each baseline gets a
verdict in words.

The race's whole state is one study attribute (``StudyAttr.RACE``), written after every
(entrant, block), so a search killed mid-race resumes it and reaches the same pick; the
entrants are fixed when the race starts.

    >>> block_seeds(0, 0) != block_seeds(0, 1)
    True
"""

from __future__ import annotations

import dataclasses
import math
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import optuna
import torch

from .. import graph
from ..config import RunConfig
from ..data import Dataset
from ..data.episodes import episode_samplers
from ..learners import Diverged, evaluate_episodes, learner_for, meta_train
from ..record import Attr, StudyAttr, best_trials, counted_trials
from ..stats import Difference, blocked_differences

__all__ = [
    "Entrant",
    "race_entrants",
    "run_race",
    "block_seeds",
    "race_state",
    "race_pick",
    "pick_by_rule",
    "race_summary",
    "verdict_lines",
]

# The race's streams: neither a trial's seeds nor the search's validation episodes.
RACE_SEED_OFFSET = 1_299_709
RACE_VAL_OFFSET = 2_750_159


@dataclass(frozen=True)
class Entrant:
    """One architecture in the race: a study's trial, a baseline, or both (a baseline the search found)."""

    key: str  # "trial-12" or "baseline-conv4": the name its results are stored under
    label: str  # "#12", "conv4", "conv4 (#3)": how lines name it
    arch: dict[str, Any]  # node-link JSON
    fingerprint: str
    trial: int | None = None
    baseline: str | None = None
    search_score: float | None = None

    @classmethod
    def from_dict(cls, doc: dict[str, Any]) -> Entrant:
        return cls(**doc)


def block_seeds(run_seed: int, block: int) -> tuple[int, int]:
    """(training seed, validation-episode seed) of race block ``block``: the initial weights and the
    training episodes of every entrant in the block come from the first, its scores from the second."""
    train = (run_seed * 1_000_003 + block * 7_927 + RACE_SEED_OFFSET) % (2**31 - 1)
    return train, (run_seed * 1_000_003 + block * 7_933 + RACE_VAL_OFFSET) % (2**31 - 1)


def race_entrants(study: optuna.Study, cfg: RunConfig, task: str, baselines: list[tuple[str, dict]]) -> list[Entrant]:
    """The ``cfg.search.race`` best distinct completed trials by search score, then the baselines
    (name, arch JSON); a baseline the search also trained is one entrant, named both ways."""
    entrants: list[Entrant] = []
    for t in best_trials(study, task, k=cfg.search.race):
        number = t.number
        entrants.append(
            Entrant(
                key=f"trial-{number}",
                label=f"#{number}",
                arch=t.user_attrs[Attr.ARCH],
                fingerprint=t.user_attrs[Attr.FINGERPRINT],
                trial=number,
                search_score=t.values[0],
            )
        )
    for name, doc in baselines:
        fingerprint = graph.fingerprint(graph.from_json(doc))
        same = next((i for i, e in enumerate(entrants) if e.fingerprint == fingerprint), None)
        if same is not None:
            e = entrants[same]
            entrants[same] = dataclasses.replace(e, baseline=name, label=f"{name} ({e.label})")
            continue
        entrants.append(Entrant(key=f"baseline-{name}", label=name, arch=doc, fingerprint=fingerprint, baseline=name))
    return entrants


def race_state(study: optuna.Study) -> dict[str, Any] | None:
    """The study's race (None for a study without one)."""
    return study.user_attrs.get(StudyAttr.RACE)


def race_pick(state: dict[str, Any] | None) -> Entrant | None:
    """The finished race's pick (None when there is no finished race)."""
    if not state or not state.get("done") or state.get("pick") is None:
        return None
    return next(Entrant.from_dict(e) for e in state["entrants"] if e["key"] == state["pick"])


def race_summary(state: dict[str, Any], task: str) -> dict[str, Any]:
    """What an export card says of the race's pick: its mean over blocks and the verdicts."""
    pick = state["pick"]
    means = _block_means(state, pick)
    return {
        "mean": statistics.fmean(means),
        "blocks": len(means),
        "episodes_per_block": state["settings"]["episodes"],
        "iterations": state["settings"]["iterations"],
        "verdicts": [v["text"] for v in state.get("verdicts", [])],
    }


def _block_means(state: dict[str, Any], key: str) -> list[float]:
    means = []
    for block in range(state["settings"]["blocks"]):
        result = state["scores"].get(f"{key}/{block}")
        if result is None:
            break
        means.append(result["mean"])
    return means


def _difference(state: dict[str, Any], a: str, b: str, sign: float) -> Difference:
    """Entrant ``a``'s difference over ``b`` in gains (``sign``: +1 accuracy, -1 MSE), over the
    blocks both ran, the noise pooled over every entrant that ran them too (a randomized
    complete block design: ``nas_meta.stats.blocked_differences``)."""
    n = min(len(_block_means(state, a)), len(_block_means(state, b)))
    rows = {}
    for e in state["entrants"]:
        means = _block_means(state, e["key"])
        if len(means) >= n:
            rows[e["key"]] = [sign * v for v in means[:n]]
    return blocked_differences(rows, b)[a]


def run_race(
    study: optuna.Study,
    cfg: RunConfig,
    dataset: Dataset,
    device: torch.device,
    baselines: list[tuple[str, dict]],
    *,
    log: Callable[[str], None] = lambda line: None,
    step: Callable[[int, int, float | None], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> dict[str, Any] | None:
    """Run (or resume, or read) the study's race; returns its state (None when the study has no
    completed trial to race).  ``step`` hears each training step; ``should_stop()`` True raises
    KeyboardInterrupt at the next step (what is done stays in the study)."""
    task = dataset.task
    state = race_state(study)
    held = len(counted_trials(study))
    if state is not None and state.get("trials", held) != held:
        # The study grew since its race: race its best again.  Block results of entrants that stay
        # are kept: a block's seeds are the same, so training them again would give the same numbers.
        state = _new_race(study, cfg, task, baselines, held, carry=state["scores"])
        if state is None:
            return None
        log(_start_line(state))
    if state is not None and state.get("done"):
        return state
    if state is None:
        state = _new_race(study, cfg, task, baselines, held, carry={})
        if state is None:
            return None
        log(_start_line(state))
    entrants = [Entrant.from_dict(e) for e in state["entrants"]]
    sign = 1.0 if task == "classification" else -1.0  # gains: higher is better on both tasks
    blocks = state["settings"]["blocks"]
    for block in range(blocks):
        alive = [e for e in entrants if e.key not in state["dropped"]]
        if len(alive) <= 1:
            break
        for e in alive:
            key = f"{e.key}/{block}"
            if key in state["scores"]:
                continue
            cpu, wall = time.process_time(), time.perf_counter()
            try:
                values = _score(cfg, e, block, dataset, device, step, should_stop)
            except (Diverged, torch.OutOfMemoryError) as exc:
                state["dropped"][e.key] = {"block": block, "reason": str(exc).splitlines()[0]}
            else:
                state["scores"][key] = {"mean": statistics.fmean(values), "episodes": [round(v, 6) for v in values]}
            state["cpu_seconds"] = round(state["cpu_seconds"] + time.process_time() - cpu, 2)
            state["wall_seconds"] = round(state["wall_seconds"] + time.perf_counter() - wall, 2)
            study.set_user_attr(StudyAttr.RACE, state)
        alive = [e for e in entrants if e.key not in state["dropped"]]
        leader = _leader(state, alive, sign)
        if leader is not None and block >= 1:
            for e in alive:
                if e.key == leader.key or e.key in state["dropped"]:
                    continue
                d = _difference(state, e.key, leader.key, sign)
                if d.behind():
                    state["dropped"][e.key] = {
                        "block": block,
                        "behind": leader.key,
                        "difference": sign * d.mean,
                        "ci95": d.ci95,
                    }
        study.set_user_attr(StudyAttr.RACE, state)
        log(_block_line(state, entrants, block, task))
    alive = [e for e in entrants if e.key not in state["dropped"]]
    leader = _leader(state, alive, sign)
    pick = _pick(state, entrants, alive, leader, sign)
    state["pick"] = pick.key if pick is not None else None
    state["verdicts"] = _verdicts(state, entrants, pick, task, leader=leader)
    state["done"] = True
    study.set_user_attr(StudyAttr.RACE, state)
    return state


def _new_race(
    study: optuna.Study,
    cfg: RunConfig,
    task: str,
    baselines: list[tuple[str, dict]],
    held: int,
    *,
    carry: dict[str, Any],
) -> dict[str, Any] | None:
    """A race's first state (stored in the study), or None when no trial completed."""
    entrants = race_entrants(study, cfg, task, baselines)
    if not any(e.trial is not None for e in entrants):
        return None
    keys = {e.key for e in entrants}
    state = {
        "settings": {
            "finalists": cfg.search.race,
            "iterations": cfg.race_iterations(),
            "blocks": cfg.search.race_blocks,
            "episodes": cfg.race_episodes(),
            "rule": cfg.search.race_rule,
            "test": "block design t (entrant + block effects, pooled noise); drop when the 95% interval is below 0",
        },
        "trials": held,  # counted trials of the study when the race began
        "entrants": [dataclasses.asdict(e) for e in entrants],
        "scores": {k: v for k, v in carry.items() if k.partition("/")[0] in keys},
        "dropped": {},
        "cpu_seconds": 0.0,
        "wall_seconds": 0.0,
        "done": False,
    }
    study.set_user_attr(StudyAttr.RACE, state)
    return state


def _start_line(state: dict[str, Any]) -> str:
    settings = state["settings"]
    labels = ", ".join(e["label"] for e in state["entrants"])
    return (
        f"race: {len(state['entrants'])} entrants ({labels}), up to {settings['blocks']} blocks of "
        f"{settings['iterations']} steps each, {settings['episodes']} fresh validation episodes per block"
    )


def _leader(state: dict[str, Any], alive: list[Entrant], sign: float) -> Entrant | None:
    """The entrant with the best mean block score (the earlier entrant on a tie)."""
    scored = [(e, _block_means(state, e.key)) for e in alive]
    scored = [(e, m) for e, m in scored if m]
    if not scored:
        return None
    return max(scored, key=lambda pair: sign * statistics.fmean(pair[1]))[0]


def _pick(
    state: dict[str, Any], entrants: list[Entrant], alive: list[Entrant], leader: Entrant | None, sign: float
) -> Entrant | None:
    """The race's pick under its rule (``settings["rule"]``; a race stored before rules were
    kept chose by the mean): the ``leader`` by the mean, or under "beats" the best candidate that
    is ahead of every baseline with 95% confidence (a baseline that failed before it scored a
    block is beaten), else the best baseline."""
    bases = [e for e in entrants if e.baseline is not None]
    if state["settings"].get("rule", "mean") == "mean" or leader is None or not bases:
        return leader

    def beats_all(e: Entrant) -> bool:
        return all(not _block_means(state, b.key) or _difference(state, e.key, b.key, sign).ahead() for b in bases)

    confident = [e for e in alive if e.baseline is None and beats_all(e)]
    if confident:
        return _leader(state, confident, sign)
    kept = [b for b in bases if b.key not in state["dropped"]]
    return _leader(state, kept, sign) or leader


def pick_by_rule(state: dict[str, Any], rule: str, task: str = "classification") -> str | None:
    """The key of the entrant a finished race's scores pick under ``rule`` (one of RACE_RULES),
    whichever rule the race itself ran with: to read one race under both."""
    entrants = [Entrant.from_dict(e) for e in state["entrants"]]
    alive = [e for e in entrants if e.key not in state["dropped"]]
    sign = 1.0 if task == "classification" else -1.0
    ruled = {**state, "settings": {**state["settings"], "rule": rule}}
    pick = _pick(ruled, entrants, alive, _leader(state, alive, sign), sign)
    return pick.key if pick is not None else None


def _score(
    cfg: RunConfig,
    entrant: Entrant,
    block: int,
    dataset: Dataset,
    device: torch.device,
    step: Callable[[int, int, float | None], None] | None,
    should_stop: Callable[[], bool] | None,
) -> list[float]:
    """Meta-train ``entrant`` from block ``block``'s seed for the race's steps and score it on the
    block's fresh validation episodes; per-episode scores."""
    seed, val_seed = block_seeds(cfg.seed, block)
    arch = graph.from_json(entrant.arch)
    # Each entrant trains as it was searched (its recipe).
    cfg, _, learner = learner_for(cfg, arch, dataset.input_shape, dataset.task, seed=seed, device=device)
    iterations = cfg.race_iterations()
    learner_cfg = dataclasses.replace(cfg.learner, iterations=iterations, eval_every=iterations)
    train, val = episode_samplers(cfg, dataset, seed, val_seed, device)

    def progress(done: int, total: int, value: float | None) -> None:
        if step is not None:
            step(done, total, value)
        if should_stop is not None and should_stop():
            raise KeyboardInterrupt

    meta_train(learner, train, None, learner_cfg, seed=seed, progress=progress)
    scores = evaluate_episodes(learner, val, cfg.race_episodes(), tasks_per_batch=cfg.learner.meta_batch)
    return [float(v) for v in scores]


def _format(value: float, task: str) -> str:
    return f"{100 * value:.1f}%" if task == "classification" else f"{value:.4f}"


def _block_line(state: dict[str, Any], entrants: list[Entrant], block: int, task: str) -> str:
    parts = []
    for e in entrants:
        result = state["scores"].get(f"{e.key}/{block}")
        if result is not None:
            part = f"{e.label} {_format(result['mean'], task)}"
            drop = state["dropped"].get(e.key)
            if drop is not None and drop["block"] == block:
                part += " (dropped)"
            parts.append(part)
    return f"race block {block + 1}/{state['settings']['blocks']}: " + ", ".join(parts)


def _amount(diff: float, half: float | None, task: str) -> str:
    """ "+1.3 ± 0.6 points" (accuracy) or "-0.0123 ± 0.0040 MSE"; without ``half``, no interval."""
    if task == "classification":
        return f"{100 * diff:+.1f}" + (f" ± {100 * half:.1f}" if half is not None else "") + " points"
    return f"{diff:+.4f}" + (f" ± {half:.4f}" if half is not None else "") + " MSE"


def _verdicts(
    state: dict[str, Any], entrants: list[Entrant], pick: Entrant | None, task: str, *, leader: Entrant | None = None
) -> list[dict[str, Any]]:
    """One verdict per baseline: the pick's paired difference to it over their common blocks (where
    a baseline is the pick though a candidate led on the mean, that candidate's lead too)."""
    sign = 1.0 if task == "classification" else -1.0
    out: list[dict[str, Any]] = []
    for base in (e for e in entrants if e.baseline is not None):
        name = base.baseline
        if pick is None:
            out.append({"baseline": name, "text": f"no entrant finished the race: nothing beat {name}"})
            continue
        if pick.key == base.key:
            text = f"no candidate beat {name}: {name} is the pick"
            if leader is not None and leader.key != base.key and leader.baseline is None:
                d = _difference(state, leader.key, base.key, sign)
                half = d.ci95 if d.n >= 2 and math.isfinite(d.ci95) else None
                text = (
                    f"no candidate beat {name} with 95% confidence: {name} is the pick ({leader.label} led it by "
                    f"{_amount(sign * d.mean, half, task)} over {d.n} training seed(s), not enough)"
                )
            if base.trial is not None:
                text += f" (the search found it too: trial #{base.trial})"
            out.append({"baseline": name, "difference": 0.0, "ci95": 0.0, "blocks": 0, "beats": False, "text": text})
            continue
        d = _difference(state, pick.key, base.key, sign)
        diff = sign * d.mean
        seeds = f"95% CI over {d.n} training seeds"
        if d.n < 2 or not math.isfinite(d.ci95):
            text = f"{pick.label} leads {name} by {_amount(diff, None, task)} (one block: no interval)"
        elif d.ahead():
            text = f"{pick.label} beats {name} by {_amount(diff, d.ci95, task)} ({seeds})"
        else:
            text = f"{pick.label} and {name} are not told apart: {_amount(diff, d.ci95, task)} ({seeds})"
        out.append(
            {"baseline": name, "difference": diff, "ci95": d.ci95, "blocks": d.n, "beats": d.ahead(), "text": text}
        )
    return out


def verdict_lines(state: dict[str, Any] | None, task: str, *, trial_seconds: float | None = None) -> list[str]:
    """What a finished race says, for the end of a search and for ``analyze``; ``trial_seconds``
    (the trials' training time) is set beside the race's cost."""
    if not state or not state.get("done"):
        return []
    pick = race_pick(state)
    entrants = {e["key"]: e for e in state["entrants"]}
    lines = []
    if pick is not None:
        means = _block_means(state, pick.key)
        lines.append(
            f"race pick: {pick.label}, {_format(statistics.fmean(means), task)} over {len(means)} block(s) "
            f"of fresh validation episodes"
            + (f" (search score {_format(pick.search_score, task)})" if pick.search_score is not None else "")
        )
    for key, drop in state["dropped"].items():
        who = entrants[key]["label"]
        if "reason" in drop:
            lines.append(f"race: {who} failed in block {drop['block'] + 1}: {drop['reason']}")
        else:
            lines.append(
                f"race: {who} dropped after block {drop['block'] + 1}, behind {entrants[drop['behind']]['label']} "
                f"by {_amount(drop['difference'], drop['ci95'], task)}"
            )
    lines += [v["text"] for v in state.get("verdicts", [])]
    cost = f"race cost: {state['cpu_seconds']:.0f} CPU s ({state['wall_seconds']:.0f} s wall)"
    if trial_seconds is not None:
        cost += f"; the trials trained for {trial_seconds:.0f} s"
    lines.append(cost)
    return lines
