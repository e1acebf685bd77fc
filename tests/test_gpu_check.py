"""bench/gpu.py, the one-run GPU check: what it says where there is no GPU; its timing rounds and
its exit code, on fake timers."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parent.parent
RUN = [sys.executable, "-m", "bench.gpu"]  # as bench/README.md runs it, from the repository root


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA: the check would run")
def test_without_cuda_it_says_so_in_one_line_and_exits_2():
    done = subprocess.run(RUN, capture_output=True, text=True, timeout=300, cwd=REPO)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "gpu.py: error: no CUDA device here; run with --device cpu to check the CPU path"
    ]
    assert done.stdout == ""


def test_a_check_that_did_not_run_reports_zero():
    done = subprocess.run(
        [*RUN, "--device", "cpu", "--skip", "exact", "speed", "e2e"],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=REPO,
    )
    assert done.returncode == 0
    last = dict(pair.split("=") for pair in done.stdout.strip().splitlines()[-1].split())
    assert set(last) == {
        "gpu_maml_vs_loop",
        "gpu_fomaml_vs_loop",
        "gpu_protonet_vs_loop",
        "gpu_protonet_util",
        "gpu_exact",
        "gpu_e2e",
    }
    assert all(float(v) == 0 for v in last.values())


def _gpu_module():
    sys.path.insert(0, str(REPO))  # bench is a package of the repository, not installed
    return importlib.import_module("bench.gpu")


gpu = _gpu_module()


class FakeDevice:
    """A device whose clock speed doubles a little way into the run (a GPU ramping up its clocks,
    or another job leaving it), on a fake clock: work of ``flops`` at ``efficiency`` of the
    matmul's rate advances the clock by the time it takes at the speed of the moment."""

    PEAK = 100e12  # FLOP/s of the matmul at full speed

    def __init__(self, slow_until: float) -> None:
        self.now, self.slow_until = 0.0, slow_until

    def clock(self) -> float:
        return self.now

    def run(self, flops: float, efficiency: float) -> None:
        speed = 0.5 if self.now < self.slow_until else 1.0
        self.now += flops / (efficiency * speed * self.PEAK)


MATMUL, STEP = 1e12, 1e10  # FLOPs of one timed matmul, of one training step


def _peak(device: FakeDevice) -> float:
    seconds = gpu.time_per_call(lambda: device.run(MATMUL, 1.0), 3, lambda: None, device.clock)
    return MATMUL / seconds / 1e12


def _row(device: FakeDevice, efficiency: float):
    return lambda: gpu.time_per_call(lambda: device.run(STEP, efficiency), 2, lambda: None, device.clock)


def test_rows_and_peaks_are_timed_in_interleaved_rounds():
    calls: list[str] = []

    def note(name: str, value: float):
        def measure() -> float:
            calls.append(name)
            return value

        return measure

    samples = gpu.measure_rounds(
        {"fp32": note("fp32", 10.0), "bf16": note("bf16", 20.0)},
        {"default": (note("default", 0.5), "fp32"), "default+bf16": (note("default+bf16", 0.25), "bf16")},
        rounds=3,
    )
    assert calls == ["fp32", "bf16", "default", "default+bf16"] * 3
    assert samples == {"default": [(0.5, 10.0)] * 3, "default+bf16": [(0.25, 20.0)] * 3}


def test_utilisation_is_against_the_peak_of_the_same_rounds():
    # The first round runs at half speed: a peak measured once, before the rows, is half the
    # device's, and rows measured after the speed-up seemed to beat the matmul (utilisation 1.6).
    once = FakeDevice(slow_until=0.05)
    peak_before = _peak(once)
    seconds = _row(once, 0.8)()
    assert STEP / seconds / 1e12 / peak_before == pytest.approx(1.6)

    device = FakeDevice(slow_until=0.05)
    rows = {"default": (_row(device, 0.8), "fp32"), "loop": (_row(device, 0.4), "fp32")}
    samples = gpu.measure_rounds({"fp32": lambda: _peak(device)}, rows, rounds=5)
    default, loop = gpu.row_figures(STEP, samples["default"]), gpu.row_figures(STEP, samples["loop"])
    assert default["util"] == pytest.approx(0.8) and loop["util"] == pytest.approx(0.4)
    assert default["peak"] == pytest.approx(100.0) and default["tflops"] == pytest.approx(80.0)
    assert default["seconds"] == pytest.approx(STEP / (0.8 * FakeDevice.PEAK))


def test_a_row_that_fails_drops_out_and_the_others_go_on():
    rounds = iter(range(100))

    def flaky() -> float:
        if next(rounds) == 1:
            raise RuntimeError("CUDA out of memory")
        return 1.0

    failed: dict[str, str] = {}
    samples = gpu.measure_rounds({"fp32": lambda: 4.0}, {"a": (flaky, "fp32"), "b": (lambda: 2.0, "fp32")}, 3, failed)
    assert samples == {"a": [(1.0, 4.0)], "b": [(2.0, 4.0)] * 3}
    assert failed == {"a": "RuntimeError: CUDA out of memory"}


@pytest.mark.parametrize(
    "exact, e2e, skipped, want",
    [
        (1.0, 1.0, [], (0, "")),
        (0.0, 1.0, [], (1, "gpu.py: FAILED: gpu_exact=0 (exactness)")),
        (1.0, 0.0, [], (1, "gpu.py: FAILED: gpu_e2e=0 (end to end)")),
        (0.0, 0.0, [], (1, "gpu.py: FAILED: gpu_exact=0 (exactness), gpu_e2e=0 (end to end)")),
        (1.0, 0.0, ["e2e"], (0, "")),
        (0.0, 0.0, ["exact", "e2e"], (0, "")),
    ],
)
def test_the_checks_that_must_hold_decide_the_exit_code(exact, e2e, skipped, want):
    report = {"gpu_maml_vs_loop": 0.0, "gpu_protonet_util": 0.0, "gpu_exact": exact, "gpu_e2e": e2e}
    assert gpu.verdict(report, skipped) == want


def test_a_failed_check_exits_1_with_one_line(monkeypatch, capsys):
    monkeypatch.setattr(gpu, "check_exactness", lambda device, report: report.update(gpu_exact=0.0))
    monkeypatch.setattr(gpu, "check_end_to_end", lambda device, report: report.update(gpu_e2e=1.0))
    assert gpu.main(["--device", "cpu", "--skip", "speed"]) == 1
    captured = capsys.readouterr()
    assert captured.err.splitlines() == ["gpu.py: FAILED: gpu_exact=0 (exactness)"]
    assert captured.out.splitlines()[-1].split()[-2:] == ["gpu_exact=0", "gpu_e2e=1"]
