"""bench/records.py: the committed record of a measured row, written atomically, names checked."""

from __future__ import annotations

import datetime
import importlib
import json
import os
import subprocess
from pathlib import Path
from types import ModuleType

import pytest

BENCH = Path(__file__).resolve().parent.parent / "bench"
REPO = BENCH.parent


@pytest.fixture
def records(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> ModuleType:
    monkeypatch.syspath_prepend(str(BENCH.parent))  # the repository: bench is its package
    module = importlib.import_module("bench.records")
    monkeypatch.setattr(module, "ROOT", tmp_path / "records")
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(
        "processor\t: 0\nmodel name\t: Test CPU @ 2.0GHz\nflags\t\t: fpu sse2 avx2 avx512f amx_tile avx512vl\n"
        "processor\t: 1\nmodel name\t: Other CPU\nflags\t\t: fpu\n"
    )
    monkeypatch.setattr(module, "CPUINFO", cpuinfo)
    return module


def test_a_record_holds_its_provenance_and_figures(records: ModuleType) -> None:
    doc = {"score": 0.75, "test": [1.0, 0.5, 0.75]}
    before = datetime.datetime.now(datetime.UTC).replace(microsecond=0)
    path = records.write_record(
        "versus_conv4", "pick-protonet-5w1s-s0", doc, command="python x", seed=3, cpu_seconds=12
    )
    assert path == records.ROOT / "versus_conv4" / "pick-protonet-5w1s-s0.json"
    record = json.loads(path.read_text())
    assert set(record) == {"command", "seed", "commit", "dirty", "cpu", "cpu_seconds", "date", "source", "figures"}
    assert record["command"] == "python x" and record["seed"] == 3 and record["source"] == "measured"
    assert record["cpu_seconds"] == 12.0 and isinstance(record["cpu_seconds"], float)
    assert record["figures"] == doc
    # The first processor's model; only the listed flags, in their fixed order.
    assert record["cpu"] == {"model": "Test CPU @ 2.0GHz", "flags": ["avx2", "avx512f", "amx_tile"]}
    date = datetime.datetime.fromisoformat(record["date"])
    assert date.utcoffset() == datetime.timedelta(0) and before <= date
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True)
    assert record["commit"] == (head.stdout.strip() if head.returncode == 0 else "unknown")
    status = subprocess.run(
        ["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO, capture_output=True, text=True
    )
    assert record["dirty"] is (status.returncode != 0 or bool(status.stdout.strip()))


def test_without_git_or_cpuinfo_the_record_says_unknown(records: ModuleType, monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setattr(records, "REPO", tmp_path)  # not a git work tree
    monkeypatch.setattr(records, "CPUINFO", tmp_path / "missing")
    path = records.write_record("s", "n", {}, command="c", seed=None, cpu_seconds=0.5)
    record = json.loads(path.read_text())
    assert record["commit"] == "unknown" and record["dirty"] is True  # clean only when git says so
    assert record["cpu"] == {"model": "unknown", "flags": []} and record["seed"] is None


def test_records_are_read_back_sorted_by_name(records: ModuleType) -> None:
    assert records.read_records("search_efficiency") == []
    for name in ("chain-protonet-tpe-s1", "cell-protonet-darts-s0", "chain-protonet-random-s0"):
        records.write_record("search_efficiency", name, {"name": name}, command="c", seed=0, cpu_seconds=1.0)
    records.write_record("other", "a", {"name": "a"}, command="c", seed=0, cpu_seconds=1.0)
    names = [r["figures"]["name"] for r in records.read_records("search_efficiency")]
    assert names == ["cell-protonet-darts-s0", "chain-protonet-random-s0", "chain-protonet-tpe-s1"]


def test_a_write_that_fails_leaves_the_old_record_whole(records: ModuleType, monkeypatch) -> None:
    path = records.write_record("s", "row", {"score": 1}, command="c", seed=0, cpu_seconds=1.0)
    old = path.read_bytes()

    def crash(src: str, dst: str) -> None:
        raise OSError("disk gone")

    with monkeypatch.context() as m, pytest.raises(OSError, match="disk gone"):
        m.setattr(os, "replace", crash)  # dies after the new content is written, before the rename
        records.write_record("s", "row", {"score": 2}, command="c", seed=0, cpu_seconds=1.0)
    assert path.read_bytes() == old
    assert [p.name for p in path.parent.iterdir()] == ["row.json"]  # no temporary file left behind
    with pytest.raises(TypeError):  # not JSON: refused before anything is written
        records.write_record("s", "row", {"score": object()}, command="c", seed=0, cpu_seconds=1.0)
    assert path.read_bytes() == old


@pytest.mark.parametrize(
    "section, name", [("a/b", "n"), ("s", "../n"), ("..", "n"), ("s", "."), ("", "n"), ("s", "n m")]
)
def test_names_outside_the_pattern_are_refused(records: ModuleType, section: str, name: str) -> None:
    with pytest.raises(ValueError, match="letters, digits"):
        records.write_record(section, name, {}, command="c", seed=0, cpu_seconds=1.0)
    assert not records.ROOT.exists()
    if section != "s":
        with pytest.raises(ValueError, match="letters, digits"):
            records.read_records(section)


def test_no_machine_folder_is_committed(records: ModuleType, tmp_path: Path) -> None:
    data = tmp_path / "omni"
    doc = {"arch_path": f"{REPO}/results/versus_conv4/searches/x/best/arch.json", "notes": [f"read {data}/a"]}
    path = records.write_record(
        "versus_conv4",
        "paths",
        doc,
        command=f"python -m bench.x {data} --cache-dir {data}-cache",
        seed=0,
        cpu_seconds=1.0,
        folders={str(data): "OMNIGLOT_ROOT", f"{data}-cache": "CACHE_DIR", "": "X"},
    )
    record = json.loads(path.read_text())
    assert record["figures"] == {
        "arch_path": "results/versus_conv4/searches/x/best/arch.json",
        "notes": ["read OMNIGLOT_ROOT/a"],
    }
    # The longer folder first: the cache is not the data root with "-cache" after it.
    assert record["command"] == "python -m bench.x OMNIGLOT_ROOT --cache-dir CACHE_DIR"
