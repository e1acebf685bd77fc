"""A study resumes only on the space it started with: the parsed space is recorded at creation, so
an edit that changes what is searched is refused, naming it, and a comment edit is no change."""

from __future__ import annotations

import io
import sqlite3
from pathlib import Path

import pytest

from nas_meta.cli import main
from nas_meta.config import RunConfig, make_config
from nas_meta.errors import StudyError
from nas_meta.record import StudyAttr, counted_trials
from nas_meta.search.runner import run_search, run_worker
from nas_meta.search.study import load_study, space_record
from nas_meta.spaces import load_space

SPACE = "kind: mlp\ndepth: [1, 2]\nwidth: [16, 32, 64]\n"


def cfg_for(tmp_path: Path, trials: int) -> RunConfig:
    return make_config(
        "smoke",
        data={"dataset": "sinusoid", "cache_dir": str(tmp_path / "cache")},
        search={"space": str(tmp_path / "space.yaml"), "study": "s", "trials": trials},
        results_dir=str(tmp_path / "results"),
    ).replace(learner={"iterations": 2, "eval_every": 2})


@pytest.fixture
def started(tmp_path):
    (tmp_path / "space.yaml").write_text(SPACE)
    outcome = run_search(cfg_for(tmp_path, 1), stream=io.StringIO())
    assert len(counted_trials(outcome.study)) == 1
    return tmp_path, outcome.storage


def test_the_study_records_the_parsed_space(started):
    tmp_path, url = started
    stored = load_study("s", url).user_attrs[StudyAttr.SPACE]
    assert stored == space_record(load_space(tmp_path / "space.yaml"))
    assert stored["kind"] == "mlp" and stored["settings"]["width"] == [16, 32, 64]


def test_a_comment_or_a_reformatting_still_resumes(started):
    tmp_path, _ = started
    (tmp_path / "space.yaml").write_text(
        "# widths of the hidden layers\nkind: mlp\nwidth: [16,  32, 64]\ndepth:\n  - 1\n  - 2\n"
    )
    outcome = run_search(cfg_for(tmp_path, 2), stream=io.StringIO())
    assert len(counted_trials(outcome.study)) == 2


def test_a_changed_option_is_refused_naming_it_and_nothing_runs(started, capsys):
    tmp_path, url = started
    (tmp_path / "space.yaml").write_text(SPACE.replace("[16, 32, 64]", "[16, 32]"))
    expected = (
        "study 's': the space's choice 'width' was [16, 32, 64] when the study started, now [16, 32]; "
        "resume with the original file or choose another --study"
    )
    with pytest.raises(StudyError) as refused:
        run_search(cfg_for(tmp_path, 2), stream=io.StringIO())
    assert str(refused.value) == expected
    with pytest.raises(StudyError, match="choice 'width' was"):
        run_worker("s", url)  # a worker joining it reads the same file
    assert len(load_study("s", url).trials) == 1
    # The command line: one line, exit 2.
    argv = ["worker", "--study", "s", "--storage", url, "--cache-dir", str(tmp_path / "cache")]
    assert main(argv) == 2
    assert capsys.readouterr().err == f"nas-meta: error: {expected}\n"


def test_a_new_fixed_setting_and_a_new_training_choice_are_named(started):
    tmp_path, _ = started
    (tmp_path / "space.yaml").write_text(SPACE + "activation: tanh\n")
    with pytest.raises(StudyError, match="the space's setting 'activation' was \\['relu'\\] .*, now \\['tanh'\\];"):
        run_search(cfg_for(tmp_path, 2), stream=io.StringIO())
    (tmp_path / "space.yaml").write_text(SPACE + "recipe:\n  outer_lr: [0.001, 0.01]\n")
    with pytest.raises(StudyError, match="training choice 'outer_lr' was absent when the study started, now"):
        run_search(cfg_for(tmp_path, 2), stream=io.StringIO())


def test_a_study_from_before_the_record_resumes_unchecked(started):
    tmp_path, url = started
    with sqlite3.connect(url[len("sqlite:///") :]) as db:
        db.execute("delete from study_user_attributes where key = ?", (StudyAttr.SPACE.value,))
    assert StudyAttr.SPACE not in load_study("s", url).user_attrs
    (tmp_path / "space.yaml").write_text(SPACE + "activation: tanh\n")
    outcome = run_search(cfg_for(tmp_path, 2), stream=io.StringIO())
    assert len(counted_trials(outcome.study)) == 2
    assert StudyAttr.SPACE not in outcome.study.user_attrs  # nothing to say what it started with
