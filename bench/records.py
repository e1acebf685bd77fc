"""Committed records of measured bench rows: ``results/records/<section>/<name>.json``.

The rest of ``results/`` is git-ignored and stays on the machine that ran it; these records are
committed, so a row measured on one machine can be tabulated, paired and checked on another.  Each
record holds what produced its figures (the command, the seed, the commit and whether the working
tree had uncommitted changes, the CPU model and the vector extensions that change speed and bf16
numerics) beside the figures themselves, per-episode lists included, so paired intervals can be
recomputed from the record alone.

    from bench.records import read_records, write_record

    write_record("versus_conv4", path.stem, doc, command=doc["command"], seed=seed, cpu_seconds=cpu)
"""

from __future__ import annotations

import datetime
import json
import re
import subprocess
from pathlib import Path
from typing import Any

from nas_meta.fileio import atomic_write_json

REPO = Path(__file__).resolve().parent.parent
ROOT = REPO / "results" / "records"
CPUINFO = Path("/proc/cpuinfo")
# The CPU features that change how fast a row runs or what bf16 computes.
CPU_FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile")
_NAME = re.compile(r"[A-Za-z0-9_.-]+")


def _checked(kind: str, value: str) -> str:
    # "." and ".." match the pattern but would write outside the section's folder.
    if not isinstance(value, str) or not _NAME.fullmatch(value) or set(value) == {"."}:
        raise ValueError(f"record {kind} must be letters, digits, '_', '.', '-' (not only dots), got {value!r}")
    return value


def _git(*args: str) -> str | None:
    try:
        done = subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, timeout=30, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout


def commit_state() -> tuple[str, bool]:
    """(``git rev-parse HEAD`` or "unknown", whether tracked files have uncommitted changes).

    When git cannot answer the tree counts as dirty: a record only claims a clean commit when git
    says so."""
    head = _git("rev-parse", "HEAD")
    status = _git("status", "--porcelain", "--untracked-files=no")
    commit = head.strip() if head and head.strip() else "unknown"
    return commit, status is None or bool(status.strip())


def cpu_info() -> dict[str, Any]:
    """The CPU's model name and which of ``CPU_FLAGS`` it has (read from ``CPUINFO``; "unknown" and
    no flags where that file is missing, as off Linux)."""
    model, flags = "unknown", set()
    try:
        text = CPUINFO.read_text(errors="replace")
    except OSError:
        text = ""
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key == "model name" and model == "unknown":
            model = value.strip()
        elif key == "flags" and not flags:
            flags = set(value.split())
    return {"model": model, "flags": [f for f in CPU_FLAGS if f in flags]}


def generic(value: Any, folders: dict[str, str]) -> Any:
    """``value`` with every string's machine folders written generically: each key of ``folders``
    as its value, and this checkout's own path as a path relative to the repository."""
    if isinstance(value, str):
        for folder, name in folders.items():
            value = value.replace(folder, name)
        return value.replace(f"{REPO}/", "").replace(str(REPO), ".")
    if isinstance(value, dict):
        return {k: generic(v, folders) for k, v in value.items()}
    if isinstance(value, list):
        return [generic(v, folders) for v in value]
    return value


def write_record(
    section: str,
    name: str,
    doc: dict[str, Any],
    *,
    command: str,
    seed: int | None,
    cpu_seconds: float,
    folders: dict[str, str] | None = None,
) -> Path:
    """Write ``ROOT/<section>/<name>.json`` atomically (a reader sees the old record or the new
    one) and return its path.  ``doc`` (the row's figures and per-episode lists) goes under
    ``figures``; ``section`` and ``name`` must match ``[A-Za-z0-9_.-]+`` (ValueError otherwise).
    No machine's folder is committed: this checkout's path becomes relative, and each folder of
    ``folders`` (say the data root) the name it maps to (``OMNIGLOT_ROOT``)."""
    path = ROOT / _checked("section", section) / f"{_checked('name', name)}.json"
    commit, dirty = commit_state()
    # Absolute folders only (a relative "data" would rewrite every word "data"), longest first.
    given = {str(Path(k).resolve()): v for k, v in (folders or {}).items() if k}
    folders = dict(sorted(given.items(), key=lambda kv: -len(kv[0])))
    doc, command = generic(doc, folders), generic(command, folders)
    record = {
        "command": command,
        "seed": seed,
        "commit": commit,
        "dirty": dirty,
        "cpu": cpu_info(),
        "cpu_seconds": float(cpu_seconds),
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "source": "measured",
        "figures": doc,
    }
    return atomic_write_json(path, record)


def read_records(section: str) -> list[dict[str, Any]]:
    """Every record of ``section``, sorted by name; none when the section has no folder yet."""
    folder = ROOT / _checked("section", section)
    if not folder.is_dir():
        return []
    return [json.loads(p.read_text()) for p in sorted(folder.glob("*.json"), key=lambda p: p.stem)]
