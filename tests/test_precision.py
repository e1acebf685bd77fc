"""``--amp``: the precision rule, which trainings it reaches, and the study that keeps it."""

from __future__ import annotations

import io
import json

import optuna
import pytest
import torch

import nas_meta.learners.train as train_module
from nas_meta.config import RunConfig, make_config
from nas_meta.errors import ConfigError, StudyError
from nas_meta.learners.train import candidate_precision
from nas_meta.record import StudyAttr
from nas_meta.search.runner import run_search
from nas_meta.search.study import load_study, stored_config

CPU = torch.device("cpu")


def _host(monkeypatch, bf16: bool) -> None:
    """Make this host a CPU with (or without) bf16 instructions, to nas_meta."""
    monkeypatch.setattr(train_module, "cpu_has_bf16", lambda: bf16)


@pytest.mark.parametrize(
    "amp, bf16, device, kind, expected",
    [
        ("auto", True, "cpu", "chain", "bf16"),
        ("auto", False, "cpu", "chain", "fp32"),
        ("auto", True, "cpu", "cell", "fp32"),  # measured slower in bf16
        ("auto", True, "cpu", None, "fp32"),
        ("auto", True, "cuda", "chain", "fp32"),  # the checks behind "auto" ran on CPUs
        ("off", True, "cpu", "chain", "fp32"),
        ("on", True, "cpu", "chain", "bf16"),
        ("on", True, "cpu", "cell", "bf16"),  # asked for: every kind
    ],
)
def test_auto_is_bf16_only_on_a_cpu_that_reports_it(monkeypatch, amp, bf16, device, kind, expected):
    monkeypatch.setattr(train_module, "cpu_has_bf16", lambda: bf16)
    assert candidate_precision(amp, torch.device(device), kind=kind) == expected


def test_on_without_bf16_is_refused_and_auto_falls_back(monkeypatch):
    monkeypatch.setattr(train_module, "cpu_has_bf16", lambda: False)
    with pytest.raises(ConfigError, match="--amp needs bf16 instructions"):
        candidate_precision("on", CPU)
    assert candidate_precision("auto", CPU, kind="chain") == "fp32"


def test_amp_modes_and_the_old_switch():
    assert make_config("smoke").learner.amp == "auto"
    # Configs stored before the modes said true/false.
    assert RunConfig.from_dict({"learner": {"amp": True}}).learner.amp == "on"
    assert RunConfig.from_dict({"learner": {"amp": False}}).learner.amp == "off"
    with pytest.raises(ConfigError, match=r"unknown --amp 'fast'; choose from \['auto', 'on', 'off'\]"):
        make_config("smoke", learner={"amp": "fast"})


def _smoke(tmp_path, name, **search) -> RunConfig:
    return make_config(
        "smoke",
        data={"cache_dir": str(tmp_path / "cache")},
        learner={"algo": "protonet"},
        search={"space": "chain", "study": name, **search},
        results_dir=str(tmp_path / "results"),
    )


def test_auto_trains_candidates_in_bf16_and_the_race_in_fp32_on_a_bf16_cpu(monkeypatch, tmp_path, outer_steps):
    steps = outer_steps
    _host(monkeypatch, bf16=True)
    cfg = _smoke(tmp_path, "bf16", trials=2, race=1, race_blocks=1, race_iterations=3, race_episodes=4)
    outcome = run_search(cfg, stream=io.StringIO())
    candidate_steps = 2 * cfg.learner.iterations
    assert steps[:candidate_steps] == [torch.bfloat16] * candidate_steps
    # The race (the finalist and Conv-4, 3 steps each) trains final models: fp32.
    assert steps[candidate_steps:] == [None] * 6
    assert stored_config(outcome.study).search.precision == "bf16"
    saved = json.loads((outcome.directory / "config.json").read_text())
    assert saved["search"]["precision"] == "bf16" and saved["learner"]["amp"] == "auto"


def test_auto_trains_candidates_in_fp32_on_a_cpu_without_bf16(monkeypatch, tmp_path, outer_steps):
    steps = outer_steps
    _host(monkeypatch, bf16=False)
    cfg = _smoke(tmp_path, "fp32", trials=2, race=0)
    outcome = run_search(cfg, stream=io.StringIO())
    assert steps == [None] * (2 * cfg.learner.iterations)
    assert stored_config(outcome.study).search.precision == "fp32"


def test_amp_on_trains_the_race_in_bf16_too(monkeypatch, tmp_path, outer_steps):
    steps = outer_steps
    _host(monkeypatch, bf16=True)
    cfg = _smoke(tmp_path, "on", trials=1, race=1, race_blocks=1, race_iterations=2, race_episodes=4)
    run_search(cfg.replace(learner={"amp": "on"}), stream=io.StringIO())
    assert steps == [torch.bfloat16] * (cfg.learner.iterations + 4)


def test_a_study_keeps_its_precision_across_a_resume(monkeypatch, tmp_path, outer_steps):
    steps = outer_steps
    _host(monkeypatch, bf16=False)
    cfg = _smoke(tmp_path, "keep", trials=1, race=0)
    run_search(cfg, stream=io.StringIO())
    # Resumed on a bf16 host, an fp32 study's next candidate trains in fp32, and the user is told.
    monkeypatch.setattr(train_module, "cpu_has_bf16", lambda: True)
    steps.clear()
    out = io.StringIO()
    resumed = run_search(cfg.replace(search={"trials": 2}), stream=out)
    assert steps == [None] * cfg.learner.iterations
    assert "keeps precision='fp32' from its first run (not 'bf16')" in out.getvalue()
    assert stored_config(resumed.study).search.precision == "fp32"


def test_auto_trains_cell_candidates_in_fp32_on_a_bf16_cpu(monkeypatch, tmp_path, outer_steps):
    steps = outer_steps
    _host(monkeypatch, bf16=True)
    cfg = _smoke(tmp_path, "cell", trials=1, race=0).replace(search={"space": "cell"})
    outcome = run_search(cfg, stream=io.StringIO())
    assert steps == [None] * cfg.learner.iterations
    assert stored_config(outcome.study).search.precision == "fp32"


def test_a_bf16_study_is_not_resumed_where_bf16_is_missing(monkeypatch, tmp_path, outer_steps):
    steps = outer_steps
    _host(monkeypatch, bf16=True)
    cfg = _smoke(tmp_path, "moved", trials=1, race=0)
    run_search(cfg, stream=io.StringIO())
    monkeypatch.setattr(train_module, "cpu_has_bf16", lambda: False)
    steps.clear()
    with pytest.raises(StudyError) as info:
        run_search(cfg.replace(search={"trials": 2}), stream=io.StringIO())
    message = str(info.value)
    assert "study 'moved' trains its candidates in bf16" in message and "\n" not in message
    assert steps == []  # nothing trained


def test_a_study_stored_before_the_precision_resumes_in_fp32(monkeypatch, tmp_path, outer_steps):
    steps = outer_steps
    _host(monkeypatch, bf16=True)
    cfg = _smoke(tmp_path, "old", trials=1, race=0)
    outcome = run_search(cfg.replace(learner={"amp": "off"}), stream=io.StringIO())
    # Rewrite the stored config as an earlier version wrote it: amp a switch, no precision.
    study = outcome.study
    doc = study.user_attrs[StudyAttr.CONFIG]
    doc["learner"]["amp"] = False
    del doc["search"]["precision"]
    study.set_user_attr(StudyAttr.CONFIG, doc)
    assert stored_config(load_study("old", outcome.storage)).search.precision == "fp32"
    steps.clear()
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    run_search(cfg.replace(search={"trials": 2}), stream=io.StringIO())
    assert steps == [None] * cfg.learner.iterations


def test_the_cli_option(capsys):
    from nas_meta.cli import build_parser
    from nas_meta.cli.search import search_config

    parse = build_parser().parse_args
    amp = {
        tuple(argv): search_config(parse(["search", "--preset", "smoke", *argv])).learner.amp
        for argv in ([], ["--amp"], ["--amp", "off"], ["--amp", "on"])
    }
    assert amp == {(): "auto", ("--amp",): "on", ("--amp", "off"): "off", ("--amp", "on"): "on"}
    with pytest.raises(SystemExit) as info:
        parse(["search", "--amp", "fast"])
    assert info.value.code == 2
    assert "argument --amp: invalid choice: 'fast' (choose from 'auto', 'on', 'off')" in capsys.readouterr().err
