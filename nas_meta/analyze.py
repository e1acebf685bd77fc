"""Trials of studies as pandas tables, and the tables as Markdown, CSV or LaTeX.

    >>> frame = trials_frame(study, "classification")      # doctest: +SKIP
    >>> print(render(ranked_frame(study, "classification"), "md"))  # doctest: +SKIP

Plots live in :mod:`nas_meta.viz.study`.
"""

from __future__ import annotations

import io
import math
from typing import Any

import optuna
import pandas as pd
from optuna.trial import TrialState

from .record import (
    Attr,
    best_trials,
    format_count,
    format_score,
    metric_column,
    trials_frame,
)

__all__ = [
    "trials_frame",
    "ranked_frame",
    "summary_frame",
    "study_summary",
    "compare_frame",
    "render",
    "parse",
    "metric_column",
    "best_trials",
    "baseline_report",
    "format_score",
    "format_count",
    "FORMATS",
]

FORMATS = ("csv", "latex", "md")


def ranked_frame(study: optuna.Study, task: str, sampler: str = "") -> pd.DataFrame:
    """The analysis table: rank (completed, distinct trials by score), fingerprint, params, FLOPs,
    validation score, state, seconds, sampler, pruned-at step; best first, then the rest."""
    frame = trials_frame(study, task)
    metric = metric_column(task)
    if frame.empty:
        return pd.DataFrame(
            columns=[
                "rank",
                "number",
                "fingerprint",
                "params",
                "flops",
                metric,
                "state",
                "seconds",
                "sampler",
                "pruned_at",
            ]
        )
    frame = frame[~frame["surplus"]]
    rankable = (frame["state"] == "COMPLETE") & frame["duplicate_of"].isna()
    ascending = task != "classification"
    ranks = frame.loc[rankable, metric].rank(method="first", ascending=ascending).astype("Int64")
    frame = frame.assign(rank=ranks.reindex(frame.index).astype("Int64"), sampler=sampler)
    frame = frame.sort_values(["rank", "number"], na_position="last")
    return frame[
        ["rank", "number", "fingerprint", "params", "flops", metric, "state", "seconds", "sampler", "pruned_at"]
    ].reset_index(drop=True)


def summary_frame(frame: pd.DataFrame, task: str) -> pd.DataFrame:
    """The trials table for a terminal: formatted numbers, short fingerprints, one note column;
    surplus trials (started by a worker after the budget was taken) left out."""
    metric = metric_column(task)
    frame = frame[~frame["surplus"].astype(bool)] if len(frame) else frame

    def note(row: pd.Series) -> str:
        if isinstance(row["screened"], str):
            if not pd.isna(row["promoted_to"]):
                return f"screened {row['screened']}: best of its pool, trained as #{int(row['promoted_to'])}"
            if row["state"] == "FAIL":
                return f"screening interrupted ({row['screened']})"
            return f"screened out, {row['screened']}"
        if isinstance(row["baseline"], str):
            return f"baseline {row['baseline']}"
        if isinstance(row["derived"], str):
            return f"derived by {row['derived']}"
        if not pd.isna(row["duplicate_of"]):
            return f"duplicate of #{int(row['duplicate_of'])}"
        if not pd.isna(row["pruned_at"]):
            return f"pruned at step {int(row['pruned_at'])}"
        if isinstance(row["failure"], str):
            return row["failure"]
        if row["state"] == "FAIL":
            return row["interrupted"] if isinstance(row["interrupted"], str) else "interrupted"
        return ""

    return pd.DataFrame(
        {
            "trial": frame["number"],
            "state": frame["state"],
            metric: [format_score(v, task) for v in frame[metric]],
            "params": [format_count(v) for v in frame["params"]],
            "flops": [format_count(v) for v in frame["flops"]],
            "fingerprint": [f[:12] if isinstance(f, str) else "-" for f in frame["fingerprint"]],
            "seconds": [f"{v:.1f}" if not pd.isna(v) else "-" for v in frame["seconds"]],
            "note": [note(row) for _, row in frame.iterrows()],
        }
    )


def baseline_report(study: optuna.Study, task: str) -> list[str]:
    """One line per baseline: its score, and how far the best searched architecture beats it."""
    done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    searched = [t for t in done if Attr.BASELINE not in t.user_attrs]
    sign = 1.0 if task == "classification" else -1.0
    best = max(searched, key=lambda t: sign * t.values[0], default=None)
    lines = []
    for base in (t for t in done if Attr.BASELINE in t.user_attrs):
        line = (
            f"baseline {base.user_attrs['baseline']} (trial #{base.number}): "
            f"{format_score(base.values[0], task)}, params {format_count(base.user_attrs.get('params'))}"
        )
        if best is not None:
            gap = best.values[0] - base.values[0]
            unit = f"{100 * gap:+.1f} points" if task == "classification" else f"{gap:+.4f} MSE"
            line += f"; best searched (trial #{best.number}) {format_score(best.values[0], task)} ({unit})"
        lines.append(line)
    return lines


def study_summary(study: optuna.Study, task: str) -> dict[str, Any]:
    """Trials by state, best score and when it was reached, time spent, speed of the search."""
    trials = [t for t in study.get_trials(deepcopy=False) if not t.user_attrs.get(Attr.SURPLUS)]
    by_state = {s.name: sum(t.state == s for t in trials) for s in TrialState}
    best = best_trials(study, task, k=1)
    starts = [t.datetime_start for t in trials if t.datetime_start]
    ends = [t.datetime_complete for t in trials if t.datetime_complete]
    wall = (max(ends) - min(starts)).total_seconds() if starts and ends else 0.0
    train = sum(t.user_attrs.get(Attr.SECONDS, 0.0) for t in trials)
    finished = by_state["COMPLETE"] + by_state["PRUNED"] + by_state["FAIL"]
    order = sorted(trials, key=lambda t: t.number)
    return {
        "trials": len(trials),
        **{f"n_{k.lower()}": v for k, v in by_state.items() if k != "WAITING" or v},
        "best_score": best[0].values[0] if best else math.nan,
        "best_trial": best[0].number if best else None,
        "trials_to_best": (order.index(best[0]) + 1) if best else None,
        "training_seconds": round(train, 1),
        "wall_seconds": round(wall, 1),
        "trials_per_hour": round(3600.0 * finished / wall, 2) if wall > 0 else math.nan,
    }


def compare_frame(entries: list[tuple[optuna.Study, Any]]) -> pd.DataFrame:
    """One row per study: space, algo, sampler, dataset, best score, trials to reach it, time.

    ``entries`` pairs each study with its stored :class:`~nas_meta.config.RunConfig`."""
    rows = []
    for study, cfg in entries:
        task = "regression" if cfg.data.dataset == "sinusoid" else "classification"
        s = study_summary(study, task)
        rows.append(
            {
                "study": study.study_name,
                "space": cfg.search.space,
                "algo": cfg.learner.algo,
                "sampler": cfg.search.sampler,
                "dataset": cfg.data.dataset,
                "ways": cfg.data.ways,
                "shots": cfg.data.shots,
                "metric": metric_column(task),
                "best": s["best_score"],
                "trials": s["trials"],
                "trials_to_best": s["trials_to_best"],
                "wall_seconds": s["wall_seconds"],
            }
        )
    return pd.DataFrame(rows)


def _cell(value: Any) -> str:
    if value is None or (not isinstance(value, str) and pd.isna(value)):
        return ""
    if isinstance(value, float):
        return repr(value)  # full precision: the table parses back to the same numbers
    return str(value)


_TEX = {"&": r"\&", "%": r"\%", "_": r"\_", "#": r"\#", "$": r"\$"}


def _tex(s: str) -> str:
    s = s.replace("\\", "\x00")
    for plain, escaped in _TEX.items():
        s = s.replace(plain, escaped)
    return s.replace("\x00", r"\textbackslash{}")


def _untex(s: str) -> str:
    s = s.strip().replace(r"\textbackslash{}", "\x00")
    for plain, escaped in _TEX.items():
        s = s.replace(escaped, plain)
    return s.replace("\x00", "\\")


def render(frame: pd.DataFrame, fmt: str) -> str:
    """A table as CSV, GitHub Markdown, or a LaTeX ``tabular`` (booktabs)."""
    if fmt == "csv":
        return frame.to_csv(index=False)
    cols = list(frame.columns)
    cells = [[_cell(v) for v in row] for row in frame.itertuples(index=False)]
    if fmt == "md":
        esc = [[c.replace("|", "\\|") for c in row] for row in cells]
        lines = ["| " + " | ".join(cols) + " |", "|" + "|".join(" --- " for _ in cols) + "|"]
        lines += ["| " + " | ".join(row) + " |" for row in esc]
        return "\n".join(lines) + "\n"
    if fmt == "latex":
        lines = [
            r"\begin{tabular}{" + "l" * len(cols) + "}",
            r"\toprule",
            " & ".join(_tex(c) for c in cols) + r" \\",
            r"\midrule",
        ]
        lines += [" & ".join(_tex(c) for c in row) + r" \\" for row in cells]
        lines += [r"\bottomrule", r"\end{tabular}"]
        return "\n".join(lines) + "\n"
    raise ValueError(f"unknown format {fmt!r}; choose from {list(FORMATS)}")


def parse(text: str, fmt: str) -> pd.DataFrame:
    """Read back a table written by :func:`render` (for tests and for scripts that post-process)."""
    if fmt == "csv":
        return pd.read_csv(io.StringIO(text))
    if fmt == "md":
        rows = [line.strip().strip("|").split(" | ") for line in text.strip().splitlines()]
        header, body = [c.strip() for c in rows[0]], rows[2:]
        body = [[c.strip().replace("\\|", "|") for c in r] for r in body]
    elif fmt == "latex":
        lines = [ln for ln in text.strip().splitlines() if ln.endswith(r"\\")]
        split = [ln[: -len(r" \\")].split(" & ") for ln in lines]
        header, body = [_untex(c) for c in split[0]], [[_untex(c) for c in r] for r in split[1:]]
    else:
        raise ValueError(f"unknown format {fmt!r}; choose from {list(FORMATS)}")
    csv = io.StringIO()
    pd.DataFrame(body, columns=header).to_csv(csv, index=False)
    return pd.read_csv(io.StringIO(csv.getvalue()))
