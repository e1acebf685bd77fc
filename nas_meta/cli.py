"""Command line: argparse subcommands -> a typed config -> library calls.

A user mistake is one line on stderr naming the bad value and the valid choices, exit code 2, no
traceback, and nothing written.  Ctrl-C ends a search with exit code 130; running the same command
again resumes it.  Anything else is a bug and keeps its traceback.

    python cli.py search --space cell --algo maml
    python cli.py spaces
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, NoReturn

from .config import (
    ALGOS,
    CHECKPOINTS,
    DEFAULT_PRESCREEN_POOL,
    DEVICES,
    LR_SCHEDULES,
    PRESETS,
    PRUNERS,
    REFITS,
    SAMPLERS,
    make_config,
)
from .errors import ConfigError, NasMetaError

__all__ = ["main", "build_parser"]

PROG = "nas-meta"


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage mistake is one line (the usage block is behind --help)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message}\n")


def default_cache_dir() -> str:
    """Where generated and preprocessed datasets are kept between runs (XDG convention)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return str(Path(base) / "nas_meta")


def _add_search_options(p: argparse.ArgumentParser) -> None:
    # None means "the preset's value": only what the user typed overrides the preset.
    p.add_argument("--space", default="cell", help="space name in search_spaces/ or a YAML path (default: cell)")
    p.add_argument("--algo", default="maml", choices=ALGOS, help="meta-learner (default: maml)")
    p.add_argument("--dataset", default="glyphs", help="dataset name (default: glyphs, built in, offline)")
    p.add_argument("--data-root", default=None, help="folder of a real dataset (omniglot, folder, cifar_fs)")
    _add_data_options(p)
    p.add_argument("--ways", type=int, default=None, help="classes per episode (default: 5)")
    p.add_argument("--shots", type=int, default=None, help="support examples per class (default: 1)")
    p.add_argument("--queries", type=int, default=None, help="query examples per class (default: preset's)")
    p.add_argument("--trials", type=int, default=None, help="trials the study should hold (default: preset's)")
    _add_budget_options(p)
    _add_recipe_options(p)
    p.add_argument("--preset", default="quick", choices=sorted(PRESETS), help="budget (default: quick)")
    p.add_argument("--sampler", default="tpe", choices=SAMPLERS, help="controller (default: tpe)")
    p.add_argument("--pruner", default="none", choices=PRUNERS,
                   help="early stopping; halving: successive halving, 3 rungs (default: none)")
    p.add_argument("--prescreen", default=None, metavar="PROXY",
                   help="score --prescreen-pool candidates by this training-free proxy (README: Screening) "
                        "and meta-train only the best of each pool (default: no screening)")
    p.add_argument("--prescreen-pool", type=int, default=None, metavar="K",
                   help=f"candidates screened per meta-trained one (default with --prescreen: {DEFAULT_PRESCREEN_POOL})")
    p.add_argument("--study", default=None, help="study name (default: <space>-<algo>-<dataset>)")
    p.add_argument("--storage", default=None, help="Optuna storage URL (default: SQLite in results/<study>/)")
    p.add_argument("--results-dir", default="results", help="output folder (default: results)")
    p.add_argument("--cache-dir", default=None, help=f"dataset cache (default: {default_cache_dir()})")
    p.add_argument("--seed", type=int, default=0, help="seed of the sampler, episodes and weights (default: 0)")
    p.add_argument("--device", default="auto", choices=DEVICES, help="auto = CUDA when present (default: auto)")
    p.add_argument("--amp", action="store_true", help="mixed precision (CUDA only)")
    p.add_argument("--compile", action="store_true",
                   help="torch.compile the learner's passes (pays only for long trainings)")
    p.add_argument("--trial-timeout", type=float, default=None, metavar="SECONDS",
                   help="fail a candidate whose meta-training takes longer (default: no limit)")
    p.add_argument("--enqueue", action="append", default=[], metavar="ARCH.json",
                   help="train this architecture first (repeatable)")
    p.add_argument("--baseline", action="append", default=[], metavar="SPACE",
                   help="train this one-architecture space first, e.g. conv4 (repeatable)")
    p.add_argument("--n-workers", type=int, default=1,
                   help="worker processes on this machine sharing the study (default: 1)")


def _add_data_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--split", default=None, choices=("lake", "vinyals"),
                   help="omniglot protocol: lake (alphabets held out) or vinyals (+rotations) (default: lake)")
    p.add_argument("--image-size", type=int, default=None, help="resize images to this (default: the dataset's)")
    p.add_argument("--download", action="store_true", help="let torchvision download the dataset (online only)")


def _data_overrides(args: argparse.Namespace) -> dict[str, Any]:
    data: dict[str, Any] = {"cache_dir": args.cache_dir or default_cache_dir(), "download": args.download}
    for name in ("data_root", "split", "image_size", "rotations", "augment"):
        if getattr(args, name, None) is not None:
            data[name] = getattr(args, name)
    return data


def _add_recipe_options(p: argparse.ArgumentParser) -> None:
    # The training recipe; None means "the preset's / dataset's default" (see config.py).
    p.add_argument("--rotations", action=argparse.BooleanOptionalAction, default=None,
                   help="training classes' 90/180/270-degree rotations as new training classes")
    p.add_argument("--augment", action=argparse.BooleanOptionalAction, default=None,
                   help="random affine jitter of training episodes (shift, rotation, scale, shear)")
    p.add_argument("--train-ways", type=int, default=None,
                   help="classes per training episode, e.g. 60 for ProtoNet (default: --ways)")
    p.add_argument("--weight-decay", type=float, default=None, help="AdamW weight decay (default: 0, plain Adam)")
    p.add_argument("--lr-schedule", default=None, choices=LR_SCHEDULES, help="outer learning rate (default: constant)")
    p.add_argument("--checkpoint", default=None, choices=CHECKPOINTS,
                   help="keep the best validation checkpoint's weights or the last step's (default: last)")
    _add_refit_option(p)


def _add_refit_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--refit", default=None, choices=REFITS,
                   help="final models train on the train classes, or on train+val for the steps validation "
                        "chose (default: train; export: the study's)")


def _recipe_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The learner's recipe options the user typed (the data ones go through _data_overrides)."""
    return {name: getattr(args, name)
            for name in ("train_ways", "weight_decay", "lr_schedule", "checkpoint", "refit")
            if getattr(args, name, None) is not None}


def _add_study_options(p: argparse.ArgumentParser, *, many: bool) -> None:
    if many:
        p.add_argument("--study", action="append", required=True,
                       help="study name or shell glob; repeat for a comparison")
    else:
        p.add_argument("--study", required=True, help="study name")
    p.add_argument("--storage", default=None, help="storage URL (default: the study folder in --results-dir)")
    p.add_argument("--results-dir", default="results", help="where study folders are (default: results)")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog=PROG, description="Neural architecture search for few-shot learning.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    search = sub.add_parser("search", help="search a space for the best few-shot backbone")
    _add_search_options(search)

    worker = sub.add_parser("worker", help="join a study (from this or another machine)")
    worker.add_argument("--study", required=True, help="study name")
    worker.add_argument("--storage", required=True, help="the study's storage URL, e.g. postgresql://user@host/db")
    worker.add_argument("--worker-index", type=int, default=1,
                        help="distinct per worker: the sampler's seed is the run seed plus this (default: 1)")
    worker.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    worker.add_argument("--data-root", default=None, help="where the dataset is on this machine")
    worker.add_argument("--cache-dir", default=None, help=f"dataset cache (default: {default_cache_dir()})")
    worker.add_argument("--device", default=None, choices=DEVICES, help="override the study's device")

    export = sub.add_parser("export", help="write the best architectures as loadable models")
    _add_study_options(export, many=False)
    pick = export.add_mutually_exclusive_group()
    pick.add_argument("--top", type=int, default=1, help="export the K best distinct architectures (default: 1)")
    pick.add_argument("--pareto", action="store_true", help="export the Pareto front of score and size")
    export.add_argument("--retrain", action="store_true",
                        help="meta-train from scratch with the study's recipe, meta-test on the test classes")
    _add_refit_option(export)
    _add_budget_options(export)  # of --retrain; the search's own budget by default
    export.add_argument("--out", default=None, help="output folder (default: results/<study>/export)")
    export.add_argument("--cache-dir", default=None, help=f"dataset cache (default: {default_cache_dir()})")
    export.add_argument("--data-root", default=None, help="where the study's dataset is on this machine")

    evaluate = sub.add_parser("evaluate", help="meta-test one architecture on the test classes")
    evaluate.add_argument("arch", help="an arch.json file, an exported folder or a one-architecture space (conv4)")
    evaluate.add_argument("--weights", default=None, help="trained weights (weights.pt); without: train first")
    evaluate.add_argument("--save-weights", default=None, metavar="PATH",
                          help="after training, keep the weights here (for --weights)")
    evaluate.add_argument("--within-alphabet", action="store_true",
                          help="test episodes draw their classes from one alphabet (Lake et al.)")
    _add_budget_options(evaluate)
    _add_recipe_options(evaluate)
    evaluate.add_argument("--algo", default=None, choices=ALGOS, help="meta-learner (default: the card's, else maml)")
    evaluate.add_argument("--dataset", default=None, help="dataset (default: the card's, else glyphs)")
    evaluate.add_argument("--data-root", default=None)
    _add_data_options(evaluate)
    evaluate.add_argument("--ways", type=int, default=None)
    evaluate.add_argument("--shots", type=int, default=None)
    evaluate.add_argument("--queries", type=int, default=None)
    evaluate.add_argument("--episodes", type=int, default=None, help="test episodes (default: 600)")
    evaluate.add_argument("--preset", default="quick", choices=sorted(PRESETS), help="training budget (default: quick)")
    evaluate.add_argument("--cache-dir", default=None)
    evaluate.add_argument("--seed", type=int, default=0)
    evaluate.add_argument("--device", default="auto", choices=DEVICES)

    analyze = sub.add_parser("analyze", help="tables and plots of one or more studies")
    _add_study_options(analyze, many=True)
    analyze.add_argument("--format", default="md", choices=("csv", "latex", "md"), help="table format (default: md); csv with several studies gives their comparison table")
    analyze.add_argument("--plots", default=None, metavar="DIR", help="write PNG plots into DIR")
    analyze.add_argument("--out", default=None, help="write the tables to this file instead of stdout")

    spaces = sub.add_parser("spaces", help="list the search spaces, or draw one")
    spaces.add_argument("--show", default=None, metavar="SPACE", help="draw this space's graph")
    spaces.add_argument("--out", default=None, help="PNG path for --show (default: <space>.png)")
    return parser


def _search_config(args: argparse.Namespace):
    data: dict[str, Any] = {"dataset": args.dataset, **_data_overrides(args)}
    for name in ("ways", "shots", "queries"):
        if getattr(args, name) is not None:
            data[name] = getattr(args, name)
    search: dict[str, Any] = {"space": args.space, "sampler": args.sampler, "pruner": args.pruner,
                              "study": args.study, "storage": args.storage, "trial_timeout": args.trial_timeout,
                              "enqueue": tuple(args.baseline) + tuple(args.enqueue),
                              "prescreen": args.prescreen}
    if args.prescreen_pool is not None:
        search["prescreen_pool"] = args.prescreen_pool
    elif args.prescreen is not None:
        search["prescreen_pool"] = DEFAULT_PRESCREEN_POOL
    if args.trials is not None:
        search["trials"] = args.trials
    learner: dict[str, Any] = {"algo": args.algo, "amp": args.amp, "compile": args.compile,
                               **_budget_overrides(args, make_config(args.preset).learner),
                               **_recipe_overrides(args)}
    return make_config(args.preset, data=data, learner=learner, search=search,
                       results_dir=args.results_dir, seed=args.seed, device=args.device)


def _add_budget_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--iterations", type=int, default=None, help="meta-training steps (default: preset's)")
    p.add_argument("--meta-batch", type=int, default=None, help="episodes per meta-training step (default: preset's)")


def _budget_overrides(args: argparse.Namespace, base: Any) -> dict[str, Any]:
    """--iterations / --meta-batch over ``base`` (a LearnerConfig), keeping its number of checkpoints."""
    learner: dict[str, Any] = {}
    if args.iterations is not None:
        _positive("iterations", args.iterations)
        learner["iterations"] = args.iterations
        learner["eval_every"] = max(1, args.iterations * base.eval_every // base.iterations)
    if args.meta_batch is not None:
        learner["meta_batch"] = args.meta_batch
    return learner


def cmd_search(args: argparse.Namespace) -> int:
    from .search.runner import SearchInterrupted, run_search
    from .search.study import redact_url

    cfg = _search_config(args)
    if args.n_workers < 1:
        raise ConfigError(f"--n-workers must be a positive integer, got {args.n_workers}")
    print(f"searching {cfg.search.space!r} with {cfg.learner.algo} on {cfg.data.dataset} "
          f"({cfg.data.ways}-way {cfg.data.shots}-shot), sampler {cfg.search.sampler}, "
          f"preset {cfg.preset}, {cfg.search.trials} trials")
    try:
        with _graceful_interrupt() as should_stop:
            outcome = run_search(cfg, workers=args.n_workers, should_stop=should_stop)
    except SearchInterrupted as stop:
        _print_table(stop.outcome)
        print(f"{PROG}: interrupted; run the same command again to resume", file=sys.stderr)
        return 130
    _print_table(outcome)
    if outcome.ran == 0:
        print(f"the study already holds {cfg.search.trials} trials; ask for more with --trials N")
    print(f"study {outcome.study_name!r} in {redact_url(outcome.storage)}")
    print(f"results in {outcome.directory}/ (trials.csv, config.json, best/arch.json)")
    return 0


@contextlib.contextmanager
def _graceful_interrupt() -> Iterator[Callable[[], bool]]:
    """First Ctrl-C: stop at the next training step (a safe point: a KeyboardInterrupt raised at
    an arbitrary moment can land in a garbage-collector callback, where Python ignores it).
    A second Ctrl-C interrupts at once."""
    requested = threading.Event()

    def handler(signum: int, frame: object) -> None:
        if requested.is_set():
            raise KeyboardInterrupt
        requested.set()
        print(f"\n{PROG}: stopping at the next step (Ctrl-C again to stop at once)", file=sys.stderr)

    if threading.current_thread() is not threading.main_thread():
        yield requested.is_set
        return
    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield requested.is_set
    finally:
        signal.signal(signal.SIGINT, previous)


def _print_table(outcome) -> None:
    from .analyze import baseline_report, best_trials, format_count, format_score, summary_frame

    print(summary_frame(outcome.table, outcome.task).to_string(index=False))
    best = best_trials(outcome.study, outcome.task, k=1)
    if best:
        print(f"best: trial #{best[0].number}, validation score "
              f"{format_score(best[0].values[0], outcome.task)}, "
              f"params {format_count(best[0].user_attrs.get('params'))}")
    for line in baseline_report(outcome.study, outcome.task):
        print(line)


def cmd_worker(args: argparse.Namespace) -> int:
    from .search.runner import run_worker
    from .search.study import redact_url

    if args.threads is not None:
        if args.threads < 1:
            raise ConfigError(f"--threads must be a positive integer, got {args.threads}")
        import torch

        torch.set_num_threads(args.threads)
    overrides: dict[str, Any] = {"data": {"cache_dir": args.cache_dir or default_cache_dir()}}
    if args.data_root:
        overrides["data"]["data_root"] = args.data_root
    if args.device:
        overrides["device"] = args.device
    with _graceful_interrupt() as should_stop:
        outcome = run_worker(args.study, args.storage, worker_index=args.worker_index, overrides=overrides,
                             should_stop=should_stop)
    print(f"worker {args.worker_index} ran {outcome.ran} trials of study {args.study!r} "
          f"in {redact_url(args.storage)}")
    _print_table(outcome)
    return 0


def cmd_spaces(args: argparse.Namespace) -> int:
    from . import spaces

    if args.show:
        space = spaces.load_space(args.show)
        out = Path(args.out or f"{space.name}.png")
        spaces.draw_space(space, out)
        print(f"wrote {out}")
        return 0
    rows = []
    for name in spaces.list_spaces():
        space = spaces.load_space(name)
        rows.append((name, space.kind, len(space.choices()), space.size()))
    width = max(len(r[0]) for r in rows) if rows else 4
    print(f"{'space':<{width}}  {'kind':<6}  {'choices':>7}  {'architectures':>16}")
    for name, kind, n_choices, size in rows:
        print(f"{name:<{width}}  {kind:<6}  {n_choices:>7}  {size:>16,}")
    return 0


def _positive(name: str, value: int | None) -> None:
    if value is not None and value < 1:
        raise ConfigError(f"--{name} must be a positive integer, got {value}")


def cmd_export(args: argparse.Namespace) -> int:
    from .export import export_trials, select_trials
    from .search.study import find_studies, load_study, stored_config, study_task

    _positive("top", args.top)
    [(name, url)] = find_studies([args.study], args.storage, args.results_dir)
    study = load_study(name, url)
    cfg = stored_config(study)
    data: dict[str, Any] = {"cache_dir": args.cache_dir or default_cache_dir()}
    if args.data_root:
        data["data_root"] = args.data_root
    if args.refit is not None and not args.retrain:
        raise ConfigError(f"--refit {args.refit} chooses what --retrain trains on; add --retrain")
    learner = _budget_overrides(args, cfg.learner)
    if args.refit is not None:
        learner["refit"] = args.refit
    cfg = cfg.replace(data=data, learner=learner).validate()
    task = study_task(study)
    trials = select_trials(study, task, top=args.top, pareto=args.pareto)
    out = Path(args.out) if args.out else Path(args.results_dir) / name / "export"
    log = lambda text: print(text, file=sys.stderr)  # noqa: E731
    for item in export_trials(study, cfg, trials, out, retrain_them=args.retrain, log=log,
                              progress=_step_printer() if args.retrain else None):
        line = f"rank {item.rank}: trial #{item.trial} -> {item.folder}"
        if "retrain" in item.card:
            test = item.card["retrain"]["test"]
            line += f"  test {test['metric']} {_pm(test, task)}"
        print(line)
    return 0


def _pm(test: dict[str, Any], task: str) -> str:
    if task == "classification":
        return f"{100 * test['mean']:.2f}% ± {100 * test['ci95']:.2f}"
    return f"{test['mean']:.4f} ± {test['ci95']:.4f}"


def _step_printer():
    state = {"last": None}

    def progress(step: int, total: int, val: float | None) -> None:
        if val is not None and val != state["last"]:
            print(f"  step {step}/{total} validation {val:.4f}", file=sys.stderr)
            state["last"] = val

    return progress


def cmd_evaluate(args: argparse.Namespace) -> int:
    from .export import evaluate_arch, read_card
    from .graph import load_json

    for name in ("ways", "shots", "queries", "episodes"):
        _positive(name, getattr(args, name))
    path = Path(args.arch)
    card = (read_card(path if path.is_dir() else path.parent) or {}) if path.exists() else {}
    data: dict[str, Any] = {
        "dataset": args.dataset or card.get("dataset", "glyphs"),
        **_data_overrides(args),
        "ways": args.ways or card.get("ways", 5),
        "shots": args.shots or card.get("shots", 1),
    }
    if args.queries:
        data["queries"] = args.queries
    learner: dict[str, Any] = {"algo": args.algo or card.get("algo", "maml")}
    if args.episodes:
        learner["test_episodes"] = args.episodes
    learner.update(_budget_overrides(args, make_config(args.preset).learner))
    recipe = card.get("recipe", {})  # an exported folder retrains with its study's recipe by default
    for name in ("rotations", "augment"):
        if getattr(args, name) is None and name in recipe:
            data[name] = recipe[name]
    for name in ("weight_decay", "lr_schedule", "checkpoint", "refit"):
        if name in recipe:
            learner[name] = recipe[name]
    if recipe.get("train_ways") not in (None, data["ways"]):
        learner["train_ways"] = recipe["train_ways"]
    learner.update(_recipe_overrides(args))
    if args.within_alphabet:
        data["within_alphabet"] = True
    cfg = make_config(args.preset, data=data, learner=learner, seed=args.seed, device=args.device)
    if path.exists():
        arch = load_json(path / "arch.json" if path.is_dir() else path)
    else:  # a space with exactly one architecture, such as conv4
        from .search.runner import load_known_arch

        arch = load_known_arch(args.arch)[1]
    if args.weights is not None and args.save_weights:
        raise ConfigError("--save-weights keeps weights trained here; with --weights nothing is trained")
    test = evaluate_arch(cfg, arch, weights=args.weights, progress=_step_printer(), save_to=args.save_weights,
                         log=lambda text: print(text, file=sys.stderr))
    task = "classification" if test["metric"] == "accuracy" else "regression"
    d = cfg.data
    print(f"{cfg.learner.algo} on {d.dataset} test classes, {d.ways}-way {d.shots}-shot, "
          f"{test['episodes']} episodes{', within alphabets' if d.within_alphabet else ''}: "
          f"{test['metric']} {_pm(test, task)} (95% CI)"
          + (f", trained in {test['train_seconds']:.0f} s (weights of step {test['weights_step']})"
             if "train_seconds" in test else ""))
    return 0


def cmd_analyze(args: argparse.Namespace) -> int:
    from .analyze import compare_frame, ranked_frame, render, study_summary
    from .fileio import atomic_write_text
    from .search.study import find_studies, load_study, stored_config, study_task

    entries = []
    for name, url in find_studies(args.study, args.storage, args.results_dir):
        study = load_study(name, url)
        entries.append((study, stored_config(study)))
    parts = []
    for study, cfg in entries:
        task = study_task(study)
        summary = study_summary(study, task)
        frame = ranked_frame(study, task, sampler=cfg.search.sampler)
        heading = (f"study {study.study_name}: {cfg.search.space} / {cfg.learner.algo} / {cfg.data.dataset} "
                   f"{cfg.data.ways}-way {cfg.data.shots}-shot, sampler {cfg.search.sampler}")
        summary_text = ", ".join(f"{k}={v}" for k, v in summary.items())
        if args.format == "md":
            parts.append(f"## {heading}\n\n{summary_text}\n\n" + render(frame, "md"))
        elif args.format == "latex":
            parts.append(f"% {heading}\n% {summary_text}\n" + render(frame, "latex"))
        else:
            parts.append(render(frame, "csv"))
    if len(entries) > 1:
        comparison = render(compare_frame(entries), args.format)
        if args.format == "csv":
            parts = [comparison]  # one CSV is one table: several studies give their comparison
        else:
            parts.append(("## comparison\n\n" if args.format == "md" else "% comparison\n") + comparison)
    text = "\n".join(parts)
    if args.out:
        atomic_write_text(args.out, text)
        print(f"wrote {args.out}")
    else:
        print(text, end="")
    if args.plots:
        from .viz.study import write_plots

        pairs = [(s, study_task(s)) for s, _ in entries]
        for path in write_plots(pairs, args.plots):
            print(f"wrote {path}", file=sys.stderr)
    return 0


COMMANDS = {
    "search": cmd_search,
    "worker": cmd_worker,
    "export": cmd_export,
    "evaluate": cmd_evaluate,
    "analyze": cmd_analyze,
    "spaces": cmd_spaces,
}


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit code (``SystemExit`` for usage errors comes from argparse)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help (0) or a usage mistake (2), already printed in one line
        return int(exc.code or 0)
    import optuna

    # Our progress lines say what Optuna's log would, once per trial and readably; its warning for a
    # failed trial (a traceback) is already a line of ours with the reason, and a bug in a trial
    # is re-raised by optimize() with its traceback.
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    try:
        return COMMANDS[args.command](args)
    except NasMetaError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"\n{PROG}: interrupted; run the same command again to resume", file=sys.stderr)
        return 130
