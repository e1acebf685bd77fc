"""CPU kernels: BatchNorm + 2x2 max-pool, and an image's first conv + BatchNorm + 2x2 max-pool, as one op.

Each is an ``autograd.Function`` with a backward derived by hand (see the classes); both compute
the same function as the ops they replace, with other rounding, and fall back to those ops
wherever they would not be exact or pay (vmap/functorch, off the CPU, a non-positive BatchNorm
scale, ...).  The compiler (network.py) decides where they apply from the graph (fusion.py).
"""

from __future__ import annotations

import contextlib
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .ops import BatchNorm, Pool2x2, ThreadFlag, functorch_wrapped

__all__ = ["batch_norm_max_pool", "conv_batch_norm_max_pool", "fusable_conv", "unfused", "FAN_IN_LIMIT"]


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
    def forward(ctx: Any, x: Tensor, weight: Tensor, bias: Tensor, eps: float) -> Tensor:
        mean, var = torch.ops.aten.batch_norm_update_stats(x, None, None, 0.0)
        rstd = 1.0 / torch.sqrt(var + eps)
        pooled, indices = torch.ops.aten.max_pool2d_with_indices(x, [2, 2], [2, 2])
        scale = weight * rstd
        ctx.save_for_backward(x, weight, bias, mean, rstd, pooled, indices)
        ctx.eps = eps
        return torch.addcmul(_per_channel(bias - mean * scale), pooled, _per_channel(scale))

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, ...]:
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


_UNFUSED = ThreadFlag()


def unfused() -> contextlib.AbstractContextManager[None]:
    """In this thread, batch_norm_max_pool runs the two ops apart.

    For passes that are differentiated twice (second-order MAML's support pass): there the fused
    backward would recompute the two ops anyway, and is slower (bench/README.md).
    """
    return _UNFUSED.set()


def batch_norm_max_pool(norm: BatchNorm, pool: Pool2x2, x: Tensor) -> Tensor:
    """``pool(norm(x))`` for a 2x2 max-pool, fused where that is exact and pays (CPU).

    Only the pooled quarter is normalised and the backward is one scatter plus one pass (measured
    gains in bench/README.md).  Falls back to them inside vmap/grad, off the CPU, for maps the pool
    passes through, under :func:`unfused`, for a map of another dtype than the norm's weights
    (autocast), and when a scale is not positive (a negative scale turns the max into a min).
    See _BatchNormMaxPool2x2.
    """
    if not _norm_pool_fusable(norm, pool, x):
        return pool(norm(x))
    return _BatchNormMaxPool2x2.apply(x, norm.weight, norm.bias, norm.eps)


def _norm_pool_fusable(norm: BatchNorm, pool: Pool2x2, x: Tensor) -> bool:
    """What both fused ops need of the norm, the pool and the tensor reaching them (x: the norm's
    input or the conv's, same batch and map size).  The functorch check precedes any layout query.
    Under torch.compile the ops stay apart: the compiler fuses them itself, and the data-dependent
    checks below would break its graph."""
    return not (
        torch.compiler.is_compiling()
        or _UNFUSED.on
        or pool.kind != "max"
        or x.dim() != 4
        or x.device.type != "cpu"
        or functorch_wrapped(x)
        or min(x.shape[-2:]) < 2
        or x.dtype != norm.weight.dtype  # autocast: a bf16 map into an fp32 norm runs the two ops apart
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
    return torch.stack([xp[:, ci, i : i + h, j : j + w] for ci in range(c) for i in range(k) for j in range(k)]).view(
        c * k * k, -1
    )


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
    def forward(
        ctx: Any, x: Tensor, weight: Tensor, bias: Tensor | None, gamma: Tensor, beta: Tensor, eps: float
    ) -> Tensor:
        y = F.conv2d(x, weight, bias, padding=weight.shape[-1] // 2).contiguous(memory_format=torch.channels_last)
        mean, var = torch.ops.aten.batch_norm_update_stats(_rows(y), None, None, 0.0)
        best, indices = torch.ops.aten.max_pool2d_with_indices(y, [2, 2], [2, 2])
        rstd = torch.rsqrt(var + eps)
        scale = gamma * rstd
        ctx.save_for_backward(x, weight, bias, gamma, beta, best, indices, mean, rstd)
        ctx.eps = eps
        return torch.addcmul(_per_channel(beta - mean * scale), best, _per_channel(scale))

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, ...]:
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
        scattered = torch.ops.aten.max_pool2d_with_indices_backward(
            grad, like, [2, 2], [2, 2], [0, 0], [1, 1], False, indices
        )
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

    Why: the layer's full-size output is neither kept nor read again in the backward (measured
    gains in bench/README.md).  Falls back to that pair wherever this does not hold, and so to the
    separate ops wherever batch_norm_max_pool would not fuse.  See _ConvBatchNormMaxPool2x2.
    """
    if (
        not _norm_pool_fusable(norm, pool, x)  # first: it checks for vmap, where layouts may not be queried
        or functorch_wrapped(conv.weight)
        or x.requires_grad
        or x.stride(1) != 1  # NHWC memory, as the learners lay images out on the CPU (a one-channel NCHW
        or not x.is_contiguous(memory_format=torch.channels_last)  # image counts as NHWC for torch)
        or x.dtype != conv.weight.dtype
        or not fusable_conv(conv)
        or torch.is_autocast_enabled("cpu")
    ):
        return batch_norm_max_pool(norm, pool, conv(x))
    return _ConvBatchNormMaxPool2x2.apply(x, conv.weight, conv.bias, norm.weight, norm.bias, norm.eps)
