"""Progress of a search for a person watching: trial i of N, current and best score, elapsed time.

On a terminal the step counter of the running phase (a trial, the supernet or DARTS network, a
race entrant) is rewritten in place; in a log file (CI, a cluster job) only whole lines are
written: each change of the validation score, a line at least every ``PROGRESS_LINE_SECONDS``
between them (a long phase is never silent), and each finished trial. :class:`StepMeter` holds
the rule and the common part of a step line (step, steps per second, last validation score,
elapsed and remaining time) for these printers and for the CLI's (evaluate, export --retrain).
"""

from __future__ import annotations

import datetime
import sys
import time
from collections.abc import Callable
from typing import TextIO

import optuna
from optuna.trial import FrozenTrial, TrialState

from ..record import Attr, best_trials, counted_trials, format_count, format_score

__all__ = ["PROGRESS_LINE_SECONDS", "SearchProgress", "StepMeter", "format_seconds"]

PROGRESS_LINE_SECONDS = 30.0  # in a log, a step line at least this often (and at each new validation score)


def format_seconds(seconds: float) -> str:
    seconds = int(round(seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def format_rate(rate: float) -> str:
    """Steps per second: one decimal from 1 up, two significant digits below (0.05, 0.0012)."""
    return f"{rate:.1f}" if rate >= 1 else f"{rate:.2g}"


class StepMeter:
    """Rate, remaining time and when to write a line, for training that reports every step.

    Feed it ``update(step, total, val)`` after each step: it answers whether the printer should
    write now (on a terminal, every step: the line is rewritten in place; in a log, when the
    validation score changes, and otherwise once ``every`` seconds have passed since the last
    line), and :meth:`text` is then the common part of the line,
    ``step 120/900  3.1 steps/s  val acc 91.2%  elapsed 0:38  left 4:11``.

    A phase (a trial, the supernet, a race entrant, an evaluate run) starts at :meth:`restart`,
    or by itself when the step count goes back (a new trial or entrant) or the total changes.
    Steps per second are counted from the phase's first reported step (no rate, and no remaining
    time, until a second one); elapsed time runs from the phase's start. ``clock`` is injectable
    (tests use a fake one).
    """

    def __init__(
        self,
        tty: bool,
        *,
        clock: Callable[[], float] = time.perf_counter,
        every: float = PROGRESS_LINE_SECONDS,
    ) -> None:
        self.tty = tty
        self.clock = clock
        self.every = every
        now = clock()
        self._line_at = now  # when the last whole line was written (a log)
        self.restart(now)

    def restart(self, now: float | None = None) -> None:
        """A new phase starts: its steps, rate and validation score are counted afresh."""
        self._start = self.clock() if now is None else now
        self._first: tuple[int, float] | None = None  # (step, time) of the phase's first step
        self._step: int | None = None
        self._total = 0
        self._now = self._start
        self.val: float | None = None  # the phase's last validation score

    def wrote_line(self) -> None:
        """The printer wrote another whole line (a finished trial): the wait restarts."""
        self._line_at = self.clock()

    def update(self, step: int, total: int, val: float | None) -> bool:
        """Step ``step`` of ``total`` is done (``val``: a validation score, or None); True when
        the printer should write its line now."""
        now = self.clock()
        if self._step is not None and (step <= self._step or total != self._total):
            self.restart(now)
        if self._first is None:
            self._first = (step, now)
        self._step, self._total, self._now = step, total, now
        changed = val is not None and val != self.val
        if val is not None:
            self.val = val
        if self.tty:
            return True
        if changed or now - self._line_at >= self.every:
            self._line_at = now
            return True
        return False

    def rate(self) -> float | None:
        """Steps per second since the phase's first reported step; None before a second one."""
        if self._first is None or self._step is None:
            return None
        first_step, first_time = self._first
        if self._step <= first_step or self._now <= first_time:
            return None
        return (self._step - first_step) / (self._now - first_time)

    def remaining(self) -> float | None:
        """Seconds left at the current rate; None without a rate."""
        rate = self.rate()
        if rate is None or self._step is None:
            return None
        return max(self._total - self._step, 0) / rate

    def elapsed(self) -> float:
        return self._now - self._start

    def text(self, score: str | None = None) -> str:
        """``step s/N  r steps/s  <score>  elapsed e  left l`` (rate and left once known;
        ``score``, e.g. ``val acc 91.2%`` or ``loss 0.532``, where given)."""
        parts = [f"step {self._step}/{self._total}"]
        rate = self.rate()
        if rate is not None:
            parts.append(f"{format_rate(rate)} steps/s")
        if score:
            parts.append(score)
        parts.append(f"elapsed {format_seconds(self.elapsed())}")
        left = self.remaining()
        if left is not None:
            parts.append(f"left {format_seconds(left)}")
        return "  ".join(parts)


class SearchProgress:
    """Hooks for :class:`~nas_meta.search.objective.Objective` and an Optuna trial callback."""

    def __init__(
        self,
        total: int,
        task: str,
        stream: TextIO | None = None,
        *,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        self.stream = stream or sys.stderr
        self.total = total
        self.index = 0  # counted trials in the study (all workers), as of the last finished trial
        self.task = task
        self.metric = "acc" if task == "classification" else "mse"
        self.clock = clock
        self.start = clock()
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.meter = StepMeter(self.tty, clock=clock)
        self._number: int | None = None
        self._dirty = False
        # Trials other processes of the search finish are told at this one's next finished trial.
        self._since = datetime.datetime.now()
        self._told: set[int] = set()

    def _write(self, text: str) -> None:
        if self._dirty:
            self.stream.write("\r\033[K")
            self._dirty = False
        self.stream.write(text + "\n")
        self.stream.flush()

    def _show(self, text: str, *, last: bool = False) -> None:
        """A step line: rewritten in place on a terminal (cleared after the ``last`` step of a
        phase, so what is printed next starts on a clean line), a whole line in a log."""
        if not self.tty:
            self._write(text)
            return
        self.stream.write("\r\033[K" if last else f"\r\033[K{text}")
        self.stream.flush()
        self._dirty = not last

    def _score(self) -> str | None:
        val = self.meter.val
        return None if val is None else f"val {self.metric} {format_score(val, self.task)}"

    def trial_started(self, number: int, done: int) -> None:
        self.index = done
        self._number = number
        self.meter.restart()

    def step(self, step: int, total: int, val: float | None) -> None:
        """A step of the running trial (the trial's own rate and times)."""
        if self.meter.update(step, total, val):
            head = f"  trial {self.index + 1}/{self.total} (#{self._number})"
            self._show(f"{head}  {self.meter.text(self._score())}")

    def supernet_step(self, step: int, total: int, loss: float) -> None:
        """Meta-training of the supernet or the DARTS network (search --strategy supernet|darts)."""
        if self.meter.update(step, total, None):
            self._show(f"  supernet {self.meter.text(f'loss {loss:.3f}')}", last=step == total)

    def race_step(self, step: int, total: int, val: float | None) -> None:
        """Meta-training of a race entrant (each entrant a phase of its own)."""
        if self.meter.update(step, total, val):
            self._show(f"  race {self.meter.text(self._score())}", last=step == total)

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
        self._tell_others(study, trial.number)
        best = next(iter(best_trials(study, self.task, k=1)), None)
        best_text = f"best {format_score(best.values[0], self.task)} (#{best.number})" if best else "best -"
        self._write(
            f"trial {self.index}/{self.total} (#{trial.number})  {self.metric} "
            f"{format_score(value, self.task)}  {best_text}  "
            f"params {format_count(trial.user_attrs.get('params'))}  "
            f"{trial.user_attrs.get('seconds', 0):.1f}s  "
            f"elapsed {format_seconds(self.clock() - self.start)}{note}"
        )
        self.meter.wrote_line()

    def _tell_others(self, study: optuna.Study, own: int) -> None:
        """One line per candidate another process of the search trained and finished since this
        one started (its own trials are told by their own lines)."""
        self._told.add(own)
        finished = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL))
        for t in finished:
            if t.number in self._told or t.datetime_complete is None or t.datetime_complete < self._since:
                continue
            self._told.add(t.number)
            if Attr.DUPLICATE_OF in t.user_attrs or t.user_attrs.get(Attr.SURPLUS):
                continue
            state = "" if t.state == TrialState.COMPLETE else f"  {t.state.name.lower()}"
            value = format_score(t.values[0], self.task) if t.values else "-"
            self._write(
                f"  #{t.number} (another process)  {self.metric} {value}  "
                f"params {format_count(t.user_attrs.get('params'))}  {t.user_attrs.get('seconds', 0):.1f}s{state}"
            )
