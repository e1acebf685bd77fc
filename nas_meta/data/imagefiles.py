"""Reading folders of image files into one uint8 tensor, with errors that name the file."""

from __future__ import annotations

import json
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch import Tensor

from ..errors import DataError

__all__ = [
    "IMAGE_SUFFIXES",
    "DECODER_VERSION",
    "list_images",
    "read_images",
    "encode_names",
    "decode_names",
    "class_folder_name",
]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
# PIL decoding releases the GIL for much of its work; two threads match the two cores here.
READ_THREADS = 2
# Modes of 16-bit greyscale PNGs (PIL opens them as "I;16", older versions as 32-bit "I"): their
# samples run to 65535, and PIL's convert() to L or RGB clips them at 255 instead of scaling, so
# a 16-bit image would load all white.
WIDE_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")
# Part of the cache key of every dataset read with read_images: bump it when the same files decode
# to other pixels, so tensors cached by the old decoder are rebuilt, not reused (2: 16-bit
# greyscale scaled to 8 bits; 1 left such images all white).
DECODER_VERSION = 2


def class_folder_name(folder: Path) -> str:
    """``folder.name``, which becomes a class name; DataError when the OS name is not UTF-8.

    Linux allows any bytes in a name, which Python holds as lone surrogates: such a name cannot be
    written to the cache key, a results file or a report, nor listed in a (UTF-8) split file, and
    replacing its bad bytes could make two folders one class.  So it is refused, naming its bytes.
    """
    name = folder.name
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        raw = os.fsencode(name)
        raise DataError(
            f"class folder {raw!r} in {folder.parent} has a name that is not UTF-8 text; rename it "
            "(class names are written to results and split files as UTF-8)"
        ) from None
    return name


def list_images(folder: Path) -> list[Path]:
    """The .png/.jpg/.jpeg files directly in ``folder`` (any case), sorted; hidden files skipped."""
    return sorted(
        p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".") and p.is_file()
    )


def _to_8bit(img: Image.Image) -> Image.Image:
    """A 16-bit greyscale image as 8-bit L, scaled by 255/65535 (= 1/257, so 65535 -> 255); other
    images unchanged (PIL already reduces 16-bit RGB PNGs to 8 bits per channel when decoding)."""
    if img.mode not in WIDE_MODES:
        return img
    wide = np.asarray(img, dtype=np.float64)
    return Image.fromarray(np.clip(np.rint(wide / 257.0), 0, 255).astype(np.uint8))


def _read_one(path: Path, mode: str, size: int, invert: bool, crop: bool) -> np.ndarray:
    try:
        with Image.open(path) as opened:
            opened.load()  # decode now: a truncated file fails here, not later in training
            img = _to_8bit(opened).convert(mode)
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
