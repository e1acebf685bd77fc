"""The built-in procedural ``glyphs`` dataset: determinism, splits, difficulty, cache."""

from __future__ import annotations

import time

import pytest
import torch

from nas_meta.config import DataConfig
from nas_meta.data import glyphs, load_dataset
from nas_meta.data.cache import cache_path

SMALL = DataConfig(glyph_classes=50, glyph_samples=6)


def test_shape_dtype_and_ink_high():
    ds = load_dataset(SMALL)
    assert ds.name == "glyphs" and ds.task == "classification" and ds.input_shape == (1, 28, 28)
    assert ds.images.shape == (300, 1, 28, 28) and ds.images.dtype == torch.uint8
    assert ds.labels.tolist() == [c for c in range(50) for _ in range(6)]
    # Ink is high on a zero background: most pixels are 0, every drawing has (nearly) full ink;
    # the thinnest pens (1.3 px, anti-aliased) peak a little below 255.
    assert (ds.images == 0).float().mean() > 0.7
    assert (ds.images.flatten(1).amax(1) >= 200).all() and int(ds.images.max()) == 255


def test_image_size_scales_the_drawing():
    ds = load_dataset(DataConfig(glyph_classes=10, glyph_samples=2, image_size=56))
    assert ds.input_shape == (1, 56, 56)
    small = load_dataset(DataConfig(glyph_classes=10, glyph_samples=2))
    # Same programs at twice the resolution: the ink fraction stays about the same.
    ratio = (ds.images > 127).float().mean() / (small.images > 127).float().mean()
    assert 0.8 < float(ratio) < 1.25


def test_same_seed_same_tensor_other_seed_differs():
    a, b = load_dataset(SMALL), load_dataset(SMALL)
    c = load_dataset(DataConfig(glyph_classes=50, glyph_samples=6, seed=1))
    assert torch.equal(a.images, b.images) and a.splits == b.splits
    assert not torch.equal(a.images, c.images)


def test_splits_are_disjoint_by_alphabet_60_20_20():
    ds = load_dataset(DataConfig(glyph_classes=600, glyph_samples=2))
    assert {k: len(v) for k, v in ds.splits.items()} == {"train": 360, "val": 120, "test": 120}
    assert sorted(sum(ds.splits.values(), [])) == list(range(600))
    alphabets = {k: {ds.class_names[c].split("/")[0] for c in v} for k, v in ds.splits.items()}
    assert [len(alphabets[k]) for k in ("train", "val", "test")] == [18, 6, 6]
    assert not (alphabets["train"] & alphabets["val"]) and not (alphabets["train"] & alphabets["test"])
    assert not (alphabets["val"] & alphabets["test"])


def test_small_dataset_still_has_every_split():
    ds = load_dataset(DataConfig(glyph_classes=60, glyph_samples=8))  # the smoke preset's size
    assert {k: len(v) for k, v in ds.splits.items()} == {"train": 36, "val": 12, "test": 12}
    ds.sampler("val", ways=5, shots=1, queries=3, seed=0).sample(2)


def test_default_generation_is_fast():
    # One thread: on a loaded 2-core machine two threads contend and time becomes noise.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        start = time.perf_counter()
        images, labels, alphabets = glyphs.make_glyphs(600, 20)
        seconds = time.perf_counter() - start
    finally:
        torch.set_num_threads(threads)
    assert images.shape == (12000, 1, 28, 28) and alphabets == 30
    assert seconds < 5.0, f"600 x 20 glyphs took {seconds:.1f} s"


def pixel_nn_accuracy(ds, split: str, episodes: int, seed: int) -> float:
    batch = ds.sampler(split, ways=5, shots=1, queries=5, seed=seed).sample(episodes)
    dist = torch.cdist(batch.query_x.flatten(2), batch.support_x.flatten(2))  # (T, 25, 5)
    return float((dist.argmin(-1) == batch.query_y).float().mean())


def test_pixel_nearest_neighbour_is_far_from_solved():
    # DESIGN.md: raw pixels must be a weak similarity (a trained Conv-4 reaches ~82%, see glyphs.py).
    # The default 600 characters; 6 drawings each are enough for 1-shot 5-query episodes.
    ds = load_dataset(DataConfig(glyph_samples=6))
    acc = pixel_nn_accuracy(ds, "test", episodes=1000, seed=0)
    # Far below a trained Conv-4, yet far above chance (0.2): drawings of one character look alike.
    assert 0.35 < acc < 0.60, acc


def test_cache_hit_and_corrupt_rebuild(tmp_path, monkeypatch):
    cfg = DataConfig(glyph_classes=20, glyph_samples=3, cache_dir=str(tmp_path))
    first = load_dataset(cfg)
    files = list(tmp_path.glob("glyphs-*.pt"))
    assert len(files) == 1
    real = glyphs.make_glyphs
    calls = []
    monkeypatch.setattr(glyphs, "make_glyphs", lambda *a, **k: calls.append(1) or real(*a, **k))
    second = load_dataset(cfg)
    assert calls == [] and torch.equal(first.images, second.images) and first.splits == second.splits
    files[0].write_bytes(files[0].read_bytes()[:100])  # truncated by a crash or a full disk
    third = load_dataset(cfg)
    assert calls == [1] and torch.equal(first.images, third.images)
    # Another parameter, another cache entry: a stale entry is never used for it.
    other = load_dataset(cfg.__class__(**{**cfg.__dict__, "glyph_samples": 4}))
    assert other.images.shape[0] == 80 and len(list(tmp_path.glob("glyphs-*.pt"))) == 2


@pytest.mark.parametrize("field,value", [("seed", 1), ("image_size", 32), ("glyph_classes", 21)])
def test_cache_key_covers_every_parameter(tmp_path, field, value):
    base = DataConfig(glyph_classes=20, glyph_samples=3, cache_dir=str(tmp_path))
    load_dataset(base)
    changed = DataConfig(**{**base.__dict__, field: value})
    load_dataset(changed)
    assert len(list(tmp_path.glob("glyphs-*.pt"))) == 2
    assert cache_path(tmp_path, "x", {"a": 1}) != cache_path(tmp_path, "x", {"a": 2})
