"""A chosen architecture meta-trained from scratch with the run's budget and recipe, then meta-tested
on the *test* classes (the only place, with ``evaluate``, where test classes are touched); its
weights saved and read back as plain state dicts (``torch.load(weights_only=True)``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from .config import REFITS, RunConfig
from .data import Dataset, load_dataset
from .data.episodes import TEST_SEED_OFFSET, check_memory, episode_samplers, test_sampler
from .errors import ConfigError, DataError
from .fileio import atomic_write
from .learners import learner_for, meta_test, meta_train, resolve_device

__all__ = ["retrain", "evaluate_arch", "save_weights", "load_weights", "TEST_SEED_OFFSET"]


def _test_result(cfg: RunConfig, learner: nn.Module, dataset: Dataset, test: Any) -> dict[str, Any]:
    mean, ci95 = meta_test(learner, test, cfg.learner.test_episodes)
    return {
        "mean": mean,
        "ci95": ci95,
        "episodes": cfg.learner.test_episodes,
        "metric": "accuracy" if dataset.task == "classification" else "mse",
    }


def evaluate_arch(
    cfg: RunConfig,
    arch: Any,
    *,
    weights: str | Path | None = None,
    progress: Any = None,
    save_to: str | Path | None = None,
    log: Any = None,
) -> dict[str, Any]:
    """Meta-test ``arch`` on the test classes: with trained ``weights``, or after meta-training it
    with the config's budget (then ``save_to`` keeps the trained weights, loadable as ``weights``).
    Returns ``{"mean", "ci95", "episodes", "metric"}``, plus ``train_seconds`` after training."""
    device = resolve_device(cfg.device)  # first: a GPU this machine lacks is refused before the cache is written
    dataset = load_dataset(cfg.data)
    test = test_sampler(cfg, dataset, device)  # episodes that cannot be drawn: refused before anything
    if weights is None:
        check_memory(cfg, dataset, device)  # a training step that cannot fit: refused with the estimate
        if log is not None:
            log(f"no weights: meta-training first ({cfg.preset} budget, {cfg.learner.iterations} steps)")
        learner, result = retrain(cfg, arch, dataset=dataset, device=device, progress=progress, test=test)
        if save_to is not None:
            save_weights(learner, Path(save_to))
        return {**result["test"], "train_seconds": result["train_seconds"], "weights_step": result["weights_step"]}
    # Under the architecture's recipe: MAML adapts at test with its own inner learning rate.
    cfg, backbone, learner = learner_for(cfg, arch, dataset.input_shape, dataset.task)
    state = load_weights(weights)
    try:
        backbone.load_state_dict(state["backbone"])
    except RuntimeError as exc:
        raise DataError(f"weights {str(weights)!r} do not fit this architecture: {str(exc).splitlines()[0]}") from None
    head = getattr(learner, "head", None)
    if isinstance(head, nn.Module) and "head" in state:
        outputs = state["head"]["weight"].shape[0]
        if head.weight.shape != state["head"]["weight"].shape:
            raise ConfigError(f"the weights' MAML head has {outputs} outputs; evaluate them with --ways {outputs}")
        head.load_state_dict(state["head"])
    return _test_result(cfg, learner.to(device), dataset, test)


def retrain(
    cfg: RunConfig,
    arch: Any,
    *,
    dataset: Dataset | None = None,
    progress: Any = None,
    device: torch.device | None = None,
    test: Any = None,
    refit: str | None = None,
    log: Any = None,
) -> tuple[nn.Module, dict[str, Any]]:
    """Meta-train ``arch`` from scratch with the config's budget and recipe (train classes,
    validation checkpoints, the weights of ``cfg.learner.checkpoint``), then meta-test it on the
    *test* classes (``test``: their sampler, made here by default).  Returns the learner and its
    results.

    ``refit`` (``cfg.learner.refit`` by default) ``"train+val"``: after that run, a second model is
    trained from scratch on the training and validation classes together, for the number of steps
    the first run's validation curve chose (its best checkpoint), without validation; that model
    is the one returned and tested.
    Test classes are never trained on either way.
    """
    refit = cfg.learner.refit if refit is None else refit
    if refit not in REFITS:
        raise ConfigError(f"unknown refit {refit!r}; choose from {list(REFITS)}")
    dataset = dataset if dataset is not None else load_dataset(cfg.data)
    device = device or resolve_device(cfg.device)
    if test is None:  # made before training: episodes that cannot be drawn are refused first
        test = test_sampler(cfg, dataset, device)
    merged = load_dataset(cfg.data, refit=True) if refit == "train+val" else None  # refused before training
    learner, result = _train_arch(cfg, arch, dataset, device, progress)
    out: dict[str, Any] = {
        "val": result.val_metric,
        "train_seconds": round(result.seconds, 1),
        "iterations": result.iterations,
        "checkpoint": cfg.learner.checkpoint,
        "weights_step": result.weights_step,  # the step whose weights are kept
        "best_step": result.best_step,  # the validation curve's best checkpoint
        "curve": [[step, value] for step, value in result.curve],
    }
    if merged is not None:
        steps = result.best_step
        if log is not None:
            log(f"refit on train+val classes for {steps} steps (the validation curve's choice)")
        refit_cfg = cfg.replace(learner={"iterations": steps, "checkpoint": "last"})
        learner, again = _train_arch(refit_cfg, arch, merged, device, progress, validate=False)
        out["refit"] = {
            "splits": "train+val",
            "steps": steps,
            "train_seconds": round(again.seconds, 1),
            "train_classes": len(merged.splits["train"]),
        }
        out["weights_step"] = steps
    out["test"] = _test_result(cfg, learner, dataset, test)
    return learner, out


def _train_arch(
    cfg: RunConfig, arch: Any, dataset: Dataset, device: torch.device, progress: Any, *, validate: bool = True
) -> tuple[nn.Module, Any]:
    # A candidate searched with its own training choices trains with them.
    cfg, _, learner = learner_for(cfg, arch, dataset.input_shape, dataset.task, seed=cfg.seed, device=device)
    train, val = episode_samplers(cfg, dataset, cfg.seed, cfg.seed + 1, device, validate=validate)
    return learner, meta_train(learner, train, val, cfg.learner, seed=cfg.seed, progress=progress)


def save_weights(learner: nn.Module, path: Path) -> None:
    """The backbone's and (for MAML) the head's state dicts, as plain tensors."""
    backbone = learner.get_submodule("backbone")
    state = {"backbone": backbone.state_dict()}
    head = getattr(learner, "head", None)
    if isinstance(head, nn.Module):
        state["head"] = head.state_dict()
    atomic_write(path, lambda f: torch.save(state, f))


def load_weights(path: str | Path) -> dict[str, dict[str, torch.Tensor]]:
    """Read a weights file safely (``weights_only=True``); a damaged one is a clear error."""
    path = Path(path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise DataError(f"no weights file {str(path)!r}") from None
    except Exception as exc:  # truncated zip, pickle refused by weights_only, ...
        raise DataError(f"cannot read weights {str(path)!r}: {type(exc).__name__}: {exc}".splitlines()[0]) from None
    if not isinstance(state, dict) or "backbone" not in state:
        raise DataError(f"weights {str(path)!r} are not a nas_meta weights file (no 'backbone' entry)")
    return state
