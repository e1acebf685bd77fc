"""The samplers and pruners a search can name (``--sampler``, ``--pruner``), as registries: one
registered from outside the package (``SAMPLERS.add("mine", build)``) is accepted
everywhere a name is.  Also the rungs of successive halving.

A sampler builder takes the study's seed; a pruner builder takes the run config.
"""

from __future__ import annotations

import optuna

from ..config import RunConfig
from ..registry import Registry
from .evolution import RegularizedEvolutionSampler
from .local import LocalSearchSampler

__all__ = ["SAMPLERS", "PRUNERS", "halving_rungs", "HALVING_RATE", "HALVING_RUNGS"]

# Successive halving (--pruner halving): each rung trains HALVING_RATE times longer than the one
# before and validates on twice as many episodes; a trial goes on only if it is in the top
# 1/HALVING_RATE of those that reached its rung.
HALVING_RATE = 3
HALVING_RUNGS = 3

SAMPLERS: Registry = Registry("sampler")
PRUNERS: Registry = Registry("pruner")


@SAMPLERS.register("tpe")
def _tpe(seed: int) -> optuna.samplers.BaseSampler:
    # multivariate: the choices of a cell interact (an op matters with its input), so model them jointly.
    return optuna.samplers.TPESampler(seed=seed, multivariate=True, n_startup_trials=5)


@SAMPLERS.register("random")
def _random(seed: int) -> optuna.samplers.BaseSampler:
    return optuna.samplers.RandomSampler(seed=seed)


@SAMPLERS.register("nsga2")
def _nsga2(seed: int) -> optuna.samplers.BaseSampler:
    return optuna.samplers.NSGAIISampler(seed=seed, population_size=10)


@SAMPLERS.register("evolution")
def _evolution(seed: int) -> optuna.samplers.BaseSampler:
    return RegularizedEvolutionSampler(seed=seed)


@SAMPLERS.register("local")
def _local(seed: int) -> optuna.samplers.BaseSampler:
    return LocalSearchSampler(seed=seed)


@PRUNERS.register("none")
def _no_pruner(cfg: RunConfig) -> optuna.pruners.BasePruner:
    return optuna.pruners.NopPruner()


@PRUNERS.register("median")
def _median(cfg: RunConfig) -> optuna.pruners.BasePruner:
    return optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=0)


@PRUNERS.register("hyperband")
def _hyperband(cfg: RunConfig) -> optuna.pruners.BasePruner:
    return optuna.pruners.HyperbandPruner()


@PRUNERS.register("halving")
def _halving(cfg: RunConfig) -> optuna.pruners.BasePruner:
    first_rung = halving_rungs(cfg)[0][0]
    return optuna.pruners.SuccessiveHalvingPruner(
        min_resource=first_rung, reduction_factor=HALVING_RATE, min_early_stopping_rate=0
    )


def halving_rungs(cfg: RunConfig) -> list[tuple[int, int]]:
    """(step, validation episodes) of each rung of ``--pruner halving``, so the noise of a score
    shrinks where fewer, better candidates are told apart.  The rule, with HALVING_RATE 3 and
    HALVING_RUNGS 3:

    * ``s = max(1, iterations // 9)``; rung 0 is at step ``s``, rung 1 at ``3 * s`` (24 for 80
      iterations, not ``80 // 3`` = 26), rung 2 at ``iterations`` (the full budget);
    * rung k is validated on ``val_episodes * 2**k`` episodes;
    * a rung whose step passes ``iterations`` or repeats an earlier rung's step is left out, the
      others keep their episodes (this happens below 4 iterations only: 2 gives [(1, e), (2, 4e)],
      3 gives [(1, e), (3, 2e)]).

        >>> from nas_meta.config import make_config
        >>> halving_rungs(make_config("quick", search={"pruner": "halving"}))
        [(8, 40), (24, 80), (80, 160)]
    """
    lc = cfg.learner
    first = max(1, lc.iterations // HALVING_RATE ** (HALVING_RUNGS - 1))
    steps = [first * HALVING_RATE**k for k in range(HALVING_RUNGS - 1)] + [lc.iterations]
    rungs, seen = [], set()
    for k, step in enumerate(steps):
        if step not in seen and step <= lc.iterations:
            seen.add(step)
            rungs.append((step, lc.val_episodes * 2**k))
    return rungs
