"""Screening: many candidates scored in seconds by a training-free proxy, the best one meta-trained.

Before each meta-trained trial, ``screen`` asks the study's sampler for ``prescreen_pool``
candidates (ordinary Optuna trials, so the sampler sees them as it sees any trial), scores each
by the proxy on its untrained backbone, and:

* every candidate but the winner is told PRUNED at step 0 with its proxy score as the reported
  value, and keeps ``screening`` = {proxy, value} among its attributes: the study records it,
  ``analyze`` lists it, and TPE counts it among the worse trials (Optuna ranks pruned trials behind
  complete ones);
* the winner (the best proxy score among candidates not trained before) is queued as a new trial
  with the same choices and runs next through the normal objective; its screening trial is
  closed as FAIL with ``promoted_to`` (so its choices are not counted twice by the sampler).

Screening trials never use up the budget.  A search interrupted mid-screening fails the pool's
open trials (no retry: the next run draws a new pool); a winner already queued runs first on resume.
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import optuna
from optuna.trial import TrialState

from .. import graph
from ..config import RunConfig
from ..model import network
from ..record import Attr
from .proxies import compute_proxies
from .workers import worker_identity

__all__ = ["screen"]


def screen(study: optuna.Study, objective: Any) -> int:
    """Screen one pool and queue its winner; returns the winner's screening trial number."""
    cfg: RunConfig = objective.cfg
    proxy, pool = cfg.search.prescreen, cfg.search.prescreen_pool
    assert proxy is not None
    trained = {
        t.user_attrs.get(Attr.FINGERPRINT) for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    }
    open_trials: list[optuna.Trial] = []
    scored: list[tuple[float, bool, optuna.Trial]] = []  # (proxy value, new architecture, trial)
    seen: set[str] = set()
    try:
        for _ in range(pool):
            objective.hooks.check_stop()
            with warnings.catch_warnings():  # RDB storages warn that heartbeats need optimize()
                warnings.simplefilter("ignore", UserWarning)
                trial = study.ask()
            open_trials.append(trial)
            trial.set_user_attr(Attr.WORKER, worker_identity())
            trial.set_user_attr(Attr.SCREENING, {"proxy": proxy})
            arch = objective.space.draw(trial.suggest_categorical, objective.cfg.learner.algo)
            fingerprint = graph.fingerprint(arch)
            trial.set_user_attr(Attr.FINGERPRINT, fingerprint)
            trial.set_user_attr(Attr.ARCH, graph.to_json(arch))
            inputs = objective.proxy_inputs(arch, trial.number)
            value, seconds = compute_proxies(inputs, [proxy])[proxy]
            trial.set_user_attr(Attr.PARAMS, network.count_params(inputs.backbone))
            trial.set_user_attr(Attr.FLOPS, network.count_flops(inputs.backbone, inputs.input_shape))
            trial.set_user_attr(Attr.SECONDS, round(seconds, 3))
            trial.set_user_attr(Attr.SCREENING, {"proxy": proxy, "value": value})
            new = fingerprint not in trained and fingerprint not in seen
            seen.add(fingerprint)
            scored.append((value, new, trial))
    except BaseException:
        for trial in open_trials:
            trial.set_user_attr(Attr.INTERRUPTED, "interrupted while screening")
            study.tell(trial, state=TrialState.FAIL)
        raise
    # Best proxy score among new architectures (NaN last); ties: the earlier candidate.
    order = sorted(range(len(scored)), key=lambda i: (not scored[i][1], _nan_last(scored[i][0]), i))
    winner = scored[order[0]][2]
    for value, _new, trial in scored:
        if trial is winner:
            continue
        if math.isfinite(value):
            trial.report(value, 0)
        study.tell(trial, state=TrialState.PRUNED)
    promoted = {"trial": winner.number, "proxy": proxy, "value": scored[order[0]][0], "pool": pool}
    study.enqueue_trial(winner.params, user_attrs={Attr.PROMOTED_FROM: promoted})
    queued = [
        t.number
        for t in study.get_trials(deepcopy=False, states=(TrialState.WAITING,))
        if t.user_attrs.get(Attr.PROMOTED_FROM) == promoted
    ]
    winner.set_user_attr(Attr.PROMOTED_TO, queued[-1] if queued else None)
    study.tell(winner, state=TrialState.FAIL)
    return winner.number


def _nan_last(value: float) -> float:
    """Sort key: higher proxy first, NaN after every number."""
    return -value if not math.isnan(value) else math.inf
