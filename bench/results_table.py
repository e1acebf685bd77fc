"""results/README.md, generated from the committed records and each section's hand-written prose.

    .venv/bin/python -m bench.results_table            # print the README
    .venv/bin/python -m bench.results_table --write    # write results/README.md
    .venv/bin/python -m bench.results_table --check    # exit 1, with a diff, where it is out of date
    .venv/bin/python -m bench.results_table record OUT ROW --omniglot-root DIR   # a reproduce.sh row

The README is ``results/prose/<section>.md`` in ``SECTIONS`` order, where a line
``{{table NAME}}`` becomes the table ``TABLES[NAME]`` renders from the records of
``results/records/`` and a line ``{{transcribed SECTION/NAME}}`` the table of the transcribed
record ``records/SECTION/transcribed/NAME.json`` (rows whose raw results were lost with the
machine that ran them, copied from the README as it stood; marked as such under the table).
``record`` turns the log, study and export card of one ``bench/reproduce.sh`` row into its
record (``records/reproduce/ROW.json``), which sections 1-3 and 8 are rendered from;
``reproduce.sh`` calls it after every row.
"""

from __future__ import annotations

import argparse
import contextlib
import difflib
import importlib
import io
import json
import math
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench import records
from bench.records import REPO, read_records, write_record

README = REPO / "results" / "README.md"
PROSE = REPO / "results" / "prose"
SECTIONS = (
    "header",
    "0-recipe",
    "1-baselines",
    "2-searched",
    "3-datasets",
    "4-fidelity",
    "5-search",
    "6-versus-conv4",
    "7-published",
    "8-commands",
)
PLACEHOLDER = re.compile(r"^\{\{(table|transcribed) ([A-Za-z0-9_./-]+)\}\}$")
RESULT = re.compile(r"(accuracy|mse) ([0-9.]+)(%?) ± ([0-9.]+)")
TASKS = {"5w1s": "5-way 1-shot", "5w5s": "5-way 5-shot", "20w1s": "20-way 1-shot", "20w5s": "20-way 5-shot"}
Row = dict[str, Any]


# --- reproduce.sh rows: a row's log (and its study and card) -> its record ---------------------


def parse_log(path: Path) -> Row | None:
    """The seed, CPU and wall seconds, CPU line, command and last result line of a row's log."""
    if not path.is_file():
        return None
    text = path.read_text()
    row: Row = {}
    for key in ("seed", "cpu_seconds", "wall_seconds", "cpu"):
        m = re.search(rf"^{key}: (.*)$", text, re.M)
        row[key] = m.group(1).strip() if m else None
    # A search row's command is `bash -c "set -e` and then one indented line per CLI command.
    m = re.search(r"^command: (.*(?:\n    .*)*)", text, re.M)
    parts = [line.strip() for line in m.group(1).splitlines()] if m else []
    parts = [p for p in parts if p and p != "bash -c set -e"]
    row["command"] = " && ".join(parts) if parts else None
    results = RESULT.findall(text)
    if results:
        metric, mean, pct, ci = results[-1]
        scale = 100.0 if pct else 1.0
        row["result"] = {"metric": metric, "mean": float(mean) / scale, "ci": float(ci) / scale}
    return row


def generic_command(command: str, out: Path, omniglot_root: str | None) -> str:
    """A row's command with this machine's folders written as ``OUT`` and ``OMNIGLOT_ROOT``."""
    command = " ".join(command.split())
    command = command.replace(str(out.resolve()), "OUT").replace(str(out), "OUT")
    if omniglot_root:
        command = command.replace(str(Path(omniglot_root).resolve()), "OMNIGLOT_ROOT").replace(
            omniglot_root, "OMNIGLOT_ROOT"
        )
    command = re.sub(r"\S*/(\.venv/bin/)?python3? \S*/cli\.py", "python cli.py", command)
    return re.sub(r"\S*/python3? ", "python ", command)


def row_record(out: Path, row: str, omniglot_root: str | None = None) -> tuple[Row, str, int | None, float]:
    """(figures, command, seed, CPU seconds) of ``bench/reproduce.sh``'s row ``row`` in ``out``:
    the evaluated result, or for a search row its study's summary and its export card's retrained
    test result and parameters."""
    log = parse_log(out / f"{row}.log")
    if log is None or not log.get("command") or log.get("cpu_seconds") is None:
        raise FileNotFoundError(f"no finished log for row {row!r} in {out}")
    figures: Row = {"row": row, "result": log.get("result"), "params": None, "space": None, "search": None}
    m = re.search(r"export .*--out (\S+)", log["command"])
    card_path = (Path(m.group(1)) if m else out / row / "export") / "rank1" / "card.json"
    if card_path.is_file():
        card = json.loads(card_path.read_text())
        figures.update(params=card.get("params"), space=card.get("space"))
        if "retrain" in card:
            test = card["retrain"]["test"]
            figures["result"] = {"metric": test["metric"], "mean": test["mean"], "ci": test["ci95"]}
    if (out / row).is_dir():
        from nas_meta.analyze import study_summary
        from nas_meta.search.study import find_studies, load_study, study_task

        found = find_studies([row], None, out)
        if found:
            study = load_study(*found[0])
            s = study_summary(study, study_task(study))
            figures["search"] = {
                "trials": s["trials"],
                "wall_seconds": round(s["wall_seconds"]),
                "best_score": s["best_score"],
            }
    figures.update(wall_seconds=int(log["wall_seconds"]), cpu_model=log.get("cpu"), note=None)
    seed = int(log["seed"]) if log.get("seed") not in (None, "") else None
    return figures, generic_command(log["command"], out, omniglot_root), seed, float(log["cpu_seconds"])


def record_row(out: Path, row: str, omniglot_root: str | None = None) -> Path:
    figures, command, seed, cpu = row_record(out, row, omniglot_root)
    return write_record("reproduce", row, figures, command=command, seed=seed, cpu_seconds=cpu)


# --- rendering --------------------------------------------------------------------------------


def reproduce_rows() -> dict[str, Row]:
    """Every reproduce.sh row's record by row name (figures, with the record's command, seed, CPU
    seconds and source beside them)."""
    out = {}
    for record in read_records("reproduce"):
        f = dict(record["figures"])
        f.update(
            command=record["command"],
            seed=record["seed"],
            cpu_seconds=record["cpu_seconds"],
            source=record.get("source", "measured"),
        )
        out[f["row"]] = f
    return out


def pm(result: Row | None) -> str:
    if not result:
        return "not run"
    if result["metric"] == "accuracy":
        return f"{100 * result['mean']:.2f} ± {100 * result['ci']:.2f}"
    return f"{result['mean']:.3f} ± {result['ci']:.3f}"


def name_cell(rows: dict[str, Row], name: str) -> str:
    """A row's name, marked where its record is transcribed rather than measured."""
    row = rows.get(name)
    return f"`{name}`" + (" (transcribed)" if row and row["source"] == "transcribed" else "")


def cpu_cell(row: Row | None) -> str:
    return f"{row['cpu_seconds']:.0f}" if row and row.get("cpu_seconds") is not None else ""


def result_of(rows: dict[str, Row], name: str) -> Row | None:
    row = rows.get(name)
    return row.get("result") if row else None


def difference(a: Row, b: Row) -> tuple[float, float]:
    """a - b and the 95% CI of a difference of independent means."""
    return a["mean"] - b["mean"], math.sqrt(a["ci"] ** 2 + b["ci"] ** 2)


def baselines_table() -> list[str]:
    rows = reproduce_rows()
    lines = ["| learner | task | test accuracy % (95% CI) | CPU s | row |", "| --- | --- | --- | --- | --- |"]
    for algo in ("protonet", "maml"):
        for key, task in TASKS.items():
            for suffix, note in (("", ""), ("-within", ", within one alphabet")):
                if suffix and key != "20w1s":
                    continue
                name = f"conv4-{algo}-{key}{suffix}"
                lines.append(
                    f"| {algo} | {task}{note} | {pm(result_of(rows, name))} | {cpu_cell(rows.get(name))} | "
                    f"{name_cell(rows, name)} |"
                )
    return lines


def searches_table() -> list[str]:
    rows = reproduce_rows()
    lines = [
        "| learner | space | trials | search wall s | best val % | params | searched test % | Conv-4 test % "
        "| difference | beats Conv-4? | row |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for algo in ("protonet", "maml"):
        base = result_of(rows, f"conv4-{algo}-5w1s")
        for space in ("chain", "cell"):
            name = f"search-{algo}-{space}"
            row = rows.get(name)
            if not (row and row.get("search") and row.get("result")):
                lines.append(f"| {algo} | {space} | not run |  |  |  |  | {pm(base)} |  |  | `{name}` |")
                continue
            s, found = row["search"], row["result"]
            verdict, diff = "", ""
            if base:
                d, ci = difference(found, base)
                diff = f"{100 * d:+.2f} ± {100 * ci:.2f}"
                verdict = "yes" if d > ci else ("no (worse)" if d < -ci else "no (within CI)")
            lines.append(
                f"| {algo} | {space} | {s['trials']} | {s['wall_seconds']:.0f} | {100 * s['best_score']:.1f} | "
                f"{row['params']:,} | {pm(found)} | {pm(base)} | {diff} | {verdict} | {name_cell(rows, name)} |"
            )
    return lines


def longer_table() -> list[str]:
    """The MAML gap at the table's budget, checked at a longer one (rows ``*-long``)."""
    rows = reproduce_rows()
    lines = ["| backbone | params | test accuracy % (95% CI) | CPU s | row |", "| --- | --- | --- | --- | --- |"]
    for backbone, name in (("Conv-4", "conv4-maml-5w1s-long"), ("searched (chain)", "search-maml-chain-long")):
        row = rows.get(name) or {}
        params = f"{row['params']:,}" if row.get("params") else ""
        lines.append(f"| {backbone} | {params} | {pm(row.get('result'))} | {cpu_cell(row)} | {name_cell(rows, name)} |")
    base, found = result_of(rows, "conv4-maml-5w1s-long"), result_of(rows, "search-maml-chain-long")
    if base and found:
        d, ci = difference(found, base)
        lines += ["", f"Difference: {100 * d:+.2f} ± {100 * ci:.2f} points."]
    return lines


def datasets_table() -> list[str]:
    rows = reproduce_rows()
    lines = [
        "| dataset | learner | backbone | task | test (95% CI) | params | row |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name, dataset, algo, backbone, task in (
        ("glyphs-conv4-protonet", "glyphs", "protonet", "Conv-4", "5-way 1-shot"),
        ("glyphs-search-protonet-chain", "glyphs", "protonet", None, "5-way 1-shot"),
        ("glyphs-resnet12-protonet", "glyphs", "protonet", "resnet12 (baseline)", "5-way 1-shot"),
        ("sinusoid-mlp40-maml-5shot", "sinusoid", "maml", "mlp40 (baseline)", "5-shot regression"),
        ("sinusoid-mlp40-maml-10shot", "sinusoid", "maml", "mlp40 (baseline)", "10-shot regression"),
        ("sinusoid-search-maml-5shot", "sinusoid", "maml", None, "5-shot regression"),
        ("sinusoid-search-maml-10shot", "sinusoid", "maml", None, "10-shot regression"),
    ):
        row = rows.get(name) or {}
        shown = backbone or f"searched ({row.get('space') or '?'})"
        params = f"{row['params']:,}" if row.get("params") else ""
        lines.append(
            f"| {dataset} | {algo} | {shown} | {task} | {pm(row.get('result'))} | {params} | {name_cell(rows, name)} |"
        )
    return lines


def commands_table() -> list[str]:
    """Every reproduce.sh row's command, seed and time, as its record holds them."""
    rows = reproduce_rows()
    lines = ["| row | seed | CPU s | wall s | command |", "| --- | --- | --- | --- | --- |"]
    for name in sorted(rows):
        row = rows[name]
        note = f" ({row['note']})" if row.get("note") else ""
        command = row["command"].replace("|", "\\|")
        lines.append(
            f"| {name_cell(rows, name)} | {row['seed']} | {cpu_cell(row)} | {row.get('wall_seconds') or ''} | "
            f"`{command}`{note} |"
        )
    return lines


def printed_table(module_name: str, *args: object) -> list[str]:
    """What ``bench/<module>.py table`` prints, without its last (name=value) line."""
    module = importlib.import_module(f"bench.{module_name}")
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        code = module.table(*args)
    lines = buffer.getvalue().rstrip("\n").splitlines()
    return lines[:-1] if code == 0 and lines else ["(no records yet)"]


def search_table(space: str, algo: str, ways: int) -> Callable[[], list[str]]:
    def render() -> list[str]:
        from bench import search_efficiency

        lines, _ = search_efficiency.render(space=space, algo=algo, ways=ways)
        return lines or ["(no records yet)"]

    return render


def versus_table(kind: str) -> Callable[[], list[str]]:
    def render() -> list[str]:
        from bench import versus_tables

        return versus_tables.RENDERERS[kind]()[0] or ["(no records yet)"]

    return render


TABLES: dict[str, Callable[[], list[str]]] = {
    "reproduce_baselines": baselines_table,
    "reproduce_searches": searches_table,
    "reproduce_longer": longer_table,
    "reproduce_other": datasets_table,
    "reproduce_commands": commands_table,
    "crn": lambda: printed_table("crn"),
    "search_chain_protonet_5w": search_table("chain", "protonet", 5),
    "search_chain_protonet_20w": search_table("chain", "protonet", 20),
    "search_chain_fomaml_5w": search_table("chain", "fomaml", 5),
    "search_chain_recipe_protonet_5w": search_table("chain_recipe", "protonet", 5),
    "versus_default": versus_table("default"),
    "versus_random_pick": versus_table("random_pick"),
    "versus_recipe": versus_table("recipe"),
    "versus_equal_cpu": versus_table("equal_cpu"),
    "versus_race_rules": versus_table("race_rules"),
    "search_chain_recipe_protonet_20w": search_table("chain_recipe", "protonet", 20),
}


def transcribed_table(key: str) -> list[str]:
    """The table of a transcribed record ``SECTION/NAME``, marked as transcribed under it."""
    section, _, name = key.partition("/")
    path = records.ROOT / section / "transcribed" / f"{name}.json"
    record = json.loads(path.read_text())
    if record.get("source") != "transcribed":
        raise ValueError(f"{path} is not a transcribed table record")
    figures = record["figures"]
    lines = ["| " + " | ".join(figures["columns"]) + " |", "|" + " --- |" * len(figures["columns"])]
    lines += ["| " + " | ".join(row) + " |" for row in figures["rows"]]
    lines += [
        "",
        f"*Transcribed: these rows' raw results were lost with the machine that ran them; the record "
        f"`records/{section}/transcribed/{name}.json` copies them from "
        f"{record.get('transcribed_from', 'an earlier README')}.*",
    ]
    return lines


def render() -> str:
    """results/README.md as the prose and the records make it."""
    parts = []
    for section in SECTIONS:
        lines = []
        for line in (PROSE / f"{section}.md").read_text().split("\n"):
            m = PLACEHOLDER.match(line)
            if not m:
                lines.append(line)
            elif m.group(1) == "transcribed":
                lines.extend(transcribed_table(m.group(2)))
            elif m.group(2) in TABLES:
                lines.extend(TABLES[m.group(2)]())
            else:
                raise KeyError(f"prose/{section}.md asks for an unknown table {m.group(2)!r}; known: {sorted(TABLES)}")
        parts.append("\n".join(lines).rstrip("\n") + "\n")
    return "\n".join(parts)


def check(readme: Path | None = None) -> list[str]:
    """The unified diff from ``readme`` (default ``README``) to what the records make it; empty when
    it is up to date."""
    readme = readme or README
    have = readme.read_text() if readme.is_file() else ""
    return list(
        difflib.unified_diff(
            have.splitlines(keepends=True),
            render().splitlines(keepends=True),
            fromfile=str(readme.relative_to(REPO)) if readme.is_relative_to(REPO) else str(readme),
            tofile="regenerated from results/prose and results/records",
        )
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    what = parser.add_mutually_exclusive_group()
    what.add_argument("--write", action="store_true", help="write results/README.md")
    what.add_argument("--check", action="store_true", help="exit 1 with a diff where results/README.md is stale")
    sub = parser.add_subparsers(dest="command")
    rec = sub.add_parser("record", help="write the record of one bench/reproduce.sh row from its log")
    rec.add_argument("out", help="reproduce.sh's output folder (OUT)")
    rec.add_argument("row")
    rec.add_argument("--omniglot-root", default=None, help="the OMNIGLOT_ROOT the row ran with")
    args = parser.parse_args(argv)
    if args.command == "record":
        try:
            path = record_row(Path(args.out), args.row, args.omniglot_root)
        except FileNotFoundError as exc:
            print(f"results_table.py: error: {exc}", file=sys.stderr)
            return 2
        print(path)
        return 0
    if args.check:
        diff = check()
        if diff:
            sys.stdout.writelines(diff)
            print("results/README.md is out of date: run `python -m bench.results_table --write`", file=sys.stderr)
            return 1
        return 0
    text = render()
    if args.write:
        from nas_meta.fileio import atomic_write_text

        atomic_write_text(README, text)
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
