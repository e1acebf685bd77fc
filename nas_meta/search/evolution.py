"""Regularized (aging) evolution as an Optuna sampler (Real et al. 2019, "Regularized Evolution
for Image Classifier Architecture Search", Algorithm 1).

The population is the ``population_size`` most recently finished trials; a tournament draws
``tournament_size`` of them with replacement; the winner's params are copied with exactly one
choice changed; the oldest member leaves the population simply by no longer being among the
most recent.  Being a ``BaseSampler``, it works with every Optuna storage, with many workers on
one study, with heartbeats and with the dashboard.

    >>> sampler = RegularizedEvolutionSampler(population_size=20, tournament_size=5, seed=0)
    >>> study = optuna.create_study(direction="maximize", sampler=sampler)  # doctest: +SKIP
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

from optuna.distributions import BaseDistribution, CategoricalDistribution
from optuna.samplers import BaseSampler, RandomSampler
from optuna.study import Study, StudyDirection
from optuna.trial import FrozenTrial, TrialState

__all__ = ["RegularizedEvolutionSampler"]

# Real et al. used P=100, S=25 for ImageNet-scale budgets of 20k models; a few-shot NAS run on one
# machine evaluates tens to hundreds, so the population and tournament shrink in proportion.
DEFAULT_POPULATION = 20
DEFAULT_TOURNAMENT = 5


class RegularizedEvolutionSampler(BaseSampler):
    """Aging evolution over categorical choices; random sampling until the population is full."""

    def __init__(
        self,
        population_size: int = DEFAULT_POPULATION,
        tournament_size: int = DEFAULT_TOURNAMENT,
        *,
        seed: int | None = None,
    ) -> None:
        if not 1 <= tournament_size <= population_size:
            raise ValueError(
                f"`1 <= tournament_size <= population_size` must hold, "
                f"but got ({tournament_size=}, {population_size=})."
            )
        self.population_size = population_size
        self.tournament_size = tournament_size
        self._rng = random.Random(seed)
        self._random = RandomSampler(seed=seed)
        self._plans: dict[int, dict[str, Any]] = {}  # trial id -> {"params", "mutate", "parent"}

    def reseed_rng(self) -> None:
        self._rng.seed()
        self._random.reseed_rng()

    def infer_relative_search_space(self, study: Study, trial: FrozenTrial) -> dict[str, BaseDistribution]:
        return {}  # every choice is drawn in sample_independent, where its options are known

    def sample_relative(
        self, study: Study, trial: FrozenTrial, search_space: dict[str, BaseDistribution]
    ) -> dict[str, Any]:
        return {}

    def population(self, study: Study) -> list[FrozenTrial]:
        """The most recent finished trials, oldest first (by trial number, i.e. birth order)."""
        done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        return sorted(done, key=lambda t: t.number)[-self.population_size :]

    def before_trial(self, study: Study, trial: FrozenTrial) -> None:
        if study._is_multi_objective():
            raise ValueError("RegularizedEvolutionSampler supports single-objective studies only")
        population = self.population(study)
        if len(population) < self.population_size:
            return  # warm-up: random architectures until the population is full
        sign = 1.0 if study.direction == StudyDirection.MAXIMIZE else -1.0
        contenders = [self._rng.choice(population) for _ in range(self.tournament_size)]
        parent = max(contenders, key=lambda t: sign * float(t.value))  # type: ignore[arg-type]
        mutable = [
            name
            for name, dist in parent.distributions.items()
            if isinstance(dist, CategoricalDistribution) and len(dist.choices) > 1
        ]
        mutate = self._rng.choice(sorted(mutable)) if mutable else None
        self._plans[trial._trial_id] = {"params": dict(parent.params), "mutate": mutate, "parent": parent.number}
        study._storage.set_trial_system_attr(trial._trial_id, "evolution:parent", parent.number)
        study._storage.set_trial_system_attr(trial._trial_id, "evolution:mutated", mutate)

    def sample_independent(
        self, study: Study, trial: FrozenTrial, param_name: str, param_distribution: BaseDistribution
    ) -> Any:
        plan = self._plans.get(trial._trial_id)
        if plan is None:
            return self._random.sample_independent(study, trial, param_name, param_distribution)
        params = plan["params"]
        if param_name == plan["mutate"] and isinstance(param_distribution, CategoricalDistribution):
            others = [c for c in param_distribution.choices if c != params.get(param_name)]
            return self._rng.choice(others)
        if param_name in params and param_distribution._contains(
            param_distribution.to_internal_repr(params[param_name])
        ):
            return params[param_name]
        # A choice the parent never made (it depends on a mutated one): draw it at random.
        return self._random.sample_independent(study, trial, param_name, param_distribution)

    def after_trial(
        self,
        study: Study,
        trial: FrozenTrial,
        state: TrialState,
        values: Sequence[float] | None,
    ) -> None:
        self._plans.pop(trial._trial_id, None)
