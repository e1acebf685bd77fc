"""Nothing a user types reaches a traceback or a hang: numbers past their bounds, paths the system
refuses, requests that cannot fit in memory.  Each case: exit 2, one line naming the value and the
bound, nothing written; hypothesis' deadline is the time bound (no timing assertions)."""

from __future__ import annotations

import errno
import os
from datetime import timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nas_meta.cli import main
from nas_meta.config import MAX_COUNTS, make_config
from nas_meta.data import load_dataset
from nas_meta.data.episodes import ACTIVATION_FACTOR, batch_bytes, check_memory
from nas_meta.errors import ConfigError
from nas_meta.spaces.base import MAX_CELL_NODES, MAX_DEPTH, MAX_WIDTH

FAST = settings(
    max_examples=25, deadline=timedelta(seconds=20), suppress_health_check=[HealthCheck.function_scoped_fixture]
)
HUGE = st.integers(min_value=1, max_value=10**12)


def one_line_refusal(capsys, code: int) -> str:
    out = capsys.readouterr()
    assert code == 2, out
    lines = out.err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in out.err, out.err
    return lines[0]


@FAST
@given(kind=st.sampled_from(["chain", "mlp", "resnet"]), depth=HUGE, width=HUGE)
def test_stack_space_files_of_any_size_are_shown_or_refused_with_the_bound(tmp_path, capsys, kind, depth, width):
    path = tmp_path / "space.yaml"
    path.write_text(f"kind: {kind}\ndepth: {depth}\nwidth: {width}\n")
    out = tmp_path / "space.png"
    code = main(["spaces", "--show", str(path), "--out", str(out)])
    if depth <= MAX_DEPTH and width <= MAX_WIDTH:
        assert code == 0 and out.is_file()
        out.unlink()
        return
    line = one_line_refusal(capsys, code)
    key, bound = ("depth", MAX_DEPTH) if depth > MAX_DEPTH else ("width", MAX_WIDTH)
    assert f"key '{key}' must be a positive integer up to {bound}" in line
    assert not out.exists()


@FAST
@given(nodes=HUGE, channels=HUGE, reduce=st.integers(min_value=0, max_value=40))
def test_cell_space_files_are_bounded_before_anything_is_built(tmp_path, capsys, nodes, channels, reduce):
    path = tmp_path / "cell.yaml"
    layout = ["reduce"] * reduce + ["normal"]
    path.write_text(f"kind: cell\nnodes: {nodes}\nchannels: {channels}\nlayout: {layout}\n")
    code = main(["spaces", "--show", str(path), "--out", str(tmp_path / "c.png")])
    fits = nodes <= MAX_CELL_NODES and channels <= MAX_WIDTH and len(layout) <= 32
    if fits and channels * 2**reduce * nodes <= MAX_WIDTH:
        assert code == 0
        return
    line = one_line_refusal(capsys, code)
    assert "at most" in line or "up to" in line


@pytest.mark.parametrize(
    "option, name",
    [
        ("--trials", "trials"),
        ("--iterations", "iterations"),
        ("--meta-batch", "meta_batch"),
        ("--queries", "queries"),
        ("--ways", "ways"),
        ("--supernet-steps", "supernet_steps"),
    ],
)
def test_cli_numbers_past_their_bound_name_it(tmp_path, capsys, option, name):
    value = MAX_COUNTS[name] + 1
    code = main(["search", "--preset", "smoke", "--results-dir", str(tmp_path / "r"), option, str(value)])
    line = one_line_refusal(capsys, code)
    assert f"must be at most {MAX_COUNTS[name]:,}, got {value:,}" in line
    assert not (tmp_path / "r").exists()


def test_a_meta_batch_that_cannot_fit_memory_is_refused_with_the_estimate(tmp_path):
    cfg = make_config("smoke", data={"cache_dir": str(tmp_path)}, learner={"meta_batch": 8})
    dataset = load_dataset(cfg.data)
    need = batch_bytes(cfg, dataset) * ACTIVATION_FACTOR
    # (8 tasks x 5 ways x (shots + queries) images of 1x28x28 float32) x 64
    assert need == 8 * 5 * (cfg.data.shots + cfg.data.queries) * 28 * 28 * 4 * ACTIVATION_FACTOR
    check_memory(cfg, dataset, None, available=need)  # fits exactly: no error
    q = cfg.data.queries
    with pytest.raises(ConfigError, match=rf"--meta-batch 8 x 5 ways x \(1 shots \+ {q} queries\) of 1x28x28 inputs"):
        check_memory(cfg, dataset, None, available=need - 1)


@pytest.mark.parametrize(
    "layout, argv, message",
    [
        (
            "file",
            ["search", "--preset", "smoke", "--results-dir", "{x}"],
            "--results-dir '{x}' is a file, not a folder",
        ),
        (
            "file",
            ["search", "--preset", "smoke", "--results-dir", "{x}/sub"],
            "--results-dir '{x}/sub' cannot be created: '{x}' is a file",
        ),
        ("file", ["search", "--preset", "smoke", "--cache-dir", "{x}/c"], "--cache-dir '{x}/c' cannot be created"),
        ("folder", ["evaluate", "conv4", "--preset", "smoke", "--save-weights", "{x}"], "is a folder, not a file"),
        (
            "file",
            ["evaluate", "conv4", "--preset", "smoke", "--save-weights", "{x}/w.pt"],
            "--save-weights '{x}/w.pt' cannot be written: '{x}' is a file, not a folder",
        ),
        ("file", ["spaces", "--show", "chain", "--out", "{x}/s.png"], "cannot be written: '{x}' is a file"),
    ],
)
def test_paths_the_system_would_refuse_are_refused_first(tmp_path, capsys, monkeypatch, layout, argv, message):
    monkeypatch.chdir(tmp_path)
    x = tmp_path / "x"
    x.write_text("a file") if layout == "file" else x.mkdir()
    before = sorted(p.name for p in tmp_path.iterdir())
    code = main([a.format(x=x) for a in argv])
    line = one_line_refusal(capsys, code)
    assert message.format(x=x) in line
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # nothing written


# A full disk as the writers raise it: PIL and matplotlib write to a file object, so their OSError
# has an errno and no file name; torch.save turns the write's OSError into a RuntimeError over it.
NO_ROOM = [
    (errno.ENOSPC, "No space left on device"),
    (errno.EDQUOT, "Disk quota exceeded"),
    (errno.EROFS, "Read-only file system"),
]


def _leftovers(root):
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


@pytest.mark.parametrize("code, words", NO_ROOM)
def test_a_picture_the_disk_cannot_take_is_one_line_naming_it_and_leaves_nothing(
    tmp_path, capsys, monkeypatch, code, words
):
    from matplotlib.figure import Figure

    def savefig(self, fname, *args, **kwargs):
        fname.write(b"\x89PNG\r\n\x1a\n half a picture")  # some bytes get out before the disk is full
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(Figure, "savefig", savefig)  # raising=True: the name must exist
    out = tmp_path / "pictures" / "of" / "space.png"
    status = main(["spaces", "--show", "chain", "--out", str(out)])
    line = one_line_refusal(capsys, status)
    assert line == f"nas-meta: error: {out}: {words}"
    assert _leftovers(tmp_path) == []  # no half-written picture, no folder made for it


def test_weights_the_disk_cannot_take_are_one_line_naming_them(tmp_path, capsys, monkeypatch):
    import torch

    real_save = torch.save
    weights = tmp_path / "kept" / "w.pt"

    def save(obj, f, *args, **kwargs):
        if not getattr(f, "name", "").startswith(str(weights.parent / f".{weights.name}.")):
            return real_save(obj, f, *args, **kwargs)  # the dataset cache
        f.write(b"PK\x03\x04")
        try:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        except OSError:  # what torch's zip writer makes of its file's failed write
            raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 704 vs 598") from None

    monkeypatch.setattr(torch, "save", save)
    argv = ["evaluate", "conv4", "--preset", "smoke", "--iterations", "1", "--episodes", "2"]
    status = main([*argv, "--cache-dir", str(tmp_path / "cache"), "--save-weights", str(weights)])
    out = capsys.readouterr()
    assert status == 2 and "Traceback" not in out.err
    assert out.err.strip().splitlines()[-1] == f"nas-meta: error: {weights}: No space left on device"
    assert not weights.parent.exists()


def test_other_os_errors_without_a_path_keep_their_traceback(tmp_path, monkeypatch):
    from matplotlib.figure import Figure

    def savefig(self, fname, *args, **kwargs):
        raise OSError(errno.EIO, os.strerror(errno.EIO))  # not a user's or an environment's limit

    monkeypatch.setattr(Figure, "savefig", savefig)
    out = tmp_path / "pictures" / "space.png"
    with pytest.raises(OSError, match="Input/output error"):
        main(["spaces", "--show", "chain", "--out", str(out)])
    assert _leftovers(tmp_path) == []  # still nothing half-written
