"""``analyze`` and ``spaces``: tables and plots of studies; the search spaces, listed or drawn."""

from __future__ import annotations

import argparse
import sys
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


def cmd_analyze(args: argparse.Namespace) -> int:
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
    parts = []
    for study, cfg in entries:
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
    if args.out:
        atomic_write_text(args.out, text)
        print(f"wrote {args.out}")
    else:
        print(text, end="")
    if args.plots:
        from ..viz.study import write_plots

        pairs = [(s, study_task(s)) for s, _ in entries]
        for path in write_plots(pairs, args.plots):
            print(f"wrote {path}", file=sys.stderr)
    return 0


def cmd_spaces(args: argparse.Namespace) -> int:
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
