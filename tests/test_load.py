"""The reduced load test: 3 workers on one PostgreSQL study, one killed and replaced, the
database's connections cut once; nothing lost, duplicated or left RUNNING (bench/load.py)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

POSTGRES = os.environ.get("NAS_META_TEST_POSTGRES")
REPO = Path(__file__).resolve().parent.parent
LOAD = [sys.executable, "-m", "bench.load"]  # as bench/README.md runs it, from the repository root


@pytest.mark.slow
@pytest.mark.skipif(
    not POSTGRES,
    reason="no PostgreSQL: none answers on 127.0.0.1:5432 and NAS_META_TEST_POSTGRES (a postgresql:// URL) is unset",
)
def test_workers_under_kills_and_a_dropped_database_lose_nothing():
    argv = [*LOAD, POSTGRES, "--workers", "3", "--trials", "20", "--kills", "1"]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=900, cwd=REPO)
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.strip().splitlines()
    assert lines[-1] == "lost=0 duplicated=0 stuck=0 crashed=0 workers=3", done.stdout
    assert any("terminated" in line and "database connections" in line for line in lines)
    assert any("killed worker" in line for line in lines)


def test_without_a_server_the_load_bench_says_so_in_one_line():
    done = subprocess.run(
        [*LOAD, "postgresql://nobody@127.0.0.1:1/none"], capture_output=True, text=True, timeout=120, cwd=REPO
    )
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1].startswith("load.py: error: PostgreSQL at ")
