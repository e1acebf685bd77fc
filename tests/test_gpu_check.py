"""bench/gpu.py, the one-run GPU check: what it says where there is no GPU."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

GPU_CHECK = Path(__file__).resolve().parent.parent / "bench" / "gpu.py"


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA: the check would run")
def test_without_cuda_it_says_so_in_one_line_and_exits_2():
    done = subprocess.run([sys.executable, str(GPU_CHECK)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "gpu.py: error: no CUDA device here; run with --device cpu to check the CPU path"
    ]
    assert done.stdout == ""


def test_a_check_that_did_not_run_reports_zero():
    done = subprocess.run(
        [sys.executable, str(GPU_CHECK), "--device", "cpu", "--skip", "exact", "speed", "e2e"],
        capture_output=True,
        text=True,
        timeout=300,
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
