"""What the bench scripts' command lines share (standard library only: a table command needs no
torch): the run/table subcommands, the OMNIGLOT_ROOT argument and its check, the cache folder."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

__all__ = ["subcommands", "add_omniglot_root", "add_cache_dir", "missing_root"]

ROOT_HELP = "OMNIGLOT_ROOT: holds images_background_small1/ and images_background_small2/"


def subcommands(doc: str) -> tuple[argparse.ArgumentParser, Any]:
    """A parser described by the first line of ``doc`` and its required subcommands."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    return parser, parser.add_subparsers(dest="command", required=True)


def add_omniglot_root(p: argparse.ArgumentParser) -> None:
    p.add_argument("root", help=ROOT_HELP)


def add_cache_dir(p: argparse.ArgumentParser, results: Path) -> None:
    """--cache-dir, by default ``cache/`` beside the bench's results folder."""
    p.add_argument("--cache-dir", default=str(results.parent / "cache"), help="the dataset's tensor cache")


def missing_root(script: str, root: str) -> bool:
    """True (after one line on stderr naming it) when ``root`` is not a folder."""
    if Path(root).is_dir():
        return False
    print(f"{script}: error: OMNIGLOT_ROOT must be a folder, got {root!r}", file=sys.stderr)
    return True
