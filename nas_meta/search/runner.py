"""Run (or resume, or join) a search: what the ``search`` and ``worker`` commands do, as library calls.

>>> from nas_meta.config import make_config
>>> cfg = make_config("smoke", search={"space": "chain", "trials": 2}, results_dir="/tmp/r")
>>> outcome = run_search(cfg)            # doctest: +SKIP
>>> outcome.table[["number", "val_acc", "params"]]   # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import os
import random
import shutil
import subprocess
import sys
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

import optuna
import pandas as pd

if TYPE_CHECKING:
    import torch

from .. import graph
from ..config import RunConfig
from ..data import load_dataset
from ..data.episodes import check_memory
from ..errors import ConfigError, SpaceError, StudyError
from ..fileio import atomic_write, atomic_write_json, missing_folders, output_folder
from ..learners import resolve_device
from ..learners.train import candidate_precision, check_compile
from ..model.darts import check_relaxable
from ..record import Attr, StudyAttr, best_trials, trials_frame
from ..spaces import Space, load_space, resolve_known_arch
from .objective import CandidateFailure, Objective, TrialHooks
from .progress import SearchProgress
from .race import race_pick, race_state, run_race
from .study import (
    adopt_study_settings,
    check_space,
    create_study,
    default_study_name,
    load_study,
    public_config,
    storage_url,
    stored_config,
    study_dir,
)
from .supernet import SUPERNET_FILE, derived_params, train_supernet
from .workers import (
    SpaceExhausted,
    enqueue_architectures,
    optimize_until,
    retry_interrupted,
    unstick,
    with_storage_retry,
)

__all__ = [
    "SearchOutcome",
    "SearchInterrupted",
    "check_names",
    "prepare",
    "run_search",
    "run_worker",
    "worker_devices",
    "write_outputs",
]


@dataclass
class SearchOutcome:
    study: optuna.Study
    study_name: str
    directory: Path | None  # None for a worker, which writes nothing but the study
    storage: str
    task: str
    table: pd.DataFrame
    ran: int  # trials run by this process (0 when the study already had its budget)


class SearchInterrupted(KeyboardInterrupt):
    """Ctrl-C during a search; carries what was written, so the caller can show the summary."""

    def __init__(self, outcome: SearchOutcome) -> None:
        super().__init__("search interrupted")
        self.outcome = outcome


@dataclass
class Prepared:
    cfg: RunConfig
    study_name: str
    directory: Path
    objective: Objective
    hooks: TrialHooks
    enqueued: list[tuple[str, dict]]  # (name, arch JSON) of --enqueue, and of --baseline without a race
    baselines: list[tuple[str, dict]]  # (name, arch JSON) the race's pick must beat


def check_names(cfg: RunConfig) -> None:
    """The learner, sampler, pruner and proxy of ``cfg`` are registered (ConfigError naming the
    registered ones otherwise): the registries are the one list of names."""
    from ..learners import LEARNERS
    from .proxies import PROXIES
    from .samplers import PRUNERS, SAMPLERS

    LEARNERS.get(cfg.learner.algo)
    SAMPLERS.get(cfg.search.sampler)
    PRUNERS.get(cfg.search.pruner)
    if cfg.search.prescreen is not None:
        PROXIES.get(cfg.search.prescreen)


def prepare(cfg: RunConfig) -> Prepared:
    """Validate everything a search needs before anything is written: the config and its names,
    the space, the data and its splits, the device.  A user mistake raises here, and no folder
    exists yet."""
    cfg.validate()
    check_names(cfg)
    space = load_space(cfg.search.space)
    if cfg.search.strategy == "darts":
        check_relaxable(space)
    device = resolve_device(cfg.device)  # before the dataset: a refused device writes no cache
    dataset = load_dataset(cfg.data)
    # A new study's candidates: the rule of --amp on this machine (--amp on without bf16 or CUDA is
    # refused here); a stored precision this device cannot run: refused by check_precision.
    if cfg.search.precision is None:
        precision = candidate_precision(cfg.learner.amp, device, kind=space.kind)
        cfg = cfg.replace(search={"precision": precision})
    check_precision(cfg, device)
    check_compile(device, cfg.learner.compile)
    hooks = TrialHooks()
    objective = Objective(cfg, space, dataset, device, hooks)
    check_memory(cfg, dataset, device)  # a step that cannot fit: refused now, with the estimate
    check_space_fits(space, dataset.input_shape)
    objective.make_samplers(cfg.seed)  # DataError now (too few classes/images), not mid-search
    widest = space.recipe_choices(cfg.learner.algo).get("train_ways")
    if widest:  # the widest training episodes the space's recipe can draw must exist too
        objective.make_samplers(cfg.seed, cfg.with_recipe({"train_ways": max(widest)}))
    enqueued, baselines = known_architectures(cfg, tuple(dataset.input_shape))
    study_name = cfg.search.study or default_study_name(cfg)
    directory = study_dir(cfg.results_dir, study_name)
    return Prepared(cfg, study_name, directory, objective, hooks, enqueued, baselines)


def check_precision(cfg: RunConfig, device: torch.device) -> None:
    """StudyError when the study's candidates train in a precision this device cannot run (a bf16
    study resumed, or joined by a worker, on a CPU without bf16): its scores would not compare."""
    precision = cfg.search.precision
    if precision in (None, "fp32"):
        return
    try:
        here = candidate_precision("on", device)  # what --amp on gives here
    except ConfigError:
        here = "fp32"
    if here != precision:
        raise StudyError(
            f"study {cfg.search.study or default_study_name(cfg)!r} trains its candidates in {precision} "
            f"(fixed when it started), which device {str(device)!r} here cannot run; resume it on a "
            f"machine that can, or start another --study"
        )


def known_architectures(
    cfg: RunConfig, input_shape: tuple[int, ...]
) -> tuple[list[tuple[str, dict]], list[tuple[str, dict]]]:
    """(trained first as trials, raced) known architectures of ``cfg``: ``--enqueue``'s are
    trials; the baselines are raced, or without a race trained first as trials (and the search
    reports the gap)."""
    enqueued = [resolve_known_arch(entry, input_shape) for entry in cfg.search.enqueue]
    baselines = known_baselines(cfg, input_shape)
    if not cfg.search.race:
        return enqueued + baselines, []
    return enqueued, baselines


def known_baselines(cfg: RunConfig, input_shape: tuple[int, ...]) -> list[tuple[str, dict]]:
    """The baselines of ``cfg`` as (name, arch JSON), compiled for the inputs: ``search.baselines``,
    or with a race and none given, Conv-4 for images and MAML's 40-40 network for vectors."""
    names = cfg.search.baselines
    if names is None:
        names = (("conv4",) if len(input_shape) == 3 else ("mlp40",)) if cfg.search.race else ()
    try:
        return [resolve_known_arch(name, input_shape) for name in names]
    except SpaceError as exc:
        raise ConfigError(
            f"baseline {', '.join(names)} does not fit the dataset's inputs {tuple(input_shape)}: {exc}; "
            "choose another with --baseline, or --baseline none"
        ) from None


def check_space_fits(space: Space, input_shape: tuple[int, ...], tries: int = 8) -> None:
    """ConfigError when none of ``tries`` sampled architectures compiles for the dataset's inputs
    (a conv space on vectors): the search would only fail every trial.  One that fits is enough;
    single candidates that do not fit still fail as trials."""
    from ..model import network

    rng = random.Random(0)
    first = ""
    for _ in range(tries):
        try:
            network.build(space.sample(rng), input_shape)
            return
        except SpaceError as exc:
            first = first or str(exc)
    raise ConfigError(
        f"no architecture of space {space.name!r} fits the dataset's inputs {tuple(input_shape)}: {first}"
    )


def _optimize(study: optuna.Study, prepared: Prepared, stream: TextIO | None) -> int:
    cfg = prepared.cfg
    task = prepared.objective.dataset.task
    progress = SearchProgress(total=cfg.search.trials, task=task, stream=stream)
    prepared.hooks.started, prepared.hooks.step = progress.trial_started, progress.step
    if cfg.search.strategy != "scratch":
        _train_supernet(study, prepared, progress)
    from .screening import screen

    def queue_next(study: optuna.Study) -> None:
        # A random draw after a run of duplicates comes first; else screening draws its pool.
        if (
            not unstick(study, prepared.objective.space, cfg.seed, cfg.learner.algo)
            and cfg.search.prescreen is not None
        ):
            screen(study, prepared.objective)

    try:
        return optimize_until(
            study,
            prepared.objective,
            target=cfg.search.trials,
            callbacks=[progress.trial_finished],
            catch=(CandidateFailure,),
            queue_next=queue_next,
        )
    except SpaceExhausted as exc:
        print(f"{exc}; the search stops here", file=stream or sys.stderr)
        return 0


def _train_supernet(study: optuna.Study, prepared: Prepared, progress: SearchProgress) -> None:
    """Meta-train (or continue, or load) the supernet beside the study; record what it cost."""
    cfg, objective = prepared.cfg, prepared.objective
    learner, record = train_supernet(
        cfg,
        objective.space,
        objective.dataset,
        objective.device,
        cfg.search.supernet_steps,
        prepared.directory / SUPERNET_FILE,
        progress=progress.supernet_step,
        should_stop=prepared.hooks.should_stop,
    )
    attr = {**record, "file": SUPERNET_FILE, "strategy": cfg.search.strategy}
    with_storage_retry(lambda: study.set_user_attr(StudyAttr.SUPERNET, attr), study._storage)
    if cfg.search.strategy == "supernet":
        objective.supernet = learner
        return
    # DARTS: the discretised architecture is queued (once) as an ordinary trial of its choices.
    derived = {"strategy": "darts", "steps": record["steps"]}

    def queue_derived() -> None:
        if not any(t.user_attrs.get(Attr.DERIVED) == derived for t in study.get_trials(deepcopy=False)):
            study.enqueue_trial(derived_params(learner, objective.space), user_attrs={Attr.DERIVED: derived})

    with_storage_retry(queue_derived, study._storage)


# Worker processes a search runs by default: one per CPU core, one thread each, at most this many.
# Measured (bench/throughput.py, bench/README.md): on 2 cores, 2 processes of one thread train
# 1.2-2.1x the candidates per hour of one process whose candidate trains its tasks on 2 threads.
AUTO_WORKERS_MAX = 8
WORKERS_ENV = "NAS_META_N_WORKERS"  # another default number of processes, e.g. 1 (tests, reproducible runs)


def default_workers(device: str, *, visible: int) -> int:
    """The processes a search runs when ``--n-workers`` is not given: ``$NAS_META_N_WORKERS``;
    else on the CPU (``device`` "cpu", or "auto" without a GPU) one per core up to
    :data:`AUTO_WORKERS_MAX`; else (GPUs) one."""
    given = os.environ.get(WORKERS_ENV)
    if given:
        if not given.isdigit() or int(given) < 1:
            raise ConfigError(f"{WORKERS_ENV}={given!r} must be a positive integer")
        return int(given)
    if device == "cpu" or (device == "auto" and visible == 0):
        return max(1, min(os.cpu_count() or 1, AUTO_WORKERS_MAX))
    return 1


def worker_devices(device: str, workers: int, *, visible: int, devices: list[str] | None = None) -> list[str]:
    """The device of each worker (index 0 is the process that starts the others): ``devices`` in
    turn (worker i on ``devices[i mod len]``); else, with several visible GPUs and ``device``
    "auto" or "cuda", worker i on ``cuda:(i mod visible)``; else ``device`` for all."""
    if devices:
        for name in devices:
            if name != "cpu":
                resolve_device(name, visible=visible, flag="--devices")  # ConfigError for a GPU this machine lacks
        return [devices[i % len(devices)] for i in range(workers)]
    if device in ("auto", "cuda") and visible > 1:
        return [f"cuda:{i % visible}" for i in range(workers)]
    return [device] * workers


def run_search(
    cfg: RunConfig,
    *,
    stream: TextIO | None = None,
    workers: int | None = 1,
    devices: list[str] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> SearchOutcome:
    """Run the search until the study holds ``cfg.search.trials`` counted trials.

    Re-running the same command resumes: finished trials are kept and only the missing ones run;
    a trial left RUNNING by a killed process is failed and queued again.  With ``workers > 1``,
    ``workers - 1`` extra processes (``nas-meta worker``) join this one on the study, each with
    its share of the CPU threads; their logs are ``worker-<i>.log`` in the study folder.
    ``workers=None`` is :func:`default_workers` (a study in SQLite then stays one process).
    ``should_stop()`` returning True stops the running trial at its next step (as Ctrl-C does).
    On a machine with several GPUs the workers are spread over them (:func:`worker_devices`).
    """
    import torch

    auto = workers is None
    if workers is None:
        workers = default_workers(cfg.device, visible=torch.cuda.device_count())
    assignment = worker_devices(cfg.device, workers, visible=torch.cuda.device_count(), devices=devices)
    cfg = cfg.replace(device=assignment[0])
    prepared = prepare(cfg)
    cfg = prepared.cfg  # with the candidates' precision resolved
    prepared.hooks.should_stop = should_stop
    task = prepared.objective.dataset.task
    url = storage_url(cfg, prepared.study_name, workers)
    out = stream or sys.stdout
    if auto and workers > 1 and url.startswith("sqlite:"):
        # A study kept in SQLite (started by one process, or --storage sqlite:...) stays one process.
        workers, assignment = 1, assignment[:1]
        print(f"study {prepared.study_name!r} is in SQLite, which takes one writer: one process", file=out)
    if workers > 1 and url.startswith("sqlite:"):
        raise ConfigError(
            f"--n-workers {workers} needs a storage that takes concurrent writers, and study "
            f"{prepared.study_name!r} is in SQLite; use --storage postgresql://... or a new --study"
        )
    missing = missing_folders(prepared.directory)  # innermost first
    created = missing[-1] if missing else None  # the outermost folder mkdir -p creates
    prepared.directory.mkdir(parents=True, exist_ok=True)
    try:
        study = create_study(cfg, prepared.study_name, task, workers=workers, space=prepared.objective.space)
    except BaseException:
        if created is not None:  # nothing half-written: a refused storage leaves no empty folders
            shutil.rmtree(created, ignore_errors=True)
        raise
    cfg, notes = adopt_study_settings(study, cfg)
    check_precision(cfg, prepared.objective.device)
    if notes:
        enqueued, baselines = known_architectures(cfg, tuple(prepared.objective.dataset.input_shape))
        prepared = dataclasses.replace(prepared, cfg=cfg, enqueued=enqueued, baselines=baselines)
        prepared.objective.cfg = cfg
        for line in notes:
            print(line, file=stream or sys.stdout)
    atomic_write_json(prepared.directory / "config.json", public_config(cfg).to_dict())
    retry_interrupted(study)
    enqueue_architectures(study, prepared.enqueued)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)  # heartbeat-stale trials of dead remote workers

    children = _spawn_workers(prepared, url, assignment) if workers > 1 else []
    threads = torch.get_num_threads()
    if workers > 1:
        torch.set_num_threads(_threads_per_worker(workers))
        print(
            f"{workers} processes train candidates, {_threads_per_worker(workers)} thread(s) each "
            f"(the others log to {prepared.directory}/worker-<i>.log)",
            file=out,
        )
    try:
        try:
            ran = _optimize(study, prepared, stream)
        finally:
            for child in children:
                child.wait()
            torch.set_num_threads(threads)  # the race and the outputs: every thread again
        if cfg.search.race:
            _race(study, prepared, stream)  # this process alone: workers never race
    except KeyboardInterrupt:
        # The interrupted trial is FAIL with an "interrupted" attribute and runs again on resume;
        # a race resumes from the blocks it finished.
        raise SearchInterrupted(write_outputs(study, prepared, task, url, ran=0)) from None
    return write_outputs(study, prepared, task, url, ran)


def _race(study: optuna.Study, prepared: Prepared, stream: TextIO | None) -> None:
    """The final race (search/race.py) between the best candidates and the baselines."""
    objective = prepared.objective
    out = stream or sys.stdout
    progress = SearchProgress(total=prepared.cfg.search.trials, task=objective.dataset.task, stream=stream)
    run_race(
        study,
        prepared.cfg,
        objective.dataset,
        objective.device,
        prepared.baselines,
        log=lambda line: print(line, file=out, flush=True),
        step=progress.race_step,
        should_stop=prepared.hooks.should_stop,
    )


def _threads_per_worker(workers: int) -> int:
    return max(1, (os.cpu_count() or 1) // workers)


def _spawn_workers(prepared: Prepared, url: str, devices: list[str]) -> list[subprocess.Popen]:
    children = []
    workers = len(devices)
    for index in range(1, workers):
        log = open(prepared.directory / f"worker-{index}.log", "w")
        cmd = [
            sys.executable,
            "-m",
            "nas_meta",
            "worker",
            "--study",
            prepared.study_name,
            "--storage",
            url,
            "--worker-index",
            str(index),
            "--threads",
            str(_threads_per_worker(workers)),
            "--device",
            devices[index],
        ]
        children.append(subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL))
        log.close()
    return children


def run_worker(
    study_name: str,
    storage: str,
    *,
    worker_index: int = 1,
    stream: TextIO | None = None,
    overrides: dict[str, dict] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> SearchOutcome:
    """Join an existing study: its stored config says what to search and how; ``overrides`` may
    change only where things are on this machine (``{"data": {"data_root": ...}, "device": ...}``)."""
    # Every storage call goes through the one retry: a database restarted while a worker starts
    # or ends is waited out like one restarted mid-trial.
    study = with_storage_retry(lambda: load_study(study_name, storage, worker_index=worker_index), storage)
    cfg = with_storage_retry(lambda: stored_config(study), storage).replace(**(overrides or {}))
    # Before the dataset is prepared: the space file may have changed since the study started.
    space = load_space(cfg.search.space)
    with_storage_retry(lambda: check_space(study, space), storage)
    prepared = prepare(cfg.replace(search={"study": study_name, "storage": storage}))
    prepared.hooks.should_stop = should_stop
    ran = _optimize(study, prepared, stream)
    task = prepared.objective.dataset.task
    table = with_storage_retry(lambda: trials_frame(study, task), storage)
    return SearchOutcome(study, study_name, None, storage, task, table, ran)


def write_outputs(study: optuna.Study, prepared: Prepared, task: str, url: str, ran: int) -> SearchOutcome:
    """The trials table as CSV and the pick (the race's, else the best trial) as JSON and PNG,
    beside the study."""
    directory = prepared.directory
    table = trials_frame(study, task)
    atomic_write(directory / "trials.csv", lambda f: f.write(table.to_csv(index=False).encode()))
    pick = race_pick(race_state(study))
    best = best_trials(study, task, k=1)
    if pick is not None or best:
        arch = graph.from_json(pick.arch if pick is not None else best[0].user_attrs[Attr.ARCH])
        from ..viz.arch import draw_arch  # matplotlib only when a picture is written

        with output_folder(directory / "best") as best_folder:  # made here: gone again if a file fails
            graph.save_json(arch, best_folder / "arch.json")
            draw_arch(arch, best_folder / "arch.png")
    return SearchOutcome(study, prepared.study_name, directory, url, task, table, ran)
