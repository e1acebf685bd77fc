"""Searched backbone against Conv-4 on the held-out test alphabets, paired on the same test episodes.

    .venv/bin/python -m bench.versus_conv4 run OMNIGLOT_ROOT NAME ARCH.json --seeds 0 1 --tasks 5w1s 20w1s
    .venv/bin/python -m bench.versus_conv4 run OMNIGLOT_ROOT NAME ARCH.json --algo fomaml --iterations 300
    .venv/bin/python -m bench.versus_conv4 default OMNIGLOT_ROOT --algo protonet --tasks 5w1s 20w1s --seeds 0 1
    .venv/bin/python -m bench.versus_conv4 table

``default`` runs the toolkit's default search first (``quick`` preset on the task's own episodes,
common random numbers, the race against Conv-4; ``--space chain`` by default, which holds
Conv-4; ``--space chain_recipe`` searches training choices too, and its pick is also compared with
Conv-4 trained with the pick's own choices) and compares its pick; the race's own validation
verdict stands beside the test difference.  ``table`` reads the committed records
(``results/records/versus_conv4/``), so it regenerates on any machine.

For each seed and task (``<ways>w<shots>s``), the architecture ``ARCH.json`` (a search's pick,
saved under ``NAME``) and Conv-4 are each meta-trained from scratch with *exactly the same*
budget and recipe (``--algo``, ProtoNet by default; ``--iterations`` steps on training episodes of the task's shape,
5 queries per class, meta-batch 4, the ``omniglot`` recipe defaults), on the minimal Omniglot sets
(``lake`` split: the test alphabets are never trained, validated or searched on), and
meta-tested on the same 600 test episodes.  The difference gets the **paired** 95% CI: 1.96 x
std of the per-episode differences / sqrt(600).  Results go to ``results/versus_conv4/``
(git-ignored; reruns skip what is done; the Conv-4 arm of a seed, task, learner and budget is
trained once and shared by every searched backbone compared with it); ``table`` prints them, and its last line is
``<name>_<task>_s<seed>=<difference in points>`` pairs.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from bench.common import add_cache_dir, add_omniglot_root, missing_root, subcommands
from bench.recipe import mean_ci, paired
from bench.records import write_record
from bench.versus_tables import committed, render

RESULTS = Path(__file__).resolve().parent.parent / "results" / "versus_conv4"
TEST_EPISODES = 600


def parse_task(task: str) -> tuple[int, int]:
    ways, shots = task.rstrip("s").split("w")
    return int(ways), int(shots)


def run_one(
    root: str, arch_path: str, seed: int, task: str, iterations: int, cache: str, algo: str = "protonet"
) -> dict[str, Any]:
    from nas_meta import graph
    from nas_meta.config import make_config
    from nas_meta.data import load_dataset
    from nas_meta.learners import evaluate_episodes
    from nas_meta.model import network
    from nas_meta.retrain import TEST_SEED_OFFSET, retrain
    from nas_meta.spaces import load_known_arch

    ways, shots = parse_task(task)
    cfg = make_config(
        "quick",
        data={
            "dataset": "omniglot",
            "data_root": root,
            "cache_dir": cache,
            "split": "lake",
            "ways": ways,
            "shots": shots,
            "queries": 5,
        },
        learner={
            "algo": algo,
            "meta_batch": 4,
            "iterations": iterations,
            "eval_every": max(1, iterations // 6),
            "val_episodes": 100,
            "test_episodes": TEST_EPISODES,
        },
        seed=seed,
        device="cpu",
    )
    dataset = load_dataset(cfg.data)
    out: dict[str, Any] = {
        "seed": seed,
        "task": task,
        "algo": algo,
        "iterations": iterations,
        "recipe": cfg.recipe(),
    }
    conv4_arm = RESULTS / "conv4" / f"{algo}-{task}-s{seed}-{iterations}.json"
    searched, conv4 = load_known_arch(arch_path)[1], load_known_arch("conv4")[1]
    same = graph.fingerprint(searched) == graph.fingerprint(conv4)  # a race can pick Conv-4 itself
    arms = [("conv4", conv4), ("searched", searched)]
    if searched.graph.get("recipe"):
        # A pick searched with training choices: Conv-4 trained with the same choices tells how much
        # of its gain is the recipe's and how much the architecture's.
        conv4_recipe = conv4.copy()
        conv4_recipe.graph["recipe"] = dict(searched.graph["recipe"])
        arms.append(("conv4_recipe", conv4_recipe))
    for side, arch in arms:
        if side == "conv4" and conv4_arm.is_file():
            out[side] = json.loads(conv4_arm.read_text())
            continue
        if side == "searched" and same:  # the same training from the same seed: the same numbers
            out[side] = out["conv4"]
            continue
        if side == "conv4_recipe" and graph.fingerprint(arch) == graph.fingerprint(searched):
            out[side] = out["searched"]
            continue
        t0 = time.process_time()
        model, result = retrain(cfg, arch, dataset=dataset)
        sampler = dataset.sampler(
            "test", ways=ways, shots=shots, queries=cfg.data.queries, seed=seed + TEST_SEED_OFFSET, device="cpu"
        )
        per_episode = evaluate_episodes(model, sampler, TEST_EPISODES)
        out[side] = {
            "fingerprint": graph.fingerprint(arch),
            "params": network.count_params(network.build(arch, dataset.input_shape)),
            "val": result["val"],
            "cpu_s": round(time.process_time() - t0, 1),
            "test": [round(float(v), 6) for v in per_episode],
        }
    if not conv4_arm.is_file():  # trained now: kept for the next backbone compared with it
        from nas_meta.fileio import atomic_write_json

        conv4_arm.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_json(conv4_arm, out["conv4"])
    return out


def arms_cpu(doc: dict[str, Any]) -> float:
    """Every arm's training CPU seconds: a row's figures need all its trainings, even when the
    Conv-4 arm is shared with other rows."""
    # An arm that is another's training (Conv-4 compared with itself) counts once.
    arms = {id(doc[arm]): doc[arm] for arm in ("searched", "conv4", "conv4_recipe") if arm in doc}
    return sum(arm["cpu_s"] for arm in arms.values())


def default_search(
    root: str,
    seed: int,
    task: str,
    algo: str,
    space: str,
    cache: str,
    changes: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The toolkit's default search (``quick`` preset, its defaults: common random numbers and the
    race against Conv-4) on the task's own episodes, with the search settings in ``changes`` (of
    ``CHANGES``) changed; its pick, the race's verdict and its CPU."""
    import optuna

    from nas_meta.config import make_config
    from nas_meta.search.race import race_state
    from nas_meta.search.runner import run_search

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    ways, shots = parse_task(task)
    changes = changes or {}
    study = f"{space}-{algo}-{task}-s{seed}" + suffix(changes, "-")
    cfg = make_config(
        "quick",
        data={"dataset": "omniglot", "data_root": root, "cache_dir": cache, "ways": ways, "shots": shots},
        # fp32 candidates, as the rows so far (before --amp auto trained them in bf16 on bf16 CPUs).
        learner={"algo": algo, "amp": "off"},
        search={"space": space, "study": study, **changes},
        results_dir=str(RESULTS / "searches"),
        seed=seed,
        device="cpu",
    )
    t0 = time.process_time()
    outcome = run_search(cfg, stream=open(os.devnull, "w"))
    state = race_state(outcome.study) or {}
    verdicts = state.get("verdicts", [])
    trials = [t for t in outcome.study.trials if t.values]
    return {
        "arch_path": str(outcome.directory / "best" / "arch.json"),
        "study": study,
        "search_cpu_s": round(time.process_time() - t0, 1),
        "race_cpu_s": state.get("cpu_seconds"),
        "trial_seconds": round(sum(t.user_attrs.get("seconds", 0.0) for t in trials), 1),
        "pick": state.get("pick"),
        "race_verdict": verdicts[0] if verdicts else None,
        "race_scores": {k: v["mean"] for k, v in state.get("scores", {}).items()},
        "dropped": state.get("dropped", {}),
        "settings": {"crn": cfg.search.crn, "race": cfg.search.race, **state.get("settings", {})},
    }


# Search settings a ``default`` row may change, with the letter that names the change in the row's name.
CHANGES = {"race_iterations": "r", "race_blocks": "b", "trials": "t", "crn": "c"}


def suffix(changes: dict[str, Any], sep: str) -> str:
    """What names a row searched otherwise than by default: ``_r240``, ``_r300b3``, ``_r300b3t32``,
    ``_r300b3t32coff``."""
    return (sep + "".join(f"{CHANGES[k]}{v}" for k, v in changes.items())) if changes else ""


def table() -> int:
    lines, last = render(committed())  # every committed row
    if not lines:
        print("no results yet")
        return 1
    print("\n".join(lines))
    print(" ".join(f"{k}={v:.2f}" for k, v in last.items()))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser, sub = subcommands(__doc__)
    r = sub.add_parser("run")
    add_omniglot_root(r)
    r.add_argument("name", help="a short name for the searched architecture (letters, digits, '-', '_')")
    r.add_argument("arch", help="its arch.json")
    r.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    r.add_argument("--tasks", nargs="+", default=["5w1s", "20w1s"])
    r.add_argument("--iterations", type=int, default=600, help="meta-training steps of both backbones")
    r.add_argument("--algo", default="protonet", choices=["protonet", "fomaml", "maml"], help="the learner of both")
    add_cache_dir(r, RESULTS)
    d = sub.add_parser("default", help="the default search's pick (its race included) against Conv-4")
    add_omniglot_root(d)
    d.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    d.add_argument("--tasks", nargs="+", default=["5w1s", "20w1s"])
    d.add_argument("--algo", default="protonet", choices=["protonet", "fomaml", "maml"])
    d.add_argument("--space", default="chain", help="the space searched (default: chain, which holds Conv-4)")
    d.add_argument("--iterations", type=int, default=600, help="meta-training steps of both final backbones")
    d.add_argument(
        "--race-iterations", type=int, default=None, help="the race's steps per block (default: the search's own)"
    )
    d.add_argument("--race-blocks", type=int, default=None, help="the race's blocks (default: the search's own)")
    d.add_argument("--trials", type=int, default=None, help="the search's trials (default: the preset's)")
    d.add_argument(
        "--crn", default=None, choices=["episodes", "all", "off"], help="common random numbers (default: the search's)"
    )
    add_cache_dir(d, RESULTS)
    sub.add_parser("table")
    args = parser.parse_args(argv)
    if args.command == "table":
        return table()
    if args.command == "default":
        return run_default(args)
    if not Path(args.root).is_dir() or not Path(args.arch).is_file():
        print(
            f"versus_conv4.py: error: need an OMNIGLOT_ROOT folder and an arch.json file, got {args.root!r} "
            f"and {args.arch!r}",
            file=sys.stderr,
        )
        return 2
    from nas_meta.fileio import atomic_write_json

    RESULTS.mkdir(parents=True, exist_ok=True)
    for seed in args.seeds:
        for task in args.tasks:
            path = RESULTS / f"{args.name}-{args.algo}-{task}-s{seed}.json"
            if path.exists():
                continue
            doc = run_one(args.root, args.arch, seed, task, args.iterations, args.cache_dir, args.algo)
            doc.update(
                name=args.name,
                arch=json.loads(Path(args.arch).read_text()),
                command=f"python -m bench.versus_conv4 run OMNIGLOT_ROOT {args.name} ARCH.json --seeds {seed} "
                f"--tasks {task} --iterations {args.iterations} --algo {args.algo}",
            )
            atomic_write_json(path, doc)
            cpu = arms_cpu(doc)
            write_record("versus_conv4", path.stem, doc, command=doc["command"], seed=seed, cpu_seconds=cpu)
            d, ci = paired(doc["conv4"]["test"], doc["searched"]["test"])
            print(
                f"{args.name} {task} seed {seed}: searched {100 * mean_ci(doc['searched']['test'])[0]:.2f}%, "
                f"Conv-4 {100 * mean_ci(doc['conv4']['test'])[0]:.2f}%, paired diff {100 * d:+.2f} ± {100 * ci:.2f}",
                flush=True,
            )
    return 0


def run_default(args: argparse.Namespace) -> int:
    """Rows named ``default``: each seed and task searched with the defaults, then its pick against Conv-4."""
    if missing_root("versus_conv4.py", args.root):
        return 2
    from nas_meta.fileio import atomic_write_json

    RESULTS.mkdir(parents=True, exist_ok=True)
    for seed in args.seeds:
        for task in args.tasks:
            name = "default" if args.space == "chain" else f"default_{args.space}"
            changes = {k: getattr(args, k) for k in CHANGES if getattr(args, k) is not None}
            name += suffix(changes, "_")
            path = RESULTS / f"{name}-{args.algo}-{task}-s{seed}.json"
            if path.exists():
                continue
            search = default_search(args.root, seed, task, args.algo, args.space, args.cache_dir, changes)
            doc = run_one(args.root, search["arch_path"], seed, task, args.iterations, args.cache_dir, args.algo)
            doc.update(
                name=name,
                arch=json.loads(Path(search["arch_path"]).read_text()),
                search=search,
                command=f"python -m bench.versus_conv4 default OMNIGLOT_ROOT --seeds {seed} --tasks {task} "
                f"--algo {args.algo} --space {args.space} --iterations {args.iterations}"
                + "".join(f" --{k.replace('_', '-')} {v}" for k, v in changes.items()),
            )
            atomic_write_json(path, doc)
            cpu = search["search_cpu_s"] + arms_cpu(doc)
            write_record("versus_conv4", path.stem, doc, command=doc["command"], seed=seed, cpu_seconds=cpu)
            d, ci = paired(doc["conv4"]["test"], doc["searched"]["test"])
            verdict = (search["race_verdict"] or {}).get("text", "no race")
            print(
                f"default {args.algo} {task} seed {seed}: race: {verdict}; test: paired diff "
                f"{100 * d:+.2f} ± {100 * ci:.2f} ({search['search_cpu_s']:.0f} CPU s of search)",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
