"""bench/search_efficiency.py's table: searches are paired with the baseline's of the same seed and budget."""

from __future__ import annotations

import importlib
from pathlib import Path
from types import ModuleType

import pytest

BENCH = Path(__file__).resolve().parent.parent / "bench"


@pytest.fixture
def bench(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> ModuleType:
    monkeypatch.syspath_prepend(str(BENCH.parent))  # the repository: bench is its package
    module = importlib.import_module("bench.search_efficiency")
    monkeypatch.setattr(module, "RESULTS", tmp_path)
    # The table reads the committed records: here, a folder of the test's own.
    monkeypatch.setattr(importlib.import_module("bench.records"), "ROOT", tmp_path / "records")
    return module


def save(doc: dict) -> None:
    """Write a row as the bench writes it: a record under results/records/search_efficiency/."""
    records = importlib.import_module("bench.records")
    name = f"{doc['space']}-{doc['algo']}-{doc['label']}-s{doc['seed']}"
    records.write_record("search_efficiency", name, doc, command="test", seed=doc["seed"], cpu_seconds=0.0)


def saved(label: str, seed: int) -> dict:
    records = importlib.import_module("bench.records")
    return next(
        r["figures"]
        for r in records.read_records("search_efficiency")
        if r["figures"]["label"] == label and r["figures"]["seed"] == seed
    )


def write(bench: ModuleType, variant: str, seed: int, budget: float, score: float, ci95: float | None = 0.01) -> None:
    name = bench.label(variant, budget)
    reference = {"score": score, "steps": 600, "val_episodes": 400, **({"ci95": ci95} if ci95 is not None else {})}
    doc = {
        "variant": variant,
        "label": name,
        "seed": seed,
        "budget_cpu_s": budget,
        "trials": 10,
        "screened": 0,
        "pick": {"val": 0.8},
        "reference": reference,
        "derived": None,
        "space": "cell",
        "algo": "protonet",
    }
    save(doc)


def test_searches_at_another_budget_are_kept_and_paired_apart(
    bench: ModuleType, capsys: pytest.CaptureFixture[str]
) -> None:
    assert bench.label("darts", bench.BUDGET) == "darts"
    assert bench.label("darts", 2000) == "darts-b2000"  # a valid study name: letters, digits, '-', '_'
    write(bench, "tpe", 0, 600, 0.80)
    write(bench, "tpe_supernet", 0, 600, 0.82)
    write(bench, "tpe", 0, 2000, 0.85)
    write(bench, "darts", 0, 2000, 0.70, ci95=None)  # a record without the CI (written before it was kept)
    assert bench.table("tpe", "cell", "protonet") == 0
    out = capsys.readouterr().out.splitlines()
    rows = {line.split(" | ")[0].strip("| "): line for line in out if line.startswith("| ") and "---" not in line}
    assert list(rows)[1:] == ["tpe", "tpe_supernet", "tpe-b2000", "darts-b2000"]  # by budget, then variant
    assert "| 82.00 (82.0 ± 1.0) |" in rows["tpe_supernet"]  # mean (per seed ± the reference's CI)
    assert "+2.00" in rows["tpe_supernet"]  # against tpe at 600 CPU s, not at 2000
    assert "-15.00" in rows["darts-b2000"] and "(70.0)" in rows["darts-b2000"]  # against tpe-b2000
    # errors over the baseline's: (1 - 0.82) / (1 - 0.80) and (1 - 0.70) / (1 - 0.85)
    assert out[-1] == "tpe_supernet_vs_tpe=0.900 darts-b2000_vs_tpe-b2000=2.000"


def test_darts_alphas_summarise_how_decisive_the_relaxation_is(
    bench: ModuleType, capsys: pytest.CaptureFixture[str]
) -> None:
    import math

    import torch

    normal = torch.tensor([[0.0, 0.0, 0.0, 0.0], [1.0, 0.5, 0.0, 0.0], [0.0, 0.0, 0.2, -0.3]])
    weights = {"backbone.alphas.normal": normal, "backbone.stem.weight": torch.ones(3)}
    state = {"learner": weights, "record": {"steps": 50}}
    checkpoint = bench.task_dir("cell", "protonet") / "studies" / "darts-b2000-s0" / "supernet.pt"
    checkpoint.parent.mkdir(parents=True)
    torch.save(state, checkpoint)
    summary = bench.darts_alphas(checkpoint)
    assert list(summary) == ["normal"]  # the network's weights are not alphas
    a = summary["normal"]
    assert (a["edges"], a["ops"], a["steps"]) == (3, 4, 50)
    assert a["max_weight"] == pytest.approx(math.e / (math.e + math.exp(0.5) + 2))  # edge 1, op 0
    assert a["median_gap"] == pytest.approx(0.2)  # gaps 0, 0.5, 0.2
    assert a["max_abs"] == 1.0
    # the table prints it under the search it belongs to
    write(bench, "tpe", 0, 2000, 0.85)
    write(bench, "darts", 0, 2000, 0.70)
    write(bench, "darts", 0, 600, 0.70)  # no checkpoint: no line
    assert bench.table("tpe", "cell", "protonet") == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if "alphas" in line]
    assert lines == [
        "darts-b2000 seed 0: normal alphas after 50 steps: largest op weight 0.4269 (uniform 0.2500), "
        "median top-2 gap 0.2000, largest |alpha| 1.0000 over 3 edges x 4 ops"
    ]


def test_a_search_whose_budget_ran_out_before_any_trial_is_a_row_without_a_pick(
    bench: ModuleType, capsys: pytest.CaptureFixture[str]
) -> None:
    write(bench, "tpe", 0, 600, 0.80)
    write(bench, "tpe", 1, 600, 0.70)
    write(bench, "darts", 0, 600, 0.75)
    doc = saved("darts", 0) | {"seed": 1, "trials": 0, "supernet_cpu_s": 538}
    doc |= {"pick": None, "reference": None}
    doc["derived"] = {"number": 0, "val": None, "is_pick": False, "params": 28_256, "reference": {"score": 0.5}}
    save(doc)
    assert bench.table("tpe", "cell", "protonet") == 0
    out = capsys.readouterr().out.splitlines()
    darts = next(line for line in out if line.startswith("| darts |"))
    # the mean and the paired difference are of seed 0 only; seed 1 says why it has none
    assert "| 75.00 (75.0 ± 1.0, no pick: no trial completed) | -5.00 |" in darts
    assert out[-1] == "darts_vs_tpe=1.250"
    assert (
        "darts seed 1: the weight-sharing network's own architecture (trial #0, 28,256 params) was stopped by "
        "the budget before it finished training in the search; 50.00% at the reference budget; its network "
        "trained for 538 of the 600 CPU s" in out
    )


def test_a_race_that_picked_the_baseline_is_a_row_with_its_reference_and_no_search_score(
    bench: ModuleType, capsys: pytest.CaptureFixture[str]
) -> None:
    write(bench, "random", 0, 600, 0.60)
    write(bench, "tpe_crn_race", 0, 600, 0.57)
    write(bench, "tpe_crn_race", 1, 600, 0.65)
    doc = saved("tpe_crn_race", 0)
    doc["pick"] = {"val": None, "baseline": "conv4", "number": None}  # Conv-4 won the race
    doc["search_cpu_s"] = 600.0
    save(doc)
    assert bench.table("random", "cell", "protonet") == 0
    out = capsys.readouterr().out.splitlines()
    row = next(line for line in out if line.startswith("| tpe_crn_race |"))
    # the search score is seed 1's candidate's alone; seed 0's reference is Conv-4's, and says so
    assert "| 80.0 | 61.00 (57.0 ± 1.0 conv4, 65.0 ± 1.0) | -3.00 |" in row
    # and the run's own line says so (it crashed on the baseline's missing search score)
    assert bench.summary_line("tpe_crn_race", 0, doc) == (
        "tpe_crn_race seed 0: 10 trials in 600 CPU s, the race picked conv4, reference 57.00%"
    )


def test_the_race_is_reserved_on_cpu_seconds_per_finished_candidate(bench: ModuleType) -> None:
    reserve = bench.RaceReserve(budget=600.0, race_share=6.0)
    assert not reserve.full(100.0)  # nothing known yet: no reserve
    reserve.observe(50.0, 1)  # the first candidate finished at 50 CPU s
    reserve.observe(140.0, 1)  # the second is still training: its CPU is not charged to the first
    assert reserve.per_candidate == 50.0
    assert reserve.full(271.0) and not reserve.full(269.0)  # 6 candidates' training and 10% to spare
    reserve.observe(160.0, 4)
    assert reserve.per_candidate == 40.0
