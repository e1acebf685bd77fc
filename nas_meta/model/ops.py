"""The op table: every node of an architecture graph names one op here.

An op is a builder ``(c_in, c_out, stride) -> nn.Module`` registered under a name.  A user adds
one with a decorator, before loading a space that lists it::

    >>> import torch.nn as nn
    >>> from nas_meta.model.ops import OPS
    >>> @OPS.register("my_conv_3x3")
    ... def build_my_conv(c_in: int, c_out: int, stride: int) -> nn.Module:
    ...     return nn.Conv2d(c_in, c_out, 3, stride, padding=1)

``c_in`` is the channel (or feature) count of the node's merged input, ``c_out`` the node's
``c_out`` attribute (``c_in`` when absent).  An op that cannot honour ``c_out``/``stride`` raises
:class:`~nas_meta.errors.SpaceError`.  The DARTS ops follow Liu et al. 2019 (ICLR), ``genotypes.py``
and ``operations.py``.  ``none`` (the zero op) is deliberately *not* in the table: a space drops an
edge whose op is ``none`` instead of making a node of it (see ``nas_meta.spaces``).
"""

from __future__ import annotations

import contextlib
import functools
import threading
from collections.abc import Callable, Iterator

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import SpaceError
from ..registry import Registry

__all__ = [
    "OPS",
    "ZERO",
    "DARTS_OPS",
    "ACTIVATIONS",
    "BatchNorm",
    "InstanceNorm",
    "Pool2x2",
    "OpBuilder",
    "functorch_wrapped",
    "plain_ops",
    "ThreadFlag",
]

OpBuilder = Callable[[int, int, int], nn.Module]
OPS: Registry[OpBuilder] = Registry("op", error=SpaceError)

ZERO = "none"  # the DARTS zero op: never a node; an edge with it is dropped
DARTS_OPS = [
    "none",
    "max_pool_3x3",
    "avg_pool_3x3",
    "skip_connect",
    "sep_conv_3x3",
    "sep_conv_5x5",
    "dil_conv_3x3",
    "dil_conv_5x5",
]


def _require(ok: bool, op: str, c_in: int, c_out: int, stride: int, rule: str) -> None:
    if not ok:
        raise SpaceError(f"op {op!r} {rule}, got c_in={c_in}, c_out={c_out}, stride={stride}")


# --- normalisation: batch statistics always ------------------------------------------------------
# The MAML paper uses batch statistics at test time too, so there are no running-stat buffers:
# train and eval compute the same thing.  F.batch_norm(training=True) has wrong second-order
# gradients under torch.func.vmap in torch 2.14 (pytorch/functorch#534), so inside a functorch
# transform BatchNorm is written with mean/var ops; elsewhere the native kernel (exact, including
# its double backward, and faster per MAML task on the CPU: bench/README.md).


class ThreadFlag(threading.local):
    """A per-thread switch, set for the length of a ``with flag.set():`` block."""

    on = False

    @contextlib.contextmanager
    def set(self) -> Iterator[None]:
        previous, self.on = self.on, True
        try:
            yield
        finally:
            self.on = previous


_PLAIN = ThreadFlag()


def plain_ops() -> contextlib.AbstractContextManager[None]:
    """In this thread, BatchNorm is written with mean/var ops, never the native kernel: for
    exporters (ONNX) that would otherwise see a training-mode batch_norm."""
    return _PLAIN.set()


def functorch_wrapped(x: Tensor) -> bool:
    """True inside torch.func.vmap/grad, where the native batch-norm kernel must not be used."""
    return bool(torch._C._functorch.is_functorch_wrapped_tensor(x))


class _AffineNorm(nn.Module):
    """Normalise over ``_dims(x)`` with the input's own statistics, then scale and shift per channel."""

    def __init__(self, channels: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))

    def _dims(self, x: Tensor) -> list[int]:
        raise NotImplementedError

    def forward(self, x: Tensor) -> Tensor:
        dims = self._dims(x)
        shape = [1, -1] + [1] * (x.dim() - 2)
        # Two passes (mean, then mean of centred squares): stable, and on the CPU faster forward
        # and backward than torch.var_mean over dims (0, 2, 3) (bench/README.md).
        centred = x - x.mean(dim=dims, keepdim=True)
        var = (centred * centred).mean(dim=dims, keepdim=True)
        return centred * (self.weight.view(shape) * torch.rsqrt(var + self.eps)) + self.bias.view(shape)


class BatchNorm(_AffineNorm):
    """Batch normalisation over every dim but 1, always with the batch's statistics (affine)."""

    def _dims(self, x: Tensor) -> list[int]:
        return [d for d in range(x.dim()) if d != 1]

    def forward(self, x: Tensor) -> Tensor:
        # torch.compile traces the native kernel (the learners never compile under vmap); the
        # functorch query would break its graph.
        if not _PLAIN.on and (torch.compiler.is_compiling() or not functorch_wrapped(x)):
            return F.batch_norm(x, None, None, self.weight, self.bias, True, 0.0, self.eps)
        return super().forward(x)


class InstanceNorm(_AffineNorm):
    """Normalisation over each example's spatial dims (affine); independent of the batch."""

    def _dims(self, x: Tensor) -> list[int]:
        return list(range(2, x.dim())) or [1]


# --- small modules --------------------------------------------------------------------------


class Pool2x2(nn.Module):
    """2x2 pooling, stride 2, floor (Conv-4: 28 -> 14 -> 7 -> 3 -> 1).

    A map already 1 pixel high or wide passes through unchanged, so a deep chain does not fail on
    small inputs (the shape is static, so this is no data-dependent branch under vmap).
    """

    def __init__(self, kind: str) -> None:
        super().__init__()
        self.kind = kind

    def forward(self, x: Tensor) -> Tensor:
        if x.shape[-1] < 2 or x.shape[-2] < 2:
            return x
        return F.max_pool2d(x, 2) if self.kind == "max" else F.avg_pool2d(x, 2)


class GlobalAvgPool(nn.Module):
    """(B, C, H, W) -> (B, C)."""

    def forward(self, x: Tensor) -> Tensor:
        return x.mean(dim=(2, 3))


class FactorizedReduce(nn.Module):
    """DARTS' stride-2 skip: two 1x1 convs on pixel grids offset by one, concatenated, then BN.

    The offset grid is zero-padded at the bottom/right so odd sizes work (7 -> 4 for both halves).
    """

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.conv_1 = nn.Conv2d(c_in, c_out // 2, 1, stride=2, bias=False)
        self.conv_2 = nn.Conv2d(c_in, c_out - c_out // 2, 1, stride=2, bias=False)
        self.bn = BatchNorm(c_out)

    def forward(self, x: Tensor) -> Tensor:
        x = F.relu(x)
        shifted = F.pad(x, (0, 1, 0, 1))[:, :, 1:, 1:]
        return self.bn(torch.cat([self.conv_1(x), self.conv_2(shifted)], dim=1))


def _relu_conv_bn(c_in: int, c_out: int, kernel: int, stride: int, dilation: int = 1) -> nn.Module:
    return nn.Sequential(
        nn.ReLU(),
        nn.Conv2d(c_in, c_out, kernel, stride, padding=dilation * (kernel - 1) // 2, dilation=dilation, bias=False),
        BatchNorm(c_out),
    )


def _dil_conv(c_in: int, c_out: int, kernel: int, stride: int, dilation: int) -> nn.Sequential:
    # ReLU, depthwise conv, pointwise conv, BN (DARTS DilConv).
    return nn.Sequential(
        nn.ReLU(),
        nn.Conv2d(
            c_in, c_in, kernel, stride, padding=dilation * (kernel - 1) // 2, dilation=dilation, groups=c_in, bias=False
        ),
        nn.Conv2d(c_in, c_out, 1, bias=False),
        BatchNorm(c_out),
    )


def _sep_conv(c_in: int, c_out: int, kernel: int, stride: int) -> nn.Module:
    # DARTS SepConv: a DilConv (dilation 1) applied twice, the stride on the first.
    return nn.Sequential(*_dil_conv(c_in, c_in, kernel, stride, 1), *_dil_conv(c_in, c_out, kernel, 1, 1))


def _to_channels(module: nn.Module, c_in: int, c_out: int) -> nn.Module:
    # Pools and skips keep channels; when a graph asks for others, a 1x1 ReLU-conv-BN adapts them.
    return module if c_in == c_out else nn.Sequential(module, _relu_conv_bn(c_in, c_out, 1, 1))


# --- the table --------------------------------------------------------------------------------


@OPS.register("input")
def build_input(c_in: int, c_out: int, stride: int) -> nn.Module:
    """The source node: passes the network's input through."""
    _require(c_in == c_out and stride == 1, "input", c_in, c_out, stride, "cannot change shape")
    return nn.Identity()


@OPS.register("identity")
def build_identity(c_in: int, c_out: int, stride: int) -> nn.Module:
    """Passes its merged input through (a sum or concat node)."""
    _require(c_in == c_out and stride == 1, "identity", c_in, c_out, stride, "cannot change shape")
    return nn.Identity()


@OPS.register("skip_connect")
def build_skip_connect(c_in: int, c_out: int, stride: int) -> nn.Module:
    """Identity; FactorizedReduce when it must halve the map; a 1x1 conv when channels change."""
    if stride == 2:
        return FactorizedReduce(c_in, c_out)
    _require(stride == 1, "skip_connect", c_in, c_out, stride, "needs stride 1 or 2")
    return _to_channels(nn.Identity(), c_in, c_out)


@OPS.register("max_pool_3x3")
def build_max_pool_3x3(c_in: int, c_out: int, stride: int) -> nn.Module:
    return _to_channels(nn.MaxPool2d(3, stride, padding=1), c_in, c_out)


@OPS.register("avg_pool_3x3")
def build_avg_pool_3x3(c_in: int, c_out: int, stride: int) -> nn.Module:
    return _to_channels(nn.AvgPool2d(3, stride, padding=1, count_include_pad=False), c_in, c_out)


def _sep_conv_op(c_in: int, c_out: int, stride: int, *, kernel: int) -> nn.Module:
    return _sep_conv(c_in, c_out, kernel, stride)


def _dil_conv_op(c_in: int, c_out: int, stride: int, *, kernel: int) -> nn.Module:
    return _dil_conv(c_in, c_out, kernel, stride, 2)


def _plain_conv(c_in: int, c_out: int, stride: int, *, kernel: int) -> nn.Module:
    return nn.Conv2d(c_in, c_out, kernel, stride, padding=kernel // 2)


def _register_darts_convs() -> None:
    for kernel in (3, 5):
        OPS.add(f"sep_conv_{kernel}x{kernel}", functools.partial(_sep_conv_op, kernel=kernel))
        OPS.add(f"dil_conv_{kernel}x{kernel}", functools.partial(_dil_conv_op, kernel=kernel))


def _register_plain_convs() -> None:
    # Conv with bias, as in the MAML/ProtoNet Conv-4 (its published 111,936 parameters count them).
    for kernel in (1, 3, 5, 7):
        OPS.add(f"conv_{kernel}x{kernel}", functools.partial(_plain_conv, kernel=kernel))


_register_darts_convs()
_register_plain_convs()


@OPS.register("relu_conv_bn_1x1")
def build_relu_conv_bn_1x1(c_in: int, c_out: int, stride: int) -> nn.Module:
    """DARTS cell-input preprocessing: ReLU, 1x1 conv (no bias), BN."""
    return _relu_conv_bn(c_in, c_out, 1, stride)


@OPS.register("factorized_reduce")
def build_factorized_reduce(c_in: int, c_out: int, stride: int) -> nn.Module:
    """DARTS preprocessing of the cell two back when the previous cell halved the map."""
    _require(stride == 2, "factorized_reduce", c_in, c_out, stride, "needs stride 2")
    return FactorizedReduce(c_in, c_out)


@OPS.register("conv_bn_3x3")
def build_conv_bn_3x3(c_in: int, c_out: int, stride: int) -> nn.Module:
    """The DARTS stem: 3x3 conv (no bias) and BN."""
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, stride, padding=1, bias=False), BatchNorm(c_out))


@OPS.register("conv_bn_1x1")
def build_conv_bn_1x1(c_in: int, c_out: int, stride: int) -> nn.Module:
    """A ResNet shortcut: 1x1 conv (no bias) and BN."""
    return nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False), BatchNorm(c_out))


@OPS.register("proj_1x1")
def build_proj_1x1(c_in: int, c_out: int, stride: int) -> nn.Module:
    """A residual shortcut: identity when the shape already fits, else a 1x1 conv (no bias)."""
    if c_in == c_out and stride == 1:
        return nn.Identity()
    return nn.Conv2d(c_in, c_out, 1, stride, bias=False)


@OPS.register("batch_norm")
def build_batch_norm(c_in: int, c_out: int, stride: int) -> nn.Module:
    _require(c_in == c_out and stride == 1, "batch_norm", c_in, c_out, stride, "cannot change shape")
    return BatchNorm(c_in)


@OPS.register("instance_norm")
def build_instance_norm(c_in: int, c_out: int, stride: int) -> nn.Module:
    _require(c_in == c_out and stride == 1, "instance_norm", c_in, c_out, stride, "cannot change shape")
    return InstanceNorm(c_in)


def _register_shape_keeping(name: str, make: Callable[[], nn.Module]) -> None:
    def build(c_in: int, c_out: int, stride: int) -> nn.Module:
        _require(c_in == c_out and stride == 1, name, c_in, c_out, stride, "cannot change shape")
        return make()

    build.__doc__ = f"{name}: keeps the shape."
    OPS.add(name, build)


# The elementwise activations, by op name: a space's ``activation`` key names one of these.
ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    "relu": nn.ReLU,
    "leaky_relu": lambda: nn.LeakyReLU(0.1),
    "elu": nn.ELU,
    "gelu": nn.GELU,
    "silu": nn.SiLU,
    "tanh": nn.Tanh,
    "sigmoid": nn.Sigmoid,
}

for _name, _make in {
    **ACTIVATIONS,
    "max_pool_2x2": lambda: Pool2x2("max"),
    "avg_pool_2x2": lambda: Pool2x2("avg"),
    "global_avg_pool": GlobalAvgPool,
    "flatten": nn.Flatten,
}.items():
    _register_shape_keeping(_name, _make)


@OPS.register("linear")
def build_linear(c_in: int, c_out: int, stride: int) -> nn.Module:
    """A fully connected layer with bias on (B, c_in) features."""
    _require(stride == 1, "linear", c_in, c_out, stride, "needs stride 1")
    return nn.Linear(c_in, c_out)
