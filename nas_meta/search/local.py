"""Local search from the best known candidate as an Optuna sampler (White, Nolen & Savani,
"Exploring the Loss Landscape in Neural Architecture Search", UAI 2021; first circulated as
"Local Search is State of the Art for NAS Benchmarks", arXiv:2005.02960).

White et al. found that the simplest local search, which changes one choice of the best
architecture so far and moves as soon as a change is better, beats random search on small,
structured spaces with few evaluations.  Good few-shot backbones lie close to Conv-4, so the
neighbourhood of a good candidate is where the next good candidate most likely is.

Every proposal is a function of the study's trials and the seed, never of what this process
remembers: a killed search resumes where it stopped, and workers on one study (each seeded
``seed + worker index``) share the work, since a running trial's plan is stored with it.

- **Start**: the best completed trial (in the study's direction; ties: the earlier trial) that is
  a point of the space (it has params and is not a known architecture queued with
  ``enqueued_arch``) and whose score is its own (no ``duplicate_of``), among the trials numbered
  from the last restart on.  Until there is one, choices are drawn at random.
- **Neighbours**: the start with exactly one choice changed to another option.  Choices that the
  change brings in (``depth`` 2 -> 3 brings ``block3_*``) are drawn at random; choices it removes
  are not drawn.  In a study made by nas_meta, a change that leaves the architecture's
  fingerprint as it was (the inputs of a cell node whose ops are all ``none``) is no neighbour.
- **Order**: the untried neighbours in an order shuffled from the seed and the start's number.
  A neighbour is tried when a trial in any state (running and queued ones included) has its
  changed choice and agrees with the start on every other choice that trial drew.
- **Move**: a trial that finishes better than the start becomes the start.
- **Restart**: when every neighbour was tried, all have finished and none was better, the next
  trial is a random architecture marked with the system attribute ``local:restart``; the start
  is then chosen among the trials from that one on, so the search climbs the new basin instead of
  going back to the old optimum.  (If some neighbours are still running in other workers, the
  trial is drawn at random without a restart, so that their results still count.)

System attributes, not user attributes, carry the sampler's state (``local:from``, the start's
number; ``local:changed``, the changed choice; ``local:plan``, the choices to use; and
``local:restart``): they are the sampler's bookkeeping, not part of a trial's record
(``nas_meta.record``), as ``evolution:parent`` is for regularized evolution.

    >>> import optuna
    >>> optuna.logging.set_verbosity(optuna.logging.WARNING)
    >>> study = optuna.create_study(direction="minimize", sampler=LocalSearchSampler(seed=0))
    >>> study.enqueue_trial({"x": 0, "y": 0})  # the optimum: no neighbour is better
    >>> study.optimize(lambda t: t.suggest_categorical("x", [0, 1, 2]) + t.suggest_categorical("y", [0, 1, 2]), 6)
    >>> sorted((t.params["x"], t.params["y"]) for t in study.trials[1:5])  # its 4 neighbours
    [(0, 1), (0, 2), (1, 0), (2, 0)]
    >>> study.trials[5].system_attrs["local:restart"]  # then a random restart
    True
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from typing import Any

from optuna.distributions import BaseDistribution, CategoricalDistribution
from optuna.samplers import BaseSampler, RandomSampler
from optuna.study import Study, StudyDirection
from optuna.trial import FrozenTrial, TrialState

from .. import graph
from ..errors import StudyError
from ..record import Attr
from ..spaces import Space, load_space

__all__ = ["LocalSearchSampler", "FROM", "CHANGED", "PLAN", "RESTART"]

FROM = "local:from"
CHANGED = "local:changed"
PLAN = "local:plan"
RESTART = "local:restart"

Move = tuple[str, int]  # (choice, index of its new option)


class LocalSearchSampler(BaseSampler):
    """First-improvement local search over categorical choices, with random restarts.

    ``seed`` fixes the random draws and the order of the neighbours; ``None`` draws a seed.
    """

    def __init__(self, *, seed: int | None = None) -> None:
        self._seed = _fresh_seed() if seed is None else seed
        self._random = RandomSampler(seed=seed)  # for the rare choice that is not categorical
        self._plans: dict[int, dict[str, Any] | None] = {}  # trial id -> choices to use (None: random)
        self._spaces: dict[str, Space] = {}
        self._neighbours: dict[tuple[str, str | None, int, int], list[Move]] = {}

    def reseed_rng(self) -> None:
        self._seed = _fresh_seed()
        self._random.reseed_rng()

    def infer_relative_search_space(self, study: Study, trial: FrozenTrial) -> dict[str, BaseDistribution]:
        return {}  # every choice is drawn in sample_independent, where its options are known

    def sample_relative(
        self, study: Study, trial: FrozenTrial, search_space: dict[str, BaseDistribution]
    ) -> dict[str, Any]:
        return {}

    def before_trial(self, study: Study, trial: FrozenTrial) -> None:
        if study._is_multi_objective():
            raise ValueError("LocalSearchSampler supports single-objective studies only")
        if (
            trial.params
            or "fixed_params" in trial.system_attrs
            or Attr.ENQUEUED_ARCH in trial.user_attrs
            or PLAN in trial.system_attrs
            or RESTART in trial.system_attrs
        ):
            # Queued with its choices (a baseline, a screened winner) or a retry, which carries
            # its first run's plan: nothing to plan, and no neighbour to claim.
            self._plans[trial._trial_id] = trial.system_attrs.get(PLAN)
            return
        trials = study.get_trials(deepcopy=False)
        start = self.start(study, trials)
        if start is None:
            self._plans[trial._trial_id] = None
            return
        order = self.neighbours(study, start)
        tried = _tried(start, [t for t in trials if t.number != trial.number])
        untried = [move for move in order if move not in tried]
        storage = study._storage
        if untried:
            name, index = untried[0]
            dist = start.distributions[name]
            assert isinstance(dist, CategoricalDistribution)
            plan = {**start.params, name: dist.choices[index]}
            self._plans[trial._trial_id] = plan
            storage.set_trial_system_attr(trial._trial_id, FROM, start.number)
            storage.set_trial_system_attr(trial._trial_id, CHANGED, name)
            storage.set_trial_system_attr(trial._trial_id, PLAN, plan)
            return
        self._plans[trial._trial_id] = None
        if all(tried[move] for move in order):
            storage.set_trial_system_attr(trial._trial_id, RESTART, True)

    def start(self, study: Study, trials: Sequence[FrozenTrial] | None = None) -> FrozenTrial | None:
        """The trial whose neighbours are proposed: the best completed point of the space with its
        own score, among the trials since the last restart (None: there is none yet)."""
        trials = study.get_trials(deepcopy=False) if trials is None else trials
        restart = max((t.number for t in trials if t.system_attrs.get(RESTART)), default=0)
        starts = [
            t
            for t in trials
            if t.state == TrialState.COMPLETE
            and t.number >= restart
            and _is_point(t)
            and Attr.DUPLICATE_OF not in t.user_attrs
        ]
        if not starts:
            return None
        sign = -1.0 if study.direction == StudyDirection.MAXIMIZE else 1.0
        return min(starts, key=lambda t: (sign * float(t.value), t.number))  # type: ignore[arg-type]

    def neighbours(self, study: Study, start: FrozenTrial) -> list[Move]:
        """Every one-choice change of ``start`` in the order this sampler proposes them; changes
        that leave the architecture's fingerprint as it was are left out where the study names
        its space."""
        space = self._space(study)
        key = (study.study_name, space.name if space else None, start.number, self._seed)
        if key not in self._neighbours:
            moves = [
                (name, index)
                for name, dist in sorted(start.distributions.items())
                if isinstance(dist, CategoricalDistribution)
                for index in range(len(dist.choices))
                if index != dist.to_internal_repr(start.params[name])
            ]
            if space is not None:
                moves = _changes_graph(space, start, moves)
            # Seeded by the start too: a resumed search or another worker with the same seed
            # walks the same neighbourhood in the same order.
            random.Random(f"{self._seed}:{start.number}").shuffle(moves)
            self._neighbours[key] = moves
        return list(self._neighbours[key])

    def _space(self, study: Study) -> Space | None:
        # Imported here: study.py imports this module to register the sampler.
        from .study import stored_config

        try:
            name = stored_config(study).search.space
        except StudyError:
            return None  # a plain Optuna study: no space to compare fingerprints in
        if name not in self._spaces:
            self._spaces[name] = load_space(name)
        return self._spaces[name]

    def sample_independent(
        self, study: Study, trial: FrozenTrial, param_name: str, param_distribution: BaseDistribution
    ) -> Any:
        plan = self._plans[trial._trial_id] if trial._trial_id in self._plans else trial.system_attrs.get(PLAN)
        if plan is not None and param_name in plan:
            value = plan[param_name]
            if param_distribution._contains(param_distribution.to_internal_repr(value)):
                return value
        if isinstance(param_distribution, CategoricalDistribution):
            # Seeded by the trial and the choice, not by a generator's position, so that a resumed
            # search draws what an uninterrupted one would have.
            rng = random.Random(f"{self._seed}:{trial.number}:{param_name}")
            return param_distribution.choices[rng.randrange(len(param_distribution.choices))]
        return self._random.sample_independent(study, trial, param_name, param_distribution)

    def after_trial(
        self,
        study: Study,
        trial: FrozenTrial,
        state: TrialState,
        values: Sequence[float] | None,
    ) -> None:
        self._plans.pop(trial._trial_id, None)


def _fresh_seed() -> int:
    return random.SystemRandom().randrange(2**32)


def _is_point(trial: FrozenTrial) -> bool:
    """Whether a trial is a point of the space: a known architecture queued whole has no choices."""
    return bool(trial.params) and Attr.ENQUEUED_ARCH not in trial.user_attrs


def _same(a: Any, b: Any) -> bool:
    return type(a) is type(b) and a == b  # by type too: True is not 1 for a choice


def _index(dist: CategoricalDistribution, value: Any) -> int | None:
    return next((i for i, option in enumerate(dist.choices) if _same(option, value)), None)


def _tried(start: FrozenTrial, trials: Sequence[FrozenTrial]) -> dict[Move, bool]:
    """The one-choice changes of ``start`` that ``trials`` hold -> whether one of them finished."""
    tried: dict[Move, bool] = {}
    for t in trials:
        finished = t.state.is_finished()
        # An unfinished trial may not have drawn its choices yet: its plan or queued ones stand in.
        seen = (
            t.params
            if finished
            else {**t.system_attrs.get(PLAN, {}), **t.system_attrs.get("fixed_params", {}), **t.params}
        )
        differ = [name for name, value in start.params.items() if name in seen and not _same(seen[name], value)]
        if len(differ) != 1:
            continue
        dist = start.distributions[differ[0]]
        index = _index(dist, seen[differ[0]]) if isinstance(dist, CategoricalDistribution) else None
        if index is not None:
            move = (differ[0], index)
            tried[move] = tried.get(move, False) or finished
    return tried


def _changes_graph(space: Space, start: FrozenTrial, moves: list[Move]) -> list[Move]:
    """The moves whose architecture differs from the start's.  A choice a move brings in takes
    its first option: its value is drawn later, but a move that brings choices in adds to the
    graph whatever they are."""
    before = graph.fingerprint(space.from_params(start.params))
    kept = []
    for name, index in moves:
        dist = start.distributions[name]
        assert isinstance(dist, CategoricalDistribution)
        params = {**start.params, name: dist.choices[index]}
        if graph.fingerprint(space.build(_lookup_or_first(params))) != before:
            kept.append((name, index))
    return kept


def _lookup_or_first(params: dict[str, Any]) -> Callable[[str, list], Any]:
    def choose(name: str, options: list) -> Any:
        return params[name] if name in params else options[0]

    return choose
