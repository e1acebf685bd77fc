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

    # The same study with a larger budget resumes: the first trials are kept as they were.
    assert main(search_args(tmp_path, "--space", "cell", "--algo", "maml", "--study", "s", "--trials", "3")) == 0
    second = read_trials(study_dir / "trials.csv")
    assert len(second) == 3
    assert second[:2] == first

    # Asking again for what the study already holds runs nothing.
    capsys.readouterr()
    assert main(search_args(tmp_path, "--space", "cell", "--algo", "maml", "--study", "s", "--trials", "3")) == 0
    assert "already holds 3 trials" in capsys.readouterr().out
    storage = optuna.storages.RDBStorage(f"sqlite:///{study_dir / 'study.db'}")
    assert len(optuna.load_study(study_name="s", storage=storage).trials) == 3


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
        (["--device", "tpu"], "invalid choice: 'tpu'"),
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
    assert {"cell", "chain", "mlp"} <= set(rows)
    for name in ("cell", "chain", "mlp"):
        assert int(rows[name][-1].replace(",", "")) > 1


def test_help_exits_zero(capsys):
    assert main(["--help"]) == 0
    assert "search" in capsys.readouterr().out
