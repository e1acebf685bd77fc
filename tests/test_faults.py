"""The fault suite: a search survives diverging, out-of-memory and slow candidates, SIGKILL and
Ctrl-C, and damaged files; nothing finished is lost and the same command resumes."""

from __future__ import annotations

import io
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time

import optuna
import pytest
import torch
from optuna.trial import TrialState

from nas_meta.cli import main
from nas_meta.config import make_config
from nas_meta.record import counted_trials
from nas_meta.search import objective as objective_module
from nas_meta.search.runner import run_search


def sinusoid(tmp_path, **search):
    return make_config(
        "smoke",
        data={"dataset": "sinusoid", "cache_dir": str(tmp_path / "cache")},
        search={"space": "mlp", "study": "f", **search},
        results_dir=str(tmp_path / "results"),
    )


def test_out_of_memory_fails_the_candidate_and_the_search_goes_on(tmp_path, monkeypatch):
    real, calls = objective_module.meta_train, []

    def oom_once(*args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real(*args, **kwargs)

    monkeypatch.setattr(objective_module, "meta_train", oom_once)
    study = run_search(sinusoid(tmp_path, trials=3), stream=io.StringIO()).study
    assert [t.state for t in study.trials] == [TrialState.FAIL, TrialState.COMPLETE, TrialState.COMPLETE]
    assert study.trials[0].user_attrs["failure"] == "out of memory: CUDA out of memory. Tried to allocate 2.00 GiB"


def test_trial_timeout_fails_slow_candidates_with_the_reason(tmp_path):
    outcome = run_search(sinusoid(tmp_path, trials=2, trial_timeout=1e-6), stream=io.StringIO())
    assert [t.state for t in outcome.study.trials] == [TrialState.FAIL, TrialState.FAIL]
    for t in outcome.study.trials:
        assert t.user_attrs["failure"].startswith("timeout: exceeded --trial-timeout 1e-06s at step 1/")
    assert len(counted_trials(outcome.study)) == 2  # the candidate's fault: it uses the budget


def _cmd(tmp_path, iterations: int, trials: int) -> list[str]:
    return [
        sys.executable,
        "-m",
        "nas_meta",
        "search",
        "--preset",
        "smoke",
        "--space",
        "mlp",
        "--dataset",
        "sinusoid",
        "--study",
        "k",
        "--trials",
        str(trials),
        "--iterations",
        str(iterations),
        "--results-dir",
        str(tmp_path / "results"),
        "--cache-dir",
        str(tmp_path / "cache"),
    ]


def _wait_for_running(tmp_path, proc, number: int) -> None:
    """Until trial ``number`` is RUNNING with its architecture chosen.  Reads the SQLite file
    read-only: opening it with optuna while the search creates its tables would race."""
    db = tmp_path / "results" / "k" / "study.db"
    query = (
        "select 1 from trials t join trial_user_attributes a on a.trial_id = t.trial_id "
        "where t.number = ? and t.state = 'RUNNING' and a.key = 'arch'"
    )
    deadline = time.time() + 180
    while time.time() < deadline:
        if db.exists():
            try:
                with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1) as con:
                    if con.execute(query, (number,)).fetchone():
                        return
            except sqlite3.Error:
                pass  # tables not there yet
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.2)
    proc.kill()
    pytest.fail("the search never started its trial")


@pytest.mark.slow
def test_sigkill_mid_trial_then_the_same_command_finishes_the_study(tmp_path):
    cmd = _cmd(tmp_path, iterations=800, trials=2)
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _wait_for_running(tmp_path, proc, number=0)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()

    rerun = subprocess.run(_cmd(tmp_path, iterations=800, trials=2), capture_output=True, text=True, timeout=900)
    assert rerun.returncode == 0, rerun.stderr
    db = tmp_path / "results" / "k" / "study.db"
    study = optuna.load_study(study_name="k", storage=f"sqlite:///{db}")
    assert not study.get_trials(states=(TrialState.RUNNING,))
    killed = study.trials[0]
    assert killed.state == TrialState.FAIL and "died" in killed.system_attrs["interrupted"]
    retried = [t for t in study.trials if t.system_attrs.get("failed_trial") == 0]
    assert len(retried) == 1 and retried[0].state == TrialState.COMPLETE
    assert retried[0].params == killed.params  # the interrupted candidate itself is run again
    assert len(counted_trials(study)) == 2


@pytest.mark.slow
def test_ctrl_c_prints_the_summary_exits_130_and_the_rerun_resumes(tmp_path):
    first = subprocess.Popen(
        _cmd(tmp_path, iterations=800, trials=2), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    _wait_for_running(tmp_path, first, number=0)
    first.send_signal(signal.SIGINT)
    out, err = first.communicate(timeout=120)
    assert first.returncode == 130, err
    assert "interrupted; run the same command again to resume" in err
    assert "Traceback" not in err
    assert "interrupted at step" in out  # the summary table, with the interrupted trial's note
    db = tmp_path / "results" / "k" / "study.db"
    study = optuna.load_study(study_name="k", storage=f"sqlite:///{db}")
    assert study.trials[0].state == TrialState.FAIL
    assert study.trials[0].user_attrs["interrupted"].startswith("interrupted at step")

    rerun = subprocess.run(_cmd(tmp_path, iterations=800, trials=2), capture_output=True, text=True, timeout=900)
    assert rerun.returncode == 0, rerun.stderr
    study = optuna.load_study(study_name="k", storage=f"sqlite:///{db}")
    assert len(counted_trials(study)) == 2
    assert [t.params for t in study.trials if t.system_attrs.get("failed_trial") == 0] == [study.trials[0].params]


@pytest.mark.parametrize(
    "content", ['{"format": "nas_meta.arch", "version": 1, "nodes": [', "", "[]", '{"version": 99}']
)
def test_damaged_architecture_files_are_one_line_naming_the_file(tmp_path, capsys, content):
    bad = tmp_path / "arch.json"
    bad.write_text(content)
    assert main(["evaluate", str(bad), "--preset", "smoke", "--cache-dir", str(tmp_path / "cache")]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "arch.json" in err and "Traceback" not in err
    assert (
        main(
            [
                "search",
                "--preset",
                "smoke",
                "--enqueue",
                str(bad),
                "--results-dir",
                str(tmp_path / "r"),
                "--cache-dir",
                str(tmp_path / "cache"),
            ]
        )
        == 2
    )
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "arch.json" in err
    assert not (tmp_path / "r").exists()


def test_password_never_reaches_files_or_messages(tmp_path, capsys):
    url = "postgresql://bob:hunter2@127.0.0.1:1/nas"  # nothing listens on port 1
    assert (
        main(
            [
                "search",
                "--preset",
                "smoke",
                "--storage",
                url,
                "--results-dir",
                str(tmp_path / "r"),
                "--cache-dir",
                str(tmp_path / "cache"),
            ]
        )
        == 2
    )
    err = capsys.readouterr().err
    assert "hunter2" not in err and "bob:***@" in err
    for path in tmp_path.rglob("*"):
        if path.is_file() and path.suffix in (".json", ".csv", ".md", ".log"):
            assert "hunter2" not in path.read_text()


def test_a_write_killed_midway_leaves_the_old_file_and_no_debris(tmp_path):
    from nas_meta.fileio import atomic_write, atomic_write_json

    target = tmp_path / "card.json"
    atomic_write_json(target, {"version": 1})

    def dies_halfway(f):
        f.write(b'{"version": 2, "trunc')
        raise KeyboardInterrupt  # the process is stopped while writing

    with pytest.raises(KeyboardInterrupt):
        atomic_write(target, dies_halfway)
    assert json.loads(target.read_text()) == {"version": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["card.json"]  # no temporary file left behind


def test_a_truncated_dataset_cache_is_rebuilt_not_used(tmp_path):
    from nas_meta.data import load_dataset

    cfg = make_config("smoke", data={"cache_dir": str(tmp_path)}).data
    first = load_dataset(cfg)
    [cache] = list(tmp_path.glob("*.pt"))
    cache.write_bytes(cache.read_bytes()[: cache.stat().st_size // 2])
    again = load_dataset(cfg)
    assert torch.equal(again.images, first.images)
    assert torch.load(cache, weights_only=True) is not None  # the rebuilt cache is whole again
