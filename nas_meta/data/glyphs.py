"""``glyphs``: procedural Omniglot-like characters, built in seconds from a seed.

Structure (why it is hard enough to rank architectures, see DESIGN.md, section Data):

* Characters are grouped in *alphabets* of about ``CHARS_PER_ALPHABET``.  An alphabet owns a
  small vocabulary of stroke shapes (lines, arcs, cubic Bezier curves); each of its characters is a
  *stroke program*: a few strokes from that vocabulary, each rotated, scaled and placed, often
  starting on an earlier stroke, as pen strokes do.  Characters of one alphabet therefore share
  strokes and look alike, as in Omniglot.
* A drawing of a character jitters every control point and stroke position (the drawer's hand),
  draws with its own pen thickness, and applies a random affine distortion (rotation, anisotropic
  scale, shear, shift) to the whole character.  Raw pixels are then a poor similarity, so
  pixel nearest neighbour stays far below a trained convolutional network.
* Splits are **by alphabet** (60/20/20 of the alphabets, in alphabet order; the alphabets are
  random so no order bias): validation and test characters come from alphabets never seen in
  training, like Lake et al.'s background/evaluation protocol.

Rendering is vectorised torch over all drawings at once (see ``_render``): 600 classes x 20
drawings take under a second on one core.  1x28x28 uint8, ink high (255) on 0, like inverted
Omniglot; ``image_size`` scales everything, pen included.

Measured (seed 0, 600 x 20, 5-way 1-shot, 15 queries): raw-pixel nearest neighbour 49% on the
test alphabets (real Omniglot, minimal sets: 40-46%); a Conv-4/64 ProtoNet (Adam 1e-3, one
5-way 1-shot episode a step, one core) reaches 82% test / 87% val after 400 steps (~100 s) and
86% / 90% after 800 (~200 s).  Same seed, same tensor (any thread count on one machine).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ..config import DataConfig
from ..errors import DataError
from .base import DATASETS, ImageDataset, split_by_fraction
from .cache import cached_tensors
from .episodes import available_bytes

__all__ = ["build_glyphs", "make_glyphs", "GLYPH_VERSION"]

GLYPH_VERSION = 1  # part of the cache key: bump when the generator changes its output
CHARS_PER_ALPHABET = 20  # Omniglot alphabets have 14-55 characters
MIN_ALPHABETS = 5  # so that a small dataset still has >= 1 alphabet in val and in test
VOCAB = 6  # stroke shapes per alphabet: few, so characters of one alphabet share strokes
MAX_STROKES = 4
POINTS = 9  # points along a stroke for placing strokes on earlier ones (t = 0, 0.5, 1)
CHUNK = 2048  # drawings rendered at once
PAD = 2  # px of splat canvas around the image
DENSE = 48  # points along a stroke when drawing, scaled with image_size (<= ~0.7 px apart at 28)

# Drawer variation, in canvas units (the canvas is [-1, 1]^2, so 28 px -> 1 px = 0.071).
POINT_JITTER = 0.07  # per control point
STROKE_SHIFT = 0.07  # per stroke
ROTATE = 0.20  # radians, std of the whole-character rotation
LOG_SCALE = 0.12  # std of log scale, per axis
SHEAR = 0.18
SHIFT = 0.10  # std of the whole-character shift
THICKNESS = (1.3, 2.8)  # pen diameter in pixels (at any image_size, relative to 28 px)


def _primitives(n: int, rng: torch.Generator) -> Tensor:
    """``n`` stroke shapes as cubic Bezier control points, (n, 4, 2), roughly unit sized."""
    kind = torch.multinomial(torch.tensor([0.3, 0.3, 0.4]), n, replacement=True, generator=rng)
    t = torch.tensor([0.0, 1 / 3, 2 / 3, 1.0])
    line = torch.stack([t - 0.5, torch.zeros(4)], -1).expand(n, 4, 2)  # (n, 4, 2)
    # Circular arc of span theta, radius 0.45: the standard cubic approximation, k = 4/3 tan(th/4).
    theta = math.pi / 2 + math.pi * torch.rand(n, generator=rng)  # (n,)
    r, k = 0.45, 4 / 3 * torch.tan(theta / 4)
    c, s = torch.cos(theta), torch.sin(theta)
    arc = torch.stack(
        [
            torch.stack([torch.full_like(c, r), torch.zeros_like(c)], -1),
            torch.stack([torch.full_like(c, r), k * r], -1),
            torch.stack([r * c + k * r * s, r * s - k * r * c], -1),
            torch.stack([r * c, r * s], -1),
        ],
        1,
    )  # (n, 4, 2)
    curve = torch.rand(n, 4, 2, generator=rng) - 0.5
    shapes = torch.where(kind.view(n, 1, 1) == 0, line, torch.where(kind.view(n, 1, 1) == 1, arc, curve))
    return shapes - shapes.mean(1, keepdim=True)


def _rotation(angle: Tensor) -> Tensor:
    """(..., 2, 2) rotation matrices for angles (...)."""
    c, s = torch.cos(angle), torch.sin(angle)
    return torch.stack([torch.stack([c, -s], -1), torch.stack([s, c], -1)], -2)


def _bezier(ctrl: Tensor, points: int) -> Tensor:
    """Points along cubic Beziers: ctrl (..., 4, 2) -> (..., points, 2)."""
    t = torch.linspace(0, 1, points).view(points, 1)
    u = 1 - t
    w = torch.cat([u**3, 3 * u * u * t, 3 * u * t * t, t**3], 1)  # (points, 4)
    return torch.einsum("pk,...kd->...pd", w, ctrl)


def _programs(n_classes: int, n_alphabets: int, rng: torch.Generator) -> tuple[Tensor, Tensor]:
    """Stroke programs: control points (n_classes, MAX_STROKES, 4, 2) and a stroke mask."""
    alphabet = torch.arange(n_classes) * n_alphabets // n_classes  # contiguous classes per alphabet
    vocab = _primitives(n_alphabets * VOCAB, rng).view(n_alphabets, VOCAB, 4, 2)
    n_strokes = 1 + torch.multinomial(torch.tensor([0.1, 0.35, 0.35, 0.2]), n_classes, True, generator=rng)
    mask = torch.arange(MAX_STROKES) < n_strokes.unsqueeze(1)  # (n_classes, MAX_STROKES)
    pick = torch.randint(VOCAB, (n_classes, MAX_STROKES), generator=rng)
    shapes = vocab[alphabet.unsqueeze(1), pick]  # (n_classes, S, 4, 2)
    # Strokes keep to the alphabet's few directions (quarter turns) plus a little slant.
    angle = (math.pi / 2) * torch.randint(4, (n_classes, MAX_STROKES), generator=rng).float()
    angle = angle + 0.15 * torch.randn(n_classes, MAX_STROKES, generator=rng)
    scale = 0.6 + 0.6 * torch.rand(n_classes, MAX_STROKES, 1, 1, generator=rng)
    strokes = scale * shapes @ _rotation(angle).transpose(-1, -2)
    # Place strokes one by one: often starting on a point of an earlier stroke (pen strokes
    # connect), otherwise anywhere in the middle of the canvas.
    free = 0.9 * (torch.rand(n_classes, MAX_STROKES, 2, generator=rng) - 0.5)
    attach = torch.rand(n_classes, MAX_STROKES, generator=rng) < 0.6
    which = torch.rand(n_classes, MAX_STROKES, generator=rng)
    at_t = torch.randint(3, (n_classes, MAX_STROKES), generator=rng)  # start, middle, end
    placed = [strokes[:, 0] - strokes[:, 0, :1] + free[:, 0, None]]
    on_curve = torch.tensor([0, 4, 8])  # indices into a POINTS=9 polyline: t = 0, 0.5, 1
    for i in range(1, MAX_STROKES):
        earlier = (which[:, i] * i).long()  # (n_classes,) an earlier stroke
        lines = _bezier(torch.stack(placed, 1), POINTS)  # (n_classes, i, POINTS, 2)
        anchor = lines[torch.arange(n_classes), earlier, on_curve[at_t[:, i]]]  # (n_classes, 2)
        start = torch.where(attach[:, i, None], anchor, free[:, i])
        placed.append(strokes[:, i] - strokes[:, i, :1] + start[:, None])
    ctrl = torch.stack(placed, 1)  # (n_classes, S, 4, 2)
    # Centre and fit into [-0.7, 0.7]^2 using the drawn points of the strokes that exist.
    pts = _bezier(ctrl, POINTS)
    big = torch.finfo(pts.dtype).max
    m = mask.view(n_classes, MAX_STROKES, 1, 1)
    lo = torch.where(m, pts, big).amin((1, 2))  # (n_classes, 2)
    hi = torch.where(m, pts, -big).amax((1, 2))
    centre, extent = (lo + hi) / 2, (hi - lo).amax(1).clamp_min(0.3)
    ctrl = (ctrl - centre.view(-1, 1, 1, 2)) * (1.4 / extent).view(-1, 1, 1, 1)
    return ctrl, mask


def _distort(ctrl: Tensor, rng: torch.Generator) -> Tensor:
    """Drawer variation: ctrl (N, S, 4, 2) -> jittered, affinely distorted control points."""
    n = ctrl.shape[0]
    ctrl = ctrl + POINT_JITTER * torch.randn(ctrl.shape, generator=rng)
    ctrl = ctrl + STROKE_SHIFT * torch.randn(n, ctrl.shape[1], 1, 2, generator=rng)
    scale = torch.exp(LOG_SCALE * torch.randn(n, 2, generator=rng))
    shear = SHEAR * torch.randn(n, generator=rng)
    affine = _rotation(ROTATE * torch.randn(n, generator=rng))
    affine = affine @ torch.stack(
        [torch.stack([scale[:, 0], shear * scale[:, 1]], -1), torch.stack([torch.zeros(n), scale[:, 1]], -1)], -2
    )  # (N, 2, 2): rotate(shear(scale(x)))
    shift = SHIFT * torch.randn(n, 1, 1, 2, generator=rng)
    return ctrl @ affine.transpose(-1, -2).unsqueeze(1) + shift


def _gaussian_rows(sigma: Tensor, size: int) -> Tensor:
    """(N, size, size) matrices that blur one image axis with a per-drawing Gaussian (N,) in px."""
    i = torch.arange(size, dtype=torch.float32)
    d2 = (i.view(1, -1, 1) - i.view(1, 1, -1)).square()  # (1, size, size)
    s = sigma.view(-1, 1, 1)
    return torch.exp(-d2 / (2 * s * s)) / (math.sqrt(2 * math.pi) * s)


def _render(ctrl: Tensor, mask: Tensor, radius: Tensor, size: int) -> Tensor:
    """Anti-aliased strokes: ctrl (N, S, 4, 2), mask (N, S), radius (N,) px -> (N, size, size) uint8.

    Pen strokes as ink density: dense points along each stroke are splatted bilinearly with their
    arc length as mass (one unit of ink per pixel of stroke), blurred by a per-drawing Gaussian
    (a batched matmul per axis), then thresholded at the level where the blurred line profile is
    ``radius`` px from its centre.  Cost is O(points + pixels * size) per drawing, not
    O(points * pixels) as a distance field would be.
    """
    n = ctrl.shape[0]
    dense = max(DENSE, math.ceil(DENSE * size / 28))
    pts = _bezier(ctrl, dense) * (size / 2) + (size / 2 - 0.5)  # (N, S, P, 2) in pixel units
    # Mass of a point = its share of the polyline length; strokes that do not exist weigh 0.
    step = (pts[:, :, 1:] - pts[:, :, :-1]).norm(dim=-1)  # (N, S, P-1)
    mass = torch.zeros(pts.shape[:-1])
    mass[:, :, 1:] += step / 2
    mass[:, :, :-1] += step / 2
    mass = (mass * mask.unsqueeze(-1)).view(n, -1)  # (N, M)
    # Bilinear splat on a canvas padded by PAD px; points beyond it are clamped onto the (cropped)
    # padding, which keeps the index arithmetic free of masks.
    side = size + 2 * PAD
    u = (pts.reshape(n, -1, 2) + PAD).clamp_(0, side - 1.001)  # (N, M, 2)
    u0 = u.floor()
    f = u - u0  # (N, M, 2) fractional parts
    i0 = u0.long()
    idx = (torch.arange(n).view(n, 1) * side + i0[..., 1]) * side + i0[..., 0]  # (N, M)
    fx, fy = f[..., 0], f[..., 1]
    gx, gy = 1 - fx, 1 - fy
    weights = torch.cat([mass * gx * gy, mass * fx * gy, mass * gx * fy, mass * fx * fy])
    corners = torch.cat([idx, idx + 1, idx + side, idx + side + 1])
    canvas = torch.zeros(n * side * side).index_add_(0, corners.view(-1), weights.view(-1))
    canvas = canvas.view(n, side, side)[:, PAD:-PAD, PAD:-PAD]
    # A line of unit density blurred by sigma has the profile exp(-d^2 / 2 sigma^2) / (sqrt(2 pi)
    # sigma); cutting it at its value at d = radius draws a pen of that radius.
    sigma = (0.8 * radius).clamp_min(0.7)  # >= 0.7 px hides the splat's point spacing
    k = _gaussian_rows(sigma, size)  # (N, size, size)
    blurred = k @ canvas @ k  # (N, size, size)
    r, s = radius.view(-1, 1, 1), sigma.view(-1, 1, 1)
    level = torch.exp(-r * r / (2 * s * s)) / (math.sqrt(2 * math.pi) * s)  # profile at d = radius
    slope = level * r / (s * s)  # |d profile / d d| at the edge: one pixel of anti-aliasing
    ink = ((blurred - level) / slope + 0.5).clamp_(0, 1)
    return ink.mul_(255).round_().to(torch.uint8)


def make_glyphs(n_classes: int, n_samples: int, *, size: int = 28, seed: int = 0) -> tuple[Tensor, Tensor, int]:
    """Images (N, 1, size, size) uint8, labels (N,) and the number of alphabets.

    Rows are class-major (class 0's drawings first).  Alphabet ``a`` holds the contiguous classes
    ``c`` with ``c * n_alphabets // n_classes == a``.
    """
    rng = torch.Generator().manual_seed(seed)
    n_alphabets = max(MIN_ALPHABETS, round(n_classes / CHARS_PER_ALPHABET))
    n_alphabets = min(n_alphabets, n_classes)
    ctrl, mask = _programs(n_classes, n_alphabets, rng)
    ctrl = ctrl.repeat_interleave(n_samples, 0)  # (N, S, 4, 2)
    mask = mask.repeat_interleave(n_samples, 0)
    ctrl = _distort(ctrl, rng)
    n = ctrl.shape[0]
    lo, hi = THICKNESS
    radius = (lo + (hi - lo) * torch.rand(ctrl.shape[0], generator=rng)) * (size / 28) / 2  # (N,) px
    # Chunks bound the temporary tensors (~10 floats per pixel) at large image sizes.
    images = torch.cat(
        [_render(ctrl[i : i + CHUNK], mask[i : i + CHUNK], radius[i : i + CHUNK], size) for i in range(0, n, CHUNK)]
    ).unsqueeze(1)
    labels = torch.arange(n_classes).repeat_interleave(n_samples)
    return images, labels, n_alphabets


@DATASETS.register("glyphs")
def build_glyphs(cfg: DataConfig) -> ImageDataset:
    """The built-in procedural characters (see the module docstring); cached in ``cfg.cache_dir``."""
    size = cfg.image_size or 28
    # The images live in memory as uint8 (and are drawn in float first): refuse a size that cannot.
    need = cfg.glyph_classes * cfg.glyph_samples * size * size * 5
    free = available_bytes(None)
    if free is not None and need > free:
        raise DataError(
            f"glyphs of {cfg.glyph_classes:,} classes x {cfg.glyph_samples:,} drawings of {size}x{size} need about "
            f"{need / 2**30:,.1f} GiB; this machine has {free / 2**30:,.1f} GiB free; lower --glyph-classes, "
            "--glyph-samples or --image-size"
        )
    key = {
        "dataset": "glyphs",
        "version": GLYPH_VERSION,
        "classes": cfg.glyph_classes,
        "samples": cfg.glyph_samples,
        "size": size,
        "seed": cfg.seed,
    }

    def build() -> dict[str, Tensor]:
        images, labels, n_alphabets = make_glyphs(cfg.glyph_classes, cfg.glyph_samples, size=size, seed=cfg.seed)
        return {"images": images, "labels": labels, "alphabets": torch.tensor(n_alphabets)}

    tensors = cached_tensors(cfg.cache_dir, "glyphs", key, build)
    n_alphabets = int(tensors["alphabets"])
    alphabet_split = split_by_fraction(n_alphabets, cfg.seed, shuffle=False)
    alphabet_of = torch.arange(cfg.glyph_classes) * n_alphabets // cfg.glyph_classes
    splits = {s: [c for c in range(cfg.glyph_classes) if int(alphabet_of[c]) in a] for s, a in alphabet_split.items()}
    names = [f"alphabet{int(alphabet_of[c]):02d}/character{c:04d}" for c in range(cfg.glyph_classes)]
    return ImageDataset("glyphs", tensors["images"], tensors["labels"], names, splits)
