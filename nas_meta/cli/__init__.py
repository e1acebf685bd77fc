"""Command line: argparse subcommands -> a typed config -> library calls.

A user mistake is one line on stderr naming the bad value and the valid choices, exit code 2, no
traceback, and nothing written.  Ctrl-C ends a search with exit code 130; running the same command
again resumes it.  Anything else is a bug and keeps its traceback.  One module per group of
commands (search.py: search, worker; export.py: export, evaluate; analyze.py: analyze, spaces;
dashboard.py: dashboard);
common.py holds what they share.

    python cli.py search --space cell --algo maml
    python cli.py spaces
"""

from __future__ import annotations

import _thread
import argparse
import sys
import threading
from collections.abc import Callable, Sequence
from typing import Any

from ..errors import NasMetaError
from . import analyze, dashboard, export, search
from .common import PROG, Parser

__all__ = ["main", "build_parser"]


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog=PROG, description="Neural architecture search for few-shot learning.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)
    for module in (search, export, analyze, dashboard):
        module.add_parsers(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit code (``SystemExit`` for usage errors comes from argparse)."""
    previous_hook = sys.unraisablehook
    sys.unraisablehook = _interrupts_are_never_dropped(previous_hook)
    try:
        parser = build_parser()
        try:
            args = parser.parse_args(argv)
        except SystemExit as exc:  # --help (0) or a usage mistake (2), already printed in one line
            return int(exc.code or 0)
        import optuna

        # Our progress lines say what Optuna's log would, once per trial and readably; its warning
        # for a failed trial (a traceback) is already a line of ours with the reason, and a bug in a
        # trial is re-raised by optimize() with its traceback.
        optuna.logging.set_verbosity(optuna.logging.ERROR)
        return int(args.run(args))
    except NasMetaError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        # The system refused a path while writing or reading (disk full, permissions changed,
        # a folder removed mid-run): one line naming it.  The output writers (fileio) name the
        # file they were writing when the error of a full, over-quota or read-only disk names
        # none, and leave nothing half-written.
        if exc.filename is None:
            raise
        print(f"{PROG}: error: {exc.filename}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"\n{PROG}: interrupted; run the same command again to resume", file=sys.stderr)
        return 130
    finally:
        sys.unraisablehook = previous_hook


def _interrupts_are_never_dropped(previous: Callable[[Any], object]) -> Callable[[Any], None]:
    """An ``unraisablehook`` that raises a dropped Ctrl-C again.  Python raises KeyboardInterrupt
    in whatever Python code runs next, and when that is a callback of the garbage collector (a
    weakref callback, a ``__del__``) it prints "Exception ignored" and drops it: the command would
    go on.  Here Ctrl-C is delivered again, from another thread once the callback has returned
    (delivered inside this hook, it would be dropped like the first)."""

    def hook(info: Any) -> None:
        if info.exc_type is not None and issubclass(info.exc_type, KeyboardInterrupt):
            threading.Timer(0.01, _thread.interrupt_main).start()
            return
        previous(info)

    return hook
