"""``export`` and ``evaluate``: the best architectures as files and models; one architecture meta-tested."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from ..config import PRESETS, RunConfig, make_config
from ..errors import ConfigError
from .common import (
    add_budget_options,
    add_data_options,
    add_device_option,
    add_location_options,
    add_recipe_options,
    add_refit_option,
    add_study_options,
    budget,
    cache_dir,
    check_file,
    check_folder,
    data_overrides,
    format_test,
    positive,
    recipe_overrides,
    step_printer,
)

D = RunConfig()  # the defaults the options show and fall back to


def add_parsers(sub: Any) -> None:
    export = sub.add_parser("export", help="write the best architectures as loadable models")
    add_study_options(export, many=False)
    pick = export.add_mutually_exclusive_group()
    pick.add_argument("--top", type=int, default=1, help="export the K best distinct architectures (default: 1)")
    pick.add_argument("--pareto", action="store_true", help="export the Pareto front of score and size")
    export.add_argument(
        "--retrain",
        action="store_true",
        help="meta-train from scratch with the study's recipe, meta-test on the test classes",
    )
    export.add_argument(
        "--onnx",
        action="store_true",
        help="also write each backbone as model.onnx: with trained weights after --retrain, else with the "
        "untrained initial ones of the card's init_seed; needs the onnx extra",
    )
    add_refit_option(export)
    add_budget_options(export)  # of --retrain; the search's own budget by default
    export.add_argument("--out", default=None, help="output folder (default: results/<study>/export)")
    add_location_options(export, data_root="where the study's dataset is on this machine")

    evaluate = sub.add_parser("evaluate", help="meta-test one architecture on the test classes")
    evaluate.add_argument("arch", help="an arch.json file, an exported folder or a one-architecture space (conv4)")
    evaluate.add_argument("--weights", default=None, help="trained weights (weights.pt); without: train first")
    evaluate.add_argument(
        "--save-weights", default=None, metavar="PATH", help="after training, keep the weights here (for --weights)"
    )
    evaluate.add_argument(
        "--within-alphabet",
        action="store_true",
        help="test episodes draw their classes from one alphabet (Lake et al.)",
    )
    add_budget_options(evaluate)
    add_recipe_options(evaluate)
    from ..learners import LEARNERS

    evaluate.add_argument(
        "--algo", default=None, choices=LEARNERS.names(), help="meta-learner (default: the card's, else maml)"
    )
    evaluate.add_argument("--dataset", default=None, help="dataset (default: the card's, else glyphs)")
    add_location_options(evaluate)
    add_data_options(evaluate)
    evaluate.add_argument("--ways", type=int, default=None)
    evaluate.add_argument("--shots", type=int, default=None)
    evaluate.add_argument("--queries", type=int, default=None)
    evaluate.add_argument("--episodes", type=int, default=None, help="test episodes (default: 600)")
    evaluate.add_argument(
        "--preset", default=D.preset, choices=sorted(PRESETS), help=f"training budget (default: {D.preset})"
    )
    evaluate.add_argument("--seed", type=int, default=D.seed)
    add_device_option(evaluate, default=D.device)
    evaluate.add_argument("--amp", action="store_true", help="mixed precision (CUDA; bf16 on CPUs that have it)")
    export.set_defaults(run=cmd_export)
    evaluate.set_defaults(run=cmd_evaluate)


def cmd_export(args: argparse.Namespace) -> int:
    from ..export import choose_exports, describe, export_trials, require_onnx
    from ..search.study import find_studies, load_study, stored_config, study_task

    positive("top", args.top)
    if args.onnx:
        require_onnx()  # before anything is read or written
    [(name, url)] = find_studies([args.study], args.storage, args.results_dir)
    study = load_study(name, url)
    cfg = stored_config(study)
    data: dict[str, Any] = {"cache_dir": cache_dir(args)}
    if args.data_root:
        data["data_root"] = args.data_root
    if args.refit is not None and not args.retrain:
        raise ConfigError(f"--refit {args.refit} chooses what --retrain trains on; add --retrain")
    learner = cfg.learner.budget(**budget(args))
    if args.refit is not None:
        learner["refit"] = args.refit
    cfg = cfg.replace(data=data, learner=learner).validate()
    task = study_task(study)
    chosen = choose_exports(study, task, top=args.top, pareto=args.pareto)
    out = check_folder(args.out, "--out") if args.out else Path(args.results_dir) / name / "export"
    log = lambda text: print(text, file=sys.stderr)  # noqa: E731
    for item in export_trials(
        study,
        cfg,
        chosen,
        out,
        retrain_them=args.retrain,
        onnx=args.onnx,
        log=log,
        progress=step_printer(task=task) if args.retrain else None,
    ):
        line = f"rank {item.rank}: {describe(chosen[item.rank - 1])} -> {item.folder}"
        if "retrain" in item.card:
            test = item.card["retrain"]["test"]
            line += f"  test {test['metric']} {format_test(test, task)}"
        print(line)
    if args.onnx and not args.retrain:
        # Allowed (a graph to profile or to wire into an app before training it), never silent;
        # said once the export is whole, so a refused export stays one line.
        log(
            f"note: without --retrain, model.onnx carries untrained weights (the initial ones of the "
            f"card's init_seed {cfg.seed}, which nas_meta.load() rebuilds); add --retrain for trained ones"
        )
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from ..export import read_card
    from ..graph import load_json
    from ..retrain import evaluate_arch
    from ..spaces import list_spaces

    for name in ("ways", "shots", "queries", "episodes"):
        positive(name, getattr(args, name))
    path = Path(args.arch)
    is_space = "/" not in args.arch and args.arch in list_spaces()  # a shipped space's name
    if is_space and path.exists():
        what = "folder" if path.is_dir() else "file"
        raise ConfigError(
            f"{args.arch!r} is both a shipped space and a {what} here; write ./{args.arch} for the {what}, "
            "or run from another folder for the space"
        )
    from_files = path.exists() and not is_space
    card = (read_card(path if path.is_dir() else path.parent) or {}) if from_files else {}
    data: dict[str, Any] = {
        "dataset": args.dataset or card.get("dataset", "glyphs"),
        **data_overrides(args),
        "ways": args.ways or card.get("ways", 5),
        "shots": args.shots or card.get("shots", 1),
    }
    if args.queries:
        data["queries"] = args.queries
    learner: dict[str, Any] = {"algo": args.algo or card.get("algo", "maml")}
    if args.episodes:
        learner["test_episodes"] = args.episodes
    recipe = card.get("recipe", {})  # an exported folder retrains with its study's recipe by default
    for name in ("rotations", "augment"):
        if getattr(args, name) is None and name in recipe:
            data[name] = recipe[name]
    for name in ("weight_decay", "lr_schedule", "checkpoint", "refit"):
        if name in recipe:
            learner[name] = recipe[name]
    if recipe.get("train_ways") not in (None, data["ways"]):
        learner["train_ways"] = recipe["train_ways"]
    learner.update(recipe_overrides(args))
    if args.amp:
        learner["amp"] = True
    if args.within_alphabet:
        data["within_alphabet"] = True
    cfg = make_config(args.preset, budget=budget(args), data=data, learner=learner, seed=args.seed, device=args.device)
    if from_files:
        arch = load_json(path / "arch.json" if path.is_dir() else path)
    else:  # a space with exactly one architecture, such as conv4
        from ..spaces import load_known_arch

        arch = load_known_arch(args.arch)[1]
    if args.save_weights:
        check_file(args.save_weights, "--save-weights")
    if args.weights is not None and args.save_weights:
        raise ConfigError("--save-weights keeps weights trained here; with --weights nothing is trained")
    test = evaluate_arch(
        cfg,
        arch,
        weights=args.weights,
        progress=step_printer(),
        save_to=args.save_weights,
        log=lambda text: print(text, file=sys.stderr),
    )
    task = "classification" if test["metric"] == "accuracy" else "regression"
    d = cfg.data
    shape = f"{d.ways}-way {d.shots}-shot" if task == "classification" else f"{d.shots}-shot regression"
    print(
        f"{cfg.learner.algo} on {d.dataset} test {'classes' if task == 'classification' else 'tasks'}, {shape}, "
        f"{test['episodes']} episodes{', within alphabets' if d.within_alphabet else ''}: "
        f"{test['metric']} {format_test(test, task)} (95% CI)"
        + (
            f", trained in {test['train_seconds']:.0f} s (weights of step {test['weights_step']})"
            if "train_seconds" in test
            else ""
        )
    )
    return 0
