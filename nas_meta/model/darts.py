"""The continuous relaxation of a cell space (DARTS, Liu et al., ICLR 2019) for a differentiable search.

Every edge j -> k of every cell type carries all of the space's ops at once, mixed by the softmax
of its architecture weights: ``sum_o softmax(alpha_kj)_o * op_o(x_j)`` (``none`` contributes zero,
so its weight only takes share from the others).  Node k sums its mixed edges from all earlier
nodes; the cell output concatenates the intermediate nodes, as in the discrete cells of
``spaces.cell.build_cells``, whose stem, preprocessing and channel doubling this network follows.
Cells of one type share one set of architecture weights (one genotype per type), each cell its own
op weights.  :meth:`DartsNetwork.genotype` discretises as DARTS does: per node the two incoming
edges with the strongest non-zero op, each with that op; the space turns the result into an
ordinary architecture graph (``CellSpace.from_params``).

    >>> from nas_meta.spaces import load_space
    >>> net = DartsNetwork.from_space(load_space("cell"), (1, 28, 28), seed=0)
    >>> net.alphas["normal"].shape, net.feature_dim
    (torch.Size([14, 8]), 128)
"""

from __future__ import annotations

from contextlib import nullcontext
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import SpaceError
from .ops import OPS, ZERO

__all__ = ["DartsNetwork", "check_relaxable", "edges"]


def edges(nodes: int) -> list[tuple[int, int]]:
    """The (k, j) edges of a cell with ``nodes`` intermediate nodes, in the order of the alphas."""
    return [(k, j) for k in range(2, nodes + 2) for j in range(k)]


class _MixedEdge(nn.Module):
    def __init__(self, ops: list[str], channels: int, stride: int) -> None:
        super().__init__()
        self.names = ops
        self.ops = nn.ModuleList(OPS.get(op)(channels, channels, stride) for op in ops if op != ZERO)
        self.live = [i for i, op in enumerate(ops) if op != ZERO]

    def forward(self, x: Tensor, weights: Tensor) -> Tensor:
        out: Tensor | None = None
        for index, op in zip(self.live, self.ops, strict=True):
            term = weights[index] * op(x)
            out = term if out is None else out + term
        assert out is not None  # the space has at least one op besides none
        return out


class _MixedCell(nn.Module):
    def __init__(self, ops: list[str], nodes: int, c_pp: int, c_p: int, c: int, reduce: bool, reduce_prev: bool):
        super().__init__()
        self.reduce, self.nodes = reduce, nodes
        pre0 = "factorized_reduce" if reduce_prev else "relu_conv_bn_1x1"
        self.pre0 = OPS.get(pre0)(c_pp, c, 2 if reduce_prev else 1)
        self.pre1 = OPS.get("relu_conv_bn_1x1")(c_p, c, 1)
        self.edges = nn.ModuleList(_MixedEdge(ops, c, 2 if reduce and j < 2 else 1) for _k, j in edges(nodes))

    def forward(self, s0: Tensor, s1: Tensor, weights: Tensor) -> Tensor:
        states = [self.pre0(s0), self.pre1(s1)]
        index = 0
        for k in range(2, self.nodes + 2):
            total: Tensor | None = None
            for j in range(k):
                term = self.edges[index](states[j], weights[index])
                total = term if total is None else total + term
                index += 1
            assert total is not None
            states.append(total)
        return torch.cat(states[2:], dim=1)


def check_relaxable(space: Any) -> None:
    """SpaceError unless ``space`` is a cell space whose only choices are its cells' ops and inputs."""
    if getattr(space, "kind", None) != "cell":
        raise SpaceError(
            f"--strategy darts relaxes the ops and inputs of a cell space; space {space.name!r} is of kind "
            f"{space.kind!r}; choose --strategy supernet or scratch"
        )
    for key in ("channels", "stem_channels", "stem_stride"):
        options = getattr(space, key)
        if len(options) != 1:
            raise SpaceError(
                f"--strategy darts relaxes ops and inputs only; space {space.name!r} has a choice of {key} "
                f"{options}: fix it in the space file"
            )


class DartsNetwork(nn.Module):
    """All cells of a layout with every op on every edge; ``alphas[cell_type]``: (edges, ops)."""

    def __init__(
        self,
        ops: list[str],
        nodes: int,
        layout: list[str],
        *,
        channels: int,
        stem_channels: int,
        stem_stride: int,
        input_shape: tuple[int, ...],
    ) -> None:
        super().__init__()
        if all(op == ZERO for op in ops):
            raise SpaceError("a differentiable search needs at least one op besides 'none'")
        self.ops, self.nodes, self.layout = list(ops), nodes, list(layout)
        self.input_shape = tuple(input_shape)
        self.stem = OPS.get("conv_bn_3x3")(input_shape[0], stem_channels, stem_stride)
        cells = []
        c_pp, c_p, c, reduce_prev = stem_channels, stem_channels, channels, False
        for cell_type in layout:
            reduce = cell_type == "reduce"
            c = c * 2 if reduce else c
            cells.append(_MixedCell(self.ops, nodes, c_pp, c_p, c, reduce, reduce_prev))
            c_pp, c_p, reduce_prev = c_p, c * nodes, reduce
        self.cells = nn.ModuleList(cells)
        self.feature_dim = c_p
        # Small random alphas (DARTS: 1e-3 * randn): every op starts with about equal weight.
        self.alphas = nn.ParameterDict(
            {t: nn.Parameter(1e-3 * torch.randn(len(edges(nodes)), len(ops))) for t in dict.fromkeys(layout)}
        )

    @classmethod
    def from_space(cls, space: Any, input_shape: tuple[int, ...], *, seed: int | None = 0) -> DartsNetwork:
        """The relaxation of a ``cell`` space whose channels and stem are fixed (not choices)."""
        check_relaxable(space)
        context = torch.random.fork_rng(devices=[]) if seed is not None else nullcontext()
        with context:
            if seed is not None:
                torch.manual_seed(seed)
            return cls(
                space.ops,
                space.nodes,
                space.layout,
                channels=space.channels[0],
                stem_channels=space.stem_channels[0],
                stem_stride=space.stem_stride[0],
                input_shape=input_shape,
            )

    def arch_parameters(self) -> list[nn.Parameter]:
        return list(self.alphas.values())

    def weight_parameters(self) -> list[nn.Parameter]:
        alphas = {id(p) for p in self.alphas.values()}
        return [p for p in self.parameters() if id(p) not in alphas]

    def forward(self, x: Tensor) -> Tensor:  # (B, *input_shape) -> (B, feature_dim)
        weights = {t: F.softmax(a, dim=-1) for t, a in self.alphas.items()}
        s0 = s1 = self.stem(x)
        for cell_type, cell in zip(self.layout, self.cells, strict=True):
            s0, s1 = s1, cell(s0, s1, weights[cell_type])
        return s1.mean(dim=(2, 3))

    def genotype(self) -> dict[str, str]:
        """The discrete cell choices (``<type>_n<k>_inputs`` / ``_op0`` / ``_op1``): per node the two
        incoming edges whose strongest non-``none`` op weighs most, each with that op."""
        live = [i for i, op in enumerate(self.ops) if op != ZERO]
        params: dict[str, str] = {}
        order = edges(self.nodes)
        for cell_type, alpha in self.alphas.items():
            weights = F.softmax(alpha.detach().float(), dim=-1)
            for k in range(2, self.nodes + 2):
                rows = [(j, weights[order.index((k, j))]) for j in range(k)]
                strength = {j: float(w[live].max()) for j, w in rows}
                best = {j: self.ops[live[int(w[live].argmax())]] for j, w in rows}
                i, j = sorted(sorted(strength, key=lambda e: (-strength[e], e))[:2])
                params[f"{cell_type}_n{k}_inputs"] = f"{i}-{j}"
                params[f"{cell_type}_n{k}_op0"] = best[i]
                params[f"{cell_type}_n{k}_op1"] = best[j]
        return params
