"""Progress lines of long commands (search trials, supernet/DARTS, race, evaluate/export --retrain):
a line at least every PROGRESS_LINE_SECONDS in a log, rate and remaining time, in place on a
terminal. A fake clock throughout: nothing sleeps, nothing trains."""

from __future__ import annotations

import io
import itertools
from collections.abc import Callable

import pytest

from nas_meta.cli.common import step_printer
from nas_meta.search.progress import PROGRESS_LINE_SECONDS, SearchProgress, StepMeter, format_seconds


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


Printer = Callable[[int, int, "float | None"], None]


def printer(kind: str, stream: io.StringIO, clock: Clock) -> Printer:
    """The progress callback of each long command, as meta_train calls it."""
    if kind == "evaluate":  # evaluate and export --retrain
        return step_printer(stream, task="classification", clock=clock)
    progress = SearchProgress(total=5, task="classification", stream=stream, clock=clock)
    if kind == "trial":
        progress.trial_started(0, 0)
        return progress.step
    if kind == "supernet":
        return lambda step, total, _val: progress.supernet_step(step, total, 0.5)
    assert kind == "race"
    return progress.race_step


ALL = ["trial", "supernet", "race", "evaluate"]
WITH_VALIDATION = ["trial", "race", "evaluate"]  # the supernet reports a loss, not a score


def run(progress: Printer, out: io.StringIO, clock: Clock, steps: int, vals=None, *, t0=0.0, rate=10.0):
    """Steps 1..steps at ``rate`` steps per fake second from ``t0``; the (step, time, text) of
    each write."""
    writes = []
    for step in range(1, steps + 1):
        clock.t = t0 + step / rate
        before = len(out.getvalue())
        progress(step, steps, (vals or {}).get(step))
        if len(out.getvalue()) > before:
            writes.append((step, clock.t, out.getvalue()[before:]))
    return writes


@pytest.mark.parametrize("kind", ALL)
def test_a_log_gets_a_line_at_least_every_30_seconds_and_not_every_step(kind):
    assert PROGRESS_LINE_SECONDS == 30.0
    clock, out = Clock(), io.StringIO()
    writes = run(printer(kind, out, clock), out, clock, 1000)  # 100 s, no validation
    times = [0.0] + [t for _, t, _ in writes] + [100.0]
    assert max(b - a for a, b in itertools.pairwise(times)) <= PROGRESS_LINE_SECONDS
    assert [step for step, _, _ in writes] == [300, 600, 900]
    assert all(text.endswith("\n") and "\r" not in text for _, _, text in writes)


@pytest.mark.parametrize("kind", WITH_VALIDATION)
def test_a_new_validation_score_prints_at_once_in_a_log(kind):
    clock, out = Clock(), io.StringIO()
    writes = run(printer(kind, out, clock), out, clock, 1000, {50: 0.5, 100: 0.5, 150: 0.625})
    # 50 and 150 bring new scores, 100 the same one; then the 30 s rule, counted from step 150
    assert [step for step, _, _ in writes] == [50, 150, 450, 750]
    assert "val acc 50.0%" in writes[0][2] and "val acc 62.5%" in writes[1][2]
    assert "val acc 62.5%" in writes[2][2]  # the last score stays on the lines after it


@pytest.mark.parametrize("kind", ALL)
def test_the_line_gives_the_rate_and_the_time_left(kind):
    clock, out = Clock(), io.StringIO()
    writes = run(printer(kind, out, clock), out, clock, 1000)
    step, _, text = writes[0]
    assert step == 300  # after 30 s: 10 steps per second, 700 steps (70 s) to go
    expected = f"step 300/1000  10.0 steps/s  {'loss 0.500  ' if kind == 'supernet' else ''}"
    expected += f"elapsed {format_seconds(30)}  left {format_seconds(70)}\n"
    assert text.endswith(expected), text
    assert "left 1:10" in text
    head = {"trial": "  trial 1/5 (#0)  ", "supernet": "  supernet ", "race": "  race ", "evaluate": "  "}
    assert text == head[kind] + expected


def test_the_common_part_with_a_score():
    clock = Clock()
    meter = StepMeter(False, clock=clock)
    clock.t = 1 / 3.1
    meter.update(1, 900, None)
    clock.t = 120 / 3.1
    meter.update(120, 900, 0.912)
    assert meter.text("val acc 91.2%") == (
        f"step 120/900  3.1 steps/s  val acc 91.2%  elapsed 0:39  left {format_seconds(780 / 3.1)}"
    )


def test_the_first_step_has_no_rate_and_a_restarted_count_starts_a_new_phase():
    clock, out = Clock(), io.StringIO()
    progress = SearchProgress(total=5, task="classification", stream=out, clock=clock)
    progress.trial_started(0, 0)
    writes = run(progress.step, out, clock, 1000, t0=39.875, rate=8.0)  # step 1 at 40 s: a line
    assert writes[0] == (1, 40.0, "  trial 1/5 (#0)  step 1/1000  elapsed 0:40\n")  # no rate yet
    assert writes[1][2] == "  trial 1/5 (#0)  step 241/1000  8.0 steps/s  elapsed 1:10  left 1:35\n"
    # A new trial (10 s of setup before its first step, then 4 steps per second): its rate and
    # times alone, not the first trial's; its elapsed time from its start.
    clock.t = 200.0
    progress.trial_started(1, 1)
    writes = run(progress.step, out, clock, 1000, t0=209.75, rate=4.0)
    assert writes[0] == (1, 210.0, "  trial 2/5 (#1)  step 1/1000  elapsed 0:10\n")  # 50 s since the last line
    assert writes[1] == (121, 240.0, "  trial 2/5 (#1)  step 121/1000  4.0 steps/s  elapsed 0:40  left 3:40\n")
    # A race: each entrant counts its steps from 1 again, with no call between them.
    race = SearchProgress(total=5, task="classification", stream=io.StringIO(), clock=clock)
    clock.t = 0.0
    for step in range(1, 101):
        clock.t += 0.1
        race.race_step(step, 100, None)
    clock.t += 50.0  # the entrant's scoring, the next one's setup
    race.race_step(1, 100, None)
    assert race.meter.rate() is None and race.meter.elapsed() == 0.0
    clock.t += 0.5
    race.race_step(2, 100, None)
    assert race.meter.rate() == pytest.approx(2.0) and race.meter.remaining() == pytest.approx(49.0)


def test_a_finished_trial_line_restarts_the_wait():
    clock = Clock()
    meter = StepMeter(False, clock=clock)
    clock.t = 25.0
    meter.wrote_line()
    clock.t = 40.0
    assert not meter.update(1, 10, None)  # 15 s since the last line
    clock.t = 55.0
    assert meter.update(2, 10, None)


@pytest.mark.parametrize("kind", ALL)
def test_a_terminal_gets_in_place_rewrites_only(kind):
    clock, out = Clock(), Terminal()
    writes = run(printer(kind, out, clock), out, clock, 1000, {500: 0.5})
    assert len(writes) == 1000  # every step, in place
    assert all(text.startswith("\r") for _, _, text in writes)
    body = out.getvalue()
    if kind == "evaluate":
        # the last step ends the line, so what is printed next starts on a clean one
        assert body.count("\n") == 1 and body.endswith("\n") and "step 1000/1000" in writes[-1][2]
    else:
        assert "\n" not in body
    if kind in ("supernet", "race"):
        assert writes[-1][2] == "\r\033[K"  # cleared after the phase's last step
    assert "10.0 steps/s" in writes[600][2] and "left" in writes[600][2]


def test_evaluate_without_a_task_prints_the_raw_score():
    clock, out = Clock(), io.StringIO()
    run(step_printer(out, clock=clock), out, clock, 50, {8: 0.91234})
    assert out.getvalue() == "  step 8/50  10.0 steps/s  val 0.9123  elapsed 0:01  left 0:04\n"


def test_trials_other_processes_finish_are_told_once_at_this_ones_next_trial():
    import datetime

    import optuna
    from optuna.distributions import CategoricalDistribution
    from optuna.trial import TrialState, create_trial

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    study = optuna.create_study(direction="maximize")
    dist = {"x": CategoricalDistribution([0, 1])}

    def finished(value, *, state=TrialState.COMPLETE, when=None, **attrs):
        when = when or datetime.datetime.now()
        study.add_trial(
            create_trial(
                params={"x": 0},
                distributions=dist,
                value=value,
                state=state,
                user_attrs={"params": 1000, "seconds": 2.0, **attrs},
            )
        )
        trial = study.get_trials(deepcopy=False)[-1]
        trial.datetime_complete = when  # in-memory storage: the frozen trial is the stored one
        return study.get_trials()[-1]

    finished(0.5, when=datetime.datetime(2000, 1, 1))  # before this process started: not told
    out = io.StringIO()
    progress = SearchProgress(total=8, task="classification", stream=out)
    other = finished(0.7)  # another process's candidate
    finished(0.7, duplicate_of=other.number)  # a duplicate: not a candidate trained
    own = finished(0.6)
    progress.trial_finished(study, own)
    lines = out.getvalue().splitlines()
    assert lines[0].startswith(f"  #{other.number} (another process)  acc 70.0%  params 1.0k  2.0s")
    assert lines[1].startswith(f"trial 3/8 (#{own.number})  acc 60.0%  best 70.0% (#{other.number})")
    assert len(lines) == 2
    progress.trial_finished(study, finished(0.1))  # nothing new from the others: told once
    assert sum("(another process)" in line for line in out.getvalue().splitlines()) == 1
