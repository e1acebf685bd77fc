"""Tables and plots of studies: exactly the study's trials, formats that parse back, honest
empty tables, no tracebacks."""

from __future__ import annotations

import concurrent.futures
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pandas as pd
import pytest

from nas_meta import graph
from nas_meta.analyze import compare_frame, parse, ranked_frame, render, study_summary, trials_frame
from nas_meta.cli import main
from nas_meta.config import make_config
from nas_meta.search.study import create_study
from nas_meta.spaces import load_space
from nas_meta.viz.study import pareto_front, write_plots

PNG = b"\x89PNG\r\n\x1a\n"
ROOT = Path(__file__).resolve().parent.parent


def fake_study(tmp_path, name: str, n: int, fail_all: bool = False, seed: int = 0) -> optuna.Study:
    """A study as a search leaves it, with made-up scores (no training: fast)."""
    cfg = make_config("smoke", search={"space": "chain", "study": name}, results_dir=str(tmp_path))
    (tmp_path / name).mkdir(parents=True, exist_ok=True)
    study = create_study(cfg, name, "classification")
    space = load_space("chain")
    rng = random.Random(seed)
    for _ in range(n):
        trial = study.ask()
        arch = space.build(trial.suggest_categorical)
        trial.set_user_attr("arch", graph.to_json(arch))
        trial.set_user_attr("fingerprint", graph.fingerprint(arch))
        trial.set_user_attr("params", rng.randint(1_000, 100_000))
        trial.set_user_attr("flops", rng.randint(10_000, 10_000_000))
        trial.set_user_attr("seconds", round(rng.uniform(1, 5), 3))
        if fail_all:
            trial.set_user_attr("failure", "diverged: loss is nan at step 3")
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
        else:
            study.tell(trial, rng.uniform(0.2, 0.9))
    return study


def test_tables_hold_exactly_the_study_trials(tmp_path):
    study = fake_study(tmp_path, "a", 12)
    frame = trials_frame(study, "classification")
    assert list(frame["number"]) == list(range(12))
    assert list(frame["val_acc"]) == [t.value for t in study.trials]
    ranked = ranked_frame(study, "classification", sampler="tpe")
    assert sorted(ranked["number"]) == list(range(12))
    assert list(ranked["rank"]) == list(range(1, 13))
    assert ranked["val_acc"].is_monotonic_decreasing
    assert ranked.loc[0, "number"] == study.best_trial.number


@pytest.mark.parametrize("fmt", ["md", "csv", "latex"])
def test_formats_parse_back_to_the_same_numbers(tmp_path, fmt):
    study = fake_study(tmp_path, "a", 7)
    frame = ranked_frame(study, "classification", sampler="tpe")
    back = parse(render(frame, fmt), fmt)
    assert list(back.columns) == list(frame.columns)
    for col in ("rank", "number", "params", "flops"):
        assert list(back[col]) == [int(v) for v in frame[col]]
    assert list(back["val_acc"]) == list(frame["val_acc"])  # full precision, exactly
    assert list(back["seconds"]) == list(frame["seconds"])
    assert list(back["fingerprint"]) == list(frame["fingerprint"])


def test_summary_counts_states_and_finds_the_best(tmp_path):
    study = fake_study(tmp_path, "a", 6)
    s = study_summary(study, "classification")
    assert s["trials"] == 6 and s["n_complete"] == 6 and s["n_fail"] == 0
    assert s["best_score"] == study.best_value
    assert s["trials_to_best"] == study.best_trial.number + 1


def test_plots_are_written_and_not_empty(tmp_path):
    study = fake_study(tmp_path, "a", 20)
    paths = write_plots([(study, "classification")], tmp_path / "plots")
    assert {p.name for p in paths} == {"best_so_far.png", "score_vs_params.png", "ops_a.png"}
    for p in paths:
        data = p.read_bytes()
        assert data[:8] == PNG and len(data) > 10_000


def test_pareto_front():
    points = [(10, 0.5), (20, 0.6), (15, 0.4), (30, 0.6), (40, 0.9), (5, 0.1)]
    assert pareto_front(points, maximize=True) == [(5, 0.1), (10, 0.5), (20, 0.6), (40, 0.9)]
    assert pareto_front([(1, 3.0), (2, 1.0), (3, 2.0)], maximize=False) == [(1, 3.0), (2, 1.0)]


def test_analyze_cli_tables_comparison_and_plots(tmp_path, capsys):
    fake_study(tmp_path, "run-a", 5, seed=1)
    fake_study(tmp_path, "run-b", 5, seed=2)
    plots = tmp_path / "plots"
    assert main(["analyze", "--study", "run-*", "--results-dir", str(tmp_path), "--plots", str(plots)]) == 0
    out = capsys.readouterr().out
    assert "## study run-a" in out and "## study run-b" in out and "## comparison" in out
    assert (plots / "best_so_far.png").is_file() and (plots / "ops_run-b.png").is_file()
    assert (
        main(
            [
                "analyze",
                "--study",
                "run-a",
                "--study",
                "run-b",
                "--results-dir",
                str(tmp_path),
                "--format",
                "csv",
                "--out",
                str(tmp_path / "t.csv"),
            ]
        )
        == 0
    )
    comparison = pd.read_csv(tmp_path / "t.csv")  # several studies in CSV: their comparison table
    assert list(comparison["study"]) == ["run-a", "run-b"]
    assert list(comparison["trials"]) == [5, 5]


def test_empty_and_failed_studies_give_honest_tables(tmp_path, capsys):
    fake_study(tmp_path, "empty", 0)
    fake_study(tmp_path, "failed", 3, fail_all=True)
    assert main(["analyze", "--study", "empty", "--results-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "trials=0" in out and "best_score=nan" in out
    assert main(["analyze", "--study", "failed", "--results-dir", str(tmp_path), "--plots", str(tmp_path / "p")]) == 0
    out = capsys.readouterr().out
    assert out.count("FAIL") == 3 and "n_fail=3" in out
    assert main(["export", "--study", "failed", "--results-dir", str(tmp_path)]) == 2
    assert "has no completed trial to export" in capsys.readouterr().err


def test_analyze_of_a_missing_study_is_one_line(tmp_path, capsys):
    assert main(["analyze", "--study", "ghost", "--results-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "no study 'ghost'" in err and "Traceback" not in err


def test_compare_frame_one_row_per_study(tmp_path):
    from nas_meta.search.study import stored_config

    a, b = fake_study(tmp_path, "x", 4, seed=3), fake_study(tmp_path, "y", 4, seed=4)
    frame = compare_frame([(a, stored_config(a)), (b, stored_config(b))])
    assert list(frame["study"]) == ["x", "y"]
    assert list(frame["best"]) == [a.best_value, b.best_value]
    assert list(frame["space"]) == ["chain", "chain"]


def test_the_baseline_gap_is_reported_with_the_studys_numbers(tmp_path, capsys):
    from nas_meta.search.study import load_study

    code = main(
        [
            "search",
            "--space",
            "chain",
            "--algo",
            "protonet",
            "--preset",
            "smoke",
            "--trials",
            "3",
            "--baseline",
            "conv4",
            "--study",
            "b",
            "--results-dir",
            str(tmp_path / "r"),
            "--cache-dir",
            str(tmp_path / "c"),
        ]
    )
    assert code == 0
    out = capsys.readouterr().out
    study = load_study("b", f"sqlite:///{tmp_path}/r/b/study.db")
    base = next(t for t in study.trials if t.user_attrs.get("baseline") == "conv4")
    searched = [t for t in study.trials if "baseline" not in t.user_attrs and t.values]
    best = max(searched, key=lambda t: (t.values[0], -t.number))
    gap = 100 * (best.values[0] - base.values[0])
    line = next(x for x in out.splitlines() if x.startswith("baseline conv4"))
    assert line == (
        f"baseline conv4 (trial #{base.number}): {100 * base.values[0]:.1f}%, params 111.9k; "
        f"best searched (trial #{best.number}) {100 * best.values[0]:.1f}% ({gap:+.1f} points)"
    )


# A child that runs the CLI's main() as cli.py does, once the imports every command shares are done
# (a Ctrl-C during those is before any command runs).  SIGINT_IN_CALLBACK: while the tables are
# made, Ctrl-C arrives while Python runs a weakref callback, where a KeyboardInterrupt is dropped
# ("Exception ignored in ...") and the command would go on: what a Ctrl-C during the import of
# matplotlib for the plots met once in a while.
CHILD = r"""
import os, signal, sys, weakref

signal.signal(signal.SIGINT, signal.default_int_handler)  # a runner in the background ignores it
from nas_meta.cli import build_parser, main

build_parser()
if os.environ.get("SIGINT_IN_CALLBACK"):
    import nas_meta.analyze

    ranked = nas_meta.analyze.ranked_frame

    class Garbage:
        pass

    def callback(ref):
        os.kill(os.getpid(), signal.SIGINT)
        (lambda: None)()  # Python code: a Python signal handler runs here, inside the callback

    def ranked_frame(*args, **kwargs):
        garbage = Garbage()
        ref = weakref.ref(garbage, callback)
        del garbage  # the callback runs now, where an exception cannot propagate
        return ranked(*args, **kwargs)

    nas_meta.analyze.ranked_frame = ranked_frame
print("ready", flush=True)
sys.exit(main(sys.argv[1:]))
"""
INTERRUPTED = "nas-meta: interrupted; run the same command again to resume"


def _interrupted_analyze(results, plots: Path, when: float | str, err: Path) -> tuple[int, str, str]:
    """Run ``analyze`` with plots in a child and send it SIGINT ``when`` seconds after it started
    the command, or once its first table is out ("tables"), or once its first plot is on disk
    ("plotting"); with "callback" the child sends its own.  Returns (exit code, stdout, stderr)."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    if when == "callback":
        env["SIGINT_IN_CALLBACK"] = "1"
    argv = ["analyze", "--study", "run-*", "--results-dir", str(results), "--plots", str(plots)]
    with open(err, "w") as stderr:
        proc = subprocess.Popen(
            [sys.executable, "-c", CHILD, *argv], stdout=subprocess.PIPE, stderr=stderr, text=True, env=env, cwd=ROOT
        )
        try:
            assert proc.stdout is not None
            assert proc.stdout.readline() == "ready\n"
            if isinstance(when, float):
                time.sleep(when)
            elif when == "tables":
                line = "ready"
                while line and not line.startswith("## study"):
                    line = proc.stdout.readline()
            elif when == "plotting":
                deadline = time.monotonic() + 120
                while not (plots / "best_so_far.png").is_file() and proc.poll() is None and time.monotonic() < deadline:
                    time.sleep(0.005)
            if when != "callback":
                proc.send_signal(signal.SIGINT)
            out = proc.stdout.read()
            code = proc.wait(timeout=120)
        finally:
            if proc.poll() is None:
                proc.kill()
    return code, out, err.read_text()


def test_ctrl_c_stops_analyze_every_time(tmp_path):
    for seed, name in enumerate(("run-a", "run-b")):
        fake_study(tmp_path / "r", name, 12, seed=seed)
    points: list[float | str] = [0.05, "tables", "plotting", "callback"]
    with concurrent.futures.ThreadPoolExecutor(len(points)) as pool:
        runs = {
            when: pool.submit(_interrupted_analyze, tmp_path / "r", tmp_path / f"p{i}", when, tmp_path / f"{i}.err")
            for i, when in enumerate(points)
        }
    for when, run in runs.items():
        code, out, err = run.result()
        assert "Exception ignored" not in err and "Traceback" not in err, (when, err)
        assert code == 130, (when, code, err)
        lines = [line for line in err.splitlines() if line.strip() and not line.startswith("wrote ")]
        assert lines == [INTERRUPTED], (when, err)
    assert runs["callback"].result()[1] == ""  # stopped before the tables were printed
