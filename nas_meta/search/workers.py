"""Workers: any number of processes, on any number of machines, filling one study.

There is no scheduler of our own: every worker runs the same loop against the shared Optuna
storage (PostgreSQL across machines, Optuna's journal file on one machine, SQLite for one
process).  The study holds the run config, so a worker needs only the study name and storage.

A worker that dies mid-trial leaves its trial RUNNING.  Two mechanisms retry it:
- on the same machine, any worker (or the re-run search command) sees that the process named in
  the trial's ``worker`` attribute is gone, fails the trial and queues its params again;
- across machines, RDB storages' heartbeats fail it after the grace period (Optuna's
  ``RetryHeartbeatStaleTrialCallback`` queues it again).
"""

from __future__ import annotations

import contextlib
import datetime
import errno
import os
import random
import socket
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import optuna
from optuna.storages import RetryHeartbeatStaleTrialCallback
from optuna.trial import TrialState

from ..errors import StudyError
from ..fileio import causes
from ..record import Attr, counted_trials
from ..spaces import Space
from .study import redact_url

__all__ = ["worker_identity", "recover_dead_trials", "optimize_until", "with_storage_retry"]

T = TypeVar("T")

MAX_RETRY = 3
# Waits after a dropped storage connection, in seconds (about two minutes in all), before giving up.
BACKOFF_SECONDS = (1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0)
STORAGE_ERRORS: tuple[type[Exception], ...] = (optuna.exceptions.StorageInternalError,)
try:  # the RDB storages' own errors, where sqlalchemy is there (always with optuna's RDB)
    import sqlalchemy.exc

    STORAGE_ERRORS += (sqlalchemy.exc.OperationalError, sqlalchemy.exc.InterfaceError)
except ImportError:  # pragma: no cover
    pass
# A full disk under a journal file or a training's checkpoint is an OSError.
STORAGE_OR_DISK_ERRORS: tuple[type[Exception], ...] = (*STORAGE_ERRORS, OSError)


def _start_time(pid: int) -> str:
    """The process's start time in clock ticks since boot (``/proc``), to tell a reused pid apart."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return "?"


def worker_identity() -> str:
    pid = os.getpid()
    return f"{socket.gethostname()}:{pid}:{_start_time(pid)}"


def _alive(identity: str) -> bool:
    host, pid_text, started = identity.rsplit(":", 2)
    if host != socket.gethostname():
        return True  # another machine's worker: its heartbeat, not us, decides
    pid = int(pid_text)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return started == "?" or _start_time(pid) == started


def recover_dead_trials(study: optuna.Study) -> list[int]:
    """Fail the RUNNING trials of dead processes on this machine and queue their params again.

    Returns the numbers of the trials recovered.  Safe to call from many workers at once: a trial
    already finished by another worker is skipped."""
    retry = _retry_callback()
    recovered = []
    trials = study.get_trials(deepcopy=False)  # one read for both sweeps
    for trial in (t for t in trials if t.state == TrialState.RUNNING):
        identity = trial.user_attrs.get(Attr.WORKER)
        if identity is None:
            # Every trial names its process first thing; one that never did was created by a process
            # killed in that instant, and nothing else will ever fail it.
            if not _orphaned(trial):
                continue
            identity = "a process killed before it named itself"
        elif _alive(identity):
            continue
        if _fail_and_requeue(study, trial, f"worker {identity} died", retry):
            recovered.append(trial.number)
    return recovered + _requeue_lost_retries(study, trials, retry)


# The system attribute that marks a trial failed by a recovery, holding its own number (a retry
# copies its parent's attributes, so the number tells the trial's own recovery from its parent's).
RECOVERED = "recovered_trial"
# A recovered trial whose retry is not queued this many seconds after it was failed lost it.
REQUEUE_AFTER_S = 5.0


def _fail_and_requeue(study: optuna.Study, trial: optuna.trial.FrozenTrial, why: str, retry: Callable) -> bool:
    """Fail a RUNNING trial left by a dead process and queue its params again; False when another
    worker was quicker.  The storage may drop between the writes: a trial left RUNNING is
    recovered again, one left FAIL without its retry is queued by ``_requeue_lost_retries``."""
    try:
        study._storage.set_trial_system_attr(trial._trial_id, "interrupted", why)
        study._storage.set_trial_system_attr(trial._trial_id, RECOVERED, trial.number)
        study._storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)
    except optuna.exceptions.UpdateFinishedTrialError:  # another worker was quicker
        return False
    if Attr.SCREENING in trial.user_attrs:
        return False  # a screening pool is drawn afresh, not replayed
    retry(study, study._storage.get_trial(trial._trial_id))
    return True


def _requeue_lost_retries(study: optuna.Study, trials: list[optuna.trial.FrozenTrial], retry: Callable) -> list[int]:
    """Queue the params of recovered trials whose retry never reached the storage (the connection
    dropped between failing the trial and queuing it), from ``trials`` as read before this sweep's
    recoveries (a trial recovered just now is still RUNNING there).  Only failures older than
    ``REQUEUE_AFTER_S`` are taken, so a retry another worker is queuing right now is not doubled."""
    retried = _retried(trials)
    now = datetime.datetime.now()
    queued = []
    for t in trials:
        if (
            t.state == TrialState.FAIL
            and t.system_attrs.get(RECOVERED) == t.number
            and t.number not in retried
            and Attr.SCREENING not in t.user_attrs
            and t.datetime_complete is not None
            and (now - t.datetime_complete).total_seconds() > REQUEUE_AFTER_S
        ):
            retry(study, t)
            queued.append(t.number)
    return queued


# A RUNNING trial that has not named its process after this many seconds never will.
ORPHAN_AFTER_S = 10.0


def _orphaned(trial: optuna.trial.FrozenTrial) -> bool:
    started = trial.datetime_start
    return started is not None and (datetime.datetime.now() - started).total_seconds() > ORPHAN_AFTER_S


def _unnamed_running(study: optuna.Study) -> bool:
    """Whether a RUNNING trial has not named its process yet (just started, or orphaned)."""
    return any(Attr.WORKER not in t.user_attrs for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)))


def _retried(trials: list[optuna.trial.FrozenTrial]) -> set[int]:
    """The numbers of the trials whose params were queued again (Optuna's ``retry_history``)."""
    return {n for t in trials for n in t.system_attrs.get("retry_history", [])}


def _retry_callback() -> RetryHeartbeatStaleTrialCallback:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return RetryHeartbeatStaleTrialCallback(max_retry=MAX_RETRY)


def retry_interrupted(study: optuna.Study) -> list[int]:
    """Queue again the params of trials stopped by Ctrl-C (``interrupted`` user attribute) that
    have not been retried yet, so a resumed search picks up where it stopped."""
    trials = study.get_trials(deepcopy=False)
    retried = _retried(trials)
    retry = _retry_callback()
    queued = []
    for t in trials:
        if (
            t.state == TrialState.FAIL
            and Attr.INTERRUPTED in t.user_attrs
            and t.number not in retried
            and Attr.SCREENING not in t.user_attrs
        ):
            retry(study, t)
            queued.append(t.number)
    return queued


def _taken(study: optuna.Study, below: int | None = None, include_waiting: bool = True) -> int:
    """Trials that use or may still use the budget: counted ones, running ones, and (by default)
    queued ones."""
    counted = {t.number for t in counted_trials(study)}
    states = (TrialState.RUNNING, TrialState.WAITING) if include_waiting else (TrialState.RUNNING,)
    pending = {
        t.number
        for t in study.get_trials(deepcopy=False, states=states)
        if Attr.SURPLUS not in t.user_attrs and Attr.SCREENING not in t.user_attrs
    }
    numbers = counted | pending
    if below is not None:
        numbers = {n for n in numbers if n < below}
    return len(numbers)


# A sampler that proposes only architectures the study has trained (a converged TPE, a local
# search in a small basin) gets one random draw after this many duplicates in a row.
DUPLICATE_STREAK = 3
# The random draw is of a point the study does not hold yet; a space where this many draws in a
# row found only points it holds is taken as exhausted (less than about 1% of it left untried).
NEW_POINT_DRAWS = 500


class SpaceExhausted(Exception):
    """Every architecture of the space was trained (or random draws keep finding trained ones)."""


def _point(trial: optuna.trial.FrozenTrial) -> tuple | None:
    """The space point a trial holds: its params, or the params it was queued with (a WAITING
    trial has none yet); None for a known architecture (a baseline), which is no point."""
    if Attr.ENQUEUED_ARCH in trial.user_attrs:
        return None
    params = trial.params or trial.system_attrs.get("fixed_params") or {}
    return tuple(sorted(params.items()))  # () is the one point of a space without choices


def unstick(study: optuna.Study, space: Space, seed: int, algo: str) -> bool:
    """Queue one random architecture of ``space`` that the study does not hold yet (finished,
    running or queued) when the last :data:`DUPLICATE_STREAK` trials were duplicates (duplicates
    do not use up the budget, so a sampler that repeats itself would otherwise loop); True when it
    queued one.  SpaceExhausted when the study holds as many points as the space, or
    :data:`NEW_POINT_DRAWS` random draws found none it does not hold.  The streak alone never
    ends a search: with many workers, a converged sampler's duplicates pile up while one new
    candidate trains."""
    trials = study.get_trials(deepcopy=False)
    done = [
        t
        for t in trials
        if t.state in (TrialState.COMPLETE, TrialState.FAIL, TrialState.PRUNED)
        and Attr.SCREENING not in t.user_attrs
        and Attr.SURPLUS not in t.user_attrs
        and Attr.INTERRUPTED not in t.user_attrs
    ]
    streak = 0
    for t in reversed(done):
        if Attr.DUPLICATE_OF not in t.user_attrs:
            break
        streak += 1
    if streak < DUPLICATE_STREAK:
        return False
    held = {point for t in trials if Attr.SCREENING not in t.user_attrs and (point := _point(t)) is not None}
    size = space.candidates(algo)
    rng = random.Random(seed * 1_000_003 + len(done))
    for _ in range(NEW_POINT_DRAWS if len(held) < size else 0):
        drawn = space.draw(lambda _name, options: options[rng.randrange(len(options))], algo)
        params = drawn.graph["params"]
        if tuple(sorted(params.items())) not in held:
            study.enqueue_trial(params, user_attrs={Attr.UNSTUCK: streak})
            return True
    distinct = sum(Attr.DUPLICATE_OF not in t.user_attrs and t.state == TrialState.COMPLETE for t in done)
    raise SpaceExhausted(
        f"space {space.name!r} holds {size:,} architecture{'s' if size != 1 else ''} and the study has "
        f"trained {distinct} distinct ones; {NEW_POINT_DRAWS} random draws found no architecture it has not tried"
        if len(held) < size
        else f"space {space.name!r} holds {size:,} architecture{'s' if size != 1 else ''} and the study has "
        f"trained {distinct} distinct ones; every one has been tried"
    )


class Surplus(Exception):
    """This trial was created after other workers had already taken the whole budget."""


def guard_budget(target: int) -> Callable[[optuna.Trial], None]:
    """Called first in every trial: trial numbers are assigned atomically by the storage, so a
    trial whose earlier trials already fill the budget is surplus and stops at once."""

    def check(trial: optuna.Trial) -> None:
        trial.set_user_attr(Attr.WORKER, worker_identity())
        if _taken(trial.study, below=trial.number) >= target:
            trial.set_user_attr(Attr.SURPLUS, True)
            raise Surplus(f"trial {trial.number}: the study already has its {target} trials")

    return check


def optimize_until(
    study: optuna.Study,
    objective: Callable[[optuna.Trial], object],
    target: int,
    callbacks: list[Callable[[optuna.Study, optuna.trial.FrozenTrial], None]] | None = None,
    catch: tuple[type[Exception], ...] = (),
    queue_next: Callable[[optuna.Study], object] | None = None,
) -> int:
    """Run trials until the study holds ``target`` counted trials (with other workers or alone).

    ``queue_next(study)``, when given, is called before each trial for which nothing is queued
    yet, to queue the next candidate (screening.py); queued trials (baselines, retries, screened
    winners) always run first.  Returns how many trials this process ran (surplus ones excluded)."""
    guard = guard_budget(target)
    ran = 0
    surplus = False

    def guarded(trial: optuna.Trial):
        nonlocal surplus
        try:
            guard(trial)
        except Surplus:
            surplus = True
            raise
        return objective(trial)

    def step() -> bool | None:
        """One turn of the loop: True when a trial ran, False to look again, None to stop."""
        recover_dead_trials(study)
        # Queued (WAITING) trials are part of the budget and are run first by optimize().
        if _taken(study, include_waiting=False) >= target:
            if _unnamed_running(study):
                # It may be an orphan that counts as taken: wait until it names its process or is
                # recovered above, rather than stop one trial short.
                time.sleep(1.0)
                return False
            return None
        if queue_next is not None and not study.get_trials(deepcopy=False, states=(TrialState.WAITING,)):
            queue_next(study)
        study.optimize(guarded, n_trials=1, catch=(*catch, Surplus), callbacks=callbacks)
        return not surplus

    while True:
        # A trial of ours that a dropped connection left RUNNING is failed and queued again.
        outcome = with_storage_retry(step, study._storage, recover=lambda: _recover_own_trials(study))
        if outcome is None or surplus:
            return ran
        ran += int(outcome)


def storage_full(exc: BaseException) -> bool:
    """Whether ``exc`` or an error it was raised from says the disk is full (SQLite, PostgreSQL, a
    journal file; Optuna's StorageInternalError names the cause only in its chain)."""
    return any(
        (isinstance(cause, OSError) and cause.errno in (errno.ENOSPC, errno.EDQUOT))
        or any(marker in f"{type(cause).__name__} {cause}".lower() for marker in _FULL)
        for cause in causes(exc)
    )


_FULL = ("database or disk is full", "no space left on device", "diskfull", "disk quota exceeded")


def storage_location(storage: object) -> str:
    """Where a storage keeps the study, for messages: the SQLite or journal file, else the URL
    (password redacted)."""
    backend = getattr(storage, "_backend", storage)  # Optuna wraps RDB storages in a cache
    url = getattr(backend, "url", None)
    if isinstance(url, str):
        return url[len("sqlite:///") :] if url.startswith("sqlite:///") else redact_url(url)
    path = getattr(getattr(backend, "_backend", None), "_file_path", None)
    return str(path) if path else type(backend).__name__


def _storage_failure(exc: Exception) -> BaseException | None:
    """The storage or disk error behind ``exc``: itself, or the error Optuna's trial loop was
    handling when its ``finally`` block asserted ("Should not reach"): that happens when the
    connection is cut while the trial's state is written and is back when Optuna reads it."""
    if isinstance(exc, STORAGE_OR_DISK_ERRORS):
        return exc
    if isinstance(exc, AssertionError) and isinstance(exc.__context__, STORAGE_ERRORS):
        return exc.__context__
    return None


def with_storage_retry(call: Callable[[], T], storage: object, *, recover: Callable[[], object] | None = None) -> T:
    """``call()``, the one retry around a worker's storage calls.  When the database drops the
    connection (restart, failover, ``pg_terminate_backend``) it waits (``BACKOFF_SECONDS``), calls
    ``recover()`` and tries again: the pool reconnects.  Past the last wait, or at once on a full
    disk (no wait frees space), it stops with a StudyError of one line."""
    failures = 0
    while True:
        try:
            return call()
        except Exception as raised:
            exc = _storage_failure(raised)
            if exc is None:
                raise
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            if storage_full(exc):
                where = getattr(exc, "filename", None) or storage_location(storage)
                raise StudyError(f"no space left on the disk of {where}; free space and resume the study") from None
            if isinstance(exc, OSError) and not isinstance(exc, STORAGE_ERRORS):
                raise
            if failures >= len(BACKOFF_SECONDS):
                raise StudyError(
                    f"the study's storage is unreachable ({failures + 1} tries over "
                    f"{sum(BACKOFF_SECONDS):.0f} s): {first}"
                ) from None
            time.sleep(BACKOFF_SECONDS[failures])
            failures += 1
            if recover is not None:
                with contextlib.suppress(*STORAGE_ERRORS):
                    recover()


def _recover_own_trials(study: optuna.Study) -> list[int]:
    """This process's RUNNING trials, orphaned when the storage dropped mid-trial: failed and
    queued again (another worker's are left to their own process or heartbeat)."""
    me = worker_identity()
    retry = _retry_callback()
    recovered = []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if trial.user_attrs.get(Attr.WORKER) != me:
            continue
        if _fail_and_requeue(study, trial, "the storage dropped the connection", retry):
            recovered.append(trial.number)
    return recovered


def enqueue_architectures(study: optuna.Study, archs: list[tuple[str, dict]]) -> list[str]:
    """Queue known architectures (name, arch JSON) once per study; returns the names queued now.

    They run before any sampled candidate (Optuna pops WAITING trials first) and count towards
    the budget like any trial."""
    present = {t.user_attrs.get(Attr.BASELINE) for t in study.get_trials(deepcopy=False)}
    queued = []
    for name, doc in archs:
        if name in present:
            continue
        study.enqueue_trial({}, user_attrs={Attr.ENQUEUED_ARCH: doc, Attr.BASELINE: name})
        queued.append(name)
    return queued
