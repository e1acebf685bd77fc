"""Regularized evolution as an Optuna sampler, on a cheap synthetic objective."""

from __future__ import annotations

import optuna
import pytest

from nas_meta.search.evolution import RegularizedEvolutionSampler

CHOICES = {f"c{i}": ["a", "b", "c", "d"] for i in range(6)}
TARGET = {name: "d" for name in CHOICES}


def objective(trial: optuna.Trial) -> float:
    params = {name: trial.suggest_categorical(name, opts) for name, opts in CHOICES.items()}
    return float(sum(params[n] == TARGET[n] for n in CHOICES))  # 0..6, 6 at the target


def run(seed: int, n: int = 60, population: int = 8, tournament: int = 3) -> optuna.Study:
    sampler = RegularizedEvolutionSampler(population_size=population, tournament_size=tournament, seed=seed)
    study = optuna.create_study(direction="maximize", sampler=sampler)
    study.optimize(objective, n_trials=n)
    return study


def test_warmup_is_random_then_children_differ_from_parent_in_exactly_one_choice():
    study = run(seed=0)
    trials = study.trials
    for t in trials[:8]:
        assert "evolution:parent" not in t.system_attrs  # population not full yet
    children = trials[8:]
    assert children
    for child in children:
        parent = trials[child.system_attrs["evolution:parent"]]
        changed = [n for n in CHOICES if child.params[n] != parent.params[n]]
        assert changed == [child.system_attrs["evolution:mutated"]]


def test_parent_always_comes_from_the_most_recent_population():
    population = 8
    study = run(seed=1, population=population)
    for child in study.trials[population:]:
        parent_number = child.system_attrs["evolution:parent"]
        # Only trials finished before this child count, and only the newest `population` of them:
        # older ones have aged out even when they scored best.
        assert child.number - population <= parent_number < child.number


# The tournament's choice in both directions: tests/test_samplers.py.


def test_same_seed_same_trials_and_different_seed_differs():
    a = [t.params for t in run(seed=3, n=30).trials]
    b = [t.params for t in run(seed=3, n=30).trials]
    c = [t.params for t in run(seed=4, n=30).trials]
    assert a == b
    assert a != c


def test_evolution_improves_on_its_random_warmup():
    study = run(seed=5, n=80)
    warmup_best = max(t.value for t in study.trials[:8])
    assert study.best_value > warmup_best
    assert study.best_value >= 5


def test_bad_sizes_are_refused():
    with pytest.raises(ValueError, match="tournament_size <= population_size"):
        RegularizedEvolutionSampler(population_size=3, tournament_size=5)


def test_multi_objective_is_refused():
    sampler = RegularizedEvolutionSampler(population_size=2, tournament_size=1, seed=0)
    study = optuna.create_study(directions=["maximize", "minimize"], sampler=sampler)
    with pytest.raises(ValueError, match="single-objective"):
        study.optimize(lambda t: (objective(t), 1.0), n_trials=1)
