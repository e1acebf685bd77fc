"""bench/throughput.py: the extrapolated candidate, the machine's rate, the ratios the defaults get."""

from __future__ import annotations

import importlib
import math
from pathlib import Path
from types import ModuleType

import pytest

BENCH = Path(__file__).resolve().parent.parent / "bench"


@pytest.fixture
def bench(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    monkeypatch.syspath_prepend(str(BENCH.parent))  # the repository: bench is its package
    return importlib.import_module("bench.throughput")


def test_rates_add_over_processes_and_the_median_is_per_architecture(bench):
    one = {"seconds": 4.0, "cpu_seconds": 6.0}
    assert bench.per_hour([one]) == 900.0
    assert bench.per_hour([one, {"seconds": 2.0, "cpu_seconds": 2.0}]) == 900.0 + 1800.0
    # Two architectures (0, 1) over three rounds; arch 0's third round is an outlier the median drops.
    runs = [[{"seconds": s, "cpu_seconds": s}] for s in (10.0, 20.0, 10.0, 20.0, 100.0, 20.0)]
    row = bench.summarise({("chain-protonet", "default"): runs}, archs=2)["chain-protonet"]["default"]
    assert row["seconds"] == pytest.approx(15.0)  # the mean of the medians 10 and 20
    assert row["per_hour"] == pytest.approx(3600.0 / 15.0)
    pair = [[{"seconds": 10.0, "cpu_seconds": 10.0}, {"seconds": 30.0, "cpu_seconds": 30.0}]]
    both = bench.summarise({("t", "processes"): pair}, archs=1)["t"]["processes"]
    assert both["processes"] == 2 and both["per_hour"] == pytest.approx(2 * 3600.0 / 20.0)


def test_auto_follows_the_defaults_rule_and_the_ratio_is_a_geometric_mean(bench):
    assert bench.auto_choice("chain-protonet", True, 2) == "bf16_processes"
    assert bench.auto_choice("cell-maml", True, 2) == "processes"
    assert bench.auto_choice("chain-maml", False, 2) == "processes"
    assert bench.auto_choice("chain-maml", True, 1) == "bf16"
    assert bench.auto_choice("cell-maml", False, 1) == "default"
    table = {
        "a": {"default": {"per_hour": 100.0}, "processes": {"per_hour": 200.0}, "bf16": {"per_hour": 50.0}},
        "b": {"default": {"per_hour": 100.0}, "processes": {"per_hour": 800.0}, "bf16": {"per_hour": 200.0}},
    }
    found = bench.ratios(table, {"a": "processes", "b": "bf16"})
    assert found["processes"] == pytest.approx(4.0)  # sqrt(2 * 8)
    assert found["bf16"] == pytest.approx(1.0)  # sqrt(0.5 * 2)
    assert found["auto"] == pytest.approx(2.0)  # sqrt(2 * 2)


def test_one_candidate_is_timed_and_extrapolated_to_the_preset(bench, tmp_path):
    item = bench.Item("chain-protonet", 0, "default")
    result = bench.measure(item, None, str(tmp_path / "cache"), threads=1)
    step, episode = result["step"], result["episode"]
    assert step > 0 and episode >= 0
    # The quick preset's candidate: 80 steps and 2 x 40 validation episodes, plus the build.
    assert result["seconds"] >= 80 * step + 80 * episode
    assert math.isfinite(result["cpu_seconds"]) and result["cpu_seconds"] > 0
