"""The training-recipe ablation: the same backbone, one recipe element added per row.

    .venv/bin/python -m bench.recipe run OMNIGLOT_ROOT ROW [ROW ...] --seed 0   # one thread per process
    .venv/bin/python -m bench.recipe table                                      # markdown + last line
    .venv/bin/python -m bench.recipe --list

Every row meta-trains one backbone from scratch on the training alphabets of the minimal Omniglot
sets (``lake`` split, seed 0: the test alphabets are never trained or validated on) and meta-tests
the result on the held-out test alphabets.  Each row's result (per-episode test accuracies, its
curve, CPU seconds) is kept in ``results/recipe/<row>-s<seed>.json``, so a rerun skips finished
rows and the table can be rebuilt at any time.

All rows of one seed are scored on the *same* test episodes (the test sampler's seed is the run
seed plus a fixed offset, and its classes do not depend on the recipe), so a difference between
two rows gets the paired 95% CI: 1.96 x std of the per-episode differences / sqrt(episodes).

The last line printed by ``table`` is ``name=value`` pairs: each row's mean 20-way 1-shot
within-alphabet test accuracy over the seeds run.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from bench.records import read_records, write_record
from nas_meta import stats  # numpy and scipy only: the table needs no torch

RESULTS = Path(__file__).resolve().parent.parent / "results" / "recipe"

# The shared protocol: Conv-4 ProtoNet, 20-way 1-shot training episodes with 5 queries per class,
# meta-batch 4, Adam 1e-3, validation every 100 steps on 100 episodes of the validation alphabets.
BASE: dict[str, Any] = {
    "arch": "conv4",
    # Every recipe field is pinned: a dataset default (omniglot's rotations and jitter) must not
    # leak into a row that is meant to go without it.
    "data": {"ways": 20, "shots": 1, "queries": 5, "rotations": False, "augment": False},
    "learner": {
        "algo": "protonet",
        "meta_batch": 4,
        "iterations": 900,
        "eval_every": 100,
        "val_episodes": 100,
        "checkpoint": "last",
        "lr_schedule": "constant",
        "weight_decay": 0.0,
    },
    "refit": "train",
}

# Each row: (name, what it adds, changes to BASE).  The ProtoNet rows are cumulative, as listed.
PROTONET_ROWS: list[tuple[str, str, dict[str, Any]]] = [
    ("shipped", "as shipped: plain episodes, last step's weights", {}),
    ("rotations", "+ rotated training classes (x4)", {"data": {"rotations": True}}),
    ("augment", "+ affine jitter of training episodes", {"data": {"augment": True}}),
    ("best", "+ best validation checkpoint's weights", {"learner": {"checkpoint": "best"}}),
    ("cosine", "+ cosine learning-rate schedule", {"learner": {"lr_schedule": "cosine"}}),
    ("wd", "+ weight decay 0.01 (AdamW)", {"learner": {"weight_decay": 0.01}}),
    ("refit", "+ refit on train+val for the chosen steps", {"refit": "train+val"}),
]
# Alternatives to a cumulative row, at (about) the same CPU time: they replace, not add.
ALTERNATIVES: list[tuple[str, str, str, dict[str, Any]]] = [
    # 60-way episodes cost 3.4x a 20-way step here (measured), so 265 steps match 900 in CPU time.
    (
        "ways60",
        "cosine",
        "`cosine` with 60-way training episodes, 265 steps (equal CPU)",
        {"learner": {"train_ways": 60, "iterations": 265, "eval_every": 30}},
    ),
    ("wd0.1", "cosine", "`cosine` + weight decay 0.1", {"learner": {"weight_decay": 0.1}}),
    (
        "long",
        "cosine",
        "`cosine` for 2000 steps (over the 10 CPU-minute budget)",
        {"learner": {"iterations": 2000, "eval_every": 200}},
    ),
]
# First-order MAML, 5-way 1-shot (its head has 5 outputs, so it trains and tests 5-way): the same
# protocol and the first five ProtoNet rows.
FOMAML_CHANGES: dict[str, Any] = {"data": {"ways": 5}, "learner": {"algo": "fomaml"}}
FOMAML_ROWS: list[tuple[str, str, dict[str, Any]]] = [
    (f"fomaml-{name}", label, changes) for name, label, changes in PROTONET_ROWS[:5]
]

TEST_EPISODES = 600
# Test episode kinds: (key, ways, within one alphabet).  ProtoNet rows are scored on all three;
# MAML rows on 5-way only (the head's size).
TESTS = [("20w", 20, False), ("20w-within", 20, True), ("5w", 5, False)]


def _merge(base: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    out = {k: (dict(v) if isinstance(v, dict) else v) for k, v in base.items()}
    for key, value in changes.items():
        if isinstance(value, dict):
            out[key] = {**out.get(key, {}), **value}
        else:
            out[key] = value
    return out


def row_specs() -> dict[str, dict[str, Any]]:
    """Every row's full spec: what it adds, its config sections, the row it is compared with."""
    specs: dict[str, dict[str, Any]] = {}
    for base, rows in ((BASE, PROTONET_ROWS), (_merge(BASE, FOMAML_CHANGES), FOMAML_ROWS)):
        spec, previous = base, None
        for name, label, changes in rows:
            spec = _merge(spec, changes)
            specs[name] = {**spec, "label": label, "previous": previous}
            previous = name
    for name, parent, label, changes in ALTERNATIVES:
        specs[name] = {
            **_merge({k: v for k, v in specs[parent].items() if k not in ("label", "previous")}, changes),
            "label": label,
            "previous": parent,
        }
    return specs


def run_row(root: str, name: str, seed: int, cache: str) -> dict[str, Any]:
    import torch

    from nas_meta.config import make_config
    from nas_meta.data import load_dataset
    from nas_meta.learners import evaluate_episodes
    from nas_meta.retrain import TEST_SEED_OFFSET, retrain
    from nas_meta.spaces import load_known_arch

    spec = row_specs()[name]
    data = {"dataset": "omniglot", "data_root": root, "cache_dir": cache, "split": "lake", **spec["data"]}
    learner = {**spec["learner"], "test_episodes": TEST_EPISODES}
    cfg = make_config("quick", data=data, learner=learner, seed=seed, device="cpu")
    dataset = load_dataset(cfg.data)
    arch = load_known_arch(spec["arch"])[1]
    cpu0, wall0 = time.process_time(), time.perf_counter()
    model, result = retrain(cfg, arch, dataset=dataset, refit=spec["refit"])
    train_cpu, train_wall = time.process_time() - cpu0, time.perf_counter() - wall0
    tests = TESTS if cfg.learner.algo == "protonet" else [t for t in TESTS if t[1] == cfg.data.ways]
    scores = {}
    for key, ways, within in tests:
        sampler = dataset.sampler(
            "test",
            ways=ways,
            shots=cfg.data.shots,
            queries=cfg.data.queries,
            seed=seed + TEST_SEED_OFFSET,
            device="cpu",
            within_alphabet=within,
        )
        per_episode = evaluate_episodes(model, sampler, TEST_EPISODES)
        scores[key] = [round(float(v), 6) for v in per_episode]
    return {
        "row": name,
        "seed": seed,
        "label": spec["label"],
        "spec": {k: spec[k] for k in ("arch", "data", "learner", "refit")},
        "train_cpu_s": round(train_cpu, 1),
        "train_wall_s": round(train_wall, 1),
        "threads": torch.get_num_threads(),
        "curve": result["curve"],
        "weights_step": result["weights_step"],
        "refit": result.get("refit"),
        "test": scores,
        "command": f"python -m bench.recipe run OMNIGLOT_ROOT {name} --seed {seed}",
    }


def mean_ci(values: list[float]) -> tuple[float, float]:
    """Mean and 95% CI half-width over test episodes (nas_meta.stats.mean_ci)."""
    return stats.mean_ci(values)


def paired(a: list[float], b: list[float]) -> tuple[float, float]:
    """Mean and 95% CI of b - a over the same episodes."""
    if len(a) != len(b):
        raise ValueError("paired rows need the same test episodes")
    return stats.mean_ci([y - x for x, y in zip(a, b, strict=True)])


def load_results() -> dict[tuple[str, int], dict[str, Any]]:
    """Every row by (name, seed): the committed records, and rows of the results folder run before
    records were kept."""
    out = {}
    for path in sorted(RESULTS.glob("*.json")):
        doc = json.loads(path.read_text())
        out[(doc["row"], doc["seed"])] = doc
    for record in read_records("recipe"):
        doc = record["figures"]
        out[(doc["row"], doc["seed"])] = doc
    return out


def render_table(results: dict[tuple[str, int], dict[str, Any]]) -> str:
    specs = row_specs()
    seeds = sorted({s for _, s in results})
    lines = []
    for family, keys in (
        ("ProtoNet, Conv-4, trained on 20-way 1-shot episodes", ["20w-within", "20w", "5w"]),
        ("First-order MAML, Conv-4, 5-way 1-shot", ["5w"]),
    ):
        names = [n for n in specs if (n.startswith("fomaml") == family.startswith("First"))]
        head = " | ".join(f"{_TEST_NAMES[k]} %" for k in keys)
        diff = " | ".join(f"vs previous, {_TEST_NAMES[k]} (paired)" for k in keys)
        lines += [
            f"### {family}",
            "",
            f"| row | seed | adds | {head} | {diff} | weights step | train CPU s |",
            "| --- | --- | --- | " + " | ".join("---" for _ in keys * 2) + " | --- | --- |",
        ]
        for name in names:
            for seed in seeds:
                doc = results.get((name, seed))
                if doc is None:
                    continue
                # The previous row of the chain that was run (a skipped row is named in the cell).
                prev_name = specs[name]["previous"]
                while prev_name and (prev_name, seed) not in results:
                    prev_name = specs[prev_name]["previous"]
                prev = results.get((prev_name, seed)) if prev_name else None
                note = f" (vs `{prev_name}`)" if prev_name and prev_name != specs[name]["previous"] else ""
                cells = [_pm(*mean_ci([100 * v for v in doc["test"][k]])) for k in keys]
                deltas = [
                    _pm(*paired([100 * v for v in prev["test"][k]], [100 * v for v in doc["test"][k]]), sign=True)
                    + note
                    if prev
                    else "-"
                    for k in keys
                ]
                step = doc["refit"]["steps"] if doc.get("refit") else doc["weights_step"]
                lines.append(
                    f"| `{name}` | {seed} | {doc['label']} | "
                    + " | ".join(cells + deltas)
                    + f" | {step} | {doc['train_cpu_s']:.0f} |"
                )
        lines.append("")
    return "\n".join(lines)


_TEST_NAMES = {"20w": "20-way 1-shot", "20w-within": "20-way 1-shot within alphabet", "5w": "5-way 1-shot"}


def _pm(mean: float, ci: float, sign: bool = False) -> str:
    return f"{mean:+.2f} ± {ci:.2f}" if sign else f"{mean:.2f} ± {ci:.2f}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=("run", "table"), nargs="?")
    parser.add_argument("root", nargs="?", help="OMNIGLOT_ROOT (run): holds images_background_small1/2")
    parser.add_argument("rows", nargs="*")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cache-dir", default=str(RESULTS / "cache"))
    parser.add_argument("--list", action="store_true")
    args = parser.parse_args(argv)
    if args.list or args.command is None:
        for name, spec in row_specs().items():
            print(f"{name:18s} {spec['label']}")
        return 0
    if args.command == "table":
        results = load_results()
        print(render_table(results))
        means = {}
        for name in row_specs():
            docs = [d for (n, _), d in results.items() if n == name and "20w-within" in d["test"]]
            if docs:
                means[name] = sum(mean_ci(d["test"]["20w-within"])[0] for d in docs) / len(docs)
        print(" ".join(f"{k}={100 * v:.2f}" for k, v in means.items()))
        return 0
    if not args.root or not Path(args.root).is_dir():
        print(f"recipe.py: error: OMNIGLOT_ROOT must be a folder, got {args.root!r}", file=sys.stderr)
        return 2
    unknown = [r for r in args.rows if r not in row_specs()]
    if unknown:
        print(f"recipe.py: error: unknown row(s) {unknown}; choose from {list(row_specs())}", file=sys.stderr)
        return 2
    RESULTS.mkdir(parents=True, exist_ok=True)
    for name in args.rows or list(row_specs()):
        path = RESULTS / f"{name}-s{args.seed}.json"
        if path.exists():
            print(f"{name} seed {args.seed}: done already ({path})")
            continue
        doc = run_row(args.root, name, args.seed, args.cache_dir)
        from nas_meta.fileio import atomic_write_json

        atomic_write_json(path, doc)
        write_record("recipe", path.stem, doc, command=doc["command"], seed=args.seed, cpu_seconds=doc["train_cpu_s"])
        means = {k: f"{100 * mean_ci(v)[0]:.2f}" for k, v in doc["test"].items()}
        print(f"{name} seed {args.seed}: {means}, train {doc['train_cpu_s']:.0f} CPU s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
