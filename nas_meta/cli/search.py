"""``search`` and ``worker``: run a search, or join one from another process or machine."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import Any

from ..config import (
    AMP_MODES,
    CRN_MODES,
    PRESETS,
    RACE_RULES,
    SCREENING_POOLS,
    STRATEGIES,
    RunConfig,
    is_device_name,
    make_config,
)
from ..errors import ConfigError
from .common import (
    PROG,
    add_budget_options,
    add_data_options,
    add_device_option,
    add_location_options,
    add_recipe_options,
    budget,
    cache_dir,
    check_folder,
    data_overrides,
    graceful_interrupt,
    recipe_overrides,
)

D = RunConfig()  # the defaults the options show and fall back to: the config's own, not copies


def add_parsers(sub: Any) -> None:
    search = sub.add_parser("search", help="search a space for the best few-shot backbone")
    add_search_options(search)
    search.set_defaults(run=cmd_search)

    worker = sub.add_parser("worker", help="join a study (from this or another machine)")
    worker.add_argument("--study", required=True, help="study name")
    worker.add_argument("--storage", required=True, help="the study's storage URL, e.g. postgresql://user@host/db")
    worker.add_argument(
        "--worker-index",
        type=int,
        default=1,
        help="distinct per worker: the sampler's seed is the run seed plus this (default: 1)",
    )
    worker.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    add_location_options(worker, data_root="where the dataset is on this machine")
    add_device_option(worker, default=None, help="override the study's device: auto, cpu, cuda or cuda:N")
    worker.set_defaults(run=cmd_worker)


def add_search_options(p: argparse.ArgumentParser) -> None:
    # One group per concern in --help; every option is defined once, here or in common.py.
    search = p.add_argument_group("the search")
    data = p.add_argument_group("data, episodes and the training recipe")
    budget = p.add_argument_group("budget")
    race = p.add_argument_group("the race (README: The race)")
    machine = p.add_argument_group("precision, device and processes")
    # None means "the preset's value": only what the user typed overrides the preset.
    search.add_argument(
        "--space",
        default=D.search.space,
        help=f"space name in search_spaces/ or a YAML path (default: {D.search.space})",
    )
    # The registries are the one list of names (a learner or sampler registered by the user is offered too).
    from ..learners import LEARNERS
    from ..search.samplers import PRUNERS, SAMPLERS

    search.add_argument(
        "--algo", default=D.learner.algo, choices=LEARNERS.names(), help=f"meta-learner (default: {D.learner.algo})"
    )
    data.add_argument(
        "--dataset", default=D.data.dataset, help=f"dataset name (default: {D.data.dataset}, built in, offline)"
    )
    add_location_options(data)
    add_data_options(data)
    data.add_argument("--ways", type=int, default=None, help="classes per episode (default: 5)")
    data.add_argument("--shots", type=int, default=None, help="support examples per class (default: 1)")
    data.add_argument("--queries", type=int, default=None, help="query examples per class (default: preset's)")
    budget.add_argument("--trials", type=int, default=None, help="trials the study should hold (default: preset's)")
    add_budget_options(budget)
    add_recipe_options(data)
    budget.add_argument("--preset", default=D.preset, choices=sorted(PRESETS), help=f"budget (default: {D.preset})")
    search.add_argument(
        "--sampler",
        default=D.search.sampler,
        choices=SAMPLERS.names(),
        help=f"controller (default: {D.search.sampler})",
    )
    search.add_argument(
        "--pruner",
        default=D.search.pruner,
        choices=PRUNERS.names(),
        help="early stopping; halving: successive halving, 3 rungs (default: none)",
    )
    search.add_argument(
        "--prescreen",
        default=None,
        metavar="PROXY",
        help="score --prescreen-pool candidates by this training-free proxy (README: Screening) "
        "and meta-train only the best of each pool (default: no screening)",
    )
    search.add_argument(
        "--prescreen-pool",
        type=int,
        default=None,
        metavar="K",
        help="candidates screened per meta-trained one (default with --prescreen: "
        f"{_per_preset(lambda preset: SCREENING_POOLS[preset]['prescreen'])}; with --strategy supernet: "
        f"{_per_preset(lambda preset: SCREENING_POOLS[preset]['supernet'])})",
    )
    search.add_argument(
        "--strategy",
        default=D.search.strategy,
        choices=STRATEGIES,
        help="supernet: meta-train one weight-sharing supernet of the space first and pick each "
        "meta-trained candidate from --prescreen-pool scored on inherited weights; darts: a "
        "differentiable search of a cell space, its architecture trained as the first trial "
        f"(README: Weight sharing) (default: {D.search.strategy})",
    )
    search.add_argument(
        "--supernet-steps",
        type=int,
        default=None,
        metavar="N",
        help="meta-training steps of the supernet or DARTS network (default: "
        f"{_per_preset(lambda preset: make_config(preset).search.supernet_steps)})",
    )
    search.add_argument("--study", default=None, help="study name (default: <space>-<algo>-<dataset>)")
    search.add_argument(
        "--storage",
        default=None,
        help="Optuna storage URL (default: a file in results/<study>/: Optuna's journal with several processes, "
        "SQLite with one)",
    )
    search.add_argument("--results-dir", default=D.results_dir, help=f"output folder (default: {D.results_dir})")
    search.add_argument(
        "--seed", type=int, default=D.seed, help=f"seed of the sampler, episodes and weights (default: {D.seed})"
    )
    add_device_option(
        machine, default=D.device, help=f"auto, cpu, cuda or cuda:N; auto = CUDA when present (default: {D.device})"
    )
    machine.add_argument(
        "--amp",
        nargs="?",
        const="on",
        default=D.learner.amp,
        choices=AMP_MODES,
        help="precision: auto = bf16 search candidates on a CPU with bf16 instructions (AVX-512 BF16, "
        "AMX), fp32 elsewhere and for final models (the race, export --retrain); on (or --amp alone) = "
        "mixed precision for every training (bf16; fp16 on CUDA before compute capability 8.0); "
        f"off = fp32 throughout (default: {D.learner.amp}); fixed for a study when it starts",
    )
    machine.add_argument(
        "--compile", action="store_true", help="torch.compile the learner's passes (pays only for long trainings)"
    )
    budget.add_argument(
        "--trial-timeout",
        type=float,
        default=None,
        metavar="SECONDS",
        help="fail a candidate whose meta-training takes longer (default: no limit)",
    )
    search.add_argument(
        "--enqueue", action="append", default=[], metavar="ARCH.json", help="train this architecture first (repeatable)"
    )
    race.add_argument(
        "--baseline",
        action="append",
        default=None,
        metavar="SPACE",
        help="a known architecture the pick must beat: a one-architecture space (conv4) or an arch JSON; "
        "raced against the best candidates, or with --race 0 trained first as a trial (repeatable; "
        "'none' for no baseline) (default with a race: conv4 for images, mlp40 for vectors)",
    )
    search.add_argument(
        "--crn",
        default=D.search.crn,
        choices=CRN_MODES,
        help="common random numbers: episodes = every candidate trains on the study's training episodes, "
        "all = and from the study's initial-weight seed, off = each trial its own streams "
        f"(default: {D.search.crn})",
    )
    race.add_argument(
        "--race",
        type=int,
        default=None,
        metavar="K",
        help="after the trials, race the K best candidates and the baselines on fresh episodes and pick the "
        f"survivor (README: The race); 0 = the best trial is the pick (default: {D.search.race}; smoke: 0)",
    )
    race.add_argument(
        "--race-iterations",
        type=int,
        default=None,
        metavar="N",
        help="meta-training steps of each race entrant per block (default: --iterations)",
    )
    race.add_argument(
        "--race-blocks",
        type=int,
        default=None,
        metavar="B",
        help=f"race blocks: each entrant trained once per block, from the block's seed "
        f"(default: {D.search.race_blocks})",
    )
    race.add_argument(
        "--race-rule",
        default=None,
        choices=RACE_RULES,
        help="beats = a candidate is the pick only when it beats every baseline with 95%% confidence, else the "
        f"best baseline stays; mean = the survivor with the best mean (default: {D.search.race_rule})",
    )
    race.add_argument(
        "--race-episodes",
        type=int,
        default=None,
        metavar="E",
        help="fresh validation episodes per race block (default: twice the preset's validation episodes)",
    )
    machine.add_argument(
        "--n-workers",
        type=int,
        default=None,
        help="worker processes on this machine sharing the study, one thread each (default: on the CPU one "
        "per core, at most 8, or $NAS_META_N_WORKERS; 1 on a GPU; 1 keeps the trials' order reproducible)",
    )
    machine.add_argument(
        "--devices",
        default=None,
        metavar="LIST",
        help="GPUs for the workers, e.g. cuda:0,cuda:2: worker i on the (i mod K)-th "
        "(default: every visible GPU when there are several)",
    )


def search_config(args: argparse.Namespace):
    data: dict[str, Any] = {"dataset": args.dataset, **data_overrides(args)}
    for name in ("ways", "shots", "queries"):
        if getattr(args, name) is not None:
            data[name] = getattr(args, name)
    search: dict[str, Any] = {
        "space": args.space,
        "sampler": args.sampler,
        "pruner": args.pruner,
        "study": args.study,
        "storage": args.storage,
        "trial_timeout": args.trial_timeout,
        "enqueue": tuple(args.enqueue),
        "prescreen": args.prescreen,
        "crn": args.crn,
    }
    if args.baseline is not None:
        search["baselines"] = () if args.baseline == ["none"] else tuple(args.baseline)
    for name in ("race", "race_iterations", "race_blocks", "race_episodes", "race_rule"):
        if getattr(args, name) is not None:
            search[name] = getattr(args, name)
    if args.strategy == "supernet":
        search.update(strategy="supernet", prescreen=args.prescreen or "supernet")
    if args.supernet_steps is not None:
        search["supernet_steps"] = args.supernet_steps
    if args.prescreen_pool is not None:
        search["prescreen_pool"] = args.prescreen_pool
    elif args.strategy == "supernet":
        search["prescreen_pool"] = SCREENING_POOLS[args.preset]["supernet"]
    elif args.prescreen is not None:
        search["prescreen_pool"] = SCREENING_POOLS[args.preset]["prescreen"]
    if args.strategy == "darts":
        search["strategy"] = "darts"
    if args.trials is not None:
        search["trials"] = args.trials
    elif args.strategy == "darts":
        search["trials"] = 1  # the derived architecture; more trials continue with the sampler
    learner: dict[str, Any] = {
        "algo": args.algo,
        "amp": args.amp,
        "compile": args.compile,
        **recipe_overrides(args),
    }
    return make_config(
        args.preset,
        budget=budget(args),
        data=data,
        learner=learner,
        search=search,
        results_dir=args.results_dir,
        seed=args.seed,
        device=args.device,
    )


def cmd_search(args: argparse.Namespace) -> int:
    from ..search.runner import SearchInterrupted, run_search
    from ..search.study import check_persistent, redact_url

    cfg = search_config(args)
    if args.n_workers is not None and args.n_workers < 1:
        raise ConfigError(f"--n-workers must be a positive integer, got {args.n_workers}")
    devices = parse_devices(args.devices)
    check_folder(cfg.results_dir, "--results-dir")
    if cfg.search.storage:
        check_persistent(cfg.search.storage)  # now, not after the dataset is generated into the cache
    print(
        f"searching {cfg.search.space!r} with {cfg.learner.algo} on {cfg.data.dataset} "
        f"({cfg.data.ways}-way {cfg.data.shots}-shot), sampler {cfg.search.sampler}, "
        f"preset {cfg.preset}, {cfg.search.trials} trials"
    )
    try:
        with graceful_interrupt() as should_stop:
            outcome = run_search(cfg, workers=args.n_workers, devices=devices, should_stop=should_stop)
    except SearchInterrupted as stop:
        print_table(stop.outcome)
        print(f"{PROG}: interrupted; run the same command again to resume", file=sys.stderr)
        return 130
    print_table(outcome)
    if outcome.ran == 0:
        print(f"the study already holds {cfg.search.trials} trials; ask for more with --trials N")
    print(f"study {outcome.study_name!r} in {redact_url(outcome.storage)}")
    if outcome.directory is not None:  # None only for a worker's outcome
        # Only what is there: with no completed trial there is no best/arch.json to point at.
        names = ("trials.csv", "config.json", "best/arch.json")
        written = [name for name in names if (outcome.directory / name).is_file()]
        print(f"results in {outcome.directory}/ ({', '.join(written)})")
    return 0


def print_table(outcome) -> None:
    from ..analyze import baseline_report, best_trials, format_count, format_score, summary_frame
    from ..search.race import race_state, verdict_lines

    print(summary_frame(outcome.table, outcome.task).to_string(index=False))
    best = best_trials(outcome.study, outcome.task, k=1)
    if best:
        print(
            f"best: trial #{best[0].number}, validation score "
            f"{format_score(best[0].values[0], outcome.task)}, "
            f"params {format_count(best[0].user_attrs.get('params'))}"
        )
    for line in baseline_report(outcome.study, outcome.task):
        print(line)
    seconds = sum(t.user_attrs.get("seconds", 0.0) for t in outcome.study.get_trials(deepcopy=False))
    for line in verdict_lines(race_state(outcome.study), outcome.task, trial_seconds=seconds):
        print(line)


def parse_devices(text: str | None) -> list[str] | None:
    """``--devices cuda:0,cuda:2`` -> ["cuda:0", "cuda:2"]; ConfigError naming a bad entry."""
    if text is None:
        return None
    devices = [name.strip() for name in text.split(",")]
    for name in devices:
        if not is_device_name(name) or name == "auto":
            raise ConfigError(f"--devices: {name!r} is not a device; give a list like cuda:0,cuda:2 (or cpu)")
    return devices


def cmd_worker(args: argparse.Namespace) -> int:
    from ..search.runner import run_worker
    from ..search.study import redact_url

    if args.threads is not None:
        if args.threads < 1:
            raise ConfigError(f"--threads must be a positive integer, got {args.threads}")
        import torch

        torch.set_num_threads(args.threads)
    overrides: dict[str, Any] = {"data": {"cache_dir": cache_dir(args)}}
    if args.data_root:
        overrides["data"]["data_root"] = args.data_root
    if args.device:
        overrides["device"] = args.device
    with graceful_interrupt() as should_stop:
        outcome = run_worker(
            args.study, args.storage, worker_index=args.worker_index, overrides=overrides, should_stop=should_stop
        )
    print(f"worker {args.worker_index} ran {outcome.ran} trials of study {args.study!r} in {redact_url(args.storage)}")
    print_table(outcome)
    return 0


def _per_preset(value: Callable[[str], object]) -> str:
    """A default that follows the preset, for help texts: "smoke 2, quick 500, paper 375000"."""
    return ", ".join(f"{preset} {value(preset)}" for preset in PRESETS)
