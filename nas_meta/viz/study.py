"""Plots of searches (matplotlib, PNG): best score so far against trials and wall time, score
against parameters with the Pareto front, and which ops the best architectures use.

    >>> write_plots([(study, "classification")], "results/plots")   # doctest: +SKIP
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from .. import graph
from ..fileio import output_folder
from ..record import Attr
from .style import TEXT_SIZE, new_figure, save_png

__all__ = ["write_plots", "plot_best_so_far", "plot_score_vs_params", "plot_op_frequency", "op_counts"]

# Ops every architecture of a space has (inputs, merges, stems, a cell's preprocessing): they
# say nothing about which choices the best architectures made.
STRUCTURAL_OPS = {
    "input",
    "output",
    "identity",
    "concat",
    "sum",
    "flatten",
    "global_avg_pool",
    "relu_conv_bn_1x1",
    "conv_bn_3x3",
    "factorized_reduce",
}


def _completed(study: optuna.Study) -> list[FrozenTrial]:
    return sorted(
        (
            t
            for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
            if not t.user_attrs.get(Attr.SURPLUS)
        ),
        key=lambda t: t.number,
    )


def _ylabel(task: str) -> str:
    return "validation accuracy (%)" if task == "classification" else "validation MSE"


def _scale(task: str) -> float:
    return 100.0 if task == "classification" else 1.0


def _save(fig: Any, path: Path) -> Path:
    for ax in fig.axes:
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=TEXT_SIZE)
        else:  # an empty or all-failed study: say so instead of drawing empty axes silently
            ax.text(0.5, 0.5, "no completed trials", ha="center", va="center", transform=ax.transAxes)
    fig.tight_layout()
    return save_png(fig, path)


def plot_best_so_far(studies: list[tuple[optuna.Study, str]], path: Path) -> Path:
    """Best validation score so far against trial number (left) and wall time (right)."""
    fig, (by_trial, by_time) = new_figure(11, 4, cols=2)
    ylabel = _ylabel(studies[0][1]) if studies else "score"
    for study, task in studies:
        trials = _completed(study)
        if not trials:
            continue
        better = max if task == "classification" else min
        best, xs, ts, ys = None, [], [], []
        t0 = min(t.datetime_start for t in study.get_trials(deepcopy=False) if t.datetime_start is not None)
        for t in trials:
            best = t.values[0] if best is None else better(best, t.values[0])
            xs.append(t.number + 1)
            done = t.datetime_complete or t0  # a completed trial has its time; the fallback is for the type checker
            ts.append((done - t0).total_seconds() / 60.0)
            ys.append(best * _scale(task))
        by_trial.step(xs, ys, where="post", marker="o", ms=3, label=study.study_name)
        by_time.step(ts, ys, where="post", marker="o", ms=3, label=study.study_name)
    for ax, xlabel in ((by_trial, "trial"), (by_time, "wall time (minutes)")):
        ax.set_xlabel(xlabel)
        ax.set_ylabel(f"best {ylabel}")
        ax.grid(alpha=0.3)
    by_trial.set_title("best so far, by trial")
    by_time.set_title("best so far, by wall time")
    return _save(fig, path)


def pareto_front(points: list[tuple[float, float]], maximize: bool) -> list[tuple[float, float]]:
    """(params, score) points not dominated by any other (fewer params and better score)."""
    sign = 1.0 if maximize else -1.0
    front, best = [], None
    for params, score in sorted(points, key=lambda p: (p[0], -sign * p[1])):
        if best is None or sign * score > sign * best:
            front.append((params, score))
            best = score
    return front


def plot_score_vs_params(studies: list[tuple[optuna.Study, str]], path: Path) -> Path:
    """Each completed trial's validation score against its parameter count; the Pareto front."""
    fig, ax = new_figure(6.5, 4.5)
    for study, task in studies:
        pts = [
            (t.user_attrs[Attr.PARAMS], t.values[0])
            for t in _completed(study)
            if Attr.PARAMS in t.user_attrs and Attr.DUPLICATE_OF not in t.user_attrs
        ]
        if not pts:
            continue
        s = _scale(task)
        sc = ax.scatter([p for p, _ in pts], [v * s for _, v in pts], s=18, alpha=0.6, label=study.study_name)
        front = pareto_front(pts, maximize=task == "classification")
        ax.step(
            [p for p, _ in front],
            [v * s for _, v in front],
            where="post",
            color=sc.get_facecolor()[0],
            lw=1.5,
            label=f"{study.study_name}: Pareto front",
        )
        ax.set_ylabel(_ylabel(task))
    ax.set_xscale("log")
    ax.set_xlabel("parameters")
    ax.set_title("score against size")
    ax.grid(alpha=0.3, which="both")
    return _save(fig, path)


def op_counts(trials: list[FrozenTrial]) -> Counter:
    """How many times each (non-structural) op occurs over the trials' architectures."""
    counts: Counter = Counter()
    for t in trials:
        if Attr.ARCH not in t.user_attrs:
            continue
        arch = graph.from_json(t.user_attrs[Attr.ARCH])
        counts.update(op for _, op in arch.nodes(data="op") if op and op not in STRUCTURAL_OPS)
    return counts


def plot_op_frequency(study: optuna.Study, task: str, path: Path, top_fraction: float = 0.1) -> Path:
    """Share of each op among the ops of the top ``top_fraction`` trials against all trials."""
    trials = [t for t in _completed(study) if Attr.DUPLICATE_OF not in t.user_attrs]
    sign = -1.0 if task == "classification" else 1.0
    ranked = sorted(trials, key=lambda t: sign * t.values[0])
    top = ranked[: max(1, round(top_fraction * len(ranked)))] if ranked else []
    every, best = op_counts(trials), op_counts(top)
    ops = sorted(every, key=lambda op: -every[op])
    n_all, n_top = sum(every.values()) or 1, sum(best.values()) or 1
    fig, ax = new_figure(max(6.0, 0.7 * len(ops) + 2), 4.2)
    xs = range(len(ops))
    ax.bar([x - 0.2 for x in xs], [100 * every[o] / n_all for o in ops], width=0.4, label=f"all {len(trials)} trials")
    ax.bar(
        [x + 0.2 for x in xs],
        [100 * best[o] / n_top for o in ops],
        width=0.4,
        label=f"top {100 * top_fraction:.0f}% ({len(top)} trial{'s' if len(top) != 1 else ''})",
    )
    ax.set_xticks(list(xs), ops, rotation=30, ha="right")
    ax.set_ylabel("share of ops (%)")
    ax.set_title(f"ops in the best architectures: {study.study_name}")
    ax.grid(alpha=0.3, axis="y")
    return _save(fig, path)


def write_plots(studies: list[tuple[optuna.Study, str]], out: str | Path) -> list[Path]:
    """All plots for these studies into ``out``; returns the files written."""
    with output_folder(out) as folder:  # a folder made here goes again when a plot cannot be written
        paths = [
            plot_best_so_far(studies, folder / "best_so_far.png"),
            plot_score_vs_params(studies, folder / "score_vs_params.png"),
        ]
        for study, task in studies:
            paths.append(plot_op_frequency(study, task, folder / f"ops_{study.study_name}.png"))
    return paths
