"""Searched backbone against Conv-4 on the held-out test alphabets, paired on the same test episodes.

    .venv/bin/python bench/versus_conv4.py run OMNIGLOT_ROOT NAME ARCH.json --seeds 0 1 --tasks 5w1s 20w1s
    .venv/bin/python bench/versus_conv4.py run OMNIGLOT_ROOT NAME ARCH.json --algo fomaml --iterations 300
    .venv/bin/python bench/versus_conv4.py table

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

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from recipe import mean_ci, paired  # noqa: E402  (bench/recipe.py: the same statistics)

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
    from nas_meta.search.runner import load_known_arch

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
    for side, arch in (("searched", load_known_arch(arch_path)[1]), ("conv4", load_known_arch("conv4")[1])):
        if side == "conv4" and conv4_arm.is_file():
            out[side] = json.loads(conv4_arm.read_text())
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


def table() -> int:
    rows = [json.loads(p.read_text()) for p in sorted(RESULTS.glob("*.json"))]
    if not rows:
        print("no results yet")
        return 1
    lines = [
        "| searched | learner | task | seed | steps | searched test % | Conv-4 test % | difference, paired 95% CI "
        "| beats Conv-4? | params (searched / Conv-4) | CPU s (searched / Conv-4) |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    last = {}
    for r in rows:
        s, c = mean_ci(r["searched"]["test"]), mean_ci(r["conv4"]["test"])
        d, ci = paired(r["conv4"]["test"], r["searched"]["test"])
        verdict = "yes" if d - ci > 0 else ("no (worse)" if d + ci < 0 else "no (within CI)")
        lines.append(
            f"| {r['name']} | {r.get('algo', 'protonet')} | {r['task']} | {r['seed']} | {r['iterations']} | "
            f"{100 * s[0]:.2f} ± "
            f"{100 * s[1]:.2f} | {100 * c[0]:.2f} ± {100 * c[1]:.2f} | {100 * d:+.2f} ± {100 * ci:.2f} | "
            f"{verdict} | {r['searched']['params']:,} / {r['conv4']['params']:,} | "
            f"{r['searched']['cpu_s']:.0f} / {r['conv4']['cpu_s']:.0f} |"
        )
        last[f"{r['name']}_{r['task']}_s{r['seed']}"] = 100 * d
    print("\n".join(lines))
    print(" ".join(f"{k}={v:.2f}" for k, v in last.items()))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run")
    r.add_argument("root", help="OMNIGLOT_ROOT: holds images_background_small1/ and images_background_small2/")
    r.add_argument("name", help="a short name for the searched architecture (letters, digits, '-', '_')")
    r.add_argument("arch", help="its arch.json")
    r.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    r.add_argument("--tasks", nargs="+", default=["5w1s", "20w1s"])
    r.add_argument("--iterations", type=int, default=600, help="meta-training steps of both backbones")
    r.add_argument("--algo", default="protonet", choices=["protonet", "fomaml", "maml"], help="the learner of both")
    r.add_argument("--cache-dir", default=str(RESULTS.parent / "cache"), help="the dataset's tensor cache")
    sub.add_parser("table")
    args = parser.parse_args(argv)
    if args.command == "table":
        return table()
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
                command=f"python bench/versus_conv4.py run OMNIGLOT_ROOT {args.name} ARCH.json --seeds {seed} "
                f"--tasks {task} --iterations {args.iterations} --algo {args.algo}",
            )
            atomic_write_json(path, doc)
            d, ci = paired(doc["conv4"]["test"], doc["searched"]["test"])
            print(
                f"{args.name} {task} seed {seed}: searched {100 * mean_ci(doc['searched']['test'])[0]:.2f}%, "
                f"Conv-4 {100 * mean_ci(doc['conv4']['test'])[0]:.2f}%, paired diff {100 * d:+.2f} ± {100 * ci:.2f}",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
