"""Reading folders of image files into one uint8 tensor, with errors that name the file."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch import Tensor

from ..errors import DataError

__all__ = ["IMAGE_SUFFIXES", "list_images", "read_images", "encode_names", "decode_names"]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
# PIL decoding releases the GIL for much of its work; two threads match the two cores here.
READ_THREADS = 2


def list_images(folder: Path) -> list[Path]:
    """The .png/.jpg/.jpeg files directly in ``folder`` (any case), sorted; hidden files skipped."""
    return sorted(
        p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".") and p.is_file()
    )


def _read_one(path: Path, mode: str, size: int, invert: bool, crop: bool) -> np.ndarray:
    try:
        with Image.open(path) as opened:
            opened.load()  # decode now: a truncated file fails here, not later in training
            img = opened.convert(mode)
    except (OSError, SyntaxError, ValueError, UnidentifiedImageError, Image.DecompressionBombError) as exc:
        raise DataError(f"unreadable image {path}: {exc}") from None
    if crop and img.width != img.height:
        # Shorter side to `size`, then the centre square: keeps the aspect ratio (miniImageNet style).
        scale = size / min(img.width, img.height)
        w, h = max(size, round(img.width * scale)), max(size, round(img.height * scale))
        img = img.resize((w, h), Image.Resampling.BILINEAR)
        left, top = (w - size) // 2, (h - size) // 2
        img = img.crop((left, top, left + size, top + size))
    elif img.size != (size, size):
        # PIL's BILINEAR widens its kernel when shrinking, so thin strokes are averaged, not lost.
        img = img.resize((size, size), Image.Resampling.BILINEAR)
    array = np.asarray(img, dtype=np.uint8)
    if invert:
        array = 255 - array
    return array.reshape(size, size, -1)


def read_images(paths: list[Path], *, mode: str, size: int, invert: bool = False, crop: bool = False) -> Tensor:
    """(N, C, size, size) uint8 from image files; DataError naming the first unreadable file.

    ``mode`` is a PIL mode ("L" -> C=1, "RGB" -> C=3); ``invert`` maps ink-on-white drawings to
    ink-high; ``crop`` keeps the aspect ratio (resize the shorter side, centre crop).
    """
    if not paths:
        channels = 1 if mode == "L" else 3
        return torch.zeros(0, channels, size, size, dtype=torch.uint8)
    with ThreadPoolExecutor(READ_THREADS) as pool:
        arrays = list(pool.map(lambda p: _read_one(p, mode, size, invert, crop), paths, chunksize=64))
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()


def encode_names(doc: object) -> Tensor:
    """JSON-serialisable metadata as a uint8 tensor, so it can live in a weights-only cache file."""
    return torch.frombuffer(bytearray(json.dumps(doc).encode()), dtype=torch.uint8).clone()


def decode_names(t: Tensor) -> Any:
    """The inverse of :func:`encode_names`."""
    return json.loads(t.numpy().tobytes().decode())
