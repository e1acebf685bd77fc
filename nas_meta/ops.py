"""The op table: every node of an architecture graph names one op here.

An op is a builder ``(c_in, c_out, stride) -> nn.Module`` registered under a name.  A user adds
one with a decorator, before loading a space that lists it::

    >>> import torch.nn as nn
    >>> from nas_meta.ops import OPS
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
import threading
from collections.abc import Callable, Iterator
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .errors import SpaceError
from .registry import Registry

__all__ = ["OPS", "ZERO", "DARTS_OPS", "BatchNorm", "InstanceNorm", "OpBuilder", "batch_norm_max_pool", "conv_batch_norm_max_pool", "fusable_conv", "unfused"]

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
# its double backward, and 12-14% faster per MAML task on the CPU: measured with Conv-4).


def _functorch_wrapped(x: Tensor) -> bool:
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
        # Two passes (mean, then mean of centred squares): stable, and on the CPU about twice as
        # fast forward+backward as torch.var_mean over dims (0, 2, 3) (measured, torch 2.14).
        centred = x - x.mean(dim=dims, keepdim=True)
        var = (centred * centred).mean(dim=dims, keepdim=True)
        return centred * (self.weight.view(shape) * torch.rsqrt(var + self.eps)) + self.bias.view(shape)


class BatchNorm(_AffineNorm):
    """Batch normalisation over every dim but 1, always with the batch's statistics (affine)."""

    def _dims(self, x: Tensor) -> list[int]:
        return [d for d in range(x.dim()) if d != 1]

    def forward(self, x: Tensor) -> Tensor:
        if not _functorch_wrapped(x):
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


class _BatchNormMaxPool2x2(torch.autograd.Function):
    """max_pool2d(batch_norm(x), 2) for a BatchNorm whose scale is positive everywhere.

    An increasing affine map commutes with max (rounding is monotone too), so the pool runs on
    ``x`` and only the pooled quarter is normalised; the statistics come from the native kernel.
    The backward needs no full-size BatchNorm gradient: with ``g`` the gradient of the pooled
    output, ``a = weight * rstd`` and n values per channel,

        d bias = sum(g),   d weight = sum(g * xhat_pooled),
        dx = scatter(a * g) - a * (d bias + xhat * d weight) / n,

    one scatter (the max-pool's own backward) and one pass over ``x``.  A backward that must itself
    be differentiable (second-order MAML) recomputes the reference ops and differentiates them.
    """

    @staticmethod
    def forward(ctx: Any, x: Tensor, weight: Tensor, bias: Tensor, eps: float) -> Tensor:  # type: ignore[override]
        mean, var = torch.ops.aten.batch_norm_update_stats(x, None, None, 0.0)
        rstd = 1.0 / torch.sqrt(var + eps)
        pooled, indices = torch.ops.aten.max_pool2d_with_indices(x, [2, 2], [2, 2])
        scale = weight * rstd
        ctx.save_for_backward(x, weight, bias, mean, rstd, pooled, indices)
        ctx.eps = eps
        return torch.addcmul(_per_channel(bias - mean * scale), pooled, _per_channel(scale))

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, ...]:  # type: ignore[override]
        x, weight, bias, mean, rstd, pooled, indices = ctx.saved_tensors
        if torch.is_grad_enabled():  # create_graph: differentiate the reference ops
            with torch.enable_grad():
                ref = F.max_pool2d(F.batch_norm(x, None, None, weight, bias, True, 0.0, ctx.eps), 2)
            return (*torch.autograd.grad(ref, (x, weight, bias), grad, create_graph=True), None)
        n = x.numel() // x.shape[1]
        scale = weight * rstd
        d_bias = grad.sum((0, 2, 3))
        xhat = torch.addcmul(_per_channel(-mean * rstd), pooled, _per_channel(rstd))
        d_weight = xhat.mul_(grad).sum((0, 2, 3))
        dx = torch.ops.aten.max_pool2d_with_indices_backward(
            grad * _per_channel(scale), x, [2, 2], [2, 2], [0, 0], [1, 1], False, indices
        )
        slope = -scale * rstd * d_weight / n
        dx.addcmul_(x, _per_channel(slope)).add_(_per_channel(-scale * d_bias / n - mean * slope))
        return dx, d_weight, d_bias, None


def _per_channel(v: Tensor) -> Tensor:
    return v.view(1, -1, 1, 1)


_UNFUSED = threading.local()


@contextlib.contextmanager
def unfused() -> Iterator[None]:
    """In this thread, batch_norm_max_pool runs the two ops apart.

    For passes that are differentiated twice (second-order MAML's support pass): there the fused
    backward would recompute the two ops anyway, and measured slower.
    """
    previous = getattr(_UNFUSED, "on", False)
    _UNFUSED.on = True
    try:
        yield
    finally:
        _UNFUSED.on = previous


def batch_norm_max_pool(norm: BatchNorm, pool: Pool2x2, x: Tensor) -> Tensor:
    """``pool(norm(x))`` for a 2x2 max-pool, fused where that is exact and pays (CPU).

    Measured on a 2-core CPU for Conv-4's first layer (75 images, 64 x 28 x 28, NHWC): forward and
    backward take about half the time of the two native ops.  Falls back to them inside
    vmap/grad, off the CPU, for maps the pool passes through, under :func:`unfused`, and when a
    scale is not positive (a negative scale turns the max into a min).  See _BatchNormMaxPool2x2.
    """
    if not _norm_pool_fusable(norm, pool, x):
        return pool(norm(x))
    return _BatchNormMaxPool2x2.apply(x, norm.weight, norm.bias, norm.eps)


def _norm_pool_fusable(norm: BatchNorm, pool: Pool2x2, x: Tensor) -> bool:
    """What both fused ops need of the norm, the pool and the tensor reaching them (x: the norm's
    input or the conv's, same batch and map size).  The functorch check precedes any layout query."""
    return not (
        getattr(_UNFUSED, "on", False)
        or pool.kind != "max"
        or x.dim() != 4
        or x.device.type != "cpu"
        or _functorch_wrapped(x)
        or min(x.shape[-2:]) < 2
        or not bool((norm.weight > 0).all())
    )


# --- an image's first conv + BatchNorm + 2x2 max-pool as one op ----------------------------------
FAN_IN_LIMIT = 32  # C_in * k * k up to which a conv is fused with its norm and pool (1x3x3, 3x3x3, 1x5x5)


def fusable_conv(conv: nn.Module) -> bool:
    """True for a plain 'same' conv with a small fan-in: stride 1, no dilation or groups, odd square kernel."""
    if type(conv) is not nn.Conv2d:  # a subclass may compute something else
        return False
    k = conv.kernel_size[0]
    return (
        conv.kernel_size == (k, k)
        and k % 2 == 1
        and conv.stride == (1, 1)
        and conv.dilation == (1, 1)
        and conv.groups == 1
        and conv.padding == (k // 2, k // 2)
        and conv.padding_mode == "zeros"
        and conv.in_channels * k * k <= FAN_IN_LIMIT
    )


def _patch_rows(x: Tensor, k: int) -> Tensor:
    """(C*k*k, N*H*W): row (c, i, j) holds x[n, c, h + i - k//2, w + j - k//2] of every pixel (zero-padded)."""
    n, c, h, w = x.shape
    p = k // 2
    xp = F.pad(x, (p, p, p, p))
    return torch.stack([xp[:, ci, i : i + h, j : j + w] for ci in range(c) for i in range(k) for j in range(k)]).view(c * k * k, -1)


def _rows(t: Tensor) -> Tensor:
    """(N, C, H, W) in channels-last memory -> its (N*H*W, C) view."""
    return t.permute(0, 2, 3, 1).reshape(-1, t.shape[1])


class _ConvBatchNormMaxPool2x2(torch.autograd.Function):
    """max_pool2d(batch_norm(conv2d(x)), 2) for an input without gradient (an image batch), a
    positive BatchNorm scale and a conv as in :func:`fusable_conv`.

    Such a conv does little arithmetic per byte: its output is the network's largest tensor, and
    the unfused backward streams it four more times (the BatchNorm gradient's two terms, then the
    conv's weight gradient).  The weight gradient follows from the pooled tensors and the input's
    patches instead.  With c_p the patch of pixel p (P pixels, patch mean m, patch covariance S),
    y_p = W c_p + b, a = gamma * rstd and g the gradient of the pooled output:

        d beta = sum(g),  d gamma = sum(g * yhat_max),  d b = 0 (the BatchNorm removes any shift),
        d W = a * (sum_q g_q c_argmax(q) - d beta * m - d gamma * rstd * W S),

    since the BatchNorm gradient of y is a * (scatter(g) - (d beta + yhat * d gamma) / P) and
    sum_p yhat_p c_p = rstd * P * W S.  The first term is the max-pool's own scatter times the
    (C*k*k, P) patch matrix; the conv output is not kept for the backward.  A backward that must
    itself be differentiable recomputes the reference ops and differentiates them.
    """

    @staticmethod
    def forward(ctx: Any, x: Tensor, weight: Tensor, bias: Tensor | None, gamma: Tensor, beta: Tensor, eps: float) -> Tensor:  # type: ignore[override]
        y = F.conv2d(x, weight, bias, padding=weight.shape[-1] // 2).contiguous(memory_format=torch.channels_last)
        mean, var = torch.ops.aten.batch_norm_update_stats(_rows(y), None, None, 0.0)
        best, indices = torch.ops.aten.max_pool2d_with_indices(y, [2, 2], [2, 2])
        rstd = torch.rsqrt(var + eps)
        scale = gamma * rstd
        ctx.save_for_backward(x, weight, bias, gamma, beta, best, indices, mean, rstd)
        ctx.eps = eps
        return torch.addcmul(_per_channel(beta - mean * scale), best, _per_channel(scale))

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, ...]:  # type: ignore[override]
        x, weight, bias, gamma, beta, best, indices, mean, rstd = ctx.saved_tensors
        n, _, h, w = x.shape
        c_out, k = weight.shape[0], weight.shape[-1]
        if torch.is_grad_enabled():  # create_graph: differentiate the reference ops
            inputs = [t for t in (weight, bias, gamma, beta) if t is not None]
            with torch.enable_grad():
                y = F.conv2d(x, weight, bias, padding=k // 2)
                ref = F.max_pool2d(F.batch_norm(y, None, None, gamma, beta, True, 0.0, ctx.eps), 2)
            grads = list(torch.autograd.grad(ref, inputs, grad, create_graph=True))
            d_w, d_b = grads[0], (grads[1] if bias is not None else None)
            return None, d_w, d_b, grads[-2], grads[-1], None
        grad = grad.contiguous(memory_format=torch.channels_last)
        g = _rows(grad)
        d_beta = g.sum(0)
        d_gamma = ((g * _rows(best)).sum(0) - mean * d_beta) * rstd
        like = torch.empty((n, c_out, h, w), dtype=x.dtype, device=x.device, memory_format=torch.channels_last)
        scattered = torch.ops.aten.max_pool2d_with_indices_backward(grad, like, [2, 2], [2, 2], [0, 0], [1, 1], False, indices)
        cols = _patch_rows(x, k)  # (K, P)
        winners = torch.mm(cols, _rows(scattered))  # (K, C): sum_q g_q c_argmax(q)
        shift = cols[:, : min(cols.shape[1], 4096)].mean(1, keepdim=True)  # centred: a well-conditioned Gram
        centred = cols - shift
        centre = centred.mean(1)
        covariance = torch.mm(centred, centred.t()) / cols.shape[1] - torch.outer(centre, centre)
        scale = gamma * rstd
        d_w = scale[:, None] * (
            winners.t()
            - d_beta[:, None] * (centre + shift[:, 0])
            - (d_gamma * rstd)[:, None] * torch.mm(weight.reshape(c_out, -1), covariance)
        )
        return None, d_w.view_as(weight), None if bias is None else torch.zeros_like(bias), d_gamma, d_beta, None


def conv_batch_norm_max_pool(conv: nn.Conv2d, norm: BatchNorm, pool: Pool2x2, x: Tensor) -> Tensor:
    """``pool(norm(conv(x)))`` as one op where that is exact and pays: a conv that passes
    :func:`fusable_conv`, on an NHWC input without gradient (the image batch on the CPU).

    Measured on the 2-core CPU for Conv-4's first layer (75 images, NHWC, one thread): forward and
    backward 26 ms against 36-37 ms for the conv followed by batch_norm_max_pool; whole training
    steps (bench/learners.py shapes, paired rounds) 4.7% faster for MAML, 2.6% for first-order
    MAML, 5.9% for ProtoNets.  Falls back to that pair wherever this does not hold, and so to the
    separate ops wherever batch_norm_max_pool would not fuse.  See _ConvBatchNormMaxPool2x2.
    """
    if (
        not _norm_pool_fusable(norm, pool, x)  # first: it checks for vmap, where layouts may not be queried
        or _functorch_wrapped(conv.weight)
        or x.requires_grad
        or x.stride(1) != 1  # NHWC memory, as the learners lay images out on the CPU (a one-channel NCHW
        or not x.is_contiguous(memory_format=torch.channels_last)  # image counts as NHWC for torch)
        or x.dtype != conv.weight.dtype
        or not fusable_conv(conv)
        or torch.is_autocast_enabled("cpu")
    ):
        return batch_norm_max_pool(norm, pool, conv(x))
    return _ConvBatchNormMaxPool2x2.apply(x, conv.weight, conv.bias, norm.weight, norm.bias, norm.eps)


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
        nn.Conv2d(c_in, c_in, kernel, stride, padding=dilation * (kernel - 1) // 2, dilation=dilation, groups=c_in, bias=False),
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


def _register_darts_convs() -> None:
    for kernel in (3, 5):
        OPS.add(f"sep_conv_{kernel}x{kernel}", lambda c_in, c_out, stride, k=kernel: _sep_conv(c_in, c_out, k, stride))
        OPS.add(f"dil_conv_{kernel}x{kernel}", lambda c_in, c_out, stride, k=kernel: _dil_conv(c_in, c_out, k, stride, 2))


def _register_plain_convs() -> None:
    # Conv with bias, as in the MAML/ProtoNet Conv-4 (its published 111,936 parameters count them).
    for kernel in (1, 3, 5, 7):
        OPS.add(f"conv_{kernel}x{kernel}", lambda c_in, c_out, stride, k=kernel: nn.Conv2d(c_in, c_out, k, stride, padding=k // 2))


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


for _name, _make in {
    "relu": nn.ReLU,
    "leaky_relu": lambda: nn.LeakyReLU(0.1),
    "elu": nn.ELU,
    "gelu": nn.GELU,
    "silu": nn.SiLU,
    "tanh": nn.Tanh,
    "sigmoid": nn.Sigmoid,
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
