"""One trial: choices -> architecture graph -> backbone -> meta-trained learner -> validation score.

The score is few-shot accuracy (or MSE for regression) on *validation* classes; the test classes are
never touched by a search (they belong to ``evaluate`` and ``export --retrain``).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import optuna
import torch
from optuna.trial import TrialState

from .. import graph
from ..config import RunConfig
from ..data import Dataset
from ..data.episodes import episode_samplers
from ..errors import SpaceError
from ..learners import Diverged, learner_for, meta_train
from ..learners.train import candidate_precision
from ..model import network
from ..record import Attr, counted_trials
from ..spaces import Space
from .proxies import ProxyInputs
from .samplers import halving_rungs

__all__ = [
    "Objective",
    "CandidateFailure",
    "candidate_amp",
    "trial_seed",
    "common_seed",
    "trial_streams",
    "VAL_SEED_OFFSET",
]

# Every candidate is validated on the same episodes, so their scores compare like with like.
VAL_SEED_OFFSET = 7_919


class _TrialTimeout(Exception):
    pass


class CandidateFailure(RuntimeError):
    """The candidate, not the search, failed (diverged, out of memory, invalid graph): the trial
    is recorded as FAIL with its reason and the search goes on."""


def candidate_amp(cfg: RunConfig, device: torch.device, kind: str) -> str:
    """``--amp`` for a candidate's training: its study's precision (config.PRECISIONS), or for a
    config that has none yet the rule of ``cfg.learner.amp`` on ``device`` for a space of ``kind``."""
    precision = cfg.search.precision or candidate_precision(cfg.learner.amp, device, kind=kind)
    return "off" if precision == "fp32" else "on"


def trial_seed(run_seed: int, trial_number: int) -> int:
    """A distinct, reproducible seed per trial for initial weights and training episodes."""
    return (run_seed * 1_000_003 + trial_number * 7_919 + 1) % (2**31 - 1)


def common_seed(run_seed: int) -> int:
    """The seed of the streams every candidate of a run shares under common random numbers
    (distinct from every trial's: trial numbers are never negative)."""
    return trial_seed(run_seed, -1)


def trial_streams(run_seed: int, trial_number: int, crn: str) -> tuple[int, int]:
    """(seed of the initial weights and stochastic ops, seed of the training episodes and their
    jitter) of a trial under the common-random-numbers mode ``crn`` (config.CRN_MODES).

    Under "episodes" every candidate meets the same training episodes, so the difference of two
    candidates' scores carries no noise from what each happened to be trained on (Pearce,
    Poloczek & Branke 2019: common random numbers in simulation optimisation).

        >>> trial_streams(0, 3, "episodes")[1] == trial_streams(0, 4, "episodes")[1]
        True
        >>> trial_streams(0, 3, "off")[1] == trial_streams(0, 4, "off")[1]
        False
    """
    own, shared = trial_seed(run_seed, trial_number), common_seed(run_seed)
    if crn == "off":
        return own, own
    if crn == "episodes":
        return own, shared
    if crn == "all":
        return shared, shared
    raise ValueError(f"unknown crn mode {crn!r}")


@dataclass
class TrialHooks:
    """What the caller (the CLI's progress display) hears about a trial while it runs."""

    started: Callable[[int, int], None] | None = None  # trial number, counted trials before it
    step: Callable[[int, int, float | None], None] | None = None  # step, total, last val score
    should_stop: Callable[[], bool] | None = None  # True once the user asked to stop (Ctrl-C)

    def check_stop(self) -> None:
        """Raise KeyboardInterrupt at a safe point when a stop was requested."""
        if self.should_stop is not None and self.should_stop():
            raise KeyboardInterrupt


class Objective:
    """Callable for ``study.optimize``; holds the loaded space and dataset for all its trials."""

    def __init__(
        self, cfg: RunConfig, space: Space, dataset: Dataset, device: torch.device, hooks: TrialHooks | None = None
    ) -> None:
        self.cfg = cfg
        self.space = space
        self.dataset = dataset
        self.device = device
        self.hooks = hooks or TrialHooks()
        self.multi_objective = cfg.search.sampler == "nsga2"
        self.supernet: torch.nn.Module | None = None  # the trained supernet's learner (--strategy supernet)

    @property
    def ways(self) -> int:
        return self.cfg.data.episode_ways(self.dataset.task)

    def make_samplers(self, seed: int, cfg: RunConfig | None = None) -> tuple[Any, Any]:
        """Train and validation episode samplers (of ``cfg``, a candidate's own recipe; the run's
        by default); raises DataError before any training if the splits cannot supply the
        episodes asked for."""
        cfg = cfg or self.cfg
        return episode_samplers(cfg, self.dataset, seed, self.cfg.seed + VAL_SEED_OFFSET, self.device)

    def proxy_inputs(self, arch: Any, trial_number: int) -> ProxyInputs:
        """What a training-free proxy sees of a candidate: its backbone as the trial would
        initialise it, its learner, one batch of training episodes (no jitter) and the search's
        validation episodes (the same for every candidate)."""
        seed, episodes_seed = trial_streams(self.cfg.seed, trial_number, self.cfg.search.crn)
        cfg, backbone, learner = learner_for(
            self.cfg, arch, self.dataset.input_shape, self.dataset.task, seed=seed, device=self.device
        )
        lc = cfg.learner
        # The trial's own samplers (one rule for the episodes' shape), without the jitter.
        train, val = episode_samplers(
            cfg.replace(data={"augment": False}),
            self.dataset,
            episodes_seed,
            self.cfg.seed + VAL_SEED_OFFSET,
            self.device,
        )
        return ProxyInputs(
            backbone,
            learner,
            train.sample(lc.meta_batch),
            tuple(self.dataset.input_shape),
            val,
            lc.val_episodes,
            supernet=self.supernet,
        )

    def __call__(self, trial: optuna.Trial) -> float | tuple[float, float]:
        self._step = 0
        try:
            return self._run(trial)
        except KeyboardInterrupt:
            # Not the candidate's fault: the trial fails, is not counted, and runs again on resume.
            trial.set_user_attr(Attr.INTERRUPTED, f"interrupted at step {self._step}")
            raise

    def _run(self, trial: optuna.Trial) -> float | tuple[float, float]:
        self.hooks.check_stop()
        if self.hooks.started:
            self.hooks.started(trial.number, len(counted_trials(trial.study)))
        if Attr.ENQUEUED_ARCH in trial.user_attrs:
            # A known architecture (--enqueue / --baseline): trained as it is, no choices sampled.
            arch = graph.from_json(trial.user_attrs[Attr.ENQUEUED_ARCH])
        else:
            arch = self.space.draw(trial.suggest_categorical, self.cfg.learner.algo)
        fingerprint = graph.fingerprint(arch)
        trial.set_user_attr(Attr.FINGERPRINT, fingerprint)
        trial.set_user_attr(Attr.ARCH, graph.to_json(arch))

        previous = self._evaluated(trial, fingerprint)
        if previous is not None and previous.state == TrialState.RUNNING:
            # Another process is training this candidate now.  Its score is not known yet and
            # Optuna cannot fill one in later, so this trial is pruned without training, a
            # duplicate that does not use up the budget (the search trains another candidate).
            trial.set_user_attr(Attr.DUPLICATE_OF, previous.number)
            trial.set_user_attr(Attr.DUPLICATE_OF_RUNNING, True)
            raise optuna.TrialPruned(f"trial {previous.number} is training this candidate")
        if previous is not None:
            # Isomorphic to a trained candidate: reuse its score instead of training it again.
            for key in ("params", "flops", "seconds"):
                if key in previous.user_attrs:
                    trial.set_user_attr(key, previous.user_attrs[key])
            trial.set_user_attr(Attr.DUPLICATE_OF, previous.number)
            values = previous.values
            return (values[0], values[1]) if self.multi_objective else values[0]

        seed, episodes_seed = trial_streams(self.cfg.seed, trial.number, self.cfg.search.crn)
        try:
            # Initial weights depend on the trial's seed, not on what ran before in the process;
            # the candidate trains under its own training choices (its recipe).
            cfg, backbone, learner = learner_for(
                self.cfg, arch, self.dataset.input_shape, self.dataset.task, seed=seed, device=self.device
            )
        except SpaceError as exc:
            self._fail(trial, f"invalid architecture: {exc}")
        n_params = network.count_params(backbone)
        trial.set_user_attr(Attr.PARAMS, n_params)
        trial.set_user_attr(Attr.FLOPS, network.count_flops(backbone, self.dataset.input_shape))
        train_sampler, val_sampler = self.make_samplers(episodes_seed, cfg)
        cfg = cfg.replace(learner={"amp": candidate_amp(cfg, self.device, self.space.kind)})
        curve: list[list[float]] = []

        def report(step: int, value: float) -> None:
            curve.append([step, value])
            trial.set_user_attr(Attr.CURVE, curve)  # pruned trials keep their partial curve
            if self.multi_objective:
                return  # Optuna cannot prune multi-objective studies
            trial.report(value, step)
            if trial.should_prune():
                trial.set_user_attr(Attr.PRUNED_AT, step)
                raise optuna.TrialPruned(f"pruned at step {step} with validation score {value:.4f}")

        start = time.perf_counter()
        timeout = self.cfg.search.trial_timeout

        def progress(step: int, total: int, value: float | None) -> None:
            self._step = step
            if self.hooks.step:
                self.hooks.step(step, total, value)
            self.hooks.check_stop()
            if timeout is not None and time.perf_counter() - start > timeout:
                raise _TrialTimeout(f"exceeded --trial-timeout {timeout:g}s at step {step}/{total}")

        schedule = halving_rungs(self.cfg) if self.cfg.search.pruner == "halving" else None
        if schedule is not None:
            trial.set_user_attr(Attr.RUNGS, schedule)  # (step, validation episodes) of each rung
        try:
            result = meta_train(
                learner,
                train_sampler,
                val_sampler,
                cfg.learner,
                seed=seed,
                report=report,
                progress=progress,
                checkpoints=schedule,
            )
        except Diverged as exc:
            self._fail(trial, f"diverged: {exc}")
        except SpaceError as exc:
            self._fail(trial, f"invalid architecture: {exc}")
        except torch.OutOfMemoryError as exc:
            self._fail(trial, f"out of memory: {str(exc).splitlines()[0]}")
        except _TrialTimeout as exc:
            self._fail(trial, f"timeout: {exc}")
        finally:
            trial.set_user_attr(Attr.SECONDS, round(time.perf_counter() - start, 3))
            if getattr(learner, "oom_halvings", 0):  # the vmap chunk that fitted the device
                trial.set_user_attr(Attr.VMAP_CHUNK, learner.vmap_chunk)
        trial.set_user_attr(Attr.WEIGHTS_STEP, result.weights_step)  # the checkpoint the score comes from
        if self.multi_objective:
            return result.val_metric, float(n_params)
        return result.val_metric

    def _fail(self, trial: optuna.Trial, reason: str) -> None:
        trial.set_user_attr(Attr.FAILURE, reason)
        raise CandidateFailure(reason)

    @staticmethod
    def _evaluated(trial: optuna.Trial, fingerprint: str) -> optuna.trial.FrozenTrial | None:
        """The completed trial of this candidate; else another RUNNING trial meta-training it
        (screening trials only score proxies); else None.

        Every trial writes its fingerprint before it looks, so of two processes that draw the same
        candidate at once, the one that looks later sees the other: at most one trains it (when
        both look between the two writes, each defers to the other and neither does; the sampler
        may draw it again)."""
        running = None
        for t in trial.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.RUNNING)):
            if t.user_attrs.get(Attr.FINGERPRINT) != fingerprint or t.number == trial.number:
                continue
            if t.state == TrialState.COMPLETE:
                return t
            if running is None and Attr.SCREENING not in t.user_attrs:
                running = t
        return running
