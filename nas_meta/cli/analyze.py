"""``analyze`` and ``spaces``: tables and plots of studies; the search spaces, listed or drawn."""

from __future__ import annotations

import argparse
import contextlib
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from typing import Any

from ..analyze import FORMATS
from .common import add_study_options, check_file, check_folder


def add_parsers(sub: Any) -> None:
    analyze = sub.add_parser("analyze", help="tables and plots of one or more studies")
    add_study_options(analyze, many=True)
    analyze.add_argument(
        "--format",
        default="md",
        choices=FORMATS,
        help="table format (default: md); csv with several studies gives their comparison table",
    )
    analyze.add_argument("--plots", default=None, metavar="DIR", help="write PNG plots into DIR")
    analyze.add_argument("--out", default=None, help="write the tables to this file instead of stdout")

    spaces = sub.add_parser("spaces", help="list the search spaces, or draw one")
    spaces.add_argument("--show", default=None, metavar="SPACE", help="draw this space's graph")
    spaces.add_argument(
        "--out", default=None, help="picture for --show, .png, .svg or .pdf by its suffix (default: <space>.png)"
    )
    analyze.set_defaults(run=cmd_analyze)
    spaces.set_defaults(run=cmd_spaces)


@contextlib.contextmanager
def stop_at_safe_points() -> Iterator[Callable[[], None]]:
    """Ctrl-C stops the command, every time: yields ``check()``, which the command calls between
    its steps and which raises KeyboardInterrupt once Ctrl-C was pressed (and once more on the way
    out, for a Ctrl-C during the last step).  A second Ctrl-C raises at once.

    Python's own handler raises KeyboardInterrupt in whatever Python code runs next, and that can
    be a callback of the garbage collector (a weakref callback, a ``__del__``; importing matplotlib
    for the plots runs many), where Python prints "Exception ignored" and drops the exception: the
    command went on to the end.  Here the first Ctrl-C is only recorded, which nothing can drop; a
    second one that such a callback drops is dropped silently, the first being on record.  Nothing
    changes where Ctrl-C is not Python's default (ignored, as in a background job, or handled by a
    caller) or off the main thread."""
    if (
        threading.current_thread() is not threading.main_thread()
        or signal.getsignal(signal.SIGINT) is not signal.default_int_handler
    ):
        yield lambda: None
        return
    requested = threading.Event()

    def handler(signum: int, frame: object) -> None:
        if requested.is_set():
            raise KeyboardInterrupt
        requested.set()

    previous_hook = sys.unraisablehook

    def unraisable(info: Any) -> None:
        if not (requested.is_set() and issubclass(info.exc_type, KeyboardInterrupt)):
            previous_hook(info)

    def check() -> None:
        if requested.is_set():
            raise KeyboardInterrupt

    signal.signal(signal.SIGINT, handler)
    sys.unraisablehook = unraisable
    try:
        yield check
        check()
    finally:
        sys.unraisablehook = previous_hook
        signal.signal(signal.SIGINT, signal.default_int_handler)


def cmd_analyze(args: argparse.Namespace) -> int:
    with stop_at_safe_points() as check:
        return _analyze(args, check)


def _analyze(args: argparse.Namespace, check: Callable[[], None]) -> int:
    from ..analyze import compare_frame, ranked_frame, render, study_summary
    from ..fileio import atomic_write_text
    from ..search.race import race_state, verdict_lines
    from ..search.study import find_studies, load_study, stored_config, study_task

    if args.out:
        check_file(args.out, "--out")
    if args.plots:
        check_folder(args.plots, "--plots")
    entries = []
    for name, url in find_studies(args.study, args.storage, args.results_dir):
        study = load_study(name, url)
        entries.append((study, stored_config(study)))
        check()
    parts = []
    for study, cfg in entries:
        check()
        task = study_task(study)
        summary = study_summary(study, task)
        frame = ranked_frame(study, task, sampler=cfg.search.sampler)
        heading = (
            f"study {study.study_name}: {cfg.search.space} / {cfg.learner.algo} / {cfg.data.dataset} "
            f"{cfg.data.ways}-way {cfg.data.shots}-shot, sampler {cfg.search.sampler}"
        )
        summary_text = ", ".join(f"{k}={v}" for k, v in summary.items())
        race = verdict_lines(race_state(study), task)
        if args.format == "md":
            race_text = "\n### race\n\n" + "".join(f"- {line}\n" for line in race) if race else ""
            parts.append(f"## {heading}\n\n{summary_text}\n\n" + render(frame, "md") + race_text)
        elif args.format == "latex":
            race_text = "".join(f"% {line}\n" for line in race)
            parts.append(f"% {heading}\n% {summary_text}\n" + render(frame, "latex") + race_text)
        else:
            parts.append(render(frame, "csv"))
    if len(entries) > 1:
        comparison = render(compare_frame(entries), args.format)
        if args.format == "csv":
            parts = [comparison]  # one CSV is one table: several studies give their comparison
        else:
            parts.append(("## comparison\n\n" if args.format == "md" else "% comparison\n") + comparison)
    text = "\n".join(parts)
    check()
    if args.out:
        atomic_write_text(args.out, text)
        print(f"wrote {args.out}")
    else:
        print(text, end="")
    if args.plots:
        check()
        # Importing matplotlib is the slowest part of the plots: a step of its own, between checks.
        import matplotlib.backends.backend_agg  # noqa: F401
        import matplotlib.figure  # noqa: F401

        from ..viz.study import write_plots

        check()
        pairs = [(s, study_task(s)) for s, _ in entries]
        for path in write_plots(pairs, args.plots):
            print(f"wrote {path}", file=sys.stderr)
    return 0


def cmd_spaces(args: argparse.Namespace) -> int:
    with stop_at_safe_points():
        return _spaces(args)


def _spaces(args: argparse.Namespace) -> int:
    from .. import spaces

    if args.show:
        from ..viz.style import picture_format

        space = spaces.load_space(args.show)
        out = check_file(args.out or f"{space.name}.png", "--out")
        picture_format(out, "--out")  # before drawing: an unknown suffix writes nothing
        spaces.draw_space(space, out)
        print(f"wrote {out}")
        return 0
    rows = []
    for name in spaces.list_spaces():
        space = spaces.load_space(name)
        recipe = ",".join(sorted(space.recipe)) or "-"
        rows.append((name, space.kind, len(space.choices()), space.size(), recipe))
    width = max(len(r[0]) for r in rows) if rows else 4
    print(f"{'space':<{width}}  {'kind':<6}  {'choices':>7}  {'architectures':>16}  training choices")
    for name, kind, n_choices, size, recipe in rows:
        print(f"{name:<{width}}  {kind:<6}  {n_choices:>7}  {size:>16,}  {recipe}")
    return 0
