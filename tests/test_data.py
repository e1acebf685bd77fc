"""The episode sampler and the tensor cache, on tiny hand-made datasets."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from nas_meta.cli.common import default_cache_dir
from nas_meta.config import DataConfig
from nas_meta.data import DATASETS, Episodes, ImageDataset, load_dataset
from nas_meta.data.base import split_by_fraction
from nas_meta.data.cache import cache_path, cached_tensors
from nas_meta.errors import ConfigError, DataError

N_CLASSES = 12
COUNTS = [6, 7, 8, 9, 6, 10, 6, 7, 8, 6, 9, 11]  # unequal on purpose: exercises the padded table


def make_indexed() -> ImageDataset:
    """Each image encodes its own row (pixel 0 = row % 256, pixel 1 = row // 256)."""
    labels = torch.cat([torch.full((n,), c) for c, n in enumerate(COUNTS)])
    rows = torch.arange(len(labels))
    images = torch.zeros(len(labels), 1, 2, 2, dtype=torch.uint8)
    images[:, 0, 0, 0] = rows % 256
    images[:, 0, 0, 1] = rows // 256
    # Shuffle the rows so the sampler cannot rely on class-major storage.
    perm = torch.randperm(len(labels), generator=torch.Generator().manual_seed(3))
    images, labels = images[perm], labels[perm]
    splits = {"train": [0, 2, 4, 6, 8, 10], "val": [1, 3, 5], "test": [7, 9, 11]}
    return ImageDataset("indexed", images, labels, [f"c{i}" for i in range(N_CLASSES)], splits)


def decode_rows(x: torch.Tensor) -> torch.Tensor:
    """Rows of the unshuffled dataset from sampled images (..., 1, 2, 2) float in [0, 1]."""
    v = (x * 255).round().long()
    return v[..., 0, 0, 0] + 256 * v[..., 0, 0, 1]


@pytest.fixture(scope="module")
def indexed() -> ImageDataset:
    return make_indexed()


def test_shapes_dtypes_and_labels(indexed):
    batch = indexed.sampler("train", ways=4, shots=2, queries=3, seed=0).sample(5)
    assert isinstance(batch, Episodes) and batch.ways == 4 and batch.tasks == 5
    assert batch.support_x.shape == (5, 8, 1, 2, 2) and batch.query_x.shape == (5, 12, 1, 2, 2)
    assert batch.support_x.dtype == torch.float32 and batch.support_y.dtype == torch.int64
    assert 0.0 <= float(batch.support_x.min()) and float(batch.query_x.max()) <= 1.0
    # Class-major order: class 0's shots, then class 1's.
    assert batch.support_y.tolist() == [[0, 0, 1, 1, 2, 2, 3, 3]] * 5
    assert batch.query_y.tolist() == [[0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3]] * 5


def test_episodes_are_consistent_and_disjoint(indexed):
    # Unshuffled rows -> class: rows are class-major in COUNTS order before the permutation.
    row_class = torch.cat([torch.full((n,), c) for c, n in enumerate(COUNTS)])
    ways, shots, queries = 3, 2, 4
    for split in ("train", "val", "test"):
        batch = indexed.sampler(split, ways=ways, shots=shots, queries=queries, seed=1).sample(50)
        s_rows, q_rows = decode_rows(batch.support_x), decode_rows(batch.query_x)  # (T, ways*k)
        s_cls = row_class[s_rows].view(50, ways, shots)
        q_cls = row_class[q_rows].view(50, ways, queries)
        # One class per label, the same class in support and query, ways distinct classes.
        assert (s_cls == s_cls[:, :, :1]).all() and (q_cls == s_cls[:, :, :1]).all()
        for t in range(50):
            assert len(set(s_cls[t, :, 0].tolist())) == ways
            rows = s_rows[t].tolist() + q_rows[t].tolist()
            assert len(set(rows)) == len(rows), "an image is both support and query (or twice)"
        assert set(s_cls.unique().tolist()) == set(indexed.splits[split])


def test_every_image_of_a_class_gets_drawn(indexed):
    # The padded ranking must reach the last images of the largest class, never past them.
    batch = indexed.sampler("test", ways=3, shots=1, queries=5, seed=2).sample(400)
    rows = set(decode_rows(batch.support_x).flatten().tolist()) | set(decode_rows(batch.query_x).flatten().tolist())
    start = [sum(COUNTS[:c]) for c in range(N_CLASSES)]
    expected = {start[c] + i for c in indexed.splits["test"] for i in range(COUNTS[c])}
    assert rows == expected


def test_same_seed_same_episodes_other_seed_differs(indexed):
    a = indexed.sampler("train", ways=3, shots=1, queries=2, seed=7).sample(6)
    b = indexed.sampler("train", ways=3, shots=1, queries=2, seed=7).sample(6)
    c = indexed.sampler("train", ways=3, shots=1, queries=2, seed=8).sample(6)
    assert torch.equal(a.support_x, b.support_x) and torch.equal(a.query_x, b.query_x)
    assert not torch.equal(a.query_x, c.query_x)
    # Successive draws from one sampler differ (the generator advances).
    sampler = indexed.sampler("train", ways=3, shots=1, queries=2, seed=7)
    assert not torch.equal(sampler.sample(6).query_x, sampler.sample(6).query_x)


def test_episodes_to_device(indexed):
    batch = indexed.sampler("val", ways=2, shots=1, queries=1, seed=0).sample(2)
    moved = batch.to("meta")  # a real move on a CPU-only machine: shapes kept, data left behind
    assert moved.ways == 2 and moved.support_x.device.type == "meta" and moved.query_y.device.type == "meta"
    assert moved.support_x.shape == batch.support_x.shape and moved.query_y.dtype == batch.query_y.dtype
    back = batch.to("cpu")
    assert back.support_x is batch.support_x  # already there: no copy


def test_more_ways_than_classes_is_a_data_error(indexed):
    with pytest.raises(DataError, match=r"split 'val' has 3 classes, fewer than ways=4"):
        indexed.sampler("val", ways=4, shots=1, queries=1, seed=0)


def test_small_class_is_a_data_error_naming_it(indexed):
    with pytest.raises(DataError, match=r"class 'c0' in split 'train' has 6 images, fewer than shots\+queries=7"):
        indexed.sampler("train", ways=2, shots=2, queries=5, seed=0)


@pytest.mark.parametrize("kw", [{"ways": 0}, {"shots": -1}, {"queries": 0}, {"ways": 1}, {"shots": 1.5}])
def test_bad_episode_shape_is_a_config_error(indexed, kw):
    args = {"ways": 2, "shots": 1, "queries": 1, "seed": 0, **kw}
    with pytest.raises(ConfigError):
        indexed.sampler("train", **args)


def test_unknown_split_and_dataset(indexed):
    with pytest.raises(ConfigError, match=r"unknown split 'tain'; choose from \['train', 'val', 'test'\]"):
        indexed.sampler("tain", ways=2, shots=1, queries=1, seed=0)
    with pytest.raises(ConfigError, match=r"unknown dataset 'glyps'; choose from \["):
        load_dataset(DataConfig(dataset="glyps"))
    assert "glyphs" in DATASETS


def test_overlapping_splits_are_refused():
    images = torch.zeros(4, 1, 2, 2, dtype=torch.uint8)
    with pytest.raises(ValueError, match="shares classes"):
        ImageDataset("x", images, torch.tensor([0, 0, 1, 1]), ["a", "b"], {"train": [0, 1], "val": [1], "test": []})


def test_split_by_fraction():
    s = split_by_fraction(30, seed=0)
    assert [len(s[k]) for k in ("train", "val", "test")] == [18, 6, 6]
    assert sorted(s["train"] + s["val"] + s["test"]) == list(range(30))
    assert split_by_fraction(30, seed=0) == s and split_by_fraction(30, seed=1) != s
    assert [len(v) for v in split_by_fraction(5, seed=0).values()] == [3, 1, 1]


# ---------------------------------------------------------------- cache


def test_cache_hit_does_not_rebuild(tmp_path):
    calls = []

    def build():
        calls.append(1)
        return {"x": torch.arange(5), "y": torch.ones(2, 3, dtype=torch.uint8)}

    first = cached_tensors(tmp_path, "demo", {"a": 1}, build)
    second = cached_tensors(tmp_path, "demo", {"a": 1}, build)
    assert len(calls) == 1 and torch.equal(first["x"], second["x"]) and torch.equal(first["y"], second["y"])
    cached_tensors(tmp_path, "demo", {"a": 2}, build)  # another key: another file, a build
    assert len(calls) == 2 and len(list(tmp_path.glob("demo-*.pt"))) == 2
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")], "temp file left behind"


@pytest.mark.parametrize("damage", ["truncate", "garbage", "empty", "flip"])
def test_corrupt_cache_is_rebuilt(tmp_path, damage):
    calls = []

    def build():
        calls.append(1)
        return {"x": torch.arange(1000)}

    cached_tensors(tmp_path, "demo", {"a": 1}, build)
    path = cache_path(tmp_path, "demo", {"a": 1})
    data = path.read_bytes()
    if damage == "truncate":
        path.write_bytes(data[: len(data) // 2])
    elif damage == "garbage":
        path.write_bytes(b"not a torch file" * 10)
    elif damage == "empty":
        path.write_bytes(b"")
    else:  # a flipped byte inside the tensor data (the arange's 500th int64 sits inside the file)
        needle = (500).to_bytes(8, "little")
        i = data.index(needle)
        path.write_bytes(data[:i] + (501).to_bytes(8, "little") + data[i + 8 :])
    out = cached_tensors(tmp_path, "demo", {"a": 1}, build)
    assert len(calls) == 2 and torch.equal(out["x"], torch.arange(1000))
    assert cached_tensors(tmp_path, "demo", {"a": 1}, build) and len(calls) == 2  # repaired file is used


def test_stale_cache_is_rebuilt(tmp_path):
    # A file under the right name whose stored key differs (e.g. an older format) is not used.
    cached_tensors(tmp_path, "demo", {"a": 1}, lambda: {"x": torch.zeros(3)})
    other = cache_path(tmp_path, "demo", {"a": 2})
    os.replace(cache_path(tmp_path, "demo", {"a": 1}), other)
    out = cached_tensors(tmp_path, "demo", {"a": 2}, lambda: {"x": torch.ones(3)})
    assert out["x"].tolist() == [1.0, 1.0, 1.0]


@pytest.fixture
def default_places(tmp_path, monkeypatch) -> list[Path]:
    """Everywhere a cache could land when none is given, moved into tmp_path: the CLI's default
    cache dir ($XDG_CACHE_HOME/nas_meta), the home folder and the working directory."""
    places = [tmp_path / "xdg", tmp_path / "home", tmp_path / "cwd"]
    for place in places:
        place.mkdir()
    monkeypatch.setenv("XDG_CACHE_HOME", str(places[0]))
    monkeypatch.setenv("HOME", str(places[1]))
    monkeypatch.chdir(places[2])
    assert Path(default_cache_dir()) == places[0] / "nas_meta"
    return places


def files_under(*folders: Path) -> list[Path]:
    return sorted(p for folder in folders for p in folder.rglob("*") if p.is_file())


def test_no_cache_dir_reads_and_writes_nothing(default_places):
    calls = []

    def build():
        calls.append(1)
        return {"x": torch.zeros(1)}

    for _ in range(2):
        out = cached_tensors(None, "demo", {"a": 1}, build)
        assert out["x"].tolist() == [0.0]
    assert len(calls) == 2  # nothing was read back: each call builds
    assert files_under(*default_places) == []


def test_cache_files_go_to_the_given_dir_only(tmp_path, default_places):
    cache = tmp_path / "cache"
    cached_tensors(cache, "demo", {"a": 1}, lambda: {"x": torch.arange(3)})
    assert files_under(cache) == [cache_path(cache, "demo", {"a": 1})]
    # A dataset passes its config's cache_dir on: the generated glyphs are cached there too.
    dataset = load_dataset(DataConfig(cache_dir=str(cache), glyph_classes=6, glyph_samples=2))
    glyph_files = [p for p in files_under(cache) if p.name.startswith("glyphs-")]
    assert len(glyph_files) == 1
    assert torch.equal(torch.load(glyph_files[0], weights_only=True)["tensors"]["images"], dataset.images)
    assert files_under(*default_places) == []
