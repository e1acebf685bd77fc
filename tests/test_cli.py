"""The command line as a user meets it: exit codes, files written, one-line errors."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import optuna
import pytest

from nas_meta.cli import main


def search_args(tmp_path: Path, *extra: str) -> list[str]:
    return [
        "search",
        "--preset",
        "smoke",
        "--results-dir",
        str(tmp_path / "results"),
        "--cache-dir",
        str(tmp_path / "cache"),
        *extra,
    ]


def read_trials(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_smoke_search_writes_the_study_and_resumes(tmp_path, capsys):
    assert main(search_args(tmp_path, "--space", "cell", "--algo", "maml", "--study", "s")) == 0
    out, err = capsys.readouterr()
    study_dir = tmp_path / "results" / "s"
    assert (study_dir / "study.db").is_file()
    assert json.loads((study_dir / "config.json").read_text())["learner"]["algo"] == "maml"
    first = read_trials(study_dir / "trials.csv")
    assert [r["state"] for r in first] == ["COMPLETE", "COMPLETE"]
    for row in first:
        assert 0.0 <= float(row["val_acc"]) <= 1.0
        assert int(row["params"]) > 0 and len(row["fingerprint"]) == 32
    assert (study_dir / "best" / "arch.json").is_file()
    assert "trial 2/2" in err  # progress display
    assert "best: trial #" in out and str(study_dir) in out

    # The same study with a larger budget resumes: the first trials are kept as they were.  (The
    # sampler, seeded as before, may first propose what it proposed then: those are duplicates,
    # kept in the table but not trained or counted.)
    assert main(search_args(tmp_path, "--space", "cell", "--algo", "maml", "--study", "s", "--trials", "3")) == 0
    second = read_trials(study_dir / "trials.csv")
    assert second[:2] == first
    assert sum(1 for r in second if r["state"] == "COMPLETE" and not r["duplicate_of"]) == 3

    # Asking again for what the study already holds runs nothing.
    capsys.readouterr()
    assert main(search_args(tmp_path, "--space", "cell", "--algo", "maml", "--study", "s", "--trials", "3")) == 0
    assert "already holds 3 trials" in capsys.readouterr().out
    storage = optuna.storages.RDBStorage(f"sqlite:///{study_dir / 'study.db'}")
    assert len(optuna.load_study(study_name="s", storage=storage).trials) == len(second)


def test_protonet_search_and_default_study_name(tmp_path):
    assert main(search_args(tmp_path, "--space", "chain", "--algo", "protonet")) == 0
    rows = read_trials(tmp_path / "results" / "chain-protonet-glyphs" / "trials.csv")
    assert len(rows) == 2 and all(r["state"] == "COMPLETE" for r in rows)


def test_resuming_with_other_settings_is_refused(tmp_path, capsys):
    assert main(search_args(tmp_path, "--space", "chain", "--study", "x", "--trials", "1")) == 0
    capsys.readouterr()
    assert main(search_args(tmp_path, "--space", "chain", "--study", "x", "--algo", "protonet")) == 2
    err = capsys.readouterr().err.strip()
    assert err == (
        "nas-meta: error: study 'x' was run with algo='maml', not 'protonet'; "
        "resume it with the same settings or choose another --study"
    )


@pytest.mark.parametrize(
    "extra, expected",
    [
        (["--space", "cel"], "unknown space 'cel'; choose from ["),
        (["--algo", "mamll"], "invalid choice: 'mamll' (choose from 'fomaml', 'maml', 'protonet')"),
        (["--dataset", "imagenet"], "unknown dataset 'imagenet'; choose from ["),
        (["--ways", "0"], "--ways must be a positive integer, got 0"),
        (["--shots", "-2"], "--shots must be a positive integer, got -2"),
        (["--trials", "0"], "--trials must be a positive integer, got 0"),
        (["--ways", "five"], "argument --ways: invalid int value: 'five'"),
        (["--device", "tpu"], "argument --device: unknown device 'tpu'; choose from ['auto', 'cpu', 'cuda'] or cuda:N"),
        (["--ways", "500"], "500"),  # more ways than the split has classes
        (["--storage", "redis://localhost"], "unsupported storage URL 'redis://localhost'"),
        (["--study", "../escape"], "bad study name '../escape'"),
    ],
)
def test_user_mistakes_are_one_line_exit_2_nothing_written(tmp_path, capsys, extra, expected):
    assert main(search_args(tmp_path, *extra)) == 2
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert expected in lines[0]
    assert "Traceback" not in err
    assert not (tmp_path / "results").exists()


def test_malformed_space_file_is_a_user_error(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("kind: cell\nops: [conv_3x3\n")  # unclosed list
    assert main(search_args(tmp_path, "--space", str(bad))) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "bad.yaml" in err and "Traceback" not in err
    assert not (tmp_path / "results").exists()


def test_spaces_lists_every_shipped_space_with_its_size(capsys):
    assert main(["spaces"]) == 0
    out = capsys.readouterr().out
    rows = {line.split()[0]: line.split() for line in out.splitlines()[1:]}
    assert {"cell", "chain", "mlp", "chain_recipe"} <= set(rows)
    for name in ("cell", "chain", "mlp"):
        assert int(rows[name][3].replace(",", "")) > 1 and rows[name][4] == "-"  # no training choices
    assert rows["chain_recipe"][4] == "augment,inner_lr,inner_steps,outer_lr,train_ways,weight_decay"


def test_help_exits_zero(capsys):
    assert main(["--help"]) == 0
    assert "search" in capsys.readouterr().out


def one_line_error(capsys, code: int) -> str:
    out = capsys.readouterr()
    assert code == 2, out
    lines = out.err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in out.err, out.err
    return lines[0]


def evaluate_args(tmp_path: Path, *extra: str) -> list[str]:
    return ["evaluate", "conv4", "--preset", "smoke", "--cache-dir", str(tmp_path / "cache"), *extra]


@pytest.mark.parametrize("command", ["search", "evaluate"])
@pytest.mark.parametrize("seed", ["-1", "4294967296"])
def test_seeds_outside_what_the_generators_take_are_refused_up_front(tmp_path, capsys, command, seed):
    args = search_args(tmp_path, "--seed", seed) if command == "search" else evaluate_args(tmp_path, "--seed", seed)
    line = one_line_error(capsys, main(args))
    assert line == f"nas-meta: error: --seed must be an integer from 0 to 4294967295 (2**32 - 1), got {seed}"
    assert list(tmp_path.iterdir()) == []  # nothing written: no results, no cache


@pytest.mark.parametrize("command", ["search", "evaluate"])
def test_a_gpu_of_several_is_parsed_and_refused_by_the_device_check(tmp_path, capsys, monkeypatch, command):
    import torch

    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)  # this machine: no CUDA
    args = search_args(tmp_path, "--device", "cuda:1") if command == "search" else evaluate_args(tmp_path)
    if command == "evaluate":
        args += ["--device", "cuda:1"]
    line = one_line_error(capsys, main(args))
    assert line == "nas-meta: error: --device cuda:1: no CUDA device is available here; choose from ['auto', 'cpu']"
    assert not (tmp_path / "results").exists()
    if command == "evaluate":
        assert list(tmp_path.iterdir()) == []  # refused before the dataset is generated into the cache


@pytest.mark.parametrize(
    "argv",
    [
        ["search", "--preset", "smoke", "--device", "gpu"],
        ["evaluate", "conv4", "--device", "gpu"],
        ["worker", "--study", "s", "--storage", "sqlite:///s.db", "--device", "gpu"],
    ],
)
def test_an_unknown_device_name_is_one_line_naming_the_choices(tmp_path, capsys, monkeypatch, argv):
    monkeypatch.chdir(tmp_path)
    line = one_line_error(capsys, main(argv))
    assert line.endswith("argument --device: unknown device 'gpu'; choose from ['auto', 'cpu', 'cuda'] or cuda:N")
    assert list(tmp_path.iterdir()) == []


def test_devices_naming_a_missing_gpu_is_answered_about_devices(tmp_path, capsys, monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    line = one_line_error(capsys, main(search_args(tmp_path, "--devices", "cuda:0")))
    assert line == "nas-meta: error: --devices cuda:0: no CUDA device is available here; choose from ['cpu']"
    assert not (tmp_path / "results").exists()


@pytest.mark.parametrize("home", ["", None])
def test_no_home_and_no_xdg_cache_asks_for_a_cache_dir(tmp_path, capsys, monkeypatch, home):
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    if home is None:
        monkeypatch.delenv("HOME")
    else:
        monkeypatch.setenv("HOME", home)
    monkeypatch.chdir(tmp_path)
    assert main(["search", "--help"]) == 0  # the help's default is text, not a lookup
    assert "~/.cache/nas_meta" in capsys.readouterr().out
    line = one_line_error(capsys, main(["search", "--preset", "smoke", "--results-dir", str(tmp_path / "r")]))
    state = "empty" if home == "" else "unset"
    assert line == (
        f"nas-meta: error: HOME is {state} and XDG_CACHE_HOME is unset: no folder for the dataset cache; "
        "give --cache-dir DIR or set XDG_CACHE_HOME"
    )
    assert list(tmp_path.iterdir()) == []


def test_a_cache_dir_or_xdg_cache_home_needs_no_home(tmp_path, monkeypatch):
    from nas_meta.cli import build_parser
    from nas_meta.cli.search import search_config

    monkeypatch.setenv("HOME", "")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    parse = build_parser().parse_args
    assert search_config(parse(["search", "--preset", "smoke"])).data.cache_dir == str(tmp_path / "xdg" / "nas_meta")
    monkeypatch.delenv("XDG_CACHE_HOME")
    given = search_config(parse(["search", "--preset", "smoke", "--cache-dir", str(tmp_path / "c")]))
    assert given.data.cache_dir == str(tmp_path / "c")


@pytest.mark.parametrize("url", ["sqlite://", "sqlite:///:memory:"])
def test_an_in_memory_storage_is_refused_naming_what_to_give(tmp_path, capsys, url):
    line = one_line_error(capsys, main(search_args(tmp_path, "--storage", url)))
    assert line == (
        f"nas-meta: error: --storage {url!r} is an in-memory database: the study would vanish when this process "
        "ends (no resume, no workers, no export); give a file, e.g. sqlite:///results/study.db, "
        "or leave --storage out for the study folder's own"
    )
    assert list(tmp_path.iterdir()) == []
    for argv in (["worker", "--study", "s", "--storage", url], ["analyze", "--study", "s", "--storage", url]):
        assert "is an in-memory database" in one_line_error(capsys, main(argv))
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "suffix, magic", [(".svg", (b"<?xml", b"<svg")), (".pdf", (b"%PDF",)), (".png", (b"\x89PNG\r\n\x1a\n",))]
)
def test_a_drawn_space_is_in_the_format_its_suffix_names(tmp_path, capsys, suffix, magic):
    out = tmp_path / f"space{suffix}"
    assert main(["spaces", "--show", "chain", "--out", str(out)]) == 0
    assert out.read_bytes().startswith(magic)


@pytest.mark.parametrize("name", ["space.txt", "space"])
def test_a_picture_suffix_that_names_no_format_is_refused(tmp_path, capsys, name):
    out = str(tmp_path / name)
    line = one_line_error(capsys, main(["spaces", "--show", "chain", "--out", out]))
    assert line == f"nas-meta: error: --out {out!r}: unsupported picture suffix; choose from .png, .svg, .pdf"
    assert list(tmp_path.iterdir()) == []


def test_a_search_whose_every_trial_failed_names_only_the_files_it_wrote(tmp_path, capsys, monkeypatch):
    from nas_meta.learners import Diverged
    from nas_meta.search import objective

    def diverge(*args, **kwargs):
        raise Diverged("loss is nan")

    monkeypatch.setattr(objective, "meta_train", diverge)
    assert main(search_args(tmp_path, "--space", "chain", "--study", "f")) == 0
    study = tmp_path / "results" / "f"
    assert not (study / "best" / "arch.json").exists()
    [line] = [line for line in capsys.readouterr().out.splitlines() if line.startswith("results in")]
    assert line == f"results in {study}/ (trials.csv, config.json)"


def test_a_ctrl_c_that_python_drops_in_a_garbage_collector_callback_still_stops_the_command(monkeypatch, capsys):
    import signal
    import time
    import weakref

    from nas_meta.cli import export as export_cli

    if signal.getsignal(signal.SIGINT) is not signal.default_int_handler:
        pytest.skip("Ctrl-C is not Python's default here (a runner that handles or ignores it)")
    finished = []

    def evaluate(args):
        class Held:
            pass

        def dropped(_ref):
            raise KeyboardInterrupt  # where Python's handler can land: Python prints it and drops it

        held = Held()
        ref = weakref.ref(held, dropped)
        del held  # the callback runs here
        for _ in range(400):  # the rest of the command: 2 s that a Ctrl-C must cut short
            time.sleep(0.005)
        finished.append(ref)
        return 0

    monkeypatch.setattr(export_cli, "cmd_evaluate", evaluate)
    assert main(["evaluate", "conv4"]) == 130
    assert not finished
    err = capsys.readouterr().err
    assert "interrupted" in err and "Exception ignored" not in err


def test_ctrl_c_while_the_libraries_load_is_one_line_and_exit_130():
    import signal
    import subprocess
    import sys
    import time

    root = Path(__file__).resolve().parent.parent
    # SIGINT is reset to Python's default in the child (a runner in the background ignores it).
    # The child says when its interpreter is up (Python's own Ctrl-C handler installed), then runs
    # cli.py as `python cli.py spaces` would: a signal before that would kill a bare interpreter.
    start = "import sys, runpy; print('up', flush=True); sys.argv = ['cli.py', 'spaces']; "
    start += "runpy.run_path('cli.py', run_name='__main__')"
    child = subprocess.Popen(
        [sys.executable, "-c", start],
        stderr=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=root,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    assert child.stdout is not None and child.stdout.readline() == "up\n"
    time.sleep(0.2)  # torch, pandas and optuna take seconds to import
    child.send_signal(signal.SIGINT)
    err = child.communicate(timeout=120)[1]
    assert child.returncode == 130, err
    assert "Traceback" not in err and err.strip().splitlines()[-1].startswith("nas-meta: interrupted"), err
