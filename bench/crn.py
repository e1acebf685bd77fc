"""Common random numbers: how much noise is left in the score *difference* of two fixed candidates.

Two architectures of the ``chain`` space are trained as trials of one study (the search's own
``Objective``: same code path, same seeds as a search), under each ``--crn`` mode, for ten study
seeds; the spread (standard deviation over seeds) of their score difference is the noise a
search's comparison of the two carries.  A close pair (Conv-4 and Conv-4 with one block's
max-pool replaced by an average pool) and a distant one (Conv-4 and a two-block, 16-channel,
unnormalised chain) on the search's task: ProtoNet, 5-way 1-shot minimal Omniglot, the
``quick`` preset's candidates (80 steps, 40 validation episodes).

    .venv/bin/python -m bench.crn run OMNIGLOT_ROOT [--seeds 0 1 ... 9] [--modes off episodes all]
    .venv/bin/python -m bench.crn table

Each (mode, seed) is kept in ``results/crn/`` (git-ignored; reruns skip what is done) and as a
committed record under ``results/records/crn/``, which ``table`` reads.  It prints per pair and
mode the mean difference and its standard deviation over seeds, with a 95% interval for the ratio
of variances against "off" (an F interval); the last line is
``<pair>_<mode>_sd_vs_off=<ratio of standard deviations>``.
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path
from typing import Any

from bench.common import add_cache_dir, add_omniglot_root, missing_root, subcommands
from bench.records import read_records, write_record

RESULTS = Path(__file__).resolve().parent.parent / "results" / "crn"
MODES = ("off", "episodes", "all")
CONV4 = {"depth": 4, "norm": "batch"} | {
    f"block{b}_{k}": v for b in range(1, 5) for k, v in (("width", 64), ("kernel", 3), ("pool", "max"), ("skip", False))
}
# Conv-4 with its third block's max-pool an average pool: within about a point of it on this task.
CLOSE = CONV4 | {"block3_pool": "avg"}
# Two blocks of 16 channels and no normalisation: several points below it.
DISTANT = {"depth": 2, "norm": "none"} | {
    f"block{b}_{k}": v for b in range(1, 3) for k, v in (("width", 16), ("kernel", 3), ("pool", "max"), ("skip", False))
}
ARCHS = {"conv4": CONV4, "close": CLOSE, "distant": DISTANT}
PAIRS = {"close": ("conv4", "close"), "distant": ("conv4", "distant")}


def run_seed(root: str, mode: str, seed: int, cache: str) -> dict[str, Any]:
    """Train the three architectures as trials 0, 1, 2 of one in-memory study under ``mode``."""
    import optuna

    from nas_meta import graph
    from nas_meta.config import make_config
    from nas_meta.data import load_dataset
    from nas_meta.learners import resolve_device
    from nas_meta.record import Attr
    from nas_meta.search.objective import Objective
    from nas_meta.spaces import load_space

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    cfg = make_config(
        "quick",
        data={"dataset": "omniglot", "data_root": root, "cache_dir": cache, "ways": 5, "shots": 1},
        learner={"algo": "protonet"},
        search={"space": "chain", "crn": mode, "race": 0},
        seed=seed,
        device="cpu",
    )
    space = load_space("chain")
    objective = Objective(cfg, space, load_dataset(cfg.data), resolve_device("cpu"))
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(seed=seed))
    for params in ARCHS.values():
        arch = space.build(lambda name, options, p=params: p[name])
        study.enqueue_trial({}, user_attrs={Attr.ENQUEUED_ARCH: graph.to_json(arch)})
    study.optimize(objective, n_trials=len(ARCHS))
    return {name: t.values[0] for name, t in zip(ARCHS, study.trials, strict=True)}


def load() -> dict[tuple[str, int], dict[str, float]]:
    """The committed records (results/records/crn/): the table regenerates on any machine."""
    out = {}
    for record in read_records("crn"):
        doc = record["figures"]
        out[(doc["mode"], doc["seed"])] = doc["scores"]
    return out


def table() -> int:
    from scipy import stats

    results = load()
    if not results:
        print("no records under results/records/crn/; run first", file=sys.stderr)
        return 1
    lines = ["| pair | mode | seeds | mean difference (points) | sd of the difference | sd / sd(off) [95% CI] |"]
    lines.append("| --- | --- | --- | --- | --- | --- |")
    last: dict[str, float] = {}
    for pair, (a, b) in PAIRS.items():
        diffs = {mode: [100 * (s[a] - s[b]) for (m, _), s in sorted(results.items()) if m == mode] for mode in MODES}
        base = diffs["off"]
        for mode in MODES:
            d = diffs[mode]
            if len(d) < 2:
                continue
            sd = statistics.stdev(d)
            cell = "-"
            if mode != "off" and len(base) >= 2:
                ratio = sd / statistics.stdev(base)
                # F interval for a ratio of two normal variances, as standard deviations.
                lo = ratio / stats.f.ppf(0.975, len(d) - 1, len(base) - 1) ** 0.5
                hi = ratio * stats.f.ppf(0.975, len(base) - 1, len(d) - 1) ** 0.5
                cell = f"{ratio:.2f} [{lo:.2f}, {hi:.2f}]"
                last[f"{pair}_{mode}_sd_vs_off"] = ratio
            lines.append(f"| {pair} | {mode} | {len(d)} | {statistics.mean(d):+.2f} | {sd:.2f} | {cell} |")
    print("\n".join(lines))
    print(" ".join(f"{k}={v:.3f}" for k, v in last.items()))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser, sub = subcommands(__doc__)
    r = sub.add_parser("run")
    add_omniglot_root(r)
    r.add_argument("--seeds", type=int, nargs="+", default=list(range(10)))
    r.add_argument("--modes", nargs="+", default=list(MODES), choices=MODES)
    add_cache_dir(r, RESULTS)
    sub.add_parser("table")
    args = parser.parse_args(argv)
    if args.command == "table":
        return table()
    if missing_root("crn.py", args.root):
        return 2
    from nas_meta.fileio import atomic_write_json

    RESULTS.mkdir(parents=True, exist_ok=True)
    for seed in args.seeds:
        for mode in args.modes:
            path = RESULTS / f"{mode}-s{seed}.json"
            if path.exists():
                continue
            t0 = time.process_time()
            scores = run_seed(args.root, mode, seed, args.cache_dir)
            cpu = round(time.process_time() - t0, 1)
            command = f"python -m bench.crn run OMNIGLOT_ROOT --seeds {seed} --modes {mode}"
            doc = {"mode": mode, "seed": seed, "scores": scores, "cpu_s": cpu, "command": command}
            atomic_write_json(path, doc)
            write_record("crn", f"{mode}-s{seed}", doc, command=command, seed=seed, cpu_seconds=cpu)
            print(
                f"{mode} seed {seed}: "
                + ", ".join(f"{k} {100 * v:.2f}%" for k, v in scores.items())
                + f" ({cpu:.0f} CPU s)",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
