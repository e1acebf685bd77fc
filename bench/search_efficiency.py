"""Search efficiency: random vs TPE vs regularized evolution at the same budget, over several seeds.

The objective is cheap but real: the `mlp` space on `sinusoid` regression, each architecture
meta-trained with MAML (a fixed training seed, so an architecture always gets the same score)
and scored by validation MSE.  Scores are cached by fingerprint, so the samplers share the cost.

For every seed, random search's final best is the target; the benchmark counts how many trials
each sampler needs to reach it (budget + 1 when it never does) and prints medians.  Last line:
``tpe_vs_random=<ratio> evolution_vs_random=<ratio>``: median trials to the target divided by
random search's median (below 1: fewer trials than random).

    python bench/search_efficiency.py                 # about 5-10 minutes on 2 CPU cores
    python bench/search_efficiency.py --budget 30 --seeds 3 --iterations 100
"""

from __future__ import annotations

import argparse
import statistics
import time

import optuna
import torch

from nas_meta import graph, network
from nas_meta.config import make_config
from nas_meta.data import load_dataset
from nas_meta.learners import build_learner, meta_train
from nas_meta.search.evolution import RegularizedEvolutionSampler
from nas_meta.spaces import load_space


def make_score(iterations: int, cache_dir: str):
    cfg = make_config("smoke", data={"dataset": "sinusoid", "cache_dir": cache_dir},
                      learner={"iterations": iterations, "eval_every": iterations, "val_episodes": 50,
                               "meta_batch": 8})
    dataset = load_dataset(cfg.data)
    cache: dict[str, float] = {}

    def score(arch) -> float:
        key = graph.fingerprint(arch)
        if key not in cache:
            torch.manual_seed(0)
            backbone = network.build(arch, dataset.input_shape)
            learner = build_learner(cfg.learner, backbone, feature_dim=backbone.feature_dim, ways=1, task="regression")
            d = cfg.data
            train = dataset.sampler("train", ways=1, shots=d.shots, queries=d.queries, seed=0)
            val = dataset.sampler("val", ways=1, shots=d.shots, queries=d.queries, seed=1)
            cache[key] = meta_train(learner, train, val, cfg.learner, seed=0).val_metric
        return cache[key]

    return score, cache


SAMPLERS = {
    "random": lambda seed, p, s: optuna.samplers.RandomSampler(seed=seed),
    "tpe": lambda seed, p, s: optuna.samplers.TPESampler(seed=seed, multivariate=True, n_startup_trials=5),
    "evolution": lambda seed, p, s: RegularizedEvolutionSampler(population_size=p, tournament_size=s, seed=seed),
}


def trajectory(sampler, space, score, budget: int) -> list[float]:
    study = optuna.create_study(direction="minimize", sampler=sampler)
    study.optimize(lambda trial: score(space.build(trial.suggest_categorical)), n_trials=budget)
    best, out = float("inf"), []
    for t in study.trials:
        best = min(best, t.value)
        out.append(best)
    return out


def trials_to(target: float, curve: list[float]) -> int:
    for i, value in enumerate(curve, start=1):
        if value <= target:
            return i
    return len(curve) + 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", type=int, default=40)
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--iterations", type=int, default=150, help="MAML steps per architecture")
    parser.add_argument("--population", type=int, default=10)
    parser.add_argument("--tournament", type=int, default=3)
    parser.add_argument("--cache-dir", default="bench/out/cache")
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    torch.set_num_threads(2)
    space = load_space("mlp")
    score, cache = make_score(args.iterations, args.cache_dir)
    start = time.perf_counter()
    needed: dict[str, list[int]] = {name: [] for name in SAMPLERS}
    finals: dict[str, list[float]] = {name: [] for name in SAMPLERS}
    for seed in range(args.seeds):
        curves = {name: trajectory(make(seed, args.population, args.tournament), space, score, args.budget)
                  for name, make in SAMPLERS.items()}
        target = curves["random"][-1]
        for name, curve in curves.items():
            needed[name].append(trials_to(target, curve))
            finals[name].append(curve[-1])
        print(f"seed {seed}: random's best {target:.4f}; trials to reach it: "
              + ", ".join(f"{n} {needed[n][-1]}" for n in SAMPLERS)
              + f"  ({len(cache)} distinct architectures trained, {time.perf_counter() - start:.0f}s)", flush=True)
    print(f"space mlp: {space.size()} architectures; budget {args.budget} trials; {args.seeds} seeds; "
          f"MAML {args.iterations} steps per architecture; evolution P={args.population} S={args.tournament}")
    for name in SAMPLERS:
        print(f"{name:>9}: median trials to random's best {statistics.median(needed[name]):5.1f}  "
              f"final best MSE median {statistics.median(finals[name]):.4f}  (per seed {needed[name]})")
    base = statistics.median(needed["random"])
    print(f"tpe_vs_random={statistics.median(needed['tpe']) / base:.3f} "
          f"evolution_vs_random={statistics.median(needed['evolution']) / base:.3f}")


if __name__ == "__main__":
    main()
