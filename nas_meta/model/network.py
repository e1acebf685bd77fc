"""The one compiler: architecture graph -> ``nn.Module``; parameter and FLOP counts.

>>> import random
>>> from nas_meta import spaces
>>> from nas_meta.model import network
>>> arch = spaces.load_space("conv4").sample(random.Random(0))
>>> backbone = network.build(arch, (1, 28, 28), seed=0)
>>> backbone.feature_dim, network.count_params(backbone)
(64, 111936)
"""

from __future__ import annotations

import math
import operator
from contextlib import nullcontext
from typing import cast

import networkx as nx
import torch
from torch import Tensor, nn
from torch.utils.flop_counter import FlopCounterMode

from .. import graph
from ..errors import SpaceError
from .fused import batch_norm_max_pool, conv_batch_norm_max_pool, fusable_conv
from .fusion import conv_before, norm_pool_pairs, pool_first_pairs
from .ops import OPS, BatchNorm, Pool2x2

__all__ = ["Backbone", "build", "count_params", "count_flops"]


def _key(node: str, index: int) -> str:
    # ModuleDict keys may not contain "." nor shadow attributes; the index keeps them unique.
    return f"n{index}_" + "".join(c if c.isalnum() or c == "_" else "_" for c in node)


class Backbone(nn.Module):
    """A compiled architecture: runs nodes in topological order, merging inputs by sum or concat.

    ``forward(x)`` maps ``(B, *input_shape)`` to ``(B, feature_dim)`` (the output node, flattened).
    ``arch`` keeps a copy of the graph it was built from.
    """

    def __init__(self, arch: nx.DiGraph, input_shape: tuple[int, ...]) -> None:
        super().__init__()
        graph.validate(arch, OPS)
        self.arch = arch.copy()
        self.input_shape = tuple(int(d) for d in input_shape)
        # Lexicographic order makes module creation (hence seeded init and state_dict keys)
        # independent of how the graph was built or read back.
        self.order: list[str] = list(nx.lexicographical_topological_sort(arch))
        self.keys = {node: _key(node, i) for i, node in enumerate(self.order)}
        self.inputs = {node: graph.ordered_inputs(arch, node) for node in self.order}
        self.merges = {node: arch.nodes[node].get("merge", "sum") for node in self.order}
        self.output = graph.sink(arch)
        self.nodes = nn.ModuleDict()
        self.shapes: dict[str, tuple[int, ...]] = {}
        # Shapes are found by running a dummy batch of 2 through each new module: any op,
        # including a user's, reports its own output shape, and a misfit fails here, not in training.
        dummy: dict[str, Tensor] = {}
        with torch.no_grad():
            for node in self.order:
                attrs = arch.nodes[node]
                if not self.inputs[node]:
                    merged = torch.zeros(2, *self.input_shape)
                else:
                    merged = self._merge(node, [dummy[p] for p in self.inputs[node]])
                c_in = merged.shape[1] if merged.dim() > 1 else 1
                c_out, stride = attrs.get("c_out", c_in), attrs.get("stride", 1)
                try:
                    module = OPS.get(attrs["op"])(c_in, c_out, stride)
                except (ValueError, TypeError) as exc:
                    raise SpaceError(
                        f"node {node!r} (op {attrs['op']!r}) cannot be built with "
                        f"c_in={c_in}, c_out={c_out}, stride={stride}: {exc}"
                    ) from None
                try:
                    out = module(merged)
                except RuntimeError as exc:
                    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                    raise SpaceError(
                        f"node {node!r} (op {attrs['op']!r}) does not fit its input of shape "
                        f"{tuple(merged.shape[1:])}: {first}"
                    ) from None
                self.nodes[self.keys[node]] = module
                dummy[node] = out
                self.shapes[node] = tuple(out.shape[1:])
        self.feature_dim = math.prod(self.shapes[self.output])
        self.pool_first = pool_first_pairs(arch, self.output)  # {pool node: activation node}
        self.fuse(True)

    def fuse(self, enabled: bool = True) -> Backbone:
        """Run each BatchNorm that only feeds a 2x2 max-pool as one op with it (the default), and
        with the conv before it too when that conv has a small fan-in (an image's first layer).

        The fused ops (fused.batch_norm_max_pool, fused.conv_batch_norm_max_pool) compute the same
        function with other rounding: float64 gradients agree to ~1e-13 relative.  ``fuse(False)``
        runs the ops apart.  Returns self.
        """
        pairs = norm_pool_pairs(self.arch, self.output, self.pool_first) if enabled else {}
        self.norm_pool = {  # {pool node: BatchNorm node}
            pool: norm
            for pool, norm in pairs.items()
            if isinstance(self.nodes[self.keys[norm]], BatchNorm) and isinstance(self.nodes[self.keys[pool]], Pool2x2)
        }
        self.conv_norm_pool = {  # {pool node: conv node} where a small-fan-in conv feeds only that norm
            pool: conv
            for pool, conv in conv_before(self.arch, self.norm_pool).items()
            if fusable_conv(self.nodes[self.keys[conv]])
        }
        self._run_later = (
            frozenset(self.pool_first.values())
            | frozenset(self.norm_pool.values())
            | frozenset(self.conv_norm_pool.values())
        )
        return self

    def _merge(self, node: str, values: list[Tensor]) -> Tensor:
        if len(values) == 1:
            return values[0]
        if self.merges[node] == "concat":
            shapes = {tuple(v.shape[2:]) for v in values}
            if len(shapes) > 1:
                raise SpaceError(
                    f"node {node!r} concatenates inputs of different sizes {sorted(shapes)} (from {self.inputs[node]})"
                )
            return torch.cat(values, dim=1)
        shapes = {tuple(v.shape[1:]) for v in values}
        if len(shapes) > 1:
            raise SpaceError(
                f"node {node!r} sums inputs of different shapes {sorted(shapes)} (from {self.inputs[node]})"
            )
        total = values[0]
        for value in values[1:]:
            total = total + value
        return total

    def forward(self, x: Tensor) -> Tensor:  # (B, *input_shape) -> (B, feature_dim)
        values: dict[str, Tensor] = {}
        for node in self.order:
            inputs = self.inputs[node]
            merged = x if not inputs else self._merge_fast(node, [values[p] for p in inputs])
            if node in self._run_later:  # run with or after the max-pool it feeds
                values[node] = merged
            elif node in self.pool_first or node in self.norm_pool:
                pool = self.nodes[self.keys[node]]
                norm = self.norm_pool.get(node)
                if norm is None:
                    out = pool(merged)
                elif node in self.conv_norm_pool:  # merged is the conv's input
                    conv = cast(nn.Conv2d, self.nodes[self.keys[self.conv_norm_pool[node]]])
                    out = conv_batch_norm_max_pool(
                        conv, cast(BatchNorm, self.nodes[self.keys[norm]]), cast(Pool2x2, pool), merged
                    )
                else:
                    out = batch_norm_max_pool(cast(BatchNorm, self.nodes[self.keys[norm]]), cast(Pool2x2, pool), merged)
                act = self.pool_first.get(node)
                values[node] = out if act is None else self.nodes[self.keys[act]](out)
            else:
                values[node] = self.nodes[self.keys[node]](merged)
        return values[self.output].flatten(1)

    def _merge_fast(self, node: str, values: list[Tensor]) -> Tensor:
        # Shapes were checked at build time; this is the forward path without the checks.
        if len(values) == 1:
            return values[0]
        if self.merges[node] == "concat":
            return torch.cat(values, dim=1)
        total = values[0]
        for value in values[1:]:
            total = total + value
        return total


def build(arch: nx.DiGraph, input_shape: tuple[int, ...], *, seed: int | None = None) -> Backbone:
    """Compile ``arch`` for inputs of ``input_shape`` (without batch dim), e.g. ``(1, 28, 28)``.

    Raises SpaceError for an invalid graph or shapes that do not fit.  With ``seed`` the initial
    weights come from ``torch.manual_seed(seed)`` inside a forked RNG (the global RNG is untouched);
    without it, from the global torch RNG as for any ``nn.Module``.
    """
    try:
        shape = tuple(operator.index(d) for d in input_shape)  # ints, torch.Size, numpy ints
    except TypeError:
        shape = ()
    if not shape or min(shape) < 1:
        raise SpaceError(f"input_shape must be positive integers like (1, 28, 28) or (1,), got {input_shape!r}")
    context = torch.random.fork_rng(devices=[]) if seed is not None else nullcontext()
    with context:
        if seed is not None:
            torch.manual_seed(seed)
        return Backbone(arch, shape)


def count_params(module: nn.Module) -> int:
    """Number of parameters (trainable or not; buffers excluded)."""
    return sum(p.numel() for p in module.parameters())


def count_flops(module: nn.Module, input_shape: tuple[int, ...]) -> int:
    """Forward FLOPs for one example, as ``torch.utils.flop_counter`` counts them.

    A multiply-add is 2 FLOPs; only the ops torch counts (conv, matmul, ...) are included, so
    pooling, norms and activations add nothing.
    """
    param = next(module.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    # A batch of 2, as build() runs: a batch norm over a 1x1 map needs more than one value.
    x = torch.zeros(2, *input_shape, device=device)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        module(x)
    return int(counter.get_total_flops()) // 2
