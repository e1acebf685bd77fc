"""Throughput: search candidates trained per hour of the whole machine, under each execution choice.

A search's quality at a fixed budget is bounded by how many candidates it trains.  This bench
times the default search's candidates (the ``quick`` preset: 80 outer steps of 4 episodes, two
validations of 40 episodes) of a fixed sample of architectures per task (``chain`` and ``cell``
spaces x ProtoNet, first-order MAML, MAML; Omniglot 5-way 1-shot shapes) under:

- ``default``: the defaults before this bench: fp32, one process whose candidate trains its tasks
  on all the machine's threads (``learners/threads.py``);
- ``bf16``: the same in bf16 (``--amp on``; what ``--amp auto`` gives candidates on a bf16 CPU);
- ``processes``: N worker processes of one thread each (``--n-workers N``), each training its own
  candidate at the same time (N = the machine's cores, ``--workers``);
- ``bf16_processes``: both;
- ``compile``: fp32 with ``--compile`` (its compile time per architecture counted: every candidate
  of a search is a new architecture).

Each candidate is timed over a few steps and one validation, after warm-up steps (which carry the
build, the first validation and any compiling), and extrapolated to the preset's whole candidate:
``overhead + iterations x step + validation episodes x episode``.  The choices are interleaved
within each round and each figure is the median over rounds, so a drift of the machine's speed
hits all alike.  Candidates per hour are of the *machine*: one process's rate, or the sum of the N
processes' rates while all N run.  CPU seconds per candidate stand beside them.

    .venv/bin/python -m bench.throughput [OMNIGLOT_ROOT] [--tasks chain-protonet ...] [--rounds 3]

Without ``OMNIGLOT_ROOT`` it runs on the built-in ``glyphs`` dataset (the same 28x28 shapes).  The
last line is ``<choice>=<ratio>``: candidates per hour over ``default``'s, the geometric mean over
the tasks, and ``auto`` for what the defaults now choose per task on this CPU (one process per
core; bf16 candidates where ``--amp auto`` gives them).  Figures: bench/README.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import multiprocessing as mp
import os
import random
import statistics
import sys
import time
from typing import Any, NamedTuple

from bench.records import cpu_info, write_record

TASKS = ("chain-protonet", "chain-fomaml", "chain-maml", "cell-protonet", "cell-fomaml", "cell-maml")


class Choice(NamedTuple):
    bf16: bool = False  # candidates under bf16 autocast (--amp on)
    processes: bool = False  # N processes of one thread each, timed together
    compile: bool = False  # torch.compile'd passes, compiling counted
    passive: bool = False  # OpenMP's idle threads sleep instead of spinning (a pool of its own)


CHOICES: dict[str, Choice] = {
    "default": Choice(),
    "bf16": Choice(bf16=True),
    "processes": Choice(processes=True),
    "bf16_processes": Choice(bf16=True, processes=True),
    "compile": Choice(compile=True),
    "passive": Choice(passive=True),
}
WARM = 2  # steps before timing: the build, the first validation, compiling land here
STEPS = 5  # timed steps
VAL_EPISODES = 8  # episodes of each of the two validations


@dataclasses.dataclass(frozen=True)
class Item:
    task: str
    arch: int  # the architecture's index in the task's fixed sample (its sampling seed)
    choice: str


def _config(task: str, choice: str, root: str | None, cache: str) -> Any:
    from nas_meta.config import make_config

    space, algo = task.split("-")
    bf16, compile = CHOICES[choice].bf16, CHOICES[choice].compile
    data = {"dataset": "omniglot", "data_root": root} if root else {"dataset": "glyphs"}
    return make_config(
        "quick",
        data={**data, "cache_dir": cache, "ways": 5, "shots": 1},
        learner={"algo": algo, "amp": "on" if bf16 else "off", "compile": compile},
        search={"space": space},
        seed=0,
        device="cpu",
    )


_DATASETS: dict[str, Any] = {}


def measure(item: Item, root: str | None, cache: str, threads: int, barrier: Any = None) -> dict[str, float]:
    """One candidate of ``item`` timed on ``threads`` threads, extrapolated to the preset's whole
    candidate (wall and CPU seconds).  With ``barrier`` the timing starts when every process of
    the pool has built its own candidate (they train at the same time)."""
    import torch

    from nas_meta.data import load_dataset
    from nas_meta.data.episodes import episode_samplers
    from nas_meta.learners import learner_for, meta_train
    from nas_meta.learners.train import _checkpoints
    from nas_meta.spaces import load_space

    torch.set_num_threads(threads)
    cfg = _config(item.task, item.choice, root, cache)
    if cfg.learner.compile:
        torch._dynamo.reset()  # nothing compiled for an earlier item is reused: a search's candidates are new
    key = repr(cfg.data)
    if key not in _DATASETS:
        _DATASETS[key] = load_dataset(cfg.data)
    dataset = _DATASETS[key]
    space = load_space(cfg.search.space)
    arch = space.sample(random.Random(item.arch))
    if barrier is not None:
        barrier.wait()
    device = torch.device("cpu")
    total = WARM + STEPS
    marks: list[float] = []
    wall0, cpu0 = time.perf_counter(), time.process_time()
    q = cfg.learner  # the preset's candidate: its steps and validations are what is extrapolated to
    cfg, _, learner = learner_for(cfg, arch, dataset.input_shape, dataset.task, seed=0, device=device)
    train, val = episode_samplers(cfg, dataset, 1, 2, device)
    built = time.perf_counter()
    lc = dataclasses.replace(cfg.learner, iterations=total)
    meta_train(
        learner,
        train,
        val,
        lc,
        seed=0,
        checkpoints=[(WARM, VAL_EPISODES), (total, VAL_EPISODES)],
        progress=lambda step, _total, _val: marks.append(time.perf_counter()),
    )
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    durations = [b - a for a, b in zip([built, *marks[:-1]], marks, strict=True)]
    step = statistics.median(durations[WARM:-1])
    episode = max(0.0, durations[-1] - step) / VAL_EPISODES
    overhead = (built - wall0) + sum(durations[:WARM]) - WARM * step - VAL_EPISODES * episode
    episodes = len(_checkpoints(q.iterations, q.eval_every)) * q.val_episodes
    candidate = max(0.0, overhead) + q.iterations * step + episodes * episode
    return {"seconds": candidate, "cpu_seconds": candidate * cpu / wall, "step": step, "episode": episode}


def _worker(index: int, inbox: Any, outbox: Any, barrier: Any, root: str | None, cache: str) -> None:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    while (job := inbox.get()) is not None:
        item, threads, synced = job
        try:
            outbox.put((index, item, measure(item, root, cache, threads, barrier if synced else None)))
        except BaseException as exc:  # reported, not swallowed: the parent stops
            outbox.put((index, item, f"{type(exc).__name__}: {exc}"))
            raise


class Pool:
    """``workers`` spawned processes that measure what they are sent; a ``processes`` choice is
    sent to all of them at once (one thread each, timed together), any other to the first alone
    (all the threads)."""

    def __init__(
        self, workers: int, root: str | None, cache: str, env: dict[str, str] | None = None, threads: int | None = None
    ) -> None:
        ctx = mp.get_context("spawn")
        self.workers = workers
        self.threads = threads or workers  # of a choice measured by the first process alone
        self.barrier = ctx.Barrier(workers)
        self.outbox = ctx.Queue()
        self.inboxes = [ctx.Queue() for _ in range(workers)]
        self.procs = [
            ctx.Process(target=_worker, args=(i, self.inboxes[i], self.outbox, self.barrier, root, cache), daemon=True)
            for i in range(workers)
        ]
        saved = dict(os.environ)
        # The spawned interpreters start with ``env`` (OpenMP reads it at load); inductor's caches on
        # disk are off, so every compiled candidate pays its compiling, as a new architecture does.
        os.environ.update({"TORCHINDUCTOR_FX_GRAPH_CACHE": "0", "TORCHINDUCTOR_AUTOGRAD_CACHE": "0", **(env or {})})
        try:
            for p in self.procs:
                p.start()
        finally:
            os.environ.clear()
            os.environ.update(saved)

    def run(self, item: Item) -> list[dict[str, float]]:
        together = CHOICES[item.choice].processes
        targets = range(self.workers) if together else range(1)
        for i in targets:
            self.inboxes[i].put((item, 1 if together else self.threads, together))
        results = []
        for _ in targets:
            _, _, result = self.outbox.get()
            if isinstance(result, str):
                self.close()
                raise RuntimeError(f"{item}: {result}")
            results.append(result)
        return results

    def close(self) -> None:
        for inbox in self.inboxes:
            inbox.put(None)
        for p in self.procs:
            p.join(timeout=30)


def per_hour(results: list[dict[str, float]]) -> float:
    """Candidates per hour of the machine: the sum of the rates of the processes that ran."""
    return sum(3600.0 / r["seconds"] for r in results)


def summarise(rows: dict[tuple[str, str], list[list[dict[str, float]]]], archs: int) -> dict[str, dict[str, Any]]:
    """Per (task, choice): candidates per hour (of the mean candidate of the sample: each
    architecture's median over rounds, then the mean seconds) and CPU seconds per candidate."""
    out: dict[str, dict[str, Any]] = {}
    for (task, choice), runs in rows.items():
        # runs: per round and architecture, the processes' results; grouped by architecture.
        by_arch: dict[int, list[list[dict[str, float]]]] = {}
        for i, results in enumerate(runs):
            by_arch.setdefault(i % archs, []).append(results)
        seconds, cpu, rates = [], [], []
        for per_round in by_arch.values():
            seconds.append(statistics.median(statistics.mean(r["seconds"] for r in res) for res in per_round))
            cpu.append(statistics.median(statistics.mean(r["cpu_seconds"] for r in res) for res in per_round))
            rates.append(statistics.median(per_hour(res) for res in per_round))
        processes = len(runs[0])
        out.setdefault(task, {})[choice] = {
            "per_hour": processes * 3600.0 / statistics.mean(seconds),
            "seconds": statistics.mean(seconds),
            "cpu_seconds": statistics.mean(cpu),
            "processes": processes,
        }
    return out


def auto_choice(task: str, bf16_cpu: bool, workers: int) -> str:
    """The choice today's defaults make for ``task``: one process per core when there are several
    (search.runner.default_workers), bf16 candidates by ``--amp auto``'s rule."""
    from nas_meta.config import BF16_SPACE_KINDS

    bf16 = bf16_cpu and task.split("-")[0] in BF16_SPACE_KINDS
    if workers > 1:
        return "bf16_processes" if bf16 else "processes"
    return "bf16" if bf16 else "default"


def ratios(table: dict[str, dict[str, Any]], auto: dict[str, str]) -> dict[str, float]:
    """Each choice's candidates per hour over ``default``'s, geometric mean over the tasks; and
    ``auto``: what the defaults now choose per task (``auto[task]``), over ``default``."""

    def mean_ratio(pick: dict[str, str]) -> float:
        logs = [
            math.log(table[t][c]["per_hour"] / table[t]["default"]["per_hour"])
            for t, c in pick.items()
            if c in table[t] and "default" in table[t]
        ]
        return math.exp(statistics.mean(logs)) if logs else float("nan")

    found: dict[str, float] = {}
    choices = {c for per in table.values() for c in per} - {"default"}
    for choice in sorted(choices, key=list(CHOICES).index):
        found[choice] = mean_ratio({t: choice for t in table})
    found["auto"] = mean_ratio(auto)
    return found


def _children_cpu() -> float:
    """CPU seconds of the pool's processes (joined by then) and of this one."""
    import resource

    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("root", nargs="?", help="OMNIGLOT_ROOT (images_background_small1/2); glyphs without it")
    parser.add_argument("--tasks", nargs="+", default=list(TASKS), choices=TASKS)
    parser.add_argument("--choices", nargs="+", default=list(CHOICES), choices=list(CHOICES))
    parser.add_argument(
        "--archs", type=int, default=2, help="architectures sampled per task (the same for every choice)"
    )
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="processes of `processes` (N)")
    parser.add_argument(
        "--compile-tasks",
        nargs="*",
        default=["chain-protonet", "chain-fomaml", "chain-maml"],
        choices=TASKS,
        help="tasks timed under `compile` (one architecture, one round: compiling a cell takes minutes)",
    )
    parser.add_argument("--cache-dir", default=os.path.join(os.path.dirname(__file__), "..", "results", "cache"))
    parser.add_argument("--record", default=None, help="keep the row as results/records/throughput/<RECORD>.json")
    args = parser.parse_args(argv)

    import torch

    from nas_meta.learners.train import candidate_precision

    cpu = cpu_info()
    bf16_cpu = candidate_precision("auto", torch.device("cpu"), kind="chain") == "bf16"
    print(
        f"CPU: {cpu['model']}; flags: {' '.join(cpu['flags']) or 'none of ' + ' '.join(('avx2', 'avx512f'))}; "
        f"torch {torch.__version__} ({torch.backends.cpu.get_cpu_capability()}); "
        f"{os.cpu_count()} cores; bf16 instructions: {'yes' if bf16_cpu else 'no'}",
        flush=True,
    )
    if not bf16_cpu:
        args.choices = [c for c in args.choices if not CHOICES[c].bf16]  # bf16 without the instructions: refused
    items = [Item(t, a, c) for t in args.tasks for a in range(args.archs) for c in args.choices]
    items = [i for i in items if not CHOICES[i.choice].compile or (i.arch == 0 and i.task in args.compile_tasks)]
    rows: dict[tuple[str, str], list[list[dict[str, float]]]] = {}
    pool = Pool(args.workers, args.root, args.cache_dir)
    passive = (
        Pool(1, args.root, args.cache_dir, {"OMP_WAIT_POLICY": "PASSIVE"}, args.workers)
        if any(CHOICES[c].passive for c in args.choices)
        else None
    )
    start = time.perf_counter()
    try:
        for r in range(args.rounds):
            order = items[:]
            random.Random(r).shuffle(order)  # interleaved, in another order each round
            for item in order:
                if CHOICES[item.choice].compile and r:
                    continue  # compiling is timed once: it is the cost, and it is long
                runner = passive if CHOICES[item.choice].passive else pool
                rows.setdefault((item.task, item.choice), []).append(runner.run(item))
            print(f"round {r + 1}/{args.rounds} done at {time.perf_counter() - start:.0f} s", flush=True)
    finally:
        pool.close()
        if passive is not None:
            passive.close()
    table = {}
    for (task, choice), runs in rows.items():
        archs = 1 if CHOICES[choice].compile else args.archs
        table.setdefault(task, {}).update(summarise({(task, choice): runs}, archs)[task])
    print()
    print("| task | choice | processes | s per candidate | CPU s per candidate | candidates per hour | vs default |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for task in args.tasks:
        base = table[task].get("default", {}).get("per_hour")
        for choice in args.choices:
            if choice not in table[task]:
                continue
            row = table[task][choice]
            vs = f"{row['per_hour'] / base:.2f}" if base else "-"
            print(
                f"| {task} | {choice} | {row['processes']} | {row['seconds']:.1f} | {row['cpu_seconds']:.1f} "
                f"| {row['per_hour']:.0f} | {vs} |"
            )
    auto = {task: auto_choice(task, bf16_cpu, args.workers) for task in table}
    print("\ntoday's defaults here: " + ", ".join(f"{t} {c}" for t, c in auto.items()))
    found = ratios(table, auto)
    wall = time.perf_counter() - start
    print(f"\n{wall:.0f} s wall for the bench")
    if args.record:
        command = "python -m bench.throughput " + " ".join(argv if argv is not None else sys.argv[1:])
        write_record(
            "throughput",
            args.record,
            {
                "table": table,
                "ratios": found,
                "auto": auto,
                "rounds": args.rounds,
                "archs": args.archs,
                "workers": args.workers,
            },
            command=command,
            seed=None,
            cpu_seconds=_children_cpu(),
            folders={args.root: "OMNIGLOT_ROOT", args.cache_dir: "CACHE_DIR"},
        )
    print(" ".join(f"{name}={value:.2f}" for name, value in found.items() if not math.isnan(value)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
