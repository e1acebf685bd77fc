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
from bench.records import read_records, write_record

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
    return sum(doc[arm]["cpu_s"] for arm in ("searched", "conv4", "conv4_recipe") if arm in doc)


def default_search(
    root: str,
    seed: int,
    task: str,
    algo: str,
    space: str,
    cache: str,
    changes: dict[str, int] | None = None,
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
CHANGES = {"race_iterations": "r", "race_blocks": "b", "trials": "t"}


def suffix(changes: dict[str, int], sep: str) -> str:
    """What names a row searched otherwise than by default: ``_r240``, ``_r300b3``, ``_r300b3t32``."""
    return (sep + "".join(f"{CHANGES[k]}{v}" for k, v in changes.items())) if changes else ""


def _recipe_cell(row: dict[str, Any]) -> str:
    """The pick against Conv-4 trained with the pick's own training choices (a recipe space's pick)."""
    if "conv4_recipe" not in row:
        return "-"
    d, ci = paired(row["conv4_recipe"]["test"], row["searched"]["test"])
    return f"{100 * d:+.2f} ± {100 * ci:.2f}"


def _race_cell(row: dict[str, Any]) -> str:
    """What the search's race said of its pick against Conv-4 on validation (rows of the default
    search); when Conv-4 is the pick, the best candidate's difference to it, so that the race's
    verdict can be read against the test difference of the search's best trial."""
    from nas_meta.stats import blocked_differences

    search = row.get("search") or {}
    verdict = search.get("race_verdict")
    if not verdict:
        return "-"
    if verdict.get("blocks"):
        return f"{100 * verdict['difference']:+.2f} ± {100 * verdict['ci95']:.2f}"
    blocks: dict[str, dict[int, float]] = {}
    for key, mean in search["race_scores"].items():
        entrant, _, block = key.partition("/")
        blocks.setdefault(entrant, {})[int(block)] = mean
    n = min(len(b) for b in blocks.values())
    table = {e: [b[i] for i in range(n)] for e, b in blocks.items()}
    diffs = blocked_differences(table, "baseline-conv4")
    best = max((e for e in table if e != "baseline-conv4"), key=lambda e: diffs[e].mean)
    d = diffs[best]
    return f"Conv-4 is the pick; best candidate #{best.partition('-')[2]} {100 * d.mean:+.2f} ± {100 * d.ci95:.2f}"


def verdict(d: float, ci: float) -> str:
    return "yes" if d - ci > 0 else ("no (worse)" if d + ci < 0 else "no (within CI)")


def render(rows: list[dict[str, Any]]) -> tuple[list[str], dict[str, float]]:
    """The full table of ``rows`` (records' figures) and its ``name=value`` figures."""
    lines = [
        "| searched | learner | task | seed | steps | searched test % | Conv-4 test % | difference, paired 95% CI "
        "| beats Conv-4? | race's validation difference (95% CI over its blocks) | against Conv-4 with the pick's "
        "recipe | params (searched / Conv-4) | CPU s (searched / Conv-4) |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    last = {}
    for r in rows:
        s, c = mean_ci(r["searched"]["test"]), mean_ci(r["conv4"]["test"])
        d, ci = paired(r["conv4"]["test"], r["searched"]["test"])
        lines.append(
            f"| {r['name']} | {r.get('algo', 'protonet')} | {r['task']} | {r['seed']} | {r['iterations']} | "
            f"{100 * s[0]:.2f} ± "
            f"{100 * s[1]:.2f} | {100 * c[0]:.2f} ± {100 * c[1]:.2f} | {100 * d:+.2f} ± {100 * ci:.2f} | "
            f"{verdict(d, ci)} | {_race_cell(r)} | {_recipe_cell(r)} | "
            f"{r['searched']['params']:,} / {r['conv4']['params']:,} | "
            f"{r['searched']['cpu_s']:.0f} / {r['conv4']['cpu_s']:.0f} |"
        )
        last[f"{r['name']}_{r.get('algo', 'protonet')}_{r['task']}_s{r['seed']}"] = 100 * d
    return (lines if rows else []), last


def committed(prefixes: tuple[str, ...] = ("",)) -> list[dict[str, Any]]:
    """The committed rows whose name starts with one of ``prefixes``."""
    return [r["figures"] for r in read_records("versus_conv4") if r["figures"]["name"].startswith(prefixes)]


def default_table() -> tuple[list[str], dict[str, float]]:
    """The rows of the default search (raced as by default or otherwise) and of its best trials."""
    return render(committed(("default", "best_trial")))


def random_pick_table() -> tuple[list[str], dict[str, float]]:
    """Random search's picks (rows ``random_pick_sS``), one line per training seed."""
    rows = committed(("random_pick_s",))
    lines = [
        "| pick | training seed | pick test % | Conv-4 test % | difference, paired 95% CI |",
        "| --- | --- | --- | --- | --- |",
    ]
    last = {}
    for r in sorted(rows, key=lambda r: (r["name"], r["seed"])):
        d, ci = paired(r["conv4"]["test"], r["searched"]["test"])
        search_seed = r["name"].removeprefix("random_pick_s")
        lines.append(
            f"| random search, seed {search_seed} | {r['seed']} | {100 * mean_ci(r['searched']['test'])[0]:.2f} | "
            f"{100 * mean_ci(r['conv4']['test'])[0]:.2f} | {100 * d:+.2f} ± {100 * ci:.2f} |"
        )
        last[f"{r['name']}_t{r['seed']}"] = 100 * d
    return (lines if rows else []), last


def recipe_table() -> tuple[list[str], dict[str, float]]:
    """A recipe space's picks against Conv-4 with the default recipe and with the pick's own, and
    the recipe's own gain to Conv-4 (all paired on the same test episodes)."""
    rows = [r for r in committed(("recipe_",)) if "conv4_recipe" in r]
    lines = [
        "| pick | training seed | pick test % | Conv-4 test % | pick - Conv-4 | Conv-4 with the pick's recipe % "
        "| pick - that | recipe's gain to Conv-4 |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    last = {}
    for r in sorted(rows, key=lambda r: (r["name"], r["seed"])):
        pick, conv4, recipe = r["searched"]["test"], r["conv4"]["test"], r["conv4_recipe"]["test"]
        cells = [paired(conv4, pick), paired(recipe, pick), paired(conv4, recipe)]
        lines.append(
            f"| {r['name']} | {r['seed']} | {100 * mean_ci(pick)[0]:.2f} | {100 * mean_ci(conv4)[0]:.2f} | "
            + " | ".join(f"{100 * d:+.2f} ± {100 * ci:.2f}" for d, ci in cells[:1])
            + f" | {100 * mean_ci(recipe)[0]:.2f} | "
            + " | ".join(f"{100 * d:+.2f} ± {100 * ci:.2f}" for d, ci in cells[1:])
            + " |"
        )
        last[f"{r['name']}_s{r['seed']}_vs_recipe"] = 100 * cells[1][0]
    return (lines if rows else []), last


def equal_cpu_table() -> tuple[list[str], dict[str, float]]:
    """A recipe space's picks against Conv-4 trained with the default recipe for longer (rows
    ``conv4_<steps>``, Conv-4 against itself at ``--iterations <steps>``), paired on the same test
    episodes: is the recipe's gain more than the CPU its wider episodes cost?"""
    longer = {(r["seed"], r["task"], r["iterations"]): r for r in committed(("conv4_",))}
    lines = [
        "| pick | training seed | pick's steps | pick test % | pick CPU s | Conv-4 steps | Conv-4 test % "
        "| Conv-4 CPU s | pick - Conv-4, paired 95% CI |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    last = {}
    for r in sorted(committed(("recipe_",)), key=lambda r: (r["name"], r["seed"])):
        for (seed, task, steps), c in sorted(longer.items()):
            if (seed, task) != (r["seed"], r["task"]):
                continue
            d, ci = paired(c["conv4"]["test"], r["searched"]["test"])
            lines.append(
                f"| {r['name']} | {seed} | {r['iterations']} | {100 * mean_ci(r['searched']['test'])[0]:.2f} | "
                f"{r['searched']['cpu_s']:.0f} | {steps} | {100 * mean_ci(c['conv4']['test'])[0]:.2f} | "
                f"{c['conv4']['cpu_s']:.0f} | {100 * d:+.2f} ± {100 * ci:.2f} |"
            )
            last[f"{r['name']}_s{seed}_vs_conv4_{steps}"] = 100 * d
    return (lines if len(lines) > 2 else []), last


def _outcome(entrant: str, picked: str | None, d: float, ci: float) -> str:
    """An entrant as a rule's pick, with its test difference to Conv-4 where the row measured it."""
    if entrant == "baseline-conv4":
        return "Conv-4, +0.00"
    if entrant == picked:
        return f"#{entrant.partition('-')[2]}, {100 * d:+.2f} ± {100 * ci:.2f}"
    return f"#{entrant.partition('-')[2]}, not tested"


def race_rules_table() -> tuple[list[str], dict[str, float]]:
    """Every raced row's pick under each race rule, read from the same race (its block scores are in
    the record): "mean" takes the survivor with the best mean, "beats" keeps Conv-4 unless a
    candidate beat it with 95% confidence.  A pick's test difference is known where the row
    retrained it: Conv-4's is zero by construction (the same arm), the row's own pick's is its
    paired difference, another entrant's was not measured."""
    from nas_meta.stats import blocked_differences

    lines = [
        "| row | learner | task | seed | race's rule | best mean in the race (validation lead over Conv-4, 95% CI) "
        "| mean rule's pick, test diff. | beats rule's pick, test diff. |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    last = {}
    for r in committed(("default",)):
        search = r.get("search") or {}
        if not search.get("race_scores"):
            continue
        blocks: dict[str, dict[int, float]] = {}
        for key, mean in search["race_scores"].items():
            entrant, _, block = key.partition("/")
            blocks.setdefault(entrant, {})[int(block)] = mean
        n = min(len(b) for b in blocks.values())
        table = {e: [b[i] for i in range(n)] for e, b in blocks.items() if len(b) >= n}
        alive = [e for e in blocks if e not in search.get("dropped", {})]
        leader = max(alive, key=lambda e: sum(blocks[e].values()) / len(blocks[e]))
        diffs = blocked_differences(table, "baseline-conv4") if leader != "baseline-conv4" else {}
        lead = diffs.get(leader)
        confident = lead is not None and lead.ahead()
        d, ci = paired(r["conv4"]["test"], r["searched"]["test"])
        picked = search.get("pick")
        rule = search.get("settings", {}).get("rule", "mean")
        shown = "Conv-4" if leader == "baseline-conv4" else f"#{leader.partition('-')[2]}"
        if lead is not None:
            shown += f" ({100 * lead.mean:+.2f} ± {100 * lead.ci95:.2f})"
        beats_pick = leader if confident or leader == "baseline-conv4" else "baseline-conv4"
        lines.append(
            f"| {r['name']} | {r.get('algo', 'protonet')} | {r['task']} | {r['seed']} | {rule} | {shown} | "
            f"{_outcome(leader, picked, d, ci)} | {_outcome(beats_pick, picked, d, ci)} |"
        )
        last[f"{r['name']}_{r.get('algo', 'protonet')}_{r['task']}_s{r['seed']}_beats"] = (
            0.0 if beats_pick == "baseline-conv4" else 100 * d
        )
    return (lines if len(lines) > 2 else []), last


# The tables results/README.md shows, by name (bench/results_table.py).
RENDERERS = {
    "default": default_table,
    "random_pick": random_pick_table,
    "recipe": recipe_table,
    "equal_cpu": equal_cpu_table,
    "race_rules": race_rules_table,
}


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
