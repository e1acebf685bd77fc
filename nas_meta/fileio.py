"""Atomic file writes: a reader sees the old file or the new one, never a truncated one."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

__all__ = ["atomic_write", "atomic_write_text", "atomic_write_json", "decode_utf8"]


def decode_utf8(data: bytes, path: str | Path, error: type[Exception]) -> str:
    """A text file's bytes as UTF-8 text, a leading BOM dropped (Windows editors write one).  For
    anything else (Latin-1, UTF-16, binary) ``error`` naming the file, not a decode error."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        if data[:2] in (b"\xff\xfe", b"\xfe\xff"):
            why = "it starts with a UTF-16 byte-order mark"
        else:
            line = exc.object[: exc.start].count(b"\n") + 1  # exc.object: the bytes after a BOM
            why = f"byte 0x{exc.object[exc.start]:02x} on line {line} is not UTF-8"
        raise error(f"{path}: not UTF-8 text ({why}); save it with the UTF-8 encoding") from None
    # UTF-16 without a BOM decodes as UTF-8 when it is ASCII, but with a NUL byte beside every character.
    if "\0" in text:
        raise error(f"{path}: not UTF-8 text (it holds NUL bytes, as UTF-16 does); save it with the UTF-8 encoding")
    return text


def atomic_write(path: str | Path, write: Callable[[IO[bytes]], Any]) -> Path:
    """Call ``write(file)`` on a temporary file beside ``path``, fsync it, then rename it over
    ``path`` (``os.replace`` is atomic on POSIX and Windows)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_text(path: str | Path, text: str) -> Path:
    return atomic_write(path, lambda f: f.write(text.encode("utf-8")))


def atomic_write_json(path: str | Path, doc: Any) -> Path:
    return atomic_write_text(path, json.dumps(doc, indent=2, sort_keys=True) + "\n")
