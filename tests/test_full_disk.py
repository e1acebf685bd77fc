"""Outputs on a really full filesystem: a small tmpfs, filled up, then the commands that write
plots, pictures and exports into it.  Each: exit 2, one line on stderr naming the path being
written, no traceback, no half-written file or empty folder left, an earlier export whole.

The tmpfs needs root (or CAP_SYS_ADMIN); where it cannot be mounted the tests skip and say why.
"""

from __future__ import annotations

import importlib.util
import io

import pytest

from nas_meta.cli import main
from nas_meta.config import make_config
from nas_meta.search.runner import run_search

SIZE = "256k"  # room for one small export (about 90 KiB), not for much more


@pytest.fixture
def disk(small_disk):
    """A tmpfs of SIZE for the test (conftest's small_disk)."""
    return small_disk(SIZE)


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """A one-trial smoke study on the ordinary disk: (its --results-dir, its --cache-dir)."""
    root = tmp_path_factory.mktemp("full_disk")
    cfg = make_config(
        "smoke",
        data={"cache_dir": str(root / "cache")},
        search={"space": "chain", "study": "s", "trials": 1},
        results_dir=str(root / "results"),
    )
    run_search(cfg, stream=io.StringIO())
    return str(root / "results"), str(root / "cache")


def files(point):
    """Every file and folder under ``point`` but the filler, with the files' bytes."""
    return {
        str(p.relative_to(point)): p.read_bytes() if p.is_file() else None
        for p in sorted(point.rglob("*"))
        if p.name != "filler"
    }


def refusal(capsys, status: int, *, progress: bool = False) -> str:
    """The one error line of a refused command (after a retraining's progress lines if ``progress``)."""
    err = capsys.readouterr().err
    assert status == 2, err
    assert "Traceback" not in err, err
    lines = err.strip().splitlines()
    assert progress or len(lines) == 1, err
    return lines[-1]


def export(study, out, *extra):
    results, cache = study
    return main(["export", "--study", "s", "--results-dir", results, "--cache-dir", cache, "--out", str(out), *extra])


needs_onnx = pytest.mark.skipif(
    any(importlib.util.find_spec(name) is None for name in ("onnx", "onnxscript")),
    reason="the onnx extra: pip install -e '.[onnx]'",
)


@pytest.mark.parametrize(
    "extra, leave, written",
    [
        pytest.param((), 8192, "arch.png", id="picture"),  # arch.json (2.5 KiB) fits, the picture does not
        pytest.param(("--onnx",), 0, "model.onnx", id="onnx", marks=needs_onnx),
        pytest.param(("--retrain", "--iterations", "1"), 0, "weights.pt", id="weights"),
    ],
)
def test_an_export_on_a_full_disk_is_one_line_and_the_earlier_export_stays(
    study, disk, capsys, extra, leave, written, fill_disk
):
    out = disk / "export"
    assert export(study, out) == 0
    before = files(disk)
    assert set(before) >= {"export/rank1", "export/rank1/card.json", "export/rank1/arch.png"}
    capsys.readouterr()
    fill_disk(disk, leave)
    line = refusal(capsys, export(study, out, *extra), progress="--retrain" in extra)
    assert line == f"nas-meta: error: {out / 'rank1' / written}: No space left on device"
    assert files(disk) == before  # the earlier export byte for byte; no staging folder, no temporary file


def test_an_export_into_a_new_folder_on_a_full_disk_leaves_no_folder(study, disk, capsys, fill_disk):
    fill_disk(disk)
    out = disk / "new" / "export"
    line = refusal(capsys, export(study, out))
    assert line.startswith(f"nas-meta: error: {out / 'rank1'}/") and line.endswith(": No space left on device")
    assert files(disk) == {}


def test_plots_on_a_full_disk_are_one_line_and_leave_no_folder(study, disk, capsys, fill_disk):
    results, _ = study
    fill_disk(disk, 4096)
    plots = disk / "plots" / "s"
    line = refusal(capsys, main(["analyze", "--study", "s", "--results-dir", results, "--plots", str(plots)]))
    assert line == f"nas-meta: error: {plots / 'best_so_far.png'}: No space left on device"
    assert files(disk) == {}


def test_a_table_on_a_full_disk_is_one_line_and_leaves_no_folder(study, disk, capsys, fill_disk):
    results, _ = study
    fill_disk(disk)
    table = disk / "tables" / "s.md"
    status = main(["analyze", "--study", "s", "--results-dir", results, "--out", str(table)])
    assert refusal(capsys, status) == f"nas-meta: error: {table}: No space left on device"
    assert files(disk) == {}


@pytest.mark.parametrize("name", ["chain.png", "chain.svg", "chain.pdf"])
def test_a_space_picture_on_a_full_disk_is_one_line_and_leaves_nothing(disk, capsys, name, fill_disk):
    fill_disk(disk, 4096)
    picture = disk / "pictures" / name
    line = refusal(capsys, main(["spaces", "--show", "chain", "--out", str(picture)]))
    assert line == f"nas-meta: error: {picture}: No space left on device"
    assert files(disk) == {}
