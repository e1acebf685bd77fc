"""Weight sharing: one supernet holds the weights of every architecture of a space at once.

A :class:`SuperNet` is built from architecture graphs (all of a small space, or a large sample of
a big one).  Every parameter of every node is kept in a *bank* keyed by the node's weight slot
(its ``share`` attribute, else its id), its op and the parameter's name; the bank tensor has the
largest shape any of the architectures asks for, and an architecture takes the leading slice of
each (weight slicing: a 32-wide conv uses the first 32 filters of the 64-wide one; a 3x3 and a
5x5 conv are different ops, so they hold parallel weights).  Running one architecture, a *path*,
is running its ordinary compiled :class:`~nas_meta.model.network.Backbone` (the one compiler) with
the bank's slices as its parameters, so a path computes exactly what the standalone network
computes with the same weights, and the gradients reach the bank through the slices.

Features are zero-padded to the widest path's ``feature_dim``, so a learner's head (MAML's) sees
one size; padding with zeros is the same as slicing the head to the path's width, and does not
change ProtoNet's distances.  BatchNorm here always uses the batch's statistics, so every
candidate is scored with its own statistics (what single-path methods recompute per candidate).

    >>> import random
    >>> from nas_meta import spaces
    >>> space = spaces.load_space("conv4")
    >>> arch = space.sample(random.Random(0))
    >>> net = SuperNet([arch], (1, 28, 28), seed=0)
    >>> net.set_path(arch)
    >>> standalone = net.inherit(network.build(arch, (1, 28, 28)))
    >>> x = torch.randn(3, 1, 28, 28)
    >>> bool(torch.equal(net(x), standalone(x)))
    True
"""

from __future__ import annotations

import json
import math
from collections import OrderedDict
from collections.abc import Iterable

import networkx as nx
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call

from .. import graph
from ..errors import SpaceError
from . import network

__all__ = ["SuperNet", "slot_of"]

Slot = tuple[str, str, str]  # (share key, op, parameter name within the node's module)

PATH_CACHE = 64  # compiled paths kept per supernet (a path compiles in milliseconds)


def slot_of(arch: nx.DiGraph, node: str) -> str:
    """The weight slot of ``node``: its ``share`` attribute, else its id."""
    return str(arch.nodes[node].get("share", node))


def _node_params(backbone: network.Backbone) -> Iterable[tuple[str, Slot, Tensor]]:
    """(parameter name in the backbone, slot, parameter) for every parameter of every node."""
    for node in backbone.order:
        key = backbone.keys[node]
        op = str(backbone.arch.nodes[node]["op"])
        for name, param in backbone.nodes[key].named_parameters():
            yield f"nodes.{key}.{name}", (slot_of(backbone.arch, node), op, name), param


def _tile(value: Tensor, shape: tuple[int, ...]) -> Tensor:
    """``value`` repeated along each dim to cover ``shape``, cut to it: the bank keeps the
    initialiser's distribution (kaiming-uniform convs, ones and zeros of a norm) past the variant."""
    reps = [math.ceil(s / v) for s, v in zip(shape, value.shape, strict=True)]
    return value.repeat(*reps)[tuple(slice(0, s) for s in shape)].clone()


class SuperNet(nn.Module):
    """The weights of many architectures in one module; ``set_path(arch)`` picks the one to run.

    ``archs``: the architectures the bank must cover (their union of slots, the largest shape of
    each); a path that needs more raises SpaceError.  ``seed`` seeds the initial weights.
    """

    def __init__(self, archs: Iterable[nx.DiGraph], input_shape: tuple[int, ...], *, seed: int | None = 0) -> None:
        super().__init__()
        self.input_shape = tuple(int(d) for d in input_shape)
        variants: dict[Slot, Tensor] = {}  # the largest variant seen of each slot
        shapes: dict[Slot, tuple[int, ...]] = {}
        feature_dim = 0
        count = 0
        for arch in archs:
            count += 1
            backbone = network.build(arch, self.input_shape, seed=seed)
            feature_dim = max(feature_dim, backbone.feature_dim)
            for _, slot, param in _node_params(backbone):
                shape = tuple(param.shape)
                old = shapes.get(slot)
                if old is not None and len(old) != len(shape):
                    raise SpaceError(f"weight slot {slot} has parameters of {len(old)} and {len(shape)} dims")
                shapes[slot] = shape if old is None else tuple(max(a, b) for a, b in zip(old, shape, strict=True))
                if slot not in variants or param.numel() > variants[slot].numel():
                    variants[slot] = param.detach()
        if count == 0:
            raise SpaceError("a supernet needs at least one architecture")
        self.slots: list[Slot] = sorted(shapes)
        self.index = {slot: i for i, slot in enumerate(self.slots)}
        self.bank = nn.ParameterList(nn.Parameter(_tile(variants[s], shapes[s])) for s in self.slots)
        self.feature_dim = feature_dim
        self.architectures = count
        self._paths: OrderedDict[str, tuple[network.Backbone, list[tuple[str, int, tuple[slice, ...]]]]] = OrderedDict()
        self._path: str | None = None

    # --- paths ---------------------------------------------------------------------------------

    def _compile(self, arch: nx.DiGraph) -> str:
        key = json.dumps(graph.to_json(arch), sort_keys=True)
        if key in self._paths:
            self._paths.move_to_end(key)
            return key
        backbone = network.build(arch, self.input_shape, seed=0)
        binding = []
        for name, slot, param in _node_params(backbone):
            if slot not in self.index:
                raise SpaceError(f"architecture node slot {slot[0]!r} (op {slot[1]!r}) is not in the supernet")
            i = self.index[slot]
            bank_shape = tuple(self.bank[i].shape)
            if any(s > b for s, b in zip(param.shape, bank_shape, strict=True)):
                raise SpaceError(
                    f"architecture node slot {slot[0]!r} (op {slot[1]!r}) needs {name} of shape "
                    f"{tuple(param.shape)}; the supernet holds {bank_shape}"
                )
            binding.append((name, i, tuple(slice(0, s) for s in param.shape)))
        backbone.requires_grad_(False)  # its own tensors are placeholders: the bank's slices replace them
        self._paths[key] = (backbone, binding)
        if len(self._paths) > PATH_CACHE:
            self._paths.popitem(last=False)
        return key

    def covers(self, arch: nx.DiGraph) -> bool:
        """Whether ``arch`` is a path through this supernet (its every weight fits the bank)."""
        try:
            self._compile(arch)
        except SpaceError:
            return False
        return True

    def set_path(self, arch: nx.DiGraph) -> None:
        """Run ``arch`` from now on (SpaceError if the bank does not cover it)."""
        self._path = self._compile(arch)

    def path_params(self, arch: nx.DiGraph | None = None) -> dict[str, Tensor]:
        """The bank's slices that are ``arch``'s parameters (the current path's when None), by the
        standalone backbone's parameter names."""
        key = self._compile(arch) if arch is not None else self._current()
        _, binding = self._paths[key]
        return {name: self.bank[i][slices] for name, i, slices in binding}

    def inherit(self, backbone: network.Backbone) -> network.Backbone:
        """Copy the bank's weights into a standalone backbone of one of the paths, in place, for
        scoring or fine-tuning; returns it."""
        params = self.path_params(backbone.arch)
        own = dict(backbone.named_parameters())
        if set(own) != set(params):
            raise SpaceError("the backbone's parameters are not those of its path through the supernet")
        with torch.no_grad():
            for name, value in params.items():
                own[name].copy_(value)
        return backbone

    def _current(self) -> str:
        if self._path is None:
            raise RuntimeError("bug: SuperNet.forward before set_path")
        if self._path not in self._paths:  # evicted from the cache: compile again
            self._path = self._compile(graph.from_json(json.loads(self._path)))
        return self._path

    def forward(self, x: Tensor) -> Tensor:  # (B, *input_shape) -> (B, feature_dim), zero-padded
        key = self._current()
        backbone, binding = self._paths[key]
        params = {name: self.bank[i][slices] for name, i, slices in binding}
        out = functional_call(backbone, params, (x,))
        return F.pad(out, (0, self.feature_dim - out.shape[-1]))

    def _apply(self, fn, recurse=True):
        # Compiled paths follow the bank's device and dtype (they have no tensors of their own
        # that are read, but their ops may create some on the input's device).
        for backbone, _ in self._paths.values():
            backbone._apply(fn, recurse)
        return super()._apply(fn, recurse)
