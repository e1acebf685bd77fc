"""Output files and folders: a reader sees the old file or the new one, never a truncated one, and
a write the filesystem cannot take leaves nothing behind.

Every output nas_meta writes (search tables, plots, pictures, cards, weights, ONNX models, the
dataset cache) goes through :func:`output_file` (or :func:`atomic_write`, built on it) and its
folders through :func:`output_folder`.  When the filesystem has no room (``ENOSPC``), the quota is
used up (``EDQUOT``) or it is read-only (``EROFS``), the error the writer raises often names no
file (PIL, matplotlib and ``torch.save`` write to a file object; ``torch.save`` even turns the
``OSError`` into a ``RuntimeError``): it is raised again as an ``OSError`` of the same errno naming
the path being written, which the CLI prints as one line; the half-written temporary file and the
folders made for it are removed.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

__all__ = [
    "NO_ROOM",
    "atomic_write",
    "causes",
    "missing_folders",
    "atomic_write_text",
    "atomic_write_json",
    "decode_utf8",
    "no_room",
    "output_file",
    "output_folder",
]

# The errnos that say the filesystem will not take this output: full, over quota, read-only.
NO_ROOM = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS})


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


def causes(exc: BaseException) -> Iterator[BaseException]:
    """``exc`` and the errors it was raised from or while handling, outermost first."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def no_room(exc: BaseException) -> OSError | None:
    """The ``OSError`` with an errno of :data:`NO_ROOM` that ``exc`` is or was raised while handling
    (``torch.save`` raises a ``RuntimeError`` over the ``OSError`` of its file's write), else None."""
    return next((c for c in causes(exc) if isinstance(c, OSError) and c.errno in NO_ROOM), None)


def _naming(exc: BaseException, path: Path, temporary: str = "") -> OSError | None:
    """``exc`` as an OSError naming ``path`` when it says the filesystem has no room and names no
    file, or only a temporary one whose file name starts with ``temporary`` (the user never sees it);
    else None (an error naming a real file or folder already says where)."""
    full = no_room(exc)
    if full is None:
        return None
    ours = bool(temporary) and os.path.basename(str(full.filename)).startswith(temporary)
    if full.filename is not None and not ours:
        return None
    code = full.errno
    assert code is not None  # one of NO_ROOM
    return OSError(code, os.strerror(code), str(path))


def missing_folders(folder: Path) -> list[Path]:
    """The folders ``folder.mkdir(parents=True)`` would create, innermost first."""
    missing = []
    for candidate in [folder, *folder.parents]:
        if candidate.exists():
            break
        missing.append(candidate)
    return missing


@contextlib.contextmanager
def output_folder(folder: str | Path) -> Iterator[Path]:
    """Make ``folder`` (and its parents) for the block to write into.  When the block fails, the
    folders made here are removed with what the block wrote in them (a folder that existed stays),
    and a no-room ``OSError`` that names no file is raised again naming ``folder``."""
    folder = Path(folder)
    made = missing_folders(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        yield folder
    except BaseException as exc:
        if made:
            shutil.rmtree(made[-1], ignore_errors=True)
        named = _naming(exc, folder)
        if named is not None:
            raise named from exc
        raise


@contextlib.contextmanager
def output_file(path: str | Path) -> Iterator[Path]:
    """A temporary file beside ``path`` (its folder made when missing) for the block to write;
    renamed over ``path`` when the block ends (``os.replace`` is atomic on POSIX and Windows).
    When the block fails, the temporary file and the folders made for it are removed, ``path`` is
    left as it was, and a no-room ``OSError`` is raised again naming ``path``."""
    path = Path(path)
    made = missing_folders(path.parent)
    prefix = f".{path.name}."
    tmp: str | None = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=prefix, suffix=".tmp", dir=path.parent)
        os.close(fd)
        yield Path(tmp)
        os.replace(tmp, path)
    except BaseException as exc:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        for folder in made:  # innermost first; one another writer has put files in stays
            with contextlib.suppress(OSError):
                folder.rmdir()
        named = _naming(exc, path, temporary=prefix)
        if named is not None:
            raise named from exc
        raise


def atomic_write(path: str | Path, write: Callable[[IO[bytes]], Any]) -> Path:
    """Call ``write(file)`` on a temporary file beside ``path``, fsync it, then rename it over
    ``path`` (:func:`output_file`: on failure nothing is left and a full disk names ``path``)."""
    path = Path(path)
    with output_file(path) as tmp, open(tmp, "wb") as f:
        write(f)
        f.flush()
        os.fsync(f.fileno())
    return path


def atomic_write_text(path: str | Path, text: str) -> Path:
    return atomic_write(path, lambda f: f.write(text.encode("utf-8")))


def atomic_write_json(path: str | Path, doc: Any) -> Path:
    return atomic_write_text(path, json.dumps(doc, indent=2, sort_keys=True) + "\n")
