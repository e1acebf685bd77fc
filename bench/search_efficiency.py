"""Search efficiency: does a controller pick better backbones than random search at the same CPU budget?

The task measured by default: the ``chain`` space, ProtoNet, 5-way 1-shot Omniglot (the minimal
background sets, ``lake`` split, alphabets held out; the ``omniglot`` recipe defaults: rotated
training classes and affine jitter), the ``quick`` preset's candidates (80 steps, 5 queries per
class, scored on 40 validation episodes) unless a variant changes that; ``--space cell`` and
``--algo fomaml`` measure the other tasks.  Every variant runs a real search (``run_search``, an
Optuna study per variant and seed) until it has used ``--budget`` CPU seconds; the running trial
is then stopped and the search's best completed candidate is its pick.  Each pick is re-scored at
the fidelity bench's reference budget (ProtoNet: 600 steps, 400 validation episodes of another
draw; first-order MAML: 300 steps, 200 episodes; ``bench/fidelity.py``), so picks are compared on
the score that a long training gives, not on the noisy score that chose them.

    .venv/bin/python -m bench.search_efficiency run OMNIGLOT_ROOT --seeds 0 1 2 [--variants random tpe ...]
    .venv/bin/python -m bench.search_efficiency run OMNIGLOT_ROOT --space cell --variants tpe tpe_supernet darts
    .venv/bin/python -m bench.search_efficiency table [--space cell] [--algo fomaml] [--baseline tpe]

The weight-sharing variants spend part of the same budget on the shared network first
(``--supernet-steps``): ``tpe_supernet`` screens pools of 32 TPE candidates on inherited weights
and meta-trains each pool's best; ``darts`` (cell spaces) trains the relaxed cell, queues the
discretised architecture as the first trial, and spends what is left of the budget on plain TPE
trials, so its pick is the derived architecture only when nothing TPE found scores higher (the
record says which).  For a ``darts`` search ``table`` also reads the relaxed network saved beside
its study and says how decisive its architecture weights became (``darts_alphas``).

Each (variant, seed) result is kept in ``results/search_efficiency/<space>-<algo>/`` (git-ignored;
reruns skip what is done).  ``table`` prints per variant the mean reference accuracy of its picks,
the mean paired difference to the baseline's pick of the same seed, and the trials it ran; its
last line is ``<variant>_vs_<baseline>=<ratio>``: the mean reference *error* (1 - accuracy) of the
variant's picks over the baseline's (below 1: the variant picks better backbones).
"""

from __future__ import annotations

import json
import math
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from bench import fidelity as fidelity_bench  # its reference protocol
from bench.common import add_cache_dir, add_omniglot_root, missing_root, subcommands
from bench.records import read_records, write_record

RESULTS = Path(__file__).resolve().parent.parent / "results" / "search_efficiency"

# variant -> search settings over the quick preset.  Every variant says whether its candidates
# share their training streams (crn) and whether a race picks (race), so that a change of the
# search's defaults does not change what a variant measures.
PLAIN = {"crn": "off", "race": 0}
# The racing variants' pick: the survivor with the best mean, as every racing row so far was picked.
RACED = {"crn": "episodes", "race": 2, "race_rule": "mean"}
VARIANTS: dict[str, dict[str, Any]] = {
    "random": {"sampler": "random", **PLAIN},
    "tpe": {"sampler": "tpe", **PLAIN},
    # Common random numbers: every candidate trains on the study's episodes.
    "tpe_crn": {"sampler": "tpe", "crn": "episodes", "race": 0},
    # ... and the final race of the 2 best against Conv-4 picks, inside the same CPU budget.
    "tpe_crn_race": {"sampler": "tpe", **RACED},
    # ... with bf16 candidates where the CPU has bf16 (--amp auto; the race stays fp32).
    "tpe_crn_race_auto": {"sampler": "tpe", **RACED, "amp": "auto"},
    "random_crn_race": {"sampler": "random", **RACED},
    # Local search from the best candidate (White, Nolen & Savani 2021), common random numbers and the race.
    "local_crn_race": {"sampler": "local", **RACED},
    "evolution": {"sampler": "evolution", **PLAIN},
    "tpe_halving": {"sampler": "tpe", "pruner": "halving", **PLAIN},
    "tpe_prescreen": {"sampler": "tpe", "prescreen": "synflow", "prescreen_pool": 8, **PLAIN},
    # Weight sharing: a 400-step supernet first (inside the budget), then 32 candidates scored on
    # inherited weights per meta-trained one.
    "tpe_supernet": {
        "sampler": "tpe",
        "strategy": "supernet",
        "prescreen": "supernet",
        "prescreen_pool": 32,
        "supernet_steps": 400,
        **PLAIN,
    },
    # Differentiable search (cell spaces): the relaxed cell first, its discretisation the first trial.
    "darts": {"sampler": "tpe", "strategy": "darts", "supernet_steps": 400, **PLAIN},
}
SPACES = ("chain", "cell", "chain_recipe")  # chain_recipe: the chain space with training choices
ALGOS = ("protonet", "fomaml")
REFERENCES = {"protonet": "600:400", "fomaml": "300:200"}  # as the fidelity bench's tables
BUDGET = 600.0  # CPU seconds per search unless --budget says otherwise


def task_dir(space: str, algo: str, ways: int = 5) -> Path:
    """A task's results: ``<space>-<algo>``, with ``-<ways>w`` for other than 5-way episodes."""
    return RESULTS / (f"{space}-{algo}" + (f"-{ways}w" if ways != 5 else ""))


def label(variant: str, budget: float) -> str:
    """A search's name in the results: the variant, with ``-b<budget>`` when it ran on another budget
    than the default, so searches of one variant at two budgets are kept (and paired) apart."""
    return variant if budget == BUDGET else f"{variant}-b{budget:g}"


def studies_dir(space: str, algo: str, ways: int = 5) -> Path:
    """Where a task's searches keep their Optuna studies (one folder per ``<label>-s<seed>``)."""
    return task_dir(space, algo, ways) / "studies"


def run_variant(
    root: str,
    variant: str,
    seed: int,
    budget: float,
    cache: str,
    *,
    space: str = "chain",
    algo: str = "protonet",
    supernet_steps: int | None = None,
    ways: int = 5,
) -> dict[str, Any]:
    """One search of ``variant`` until it has used ``budget`` CPU seconds.  A racing variant stops
    its trials early enough for its race to fit the budget too (the race's cost estimated from
    the trials' own: entrants x blocks x the race's steps over a candidate's), then races."""
    import optuna

    from nas_meta.config import make_config
    from nas_meta.record import Attr, StudyAttr, best_trials, counted_trials
    from nas_meta.search.race import race_pick, race_state
    from nas_meta.search.runner import SearchInterrupted, run_search

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    study = f"{label(variant, budget)}-s{seed}"
    settings = dict(VARIANTS[variant])
    amp = settings.pop("amp", "off")  # fp32 candidates unless the variant says: the rows so far were fp32
    if supernet_steps is not None and "supernet_steps" in settings:
        settings["supernet_steps"] = supernet_steps
    cfg = make_config(
        "quick",
        data={"dataset": "omniglot", "data_root": root, "cache_dir": cache, "ways": ways, "shots": 1},
        learner={"algo": algo, "amp": amp},
        search={"space": space, "trials": 100_000, "study": study, **settings},
        results_dir=str(studies_dir(space, algo, ways)),
        seed=seed,
        device="cpu",
    )
    start = time.process_time()
    entrants = cfg.search.race + 1  # the finalists and Conv-4
    race_share = entrants * cfg.search.race_blocks * cfg.race_iterations() / cfg.learner.iterations
    storage = f"sqlite:///{studies_dir(space, algo, ways).resolve() / study / 'study.db'}"
    reserve = RaceReserve(budget, race_share)
    read_at = -math.inf

    def out_of_budget() -> bool:
        nonlocal read_at
        spent = time.process_time() - start
        if not cfg.search.race:
            return spent > budget
        if spent - read_at > 5.0:  # read the trials now and then, not every step
            read_at = spent
            reserve.observe(spent, len(counted_trials(optuna.load_study(study_name=study, storage=storage))))
        return reserve.full(spent)

    stream = open(os.devnull, "w")
    try:
        outcome = run_search(cfg, stream=stream, should_stop=out_of_budget)
    except SearchInterrupted as stopped:
        outcome = stopped.outcome
        if cfg.search.race and counted_trials(outcome.study):
            # The trials stopped for the race: the study's budget is what it holds, and the race runs.
            held = len(counted_trials(outcome.study))
            outcome = run_search(cfg.replace(search={"trials": held}), stream=stream)
    cpu = time.process_time() - start
    # none when the budget ran out before a trial completed (the shared network can take it all)
    best = next(iter(best_trials(outcome.study, "classification", k=1)), None)
    state = race_state(outcome.study)
    raced = race_pick(state)
    trained = counted_trials(outcome.study)
    derived = [t for t in outcome.study.trials if Attr.DERIVED in t.user_attrs]  # finished or stopped
    supernet = outcome.study.user_attrs.get(StudyAttr.SUPERNET, {})
    return {
        "variant": variant,
        "label": label(variant, budget),
        "space": space,
        "algo": algo,
        "seed": seed,
        "budget_cpu_s": budget,
        "search_cpu_s": round(cpu, 1),
        "trials": len(trained),
        "screened": sum("screening" in t.user_attrs for t in outcome.study.trials),
        "pick": race_record(raced, state) if raced is not None else (trial_record(best) if best is not None else None),
        "best_trial": trial_record(best) if best is not None else None,
        "race_cpu_s": state["cpu_seconds"] if state else None,
        "ways": ways,
        "derived": {**trial_record(derived[0]), "is_pick": best is not None and derived[0].number == best.number}
        if derived
        else None,
        "supernet_cpu_s": supernet.get("cpu_seconds"),
        "settings": settings,
        "command": f"python -m bench.search_efficiency run OMNIGLOT_ROOT --space {space} --algo {algo} "
        f"--ways {ways} --seeds {seed} --variants {variant} --budget {budget:g}"
        + (f" --supernet-steps {supernet_steps}" if supernet_steps is not None else ""),
    }


class RaceReserve:
    """When a racing search stops its trials so that its race fits the CPU budget: the race costs
    about ``race_share`` candidates' training, a candidate's CPU read as the search's CPU when its
    count of trials last grew, over that count.  Not the trials' own ``seconds``, which are
    wall-clock (on a shared machine three times the CPU: a 20-way search stopped after one trial),
    and not the CPU so far over the count, which charges the unfinished trial to the others (it
    stopped the same search after two)."""

    def __init__(self, budget: float, race_share: float) -> None:
        self.budget, self.race_share = budget, race_share
        self.counted, self.per_candidate = 0, 0.0

    def observe(self, spent: float, counted: int) -> None:
        if counted > self.counted:
            self.counted, self.per_candidate = counted, spent / counted

    def full(self, spent: float) -> bool:
        return spent + 1.1 * self.race_share * self.per_candidate > self.budget


def trial_record(trial: Any) -> dict[str, Any]:
    """A trial's architecture and search score (None: stopped by the budget before it finished)."""
    return {
        "number": trial.number,
        "val": trial.values[0] if trial.values else None,
        "fingerprint": trial.user_attrs["fingerprint"],
        "arch": trial.user_attrs["arch"],
        "params": trial.user_attrs.get("params"),
    }


def race_record(pick: Any, state: dict[str, Any]) -> dict[str, Any]:
    """The race's pick as the record of a pick, with what the race said."""
    return {
        "number": pick.trial,
        "val": pick.search_score,
        "fingerprint": pick.fingerprint,
        "arch": pick.arch,
        "baseline": pick.baseline,
        "race": {"verdicts": state.get("verdicts", []), "dropped": state["dropped"], "scores": state["scores"]},
    }


def reference_score(
    root: str,
    arch_doc: dict,
    fingerprint: str,
    cache: str,
    *,
    space: str = "chain",
    algo: str = "protonet",
    ways: int = 5,
) -> dict[str, Any]:
    """The fidelity bench's reference score of an architecture at the task's own episodes (cached
    by fingerprint; reused from the fidelity bench's records when it scored the same architecture)."""
    path = task_dir(space, algo, ways) / "reference" / f"{fingerprint}.json"
    if path.exists():
        return json.loads(path.read_text())
    for record_path in fidelity_bench.folder(space, algo, ways, 1).glob("[0-9]*.json"):
        record = json.loads(record_path.read_text())
        if record.get("fingerprint") == fingerprint and record.get("reference"):
            return record["reference"]
    from nas_meta import graph
    from nas_meta.config import make_config
    from nas_meta.data import load_dataset
    from nas_meta.fileio import atomic_write_json
    from nas_meta.search.fidelity import Budget, score_architecture

    reference = Budget.parse(REFERENCES[algo])
    cfg = make_config(
        "quick",
        data={"dataset": "omniglot", "data_root": root, "cache_dir": cache, "ways": ways, "shots": 1, "queries": 5},
        learner={"algo": algo, "meta_batch": 4, "iterations": reference.steps, "eval_every": reference.steps},
        seed=0,
        device="cpu",
    )
    record = score_architecture(
        cfg,
        graph.from_json(arch_doc),
        load_dataset(cfg.data),
        budgets=[],
        reference=reference,
        proxies=[],
        seed=0,
        val_seed=fidelity_bench.VAL_SEED_OFFSET,
        reference_seed=fidelity_bench.REFERENCE_SEED_OFFSET,
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(path, record["reference"])
    return record["reference"]


def add_derived_reference(doc: dict[str, Any], root: str, cache: str) -> None:
    """The reference score of the differentiable search's own architecture (the pick's when it is the pick)."""
    derived = doc["derived"]
    derived["reference"] = (
        doc["reference"]
        if derived["is_pick"]
        else reference_score(
            root,
            derived["arch"],
            derived["fingerprint"],
            cache,
            space=doc["space"],
            algo=doc["algo"],
            ways=doc.get("ways", 5),
        )
    )


def load(space: str = "chain", algo: str = "protonet", ways: int = 5) -> dict[tuple[str, int], dict[str, Any]]:
    """The task's rows from the committed records (results/records/search_efficiency/)."""
    out = {}
    for record in read_records("search_efficiency"):
        doc = record["figures"]
        if (doc["space"], doc["algo"], doc.get("ways", 5)) == (space, algo, ways):
            out[(doc["label"], doc["seed"])] = doc
    return out


def labels_in_order(results: dict[tuple[str, int], dict[str, Any]]) -> list[str]:
    """The searches' labels: by budget, then in the order of ``VARIANTS``."""
    docs = {name: doc for (name, _), doc in results.items()}
    return sorted(docs, key=lambda name: (docs[name]["budget_cpu_s"], list(VARIANTS).index(docs[name]["variant"])))


def mean_percent(values: list[float], digits: int) -> str:
    return f"{100 * statistics.mean(values):.{digits}f}" if values else "-"


def picked(doc: dict[str, Any]) -> str:
    """`` conv4`` after a seed's score when the race picked that baseline over every candidate."""
    baseline = (doc.get("pick") or {}).get("baseline")
    return f" {baseline}" if baseline else ""


def per_seed(reference: dict[str, Any] | None) -> str:
    """One search's reference score, with its 95% CI over the episodes when the record has it."""
    if reference is None:
        return "no pick: no trial completed"
    ci = f" ± {100 * reference['ci95']:.1f}" if "ci95" in reference else ""
    return f"{100 * reference['score']:.1f}{ci}"


def darts_alphas(checkpoint: Path) -> dict[str, dict[str, float]]:
    """How decisive a differentiable search's architecture weights are, per cell type, from its
    saved relaxed network: the edges and ops, the largest softmax weight of any op on any edge
    (1/ops: undecided), the median over edges of the gap between the two largest alphas (the margin
    of the discretisation's argmax), and the largest alpha in magnitude (they start at 1e-3 scale)."""
    import torch

    state = torch.load(checkpoint, map_location="cpu", weights_only=True)
    out = {}
    for key, saved in state["learner"].items():
        if ".alphas." not in f".{key}":
            continue
        alpha = saved.float()
        top2 = alpha.topk(2, dim=-1).values
        out[key.rsplit(".", 1)[-1]] = {
            "edges": alpha.shape[0],
            "ops": alpha.shape[1],
            "max_weight": float(torch.softmax(alpha, dim=-1).max()),
            "median_gap": float((top2[:, 0] - top2[:, 1]).median()),
            "max_abs": float(alpha.abs().max()),
            "steps": state["record"]["steps"],
        }
    return out


def render(
    baseline: str = "random", space: str = "chain", algo: str = "protonet", ways: int = 5
) -> tuple[list[str], dict[str, float]]:
    """The table of the searches of ``space``, ``algo`` and ``ways`` (each variant's picks, paired
    with ``baseline``'s of the same seed and budget) and what its weight-sharing rows derived, and
    the ``name=value`` figures of its last line; no lines before any search has run."""
    from nas_meta.search.study import study_dir
    from nas_meta.search.supernet import SUPERNET_FILE

    results = load(space, algo, ways)
    if not results:
        return [], {}
    seeds = sorted({s for _, s in results})
    lines = [
        "| variant | seeds | trials (screened) | pick's search score % "
        "| pick's reference % (per seed, ± 95% CI over its episodes) "
        f"| paired diff. to {baseline}, points | reference error / {baseline}'s |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    last = {}
    for name in labels_in_order(results):
        docs = [results[(name, s)] for s in seeds if (name, s) in results]
        # paired with the baseline's search of the same seed and budget
        base = label(baseline, docs[0]["budget_cpu_s"])
        base_ref = {
            s: results[(base, s)]["reference"]["score"]
            for s in seeds
            if (base, s) in results and results[(base, s)]["reference"]
        }
        scored = [d for d in docs if d["reference"]]  # a search whose budget ran out first has no pick
        refs = [d["reference"]["score"] for d in scored]
        diffs = [d["reference"]["score"] - base_ref[d["seed"]] for d in scored if d["seed"] in base_ref]
        paired = [(d, base_ref[d["seed"]]) for d in scored if d["seed"] in base_ref]
        ratio = (
            (
                statistics.mean(1 - d["reference"]["score"] for d, _ in paired)
                / statistics.mean(1 - r for _, r in paired)
            )
            if paired
            else float("nan")
        )
        lines.append(
            f"| {name} | {len(docs)} | {statistics.mean(d['trials'] for d in docs):.0f} "
            f"({statistics.mean(d['screened'] for d in docs):.0f}) | "
            # A race that picked a baseline (Conv-4) has no search score for it: the mean is the others'.
            f"{mean_percent([d['pick']['val'] for d in scored if d['pick'].get('val') is not None], 1)} | "
            f"{mean_percent(refs, 2)} ({', '.join(per_seed(d['reference']) + picked(d) for d in docs)}) | "
            f"{f'{100 * statistics.mean(diffs):+.2f}' if diffs else '-'} | {ratio:.3f} |"
        )
        if name != base and paired:
            last[f"{name}_vs_{base}"] = ratio
    lines.append("")
    for (variant, seed), doc in sorted(results.items()):
        derived = doc.get("derived")
        if derived and "reference" in derived:
            searched = (
                f"scored {100 * derived['val']:.1f}% in the search"
                if derived["val"] is not None
                else "was stopped by the budget before it finished training in the search"
            )
            lines.append(
                f"{variant} seed {seed}: the weight-sharing network's own architecture (trial #{derived['number']}, "
                f"{derived['params']:,} params) {searched}; "
                f"{100 * derived['reference']['score']:.2f}% at the reference budget"
                f"{' (the pick)' if derived['is_pick'] else ''}; its network trained for "
                f"{doc['supernet_cpu_s']:.0f} of the {doc['budget_cpu_s']:.0f} CPU s"
            )
        checkpoint = study_dir(studies_dir(space, algo, ways), f"{variant}-s{seed}") / SUPERNET_FILE
        if doc["variant"] == "darts" and checkpoint.is_file():
            for cell_type, a in darts_alphas(checkpoint).items():
                lines.append(
                    f"{variant} seed {seed}: {cell_type} alphas after {a['steps']} steps: largest op weight "
                    f"{a['max_weight']:.4f} (uniform {1 / a['ops']:.4f}), median top-2 gap {a['median_gap']:.4f}, "
                    f"largest |alpha| {a['max_abs']:.4f} over {a['edges']} edges x {a['ops']} ops"
                )
    return (lines[:-1] if lines[-1] == "" else lines), last


def table(baseline: str = "random", space: str = "chain", algo: str = "protonet", ways: int = 5) -> int:
    lines, last = render(baseline, space, algo, ways)
    if not lines:
        print(f"no results yet for {space}-{algo}: run `python -m bench.search_efficiency run OMNIGLOT_ROOT` first")
        return 1
    print(
        f"Task: {space} space, {algo}, Omniglot minimal sets (lake split), {ways}-way 1-shot; candidates scored as "
        f"each variant says; picks re-scored at the reference budget ({REFERENCES[algo]}).\n"
    )
    print("\n".join(lines))
    print(" ".join(f"{k}={v:.3f}" for k, v in last.items()))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser, sub = subcommands(__doc__)
    r = sub.add_parser("run")
    add_omniglot_root(r)
    r.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    r.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    r.add_argument("--budget", type=float, default=BUDGET, help="CPU seconds of search per variant and seed")
    r.add_argument("--space", default="chain", choices=SPACES)
    r.add_argument("--algo", default="protonet", choices=ALGOS)
    r.add_argument("--ways", type=int, default=5, help="the task's episodes: searched and re-scored at this shape")
    r.add_argument(
        "--supernet-steps", type=int, default=None, help="the weight-sharing variants' shared-network steps (400)"
    )
    add_cache_dir(r, RESULTS)
    t = sub.add_parser("table")
    t.add_argument(
        "--baseline", default="random", choices=list(VARIANTS), help="the variant the others are paired with"
    )
    t.add_argument("--space", default="chain", choices=SPACES)
    t.add_argument("--algo", default="protonet", choices=ALGOS)
    t.add_argument("--ways", type=int, default=5)
    args = parser.parse_args(argv)
    if args.command == "table":
        return table(args.baseline, args.space, args.algo, args.ways)
    if missing_root("search_efficiency.py", args.root):
        return 2
    from nas_meta.fileio import atomic_write_json

    if "darts" in args.variants and args.space != "cell":
        print(
            "search_efficiency.py: error: variant 'darts' needs --space cell (a relaxable cell space)", file=sys.stderr
        )
        return 2
    out = task_dir(args.space, args.algo, args.ways)
    out.mkdir(parents=True, exist_ok=True)
    for seed in args.seeds:
        for variant in args.variants:
            path = out / f"{label(variant, args.budget)}-s{seed}.json"
            if path.exists():
                continue
            doc = run_variant(
                args.root,
                variant,
                seed,
                args.budget,
                args.cache_dir,
                space=args.space,
                algo=args.algo,
                supernet_steps=args.supernet_steps,
                ways=args.ways,
            )
            t0 = time.process_time()
            pick = doc["pick"]
            doc["reference"] = (
                reference_score(
                    args.root,
                    pick["arch"],
                    pick["fingerprint"],
                    args.cache_dir,
                    space=args.space,
                    algo=args.algo,
                    ways=args.ways,
                )
                if pick is not None
                else None
            )
            doc["rescore_cpu_s"] = round(time.process_time() - t0, 1)
            if doc.get("derived"):
                add_derived_reference(doc, args.root, args.cache_dir)
            atomic_write_json(path, doc)
            write_record(
                "search_efficiency",
                f"{out.name}-{path.stem}",
                doc,
                command=doc["command"],
                seed=seed,
                cpu_seconds=doc["search_cpu_s"] + doc["rescore_cpu_s"],
            )
            print(summary_line(variant, seed, doc), flush=True)
    return 0


def summary_line(variant: str, seed: int, doc: dict[str, Any]) -> str:
    """One search's line: its trials, CPU, pick (a candidate, or the baseline its race chose) and
    the pick's reference score."""
    head = f"{variant} seed {seed}: {doc['trials']} trials in {doc['search_cpu_s']:.0f} CPU s, "
    pick = doc.get("pick")
    if pick is None:
        return head + "no trial completed within the budget"
    if pick.get("baseline"):
        who = f"the race picked {pick['baseline']}"
    else:
        who = f"pick #{pick['number']} val {100 * pick['val']:.1f}%"
    return head + f"{who}, reference {100 * doc['reference']['score']:.2f}%"


if __name__ == "__main__":
    sys.exit(main())
