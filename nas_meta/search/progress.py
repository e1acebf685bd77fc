"""Progress of a search for a person watching: trial i of N, current and best score, elapsed time.

On a terminal the step counter of the running trial is rewritten in place; in a log file (CI, a
cluster job) only whole lines are written: each validation checkpoint and each finished trial.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO

import optuna
from optuna.trial import FrozenTrial, TrialState

from ..record import Attr, best_trials, counted_trials, format_count, format_score

__all__ = ["SearchProgress", "format_seconds"]

SUPERNET_LINE_EVERY = 50  # supernet steps between lines in a log (a terminal shows every step)


def format_seconds(seconds: float) -> str:
    seconds = int(round(seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


RACE_LINE_SECONDS = 30.0  # a line at least this often while a race entrant trains, in a log


class SearchProgress:
    """Hooks for :class:`~nas_meta.search.objective.Objective` and an Optuna trial callback."""

    def __init__(self, total: int, task: str, stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stderr
        self.total = total
        self.index = 0  # counted trials in the study (all workers), as of the last finished trial
        self.task = task
        self.metric = "acc" if task == "classification" else "mse"
        self.start = time.perf_counter()
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self._number: int | None = None
        self._last_val: float | None = None
        self._dirty = False
        self._race_line = self.start

    def _write(self, text: str) -> None:
        if self._dirty:
            self.stream.write("\r\033[K")
            self._dirty = False
        self.stream.write(text + "\n")
        self.stream.flush()

    def trial_started(self, number: int, done: int) -> None:
        self.index = done
        self._number = number
        self._last_val = None

    def step(self, step: int, total: int, val: float | None) -> None:
        elapsed = format_seconds(time.perf_counter() - self.start)
        head = f"  trial {self.index + 1}/{self.total} (#{self._number})"
        if self.tty:
            self.stream.write(
                f"\r\033[K{head} step {step}/{total} val {self.metric} "
                f"{format_score(val, self.task)}  elapsed {elapsed}"
            )
            self.stream.flush()
            self._dirty = True
        elif val is not None and val != self._last_val:
            self._write(f"{head} step {step}/{total} val {self.metric} {format_score(val, self.task)}")
        self._last_val = val

    def supernet_step(self, step: int, total: int, loss: float) -> None:
        """Meta-training of the supernet (search --strategy supernet): in place on a terminal,
        a line per checkpoint block in a log."""
        elapsed = format_seconds(time.perf_counter() - self.start)
        text = f"  supernet step {step}/{total} loss {loss:.3f}  elapsed {elapsed}"
        if self.tty:
            self.stream.write(f"\r\033[K{text}")
            self.stream.flush()
            self._dirty = True
        elif step % SUPERNET_LINE_EVERY == 0 or step == total:
            self._write(text)

    def race_step(self, step: int, total: int, _val: float | None) -> None:
        """Meta-training of a race entrant: in place on a terminal, a line every
        RACE_LINE_SECONDS in a log (a long race is never silent)."""
        now = time.perf_counter()
        text = f"  race step {step}/{total}  elapsed {format_seconds(now - self.start)}"
        if self.tty:
            self.stream.write(f"\r\033[K{text}")
            self.stream.flush()
            self._dirty = True
        elif now - self._race_line >= RACE_LINE_SECONDS:
            self._race_line = now
            self._write(text)

    def trial_finished(self, study: optuna.Study, trial: FrozenTrial) -> None:
        if trial.user_attrs.get(Attr.SURPLUS):
            return  # not a trial of the search: other workers had already taken the budget
        counted = counted_trials(study)
        self.index = len(counted)
        note = ""
        if Attr.DUPLICATE_OF in trial.user_attrs:
            note = f"  duplicate of #{trial.user_attrs['duplicate_of']}, not retrained, not counted"
        elif trial.state == TrialState.PRUNED:
            note = f"  pruned at step {trial.user_attrs.get('pruned_at', '?')}"
        elif trial.state == TrialState.FAIL:
            note = f"  failed: {trial.user_attrs.get('failure', 'interrupted, will be retried')}"
        value = trial.values[0] if trial.values else None
        if trial.state == TrialState.PRUNED and trial.user_attrs.get(Attr.CURVE):
            value = trial.user_attrs[Attr.CURVE][-1][1]
        best = next(iter(best_trials(study, self.task, k=1)), None)
        best_text = f"best {format_score(best.values[0], self.task)} (#{best.number})" if best else "best -"
        self._write(
            f"trial {self.index}/{self.total} (#{trial.number})  {self.metric} "
            f"{format_score(value, self.task)}  {best_text}  "
            f"params {format_count(trial.user_attrs.get('params'))}  "
            f"{trial.user_attrs.get('seconds', 0):.1f}s  "
            f"elapsed {format_seconds(time.perf_counter() - self.start)}{note}"
        )
