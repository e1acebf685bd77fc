"""Training-free scores of a backbone at initialisation: cheap estimators of its meta-trained score.

Each proxy maps a freshly initialised backbone and one batch of training episodes to a number
that is meant to rank architectures like their meta-trained validation accuracy does (higher is
predicted better; ``params`` and ``flops`` are raw sizes).  ``bench/fidelity.py`` measures how
well each one ranks against a long meta-training; ``search --prescreen`` uses one to decide which
candidates are worth meta-training.

* ``params``, ``flops``: size (Ning et al. 2021 found parameter count a strong baseline).
* ``synflow``: synaptic flow (Tanaka et al. 2020): with every weight replaced by its absolute value
  and an all-ones input, R = sum of the outputs; score = sum over weights of w * dR/dw.  Data-free.
  Normalisation layers keep only their affine map, as the zero-cost proxies of Abdelfattah et al.
  (2021) compute it without BatchNorm; double precision, so deep nets do not overflow.
* ``naswot``: Mellor et al. (2021): each image's binary code of which units enter their
  activation above zero; K[i, j] = number of units where images i and j agree; score = log|det K|.
  Images that the untrained net already tells apart score high.
* ``grad_norm``: sum over parameter tensors of the L2 norm of the loss gradient (Abdelfattah et al.).
* ``snip``: sum over weights of |w * dL/dw| (Lee et al. 2019, as a proxy in Abdelfattah et al.).
* ``supernet``: not training-free: the validation score of the candidate with the weights it
  inherits from a meta-trained supernet of the space (``search --strategy supernet``).
* ``proto_acc``: few-shot aware, of this project: the untrained embedding's nearest-prototype
  accuracy on validation episodes (ProtoNet's classifier with no training at all), averaged over
  ``val_episodes`` episodes, so it measures the task the search is scored on.

The gradient proxies use the learner's own loss on the training batch (ProtoNet's or MAML's
query loss), so they see the episodes' ways and shots.  Every proxy works on a copy: the caller's
backbone and learner are left as they were.

    >>> import torch
    >>> from torch import nn
    >>> net = nn.Sequential(nn.Flatten(), nn.Linear(2, 3, bias=False), nn.ReLU(), nn.Linear(3, 1, bias=False))
    >>> with torch.no_grad():
    ...     _ = net[1].weight.copy_(torch.tensor([[1.0, -2.0], [3.0, 0.0], [-1.0, 1.0]]))
    ...     _ = net[3].weight.copy_(torch.tensor([[2.0, -1.0, 1.0]]))
    >>> synflow(net, (2,))  # R = |W2| |W1| 1 = 2*3 + 1*3 + 1*2 = 11, once per layer
    22.0
"""

from __future__ import annotations

import copy
import math
import time
import types
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, cast

import torch
from torch import Tensor, nn

from ..errors import ConfigError
from ..learners import Learner, ProtoNet, evaluate_episodes
from ..model import network
from ..model.ops import BatchNorm, InstanceNorm
from ..registry import Registry
from .supernet import inherit_learner

__all__ = ["PROXIES", "ProxyInputs", "compute_proxies", "synflow", "naswot", "grad_norm", "snip", "proto_acc"]

# Modules whose *input* sign makes a unit's code in NASWOT (each is zero or negative-saturated below 0).
_ACTIVATIONS = (nn.ReLU, nn.LeakyReLU, nn.ELU, nn.GELU, nn.SiLU)


@dataclass
class ProxyInputs:
    """What a proxy may look at: an untrained backbone and learner, one batch of training episodes,
    and a validation sampler (for the few-shot aware proxy)."""

    backbone: nn.Module  # the learner's backbone, at initialisation
    learner: nn.Module  # the learner around it (its loss defines the gradient proxies)
    batch: Any  # Episodes: one batch of training episodes
    input_shape: tuple[int, ...]
    val_sampler: Any = None  # for proto_acc and supernet
    val_episodes: int = 100
    supernet: nn.Module | None = None  # for supernet: the learner around a trained supernet (search/supernet.py)


Proxy = Callable[[ProxyInputs], float]
PROXIES: Registry[Proxy] = Registry("proxy")


def synflow(backbone: nn.Module, input_shape: Sequence[int]) -> float:
    """Tanaka et al.'s synaptic flow of ``backbone`` (see the module docstring); data-free."""
    net = copy.deepcopy(backbone).double()
    if isinstance(net, network.Backbone):
        net.fuse(False)  # op by op, so the norms below are the ones that run
    for module in net.modules():
        if isinstance(module, (BatchNorm, InstanceNorm)):
            module.forward = types.MethodType(_affine_only, module)  # type: ignore[method-assign]
    with torch.no_grad():
        for p in net.parameters():
            p.abs_()
    net.zero_grad(set_to_none=True)
    x = torch.ones(1, *input_shape, dtype=torch.float64, device=_device(net))
    net(x).sum().backward()
    with torch.no_grad():
        return float(sum((p * p.grad).sum() for p in net.parameters() if p.grad is not None))


def _affine_only(self: BatchNorm | InstanceNorm, x: Tensor) -> Tensor:
    shape = [1, -1] + [1] * (x.dim() - 2)
    return x * self.weight.view(shape) + self.bias.view(shape)


def naswot(backbone: nn.Module, images: Tensor) -> float:
    """Mellor et al.'s log|det K| of the activation codes of ``images`` (N, C, H, W)."""
    codes: list[Tensor] = []

    def hook(_module: nn.Module, inputs: tuple[Tensor, ...], _output: Tensor) -> None:
        codes.append((inputs[0].detach() > 0).flatten(1).double())

    handles = [m.register_forward_hook(hook) for m in backbone.modules() if isinstance(m, _ACTIVATIONS)]
    try:
        with torch.no_grad():
            backbone(images)
    finally:
        for handle in handles:
            handle.remove()
    if not codes:
        return math.nan  # no activation: nothing to code
    c = torch.cat(codes, 1)  # (N, units)
    kernel = c @ c.T + (1 - c) @ (1 - c).T  # units where two images agree
    sign, logdet = torch.linalg.slogdet(kernel)
    return float(logdet) if float(sign) != 0 else -math.inf


def _loss_gradients(learner: nn.Module, batch: Any) -> list[tuple[Tensor, Tensor]]:
    """(weight, dL/dweight) of a copy of ``learner`` after its loss on ``batch``."""
    clone = copy.deepcopy(learner)
    clone.train()
    clone.zero_grad(set_to_none=True)
    loss, _ = cast(Learner, clone).loss(batch)
    loss.backward()
    return [(p.detach(), p.grad.detach()) for p in clone.parameters() if p.grad is not None]


def grad_norm(learner: nn.Module, batch: Any) -> float:
    """Sum over parameter tensors of ||dL/dw||_2, L = the learner's loss on ``batch``."""
    return float(sum(g.norm() for _, g in _loss_gradients(learner, batch)))


def snip(learner: nn.Module, batch: Any) -> float:
    """Sum over weights of |w * dL/dw|, L = the learner's loss on ``batch``."""
    return float(sum((w * g).abs().sum() for w, g in _loss_gradients(learner, batch)))


def proto_acc(backbone: nn.Module, val_sampler: Any, episodes: int) -> float:
    """Mean nearest-prototype query accuracy of the untrained ``backbone`` on ``episodes`` episodes."""
    return float(evaluate_episodes(ProtoNet(backbone), val_sampler, episodes).mean())


def _device(module: nn.Module) -> torch.device:
    param = next(module.parameters(), None)
    return param.device if param is not None else torch.device("cpu")


def _episode_images(batch: Any) -> Tensor:
    """Every support and query image of the batch's episodes as one (N, C, H, W) batch."""
    x = torch.cat([batch.support_x, batch.query_x], 1)  # (T, S+Q, C, H, W)
    return x.flatten(0, 1)


PROXIES.add("params", lambda p: float(network.count_params(p.backbone)))
PROXIES.add("flops", lambda p: float(network.count_flops(p.backbone, p.input_shape)))
PROXIES.add("synflow", lambda p: synflow(p.backbone, p.input_shape))
PROXIES.add("naswot", lambda p: naswot(p.backbone, _episode_images(p.batch)))
PROXIES.add("grad_norm", lambda p: grad_norm(p.learner, p.batch))
PROXIES.add("snip", lambda p: snip(p.learner, p.batch))


@PROXIES.register("proto_acc")
def _proto_acc(p: ProxyInputs) -> float:
    if p.val_sampler is None or getattr(p.learner, "task", "classification") != "classification":
        raise ConfigError("proxy 'proto_acc' needs validation episodes of a classification dataset")
    return proto_acc(p.backbone, p.val_sampler, p.val_episodes)


@PROXIES.register("supernet")
def _supernet(p: ProxyInputs) -> float:
    """The candidate's validation score with the weights it inherits from the trained supernet
    (accuracy; minus the MSE for regression, so that higher is better as for every proxy)."""
    if p.supernet is None or p.val_sampler is None:
        raise ConfigError("proxy 'supernet' scores inherited weights: it needs --strategy supernet")
    learner = inherit_learner(copy.deepcopy(p.learner), p.supernet)
    score = float(evaluate_episodes(learner, p.val_sampler, p.val_episodes).mean())
    return score if getattr(learner, "task", "classification") == "classification" else -score


def compute_proxies(inputs: ProxyInputs, names: Sequence[str]) -> dict[str, tuple[float, float]]:
    """{name: (value, CPU seconds)} for each proxy in ``names`` (unknown names: ConfigError first)."""
    functions = {name: PROXIES.get(name) for name in names}
    out = {}
    for name, fn in functions.items():
        start = time.process_time()
        value = fn(inputs)
        out[name] = (value, time.process_time() - start)
    return out
