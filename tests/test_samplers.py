"""The contract every registered sampler keeps, in both directions (as Optuna tests its own samplers)."""

from __future__ import annotations

import itertools

import optuna
import pytest

from nas_meta.search.evolution import RegularizedEvolutionSampler
from nas_meta.search.samplers import SAMPLERS

CHOICES = {f"c{i}": ["a", "b", "c", "d"] for i in range(5)}


def score(params: dict[str, str], direction: str) -> float:
    hits = sum(v == "d" for v in params.values())
    return float(hits if direction == "maximize" else len(CHOICES) - hits)  # the same optimum either way


def run(name: str, seed: int, direction: str, n: int = 14) -> optuna.Study:
    study = optuna.create_study(direction=direction, sampler=SAMPLERS.get(name)(seed))

    def objective(trial: optuna.Trial) -> float:
        return score({k: trial.suggest_categorical(k, v) for k, v in CHOICES.items()}, direction)

    study.optimize(objective, n_trials=n)
    return study


@pytest.mark.parametrize("direction", ["maximize", "minimize"])
@pytest.mark.parametrize("name", SAMPLERS.names())
def test_same_seed_same_params_another_seed_differs_only_valid_choices(name, direction):
    a = [t.params for t in run(name, 3, direction).trials]
    assert a == [t.params for t in run(name, 3, direction).trials]
    assert a != [t.params for t in run(name, 4, direction).trials]
    assert all(p[k] in CHOICES[k] for p in a for k in CHOICES)


class _Sequential:
    """A stand-in for the sampler's random generator: hands out members in turn, so a tournament
    of the population's size sees every member exactly once."""

    def __init__(self) -> None:
        self.calls = itertools.count()

    def choice(self, seq):
        return seq[next(self.calls) % len(seq)]


@pytest.mark.parametrize("direction", ["maximize", "minimize"])
def test_evolution_picks_the_tournaments_best_in_the_studys_direction(direction):
    sampler = RegularizedEvolutionSampler(population_size=4, tournament_size=4, seed=0)
    study = optuna.create_study(direction=direction, sampler=sampler)
    values = [3.0, 9.0, 1.0, 5.0]  # the warm-up's scores; the best is 9 (maximize) or 1 (minimize)
    for v in values:
        study.enqueue_trial({k: "a" for k in CHOICES})
        study.optimize(lambda t, v=v: (t.suggest_categorical("c0", CHOICES["c0"]), v)[1], n_trials=1)
    sampler._rng = _Sequential()
    study.optimize(lambda t: (t.suggest_categorical("c0", CHOICES["c0"]), 0.0)[1], n_trials=1)
    parent = study.trials[-1].system_attrs["evolution:parent"]
    assert values[parent] == (max(values) if direction == "maximize" else min(values))


@pytest.mark.parametrize("direction", ["maximize", "minimize"])
def test_evolution_climbs_in_either_direction(direction):
    study = run("evolution", 5, direction, n=80)
    warmup = [t.value for t in study.trials[:10]]
    best_warmup = max(warmup) if direction == "maximize" else min(warmup)
    assert study.best_value != best_warmup  # it improved on its random population ...
    assert score({k: "d" for k in CHOICES}, direction) == study.best_value  # ... up to the optimum
