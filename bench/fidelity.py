"""The fidelity bench: how well does each cheap score rank architectures against a long meta-training?

    .venv/bin/python -m bench.fidelity run OMNIGLOT_ROOT --space chain --archs 30 [--shard 0/2]
    .venv/bin/python -m bench.fidelity run OMNIGLOT_ROOT --space chain --archs 30 --algo fomaml \\
        --reference 300:200 --budgets "" --proxies ""          # the same architectures under MAML
    .venv/bin/python -m bench.fidelity supernet OMNIGLOT_ROOT --space chain --steps 1000  # + inherited weights
    .venv/bin/python -m bench.fidelity table                    # markdown + last line

``run`` draws ``--archs`` distinct architectures of the space (seeded; Conv-4 first in ``chain``)
and, for each, on the minimal Omniglot sets (``lake`` split, alphabets held out; the ``omniglot``
recipe defaults: rotated training classes and affine jitter): every training-free proxy at
initialisation, then one meta-training of ``--reference`` steps that is scored at each reduced
``--budgets`` step on that budget's number of validation episodes, and at the end on the
reference's own (differently drawn) validation episodes.  One JSON per architecture goes to
``results/fidelity/<space>-<algo>-<ways>w<shots>s/`` (git-ignored), so a rerun resumes and
``--archs`` can grow later; ``--shard i/k`` lets k processes (one thread each) split the work.

``supernet`` meta-trains one weight-sharing supernet of the space (``search --strategy supernet``'s
single-path training, checkpointed in the folder) and adds to every architecture already scored
the ``supernet<steps>@<episodes>`` estimator: its validation score with inherited weights.

``run --amp`` scores under the trainer's bf16 autocast (a CPU with AVX-512 BF16 or AMX) into
``<folder>-bf16``; ``table`` then gives the Kendall tau between bf16 and fp32 scores of the same
architectures (does reduced precision rank candidates as fp32 does?).  ``run --train-seed N`` trains
the same architectures from other initial weights on other training episodes (scored on the same
validation episodes) into ``<folder>-t<N>``; ``table`` gives the tau between the two runs: the
noise floor a tau between two ways of scoring should be read against.

``table`` gives, per estimator and space: Kendall's tau-b and Spearman's rho against the reference
with bootstrap 95% CIs (architectures resampled), the top-10% recall, and the CPU seconds per
architecture; and the ProtoNet-to-MAML transfer when both were run.  Its last line is
``tau_<estimator>=<value>`` pairs for the chain space (ProtoNet, 5-way 1-shot; ``--last`` picks another).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

from bench.common import add_cache_dir, add_omniglot_root, missing_root, subcommands
from bench.records import read_records, write_record

# The search's validation episodes: the budgets score candidates on what a search scores them on.
from nas_meta.search.objective import VAL_SEED_OFFSET

RESULTS = Path(__file__).resolve().parent.parent / "results" / "fidelity"
DEFAULT_BUDGETS = "20:40,80:40,80:200,240:200"  # 80:40 is the quick preset's search score
DEFAULT_REFERENCE = "600:400"  # 600 steps, scored on 400 validation episodes
DEFAULT_PROXIES = "params,flops,synflow,naswot,grad_norm,snip,proto_acc"
REFERENCE_SEED_OFFSET = 31_337  # another draw of validation episodes for the reference


def folder(space: str, algo: str, ways: int, shots: int, amp: bool = False, train_seed: int | None = None) -> Path:
    """The records' folder: ``-bf16`` for ``--amp``, ``-t<N>`` for a training seed other than ``--seed``."""
    suffix = ("-bf16" if amp else "") + (f"-t{train_seed}" if train_seed is not None else "")
    return RESULTS / f"{space}-{algo}-{ways}w{shots}s{suffix}"


def keep(path: Path, doc: dict[str, Any]) -> None:
    """One architecture's results: ``path`` in the (git-ignored) results folder, and its committed
    record ``records/<results folder>/<space-algo-task folder>-<index>.json``."""
    from nas_meta.fileio import atomic_write_json

    atomic_write_json(path, doc)
    out = path.parent
    write_record(
        out.parent.name,
        f"{out.name}-{path.stem}",
        doc,
        command=doc["command"],
        seed=doc["seed"],
        cpu_seconds=doc["cpu_s"] + sum(e["cpu_s"] for e in doc.get("inherited", {}).values()),
    )


def bench_config(args: argparse.Namespace, reference: Any) -> Any:
    """The run's config: minimal Omniglot (lake split, recipe defaults), the bench's episodes."""
    from nas_meta.config import make_config

    return make_config(
        "quick",
        data={
            "dataset": "omniglot",
            "data_root": args.root,
            "cache_dir": args.cache_dir,
            "split": "lake",
            "ways": args.ways,
            "shots": args.shots,
            "queries": 5,
        },
        learner={
            "algo": args.algo,
            "meta_batch": 4,
            "iterations": reference.steps,
            "eval_every": reference.steps,
            "val_episodes": 40,
            "amp": getattr(args, "amp", False),
        },
        seed=args.seed,
        device="cpu",
    )


def run(args: argparse.Namespace) -> int:
    import torch

    from nas_meta.data import load_dataset
    from nas_meta.search.fidelity import Budget, draw_architectures, score_architecture
    from nas_meta.spaces import load_known_arch, load_space

    budgets = [Budget.parse(b) for b in args.budgets.split(",") if b]
    reference = Budget.parse(args.reference)
    proxies = [p for p in args.proxies.split(",") if p]
    shard, shards = (int(v) for v in args.shard.split("/"))
    cfg = bench_config(args, reference)
    dataset = load_dataset(cfg.data)
    space = load_space(args.space)
    include = [load_known_arch("conv4")[1]] if args.space == "chain" else []
    archs = draw_architectures(space, args.archs, args.seed, include=include)
    train_seed = args.seed if args.train_seed is None else args.train_seed
    out = folder(
        args.space, args.algo, args.ways, args.shots, args.amp, None if train_seed == args.seed else train_seed
    )
    out.mkdir(parents=True, exist_ok=True)
    order = list(enumerate(archs))
    for index, arch in reversed(order) if args.reverse else order:
        path = out / f"{index:03d}.json"
        if index % shards != shard or path.exists():
            continue
        t0 = time.process_time()
        record = score_architecture(
            cfg,
            arch,
            dataset,
            budgets=budgets,
            reference=reference,
            proxies=proxies,
            seed=train_seed,
            val_seed=args.seed + VAL_SEED_OFFSET,
            reference_seed=args.seed + REFERENCE_SEED_OFFSET,
        )
        record.update(
            index=index,
            space=args.space,
            algo=args.algo,
            ways=args.ways,
            shots=args.shots,
            seed=args.seed,
            train_seed=train_seed,
            threads=torch.get_num_threads(),
            cpu_s=round(time.process_time() - t0, 1),
            recipe=cfg.recipe(),
            command=" ".join(["python -m bench.fidelity run OMNIGLOT_ROOT", *sys.argv[3:]]),
            folder=out.name,
        )
        keep(path, record)
        ref = record["reference"]
        print(
            f"{index:3d} {record['params']:>8,} params  reference {100 * ref['score']:.2f}%  "
            f"{record['cpu_s']:.0f} CPU s",
            flush=True,
        )
    return 0


def supernet(args: argparse.Namespace) -> int:
    """The inherited-weight estimator: one supernet of the space meta-trained for ``--steps``
    (single path per meta-batch, checkpointed beside the results, so a rerun resumes), then every
    architecture already in the folder scored with the weights it inherits, on the search's
    validation episodes.  Its CPU seconds per architecture are the scoring plus the supernet's
    training amortised over the architectures scored."""
    import torch

    from nas_meta import graph
    from nas_meta.data import load_dataset
    from nas_meta.errors import SpaceError
    from nas_meta.learners import learner_for
    from nas_meta.search.fidelity import Budget
    from nas_meta.search.proxies import ProxyInputs, compute_proxies
    from nas_meta.search.supernet import train_supernet
    from nas_meta.spaces import load_space

    cfg = bench_config(args, Budget.parse(DEFAULT_REFERENCE))
    dataset = load_dataset(cfg.data)
    space = load_space(args.space)
    out = folder(args.space, args.algo, args.ways, args.shots)
    paths = sorted(out.glob("[0-9]*.json"))
    if not paths:
        print(f"no architectures in {out}: run `fidelity.py run` first", file=sys.stderr)
        return 2
    device = torch.device("cpu")
    trained, record = train_supernet(
        cfg,
        space,
        dataset,
        device,
        args.steps,
        out / f"supernet-{args.steps}.pt",
        progress=lambda step, total, loss: step % 100 == 0 and print(f"supernet step {step}/{total} loss {loss:.3f}"),
    )
    print(f"supernet: {record['steps']} steps, {record['cpu_seconds']:.0f} CPU s, bank from {record['paths']} paths")
    name = f"supernet{args.steps}@{args.val_episodes}"
    ways = cfg.data.episode_ways(dataset.task)
    for path in paths:
        doc = json.loads(path.read_text())
        if name in doc.get("inherited", {}):
            continue
        t0 = time.process_time()
        # Rebuilt from its choices, so that it carries the space's weight slots as built today;
        # an architecture the bench added from elsewhere (Conv-4 in chain) as it is, if a path.
        stored = graph.from_json(doc["arch"])
        try:
            arch = space.from_params(stored.graph["params"])
        except SpaceError:
            arch = stored
        _, backbone, learner = learner_for(cfg, arch, dataset.input_shape, dataset.task, seed=args.seed)
        val = dataset.sampler(
            "val",
            ways=ways,
            shots=cfg.data.shots,
            queries=cfg.data.queries,
            seed=args.seed + VAL_SEED_OFFSET,
            device=device,
        )
        # The search's own `supernet` proxy: the validation score with the weights it inherits.
        inputs = ProxyInputs(
            backbone, learner, None, tuple(dataset.input_shape), val, args.val_episodes, supernet=trained
        )
        score, _ = compute_proxies(inputs, ["supernet"])["supernet"]
        doc.setdefault("inherited", {})[name] = {
            "value": score,
            "cpu_s": round(time.process_time() - t0, 2),
            "train_cpu_s": round(record["cpu_seconds"], 1),
            "steps": record["steps"],
            "val_episodes": args.val_episodes,
        }
        keep(path, doc)
        print(f"{doc['index']:3d} inherited {100 * score:.2f}%  reference {100 * doc['reference']['score']:.2f}%")
    return 0


def load(path: Path) -> list[dict[str, Any]]:
    """The architectures of the results folder ``path``: from its committed records, else (rows run
    before records were kept) from the folder itself."""
    kept = [r["figures"] for r in read_records(path.parent.name) if r["figures"].get("folder") == path.name]
    if kept:
        return sorted(kept, key=lambda doc: doc["index"])
    return [json.loads(p.read_text()) for p in sorted(path.glob("[0-9]*.json"))]


def estimators(records: list[dict[str, Any]]) -> dict[str, tuple[list[float], list[float]]]:
    """{estimator: (its value per architecture, its CPU seconds per architecture)}."""
    out: dict[str, tuple[list[float], list[float]]] = {}
    for name in records[0].get("proxies", {}):
        out[name] = ([r["proxies"][name]["value"] for r in records], [r["proxies"][name]["cpu_s"] for r in records])
    for name in records[0].get("inherited", {}):
        if all(name in r.get("inherited", {}) for r in records):
            scored = [r["inherited"][name] for r in records]
            # Scoring, plus the supernet's training shared by the architectures it scored.
            out[name] = ([e["value"] for e in scored], [e["cpu_s"] + e["train_cpu_s"] / len(records) for e in scored])
    for i, b in enumerate(records[0].get("budgets", [])):
        out[f"train{b['steps']}@{b['val_episodes']}"] = (
            [r["budgets"][i]["score"] for r in records],
            [r["budgets"][i]["cpu_s"] for r in records],
        )
    return out


def table(args: argparse.Namespace) -> int:
    from nas_meta.stats import bootstrap_ci, kendall_tau, spearman_rho, top_recall

    lines, last = [], {}
    for path in sorted(p for p in RESULTS.iterdir() if p.is_dir()) if RESULTS.is_dir() else []:
        records = [r for r in load(path) if r.get("reference")]
        if len(records) < 4:
            continue
        reference = [r["reference"]["score"] for r in records]
        ref = records[0]["reference"]
        ref_cpu = sum(r["reference"]["cpu_s"] for r in records) / len(records)
        lines += [
            f"### `{path.name}`: {len(records)} architectures, reference {ref['steps']} steps scored on "
            f"{ref['val_episodes']} validation episodes ({ref_cpu:.0f} CPU s per architecture; "
            f"reference scores {100 * min(reference):.1f}-{100 * max(reference):.1f}%)",
            "",
            "| estimator | Kendall tau (95% CI) | Spearman rho (95% CI) | top-10% recall | CPU s per arch |",
            "| --- | --- | --- | --- | --- |",
        ]
        for name, (values, cpu) in estimators(records).items():
            tau, rho = kendall_tau(values, reference), spearman_rho(values, reference)
            tau_ci = bootstrap_ci(kendall_tau, values, reference)
            rho_ci = bootstrap_ci(spearman_rho, values, reference)
            recall = top_recall(values, reference)
            lines.append(
                f"| {name} | {tau:.2f} [{tau_ci[0]:.2f}, {tau_ci[1]:.2f}] | {rho:.2f} "
                f"[{rho_ci[0]:.2f}, {rho_ci[1]:.2f}] | {recall:.2f} | {sum(cpu) / len(cpu):.1f} |"
            )
            if path.name == args.last:
                last[f"tau_{name.replace('@', '_')}"] = tau
        lines.append("")
    lines += transfer() + precision() + replicates()
    print("\n".join(lines))
    print(" ".join(f"{k}={v:.3f}" for k, v in last.items() if not math.isnan(v)))
    return 0


def agreement(base: Path, other: Path, what: str) -> list[str]:
    """Kendall tau between two runs' scores of the same architectures, per trained estimator and
    the reference (bootstrap 95% CIs); nothing when they share fewer than 4 architectures."""
    from nas_meta.stats import bootstrap_ci, kendall_tau

    a = {r["fingerprint"]: r for r in load(base) if r.get("reference")}
    b = {r["fingerprint"]: r for r in load(other) if r.get("reference")}
    common = sorted(set(a) & set(b))
    if len(common) < 4:
        return []
    pairs = {
        name: (estimators([a[k] for k in common])[name][0], values)
        for name, (values, _) in estimators([b[k] for k in common]).items()
        if name.startswith("train")
    }
    pairs["reference"] = ([a[k]["reference"]["score"] for k in common], [b[k]["reference"]["score"] for k in common])
    out = []
    for name, (x, y) in pairs.items():
        lo, hi = bootstrap_ci(kendall_tau, x, y)
        out.append(
            f"{what}, `{base.name}` `{name}` ({len(common)} architectures): "
            f"Kendall tau {kendall_tau(x, y):.2f} [{lo:.2f}, {hi:.2f}]"
        )
    return out


def precision() -> list[str]:
    """Do bf16 (``run --amp``) scores rank the architectures as fp32 scores do?"""
    out = []
    for bf16 in sorted(RESULTS.glob("*-bf16")):
        out += agreement(bf16.with_name(bf16.name.removesuffix("-bf16")), bf16, "bf16 against fp32")
    return out


def replicates() -> list[str]:
    """The noise floor of those taus: the same architectures, validation and reference episodes,
    trained from another seed (``run --train-seed``: other initial weights and training episodes)."""
    out = []
    for other in sorted(RESULTS.glob("*-t[0-9]*")):
        base, _, seed = other.name.rpartition("-t")
        out += agreement(other.with_name(base), other, f"training seed {seed} against the run's own")
    return out


def transfer() -> list[str]:
    """ProtoNet's reference ranking against MAML's on the same architectures (same draw)."""
    from nas_meta.stats import bootstrap_ci, kendall_tau

    out = []
    for proto in sorted(RESULTS.glob("*-protonet-*")):
        space = proto.name.split("-protonet-")[0]
        for other in sorted(RESULTS.glob(f"{space}-*maml-*")):
            a = {r["fingerprint"]: r["reference"]["score"] for r in load(proto) if r.get("reference")}
            b = {
                r["fingerprint"]: (r["reference"]["score"], r["reference"]["steps"])
                for r in load(other)
                if r.get("reference")
            }
            common = sorted(set(a) & set(b))
            if len(common) < 4:
                continue
            x, y = [a[k] for k in common], [b[k][0] for k in common]
            lo, hi = bootstrap_ci(kendall_tau, x, y)
            out.append(
                f"Transfer `{proto.name}` -> `{other.name}` ({len(common)} architectures, "
                f"MAML reference {b[common[0]][1]} steps): Kendall tau {kendall_tau(x, y):.2f} "
                f"[{lo:.2f}, {hi:.2f}]"
            )
    return out


def main(argv: list[str] | None = None) -> int:
    global RESULTS
    parser, sub = subcommands(__doc__)
    r = sub.add_parser("run", help="score architectures (resumes)")
    add_omniglot_root(r)
    r.add_argument("--space", default="chain")
    r.add_argument("--archs", type=int, default=30)
    r.add_argument("--algo", default="protonet")
    r.add_argument("--ways", type=int, default=5)
    r.add_argument("--shots", type=int, default=1)
    r.add_argument("--budgets", default=DEFAULT_BUDGETS, help="STEPS:VAL_EPISODES,... (empty: none)")
    r.add_argument("--reference", default=DEFAULT_REFERENCE, help="STEPS:VAL_EPISODES of the reference")
    r.add_argument("--proxies", default=DEFAULT_PROXIES, help="comma-separated (empty: none)")
    r.add_argument("--seed", type=int, default=0)
    r.add_argument(
        "--train-seed",
        type=int,
        default=None,
        help="seed the initial weights and training episodes apart from --seed, which keeps the architectures "
        "and validation episodes (the noise floor of a ranking; results in <folder>-t<N>)",
    )
    r.add_argument(
        "--amp", action="store_true", help="train under --amp's bf16 autocast (bf16 CPUs): results in <folder>-bf16"
    )
    r.add_argument("--reverse", action="store_true", help="last architecture first (a second process meets the first)")
    r.add_argument("--shard", default="0/1", help="i/k: this process takes architectures i, i+k, ...")
    add_cache_dir(r, RESULTS)
    w = sub.add_parser("supernet", help="add the inherited-weight estimator to the architectures run so far")
    add_omniglot_root(w)
    w.add_argument("--space", default="chain")
    w.add_argument("--algo", default="protonet")
    w.add_argument("--ways", type=int, default=5)
    w.add_argument("--shots", type=int, default=1)
    w.add_argument("--steps", type=int, default=1000, help="meta-training steps of the supernet")
    w.add_argument("--val-episodes", type=int, default=40, help="validation episodes per architecture")
    w.add_argument("--seed", type=int, default=0)
    add_cache_dir(w, RESULTS)
    t = sub.add_parser("table", help="the rank table and last line")
    t.add_argument("--last", default="chain-protonet-5w1s", help="the results folder of the last line")
    parser.add_argument("--results", default=str(RESULTS), help="where the per-architecture JSON live")
    args = parser.parse_args(argv)
    RESULTS = Path(args.results)
    if args.command == "table":
        return table(args)
    if missing_root("fidelity.py", args.root):
        return 2
    if getattr(args, "amp", False):
        import torch

        from nas_meta.errors import ConfigError
        from nas_meta.learners.train import amp_dtype

        try:
            amp_dtype(torch.device("cpu"), True)
        except ConfigError as exc:
            print(f"fidelity.py: error: {exc}", file=sys.stderr)
            return 2
    return supernet(args) if args.command == "supernet" else run(args)


if __name__ == "__main__":
    sys.exit(main())
