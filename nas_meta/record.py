"""The record of a search: every key a trial or a study carries, in one place, and the reads of it.

A study's trials are Optuna trials; what nas_meta knows about each is in its user attributes,
under the keys of :class:`Attr` (written by the search, read by analyze, export and plots).  The
study itself carries the run config and the task under :class:`StudyAttr`.  No torch here.

    >>> Attr.FINGERPRINT == "fingerprint"
    True
    >>> metric_column("regression")
    'val_mse'
"""

from __future__ import annotations

from enum import StrEnum

import optuna
import pandas as pd
from optuna.trial import FrozenTrial, TrialState

__all__ = [
    "Attr",
    "StudyAttr",
    "FORMAT_VERSION",
    "TRIAL_COLUMNS",
    "metric_column",
    "format_score",
    "format_count",
    "counted_trials",
    "best_trials",
    "trials_frame",
]


class Attr(StrEnum):
    """User-attribute keys of a trial."""

    FINGERPRINT = "fingerprint"  # Weisfeiler-Lehman hash of the architecture graph
    ARCH = "arch"  # the architecture, versioned node-link JSON
    PARAMS = "params"  # parameter count of the backbone
    FLOPS = "flops"  # forward FLOPs of one example
    VMAP_CHUNK = "vmap_chunk"  # tasks per vmap call after out-of-memory halvings (absent: the whole meta-batch)
    SECONDS = "seconds"  # wall seconds of meta-training (or of the proxy, for a screening trial)
    CURVE = "curve"  # [[step, validation score], ...] at each checkpoint (pruned trials keep theirs)
    WEIGHTS_STEP = "weights_step"  # the step whose weights the score comes from
    RUNGS = "rungs"  # [[step, validation episodes], ...] of successive halving
    DUPLICATE_OF = "duplicate_of"  # the trial this architecture was trained in (score reused; not counted)
    # Set with duplicate_of when that trial was still training: pruned without a score, not counted.
    DUPLICATE_OF_RUNNING = "duplicate_of_running"
    UNSTUCK = "unstuck"  # a random draw queued after this many duplicates in a row
    PRUNED_AT = "pruned_at"  # the step a pruner stopped the trial at
    FAILURE = "failure"  # why the candidate failed (diverged, out of memory, timeout): counts as a trial
    INTERRUPTED = "interrupted"  # stopped through no fault of the candidate (Ctrl-C, a dead worker): retried
    SURPLUS = "surplus"  # started by a worker after the budget was taken: not counted
    WORKER = "worker"  # "<host>:<pid>:<process start time>" of the process running the trial
    ENQUEUED_ARCH = "enqueued_arch"  # architecture JSON of a trial queued by --enqueue / --baseline
    BASELINE = "baseline"  # the name it was queued under (file stem or space name)
    DERIVED = "derived"  # --strategy darts: {"strategy", "steps"} of the search that derived the trial's choices
    SCREENING = "screening"  # {proxy, value}: scored by a training-free proxy only, never counted
    PROMOTED_TO = "promoted_to"  # on a pool's winner: the trial that meta-trained it
    PROMOTED_FROM = "promoted_from"  # on that trial: {trial, proxy, value, pool}


class StudyAttr(StrEnum):
    """User-attribute keys of a study."""

    CONFIG = "nas_meta:config"  # the run's whole config (RunConfig.to_dict)
    TASK = "nas_meta:task"  # "classification" (score: accuracy, up) or "regression" (MSE, down)
    FORMAT = "nas_meta:format"  # FORMAT_VERSION of the record
    SUPERNET = "nas_meta:supernet"  # --strategy supernet: its steps, CPU seconds and last loss
    # The final race (search/race.py): its settings, entrants, each (entrant, block) result, who
    # was dropped when, the pick, a verdict per baseline and what it cost; absent without a race.
    RACE = "nas_meta:race"
    SPACE = "nas_meta:space"  # the parsed space the study started with and its hash (search/study.py space_record)


FORMAT_VERSION = 1

TRIAL_COLUMNS = [
    "number",
    "state",
    "fingerprint",
    "params",
    "flops",
    "seconds",
    "duplicate_of",
    "pruned_at",
    "failure",
    "surplus",
    "baseline",
    "interrupted",
    "screened",
    "promoted_to",
    "derived",
]


def metric_column(task: str) -> str:
    return "val_acc" if task == "classification" else "val_mse"


def format_score(value: float | None, task: str) -> str:
    """Accuracy as a percentage, MSE with four decimals, '-' for none."""
    if value is None or pd.isna(value):
        return "-"
    return f"{100 * value:.1f}%" if task == "classification" else f"{value:.4f}"


def format_count(n: float | None) -> str:
    """12345 -> '12.3k'."""
    if n is None or pd.isna(n):
        return "-"
    for unit, size in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= size:
            return f"{n / size:.1f}{unit}"
    return str(int(n))


def counted_trials(study: optuna.Study) -> list[FrozenTrial]:
    """Trials that use up the budget: finished ones, and failures that were the candidate's fault.
    Screening trials never count, nor do duplicates (an architecture already trained, whose score
    is copied, or pruned while another process trained it): ``--trials`` counts distinct trained
    candidates."""
    out = []
    for t in study.get_trials(deepcopy=False):
        attrs = t.user_attrs
        if Attr.SCREENING in attrs or Attr.DUPLICATE_OF in attrs or Attr.DUPLICATE_OF_RUNNING in attrs:
            continue
        if t.state in (TrialState.COMPLETE, TrialState.PRUNED):
            out.append(t)
        elif t.state == TrialState.FAIL and Attr.FAILURE in t.user_attrs:
            out.append(t)
    return out


def best_trials(study: optuna.Study, task: str, k: int = 1) -> list[FrozenTrial]:
    """The k best distinct completed trials by validation score (ties: the earlier trial first);
    a duplicate (an architecture already trained) stands behind its original."""
    done = [
        t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)) if "duplicate_of" not in t.user_attrs
    ]
    sign = -1.0 if task == "classification" else 1.0
    return sorted(done, key=lambda t: (sign * t.values[0], t.number))[:k]


def trials_frame(study: optuna.Study, task: str = "classification") -> pd.DataFrame:
    """One row per trial: number, state, score, params, FLOPs, fingerprint, seconds, notes, and
    the architecture choices as ``choice:<name>`` columns.  Exactly the study's trials, in order.
    A pruned trial's score is its last reported validation score.  A screening trial (scored by a
    training-free proxy only, see search/screening.py) has no score: its ``screened`` column holds
    ``proxy=value`` instead, and ``promoted_to`` the trial that meta-trained it if it won its pool."""
    metric = metric_column(task)
    rows = []
    for t in study.get_trials(deepcopy=False):
        attrs = t.user_attrs
        screening = attrs.get("screening")
        value = t.values[0] if t.values and screening is None else None
        if value is None and attrs.get("curve"):
            value = attrs["curve"][-1][1]
        row = {
            "number": t.number,
            "state": t.state.name,
            metric: value,
            "fingerprint": attrs.get("fingerprint"),
            "params": attrs.get("params"),
            "flops": attrs.get("flops"),
            "seconds": attrs.get("seconds"),
            "duplicate_of": attrs.get("duplicate_of"),
            "pruned_at": attrs.get("pruned_at"),
            "failure": attrs.get("failure"),
            "surplus": bool(attrs.get("surplus", False)),
            "baseline": attrs.get("baseline"),
            "interrupted": attrs.get("interrupted") or t.system_attrs.get("interrupted"),
            "screened": _screened(screening),
            "promoted_to": attrs.get("promoted_to"),
            "derived": _derived(attrs.get(Attr.DERIVED)),
        }
        row.update({f"choice:{k}": v for k, v in t.params.items()})
        rows.append(row)
    columns = ["number", "state", metric] + TRIAL_COLUMNS[2:]
    frame = pd.DataFrame(rows)
    if frame.empty:
        return pd.DataFrame(columns=columns)
    choice_cols = sorted(c for c in frame.columns if c.startswith("choice:"))
    frame = frame[columns + choice_cols]
    for col in ("params", "flops", "duplicate_of", "pruned_at", "promoted_to"):
        frame[col] = frame[col].astype("Int64")
    frame[metric] = frame[metric].astype(float)
    return frame


def _derived(derived: dict | None) -> str | None:
    return f"{derived['strategy']} after {derived['steps']} steps" if isinstance(derived, dict) else None


def _screened(screening: dict | None) -> str | None:
    if not screening or "value" not in screening:
        return f"{screening['proxy']}=?" if screening else None
    return f"{screening['proxy']}={screening['value']:.4g}"
