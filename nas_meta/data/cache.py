"""A cache of preprocessed dataset tensors: keyed, checksummed, written atomically.

A cache file is named by a hash of everything that changes its tensors (the *key*: dataset,
parameters, a fingerprint of the source files).  It stores the key itself and a checksum of the
tensor bytes, so a file that is truncated, bit-flipped, or left from other parameters is detected
and rebuilt, never silently used.  Files are written to a temporary name then ``os.replace``-d,
so a crash or a concurrent writer never leaves a half-written cache under the real name, and read
with ``torch.load(weights_only=True)`` (no pickle code execution).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ..fileio import output_file

__all__ = ["cached_tensors", "cache_path", "fingerprint_files", "FORMAT_VERSION"]

# Bump when the meaning of cached tensors changes (a preprocessing fix): old files become stale.
FORMAT_VERSION = 1


def _key_text(key: dict[str, Any]) -> str:
    return json.dumps({"format": FORMAT_VERSION, **key}, sort_keys=True, default=str)


def cache_path(cache_dir: str | os.PathLike[str], name: str, key: dict[str, Any]) -> Path:
    """Where the tensors for ``key`` live: ``<cache_dir>/<name>-<hash of key>.pt``."""
    digest = hashlib.sha256(_key_text(key).encode()).hexdigest()[:20]
    return Path(cache_dir) / f"{name}-{digest}.pt"


def _checksum(tensors: dict[str, Tensor]) -> str:
    h = hashlib.blake2b(digest_size=16)
    for name in sorted(tensors):
        t = tensors[name].contiguous()
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)};".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def _read(path: Path, key_text: str) -> dict[str, Tensor] | None:
    """The cached tensors, or None when the file is missing, unreadable, stale or corrupt."""
    try:
        doc = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        return None
    except Exception:  # a truncated zip, garbage bytes, an old torch format: all mean rebuild
        return None
    if not isinstance(doc, dict) or doc.get("key") != key_text:
        return None
    tensors = doc.get("tensors")
    if not isinstance(tensors, dict) or not all(isinstance(t, Tensor) for t in tensors.values()):
        return None
    if doc.get("checksum") != _checksum(tensors):
        return None
    return tensors


def _write(path: Path, key_text: str, tensors: dict[str, Tensor]) -> None:
    doc = {"key": key_text, "checksum": _checksum(tensors), "tensors": tensors}
    with output_file(path) as tmp:  # a full disk: one error naming the cache file, nothing left
        with open(tmp, "wb") as f:
            torch.save(doc, f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes it owner-only; a shared cache is read by other users' runs


def cached_tensors(
    cache_dir: str | os.PathLike[str] | None,
    name: str,
    key: dict[str, Any],
    build: Callable[[], dict[str, Tensor]],
) -> dict[str, Tensor]:
    """``build()``'s tensors, from ``cache_dir`` when a valid entry exists, else built and stored.

    With ``cache_dir=None`` nothing is read or written.  ``key`` must hold every parameter that
    changes the tensors (JSON-serialisable); the tensors must be CPU tensors.

        >>> import tempfile, torch
        >>> d = tempfile.mkdtemp()
        >>> cached_tensors(d, "demo", {"n": 3}, lambda: {"x": torch.arange(3)})["x"].tolist()
        [0, 1, 2]
    """
    if cache_dir is None:
        return build()
    key_text = _key_text(key)
    path = cache_path(cache_dir, name, key)
    tensors = _read(path, key_text)
    if tensors is None:
        tensors = build()
        _write(path, key_text, tensors)
    return tensors


def fingerprint_files(paths: Iterable[Path], root: Path) -> str:
    """A hash of each file's path relative to ``root``, size and modification time.

    Part of a file dataset's cache key: adding, removing or rewriting an image makes the cache
    stale without reading any image.
    """
    h = hashlib.sha256()
    for p in sorted(paths):
        st = p.stat()
        # The name's bytes as the OS holds them: a file name that is not UTF-8 (any bytes are allowed
        # on Linux) has no UTF-8 encoding; for every other name these are its UTF-8 bytes, as before.
        h.update(os.fsencode(p.relative_to(root).as_posix()) + f"\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()
