"""The omniglot loader on tiny drawings in torchvision's layout and the minimal-set layout."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torchvision
from test_data_layouts import no_network, omniglot_minimal, omniglot_torchvision, write_character, write_set

from nas_meta.config import DataConfig
from nas_meta.data import load_dataset
from nas_meta.data import omniglot as omniglot_module
from nas_meta.errors import ConfigError, DataError

# ------------------------------------------------------------------ omniglot


def test_omniglot_lake_split_and_inversion(tmp_path):
    ds = load_dataset(DataConfig(dataset="omniglot", data_root=str(omniglot_torchvision(tmp_path))))
    assert ds.images.shape == (60, 1, 28, 28) and len(ds.class_names) == 15
    alphabets = {s: {ds.class_names[c].split("/")[0] for c in ids} for s, ids in ds.splits.items()}
    assert alphabets["test"] == {"Delta", "Epsilon"}  # the evaluation alphabets, exactly
    assert alphabets["train"] | alphabets["val"] == {"Alpha", "Beta", "Gamma"}
    assert len(alphabets["val"]) == 1 and not (alphabets["train"] & alphabets["val"])
    # Black ink on white became ink high on 0: corners are background, the bar is bright.
    assert int(ds.images[:, 0, 0, 0].max()) == 0 and (ds.images.flatten(1).amax(1) > 200).all()


def test_omniglot_image_size(tmp_path):
    ds = load_dataset(DataConfig(dataset="omniglot", data_root=str(omniglot_torchvision(tmp_path)), image_size=16))
    assert ds.input_shape == (1, 16, 16)


def test_omniglot_vinyals_rotations_are_new_classes_in_the_same_split(tmp_path):
    root = str(omniglot_torchvision(tmp_path))
    base = load_dataset(DataConfig(dataset="omniglot", data_root=root))
    ds = load_dataset(DataConfig(dataset="omniglot", data_root=root, split="vinyals"))
    assert len(ds.class_names) == 4 * 15 and ds.images.shape[0] == 4 * 60
    # 15 characters: round(15 * 1200 / 1623) = 11 train, the other 4 halved into val and test.
    assert [len(ds.splits[s]) for s in ("train", "val", "test")] == [44, 8, 8]
    split_of = {c: s for s, ids in ds.splits.items() for c in ids}
    for char in range(15):
        assert len({split_of[4 * char + k] for k in range(4)}) == 1
        for k in range(4):
            assert ds.class_names[4 * char + k] == f"{base.class_names[char]}/rot{90 * k}"
            rotated = ds.images[ds.labels == 4 * char + k]
            assert torch.equal(rotated, torch.rot90(base.images[base.labels == char], k, dims=(2, 3)))


def test_omniglot_minimal_sets_merge_shared_alphabets(tmp_path):
    ds = load_dataset(DataConfig(dataset="omniglot", data_root=str(omniglot_minimal(tmp_path))))
    # Greek (3) appears in both sets: 3 + 2 + 4 distinct characters, 4 drawings each, no doubles.
    assert len(ds.class_names) == 9 and ds.images.shape[0] == 36
    assert sum(1 for n in ds.class_names if n.startswith("Greek/")) == 3
    # No evaluation set: the 3 alphabets are split 60/20/20 -> one alphabet per split.
    alphabets = [{ds.class_names[c].split("/")[0] for c in ds.splits[s]} for s in ("train", "val", "test")]
    assert [len(a) for a in alphabets] == [1, 1, 1]


def test_omniglot_root_may_be_a_set_folder(tmp_path):
    omniglot_minimal(tmp_path)
    ds = load_dataset(DataConfig(dataset="omniglot", data_root=str(tmp_path / "images_background_small2")))
    assert len(ds.class_names) == 7


def test_omniglot_missing_offline_says_where_and_how(tmp_path, monkeypatch):
    no_network(monkeypatch)
    with pytest.raises(DataError) as err:
        load_dataset(DataConfig(dataset="omniglot", data_root=str(tmp_path / "nothing")))
    message = str(err.value)
    assert str(tmp_path / "nothing" / "omniglot-py") in message and "--download" in message
    assert "\n" not in message
    with pytest.raises(DataError, match="needs --data-root"):
        load_dataset(DataConfig(dataset="omniglot"))


def test_omniglot_download_only_when_asked(tmp_path, monkeypatch):
    calls = []

    def fake_omniglot(root, background=True, download=False):
        calls.append((background, download))
        kind = "images_background" if background else "images_evaluation"
        write_set(Path(root) / "omniglot-py" / kind, {"Alpha": 2, "Beta": 2} if background else {"Delta": 2})

    monkeypatch.setattr(torchvision.datasets, "Omniglot", fake_omniglot)
    ds = load_dataset(DataConfig(dataset="omniglot", data_root=str(tmp_path), download=True))
    assert calls == [(True, True), (False, True)] and len(ds.class_names) == 6
    load_dataset(DataConfig(dataset="omniglot", data_root=str(tmp_path), download=True))
    assert len(calls) == 2, "data present: no second download"

    def offline(*args, **kwargs):
        raise OSError("Temporary failure in name resolution")

    monkeypatch.setattr(torchvision.datasets, "Omniglot", offline)
    with pytest.raises(DataError, match="could not download Omniglot into .*name resolution"):
        load_dataset(DataConfig(dataset="omniglot", data_root=str(tmp_path / "other"), download=True))


def test_omniglot_bad_input(tmp_path):
    root = omniglot_torchvision(tmp_path)
    empty = root / "omniglot-py" / "images_background" / "Beta" / "character04"
    empty.mkdir()
    with pytest.raises(DataError, match=f"empty class folder {empty}"):
        load_dataset(DataConfig(dataset="omniglot", data_root=str(root)))
    empty.rmdir()
    bad = next((root / "omniglot-py" / "images_evaluation" / "Delta" / "character02").glob("*.png"))
    bad.write_bytes(bad.read_bytes()[:40])  # truncated
    with pytest.raises(DataError, match=f"unreadable image {bad}"):
        load_dataset(DataConfig(dataset="omniglot", data_root=str(root)))
    with pytest.raises(ConfigError, match=r"unknown omniglot split 'lak'; choose from \['lake', 'vinyals'\]"):
        load_dataset(DataConfig(dataset="omniglot", data_root=str(root), split="lak"))


def test_omniglot_class_too_small_for_the_episode(tmp_path):
    ds = load_dataset(DataConfig(dataset="omniglot", data_root=str(omniglot_torchvision(tmp_path))))
    message = r"class 'Delta/character01' in split 'test' has 4 images, fewer than shots\+queries=6"
    with pytest.raises(DataError, match=message):
        ds.sampler("test", ways=5, shots=1, queries=5, seed=0)
    with pytest.raises(DataError, match=r"split 'test' has 6 classes, fewer than ways=7"):
        ds.sampler("test", ways=7, shots=1, queries=1, seed=0)


def test_omniglot_cache_hit_stale_and_corrupt(tmp_path, monkeypatch):
    root, cache = omniglot_torchvision(tmp_path / "data"), tmp_path / "cache"
    cfg = DataConfig(dataset="omniglot", data_root=str(root), cache_dir=str(cache))
    first = load_dataset(cfg)
    real = omniglot_module.read_images
    calls = []
    monkeypatch.setattr(omniglot_module, "read_images", lambda *a, **k: calls.append(1) or real(*a, **k))
    second = load_dataset(cfg)
    assert calls == [] and torch.equal(first.images, second.images) and first.splits == second.splits
    # A new drawing makes the cache stale: rebuilt, with the drawing.
    write_character(root / "omniglot-py" / "images_background" / "Alpha" / "character01" / "extra.png", 99)
    third = load_dataset(cfg)
    assert calls == [1] and third.images.shape[0] == 61
    for f in cache.glob("omniglot-*.pt"):
        f.write_bytes(b"\0" * 64)
    fourth = load_dataset(cfg)
    assert calls == [1, 1] and torch.equal(third.images, fourth.images)


def test_within_alphabet_episodes_keep_to_one_alphabet():
    from nas_meta.data.base import ImageDataset

    # 3 test alphabets of 4, 3 and 1 characters; every image's pixels hold its class id.
    names = ["Tr/a", "Tr/b", "Va/a", "Va/b", "A/1", "A/2", "A/3", "A/4", "B/1", "B/2", "B/3", "C/1"]
    labels = torch.arange(len(names)).repeat_interleave(3)
    images = labels.view(-1, 1, 1, 1).expand(-1, 1, 2, 2).to(torch.uint8).contiguous()
    ds = ImageDataset("toy", images, labels, names, {"train": [0, 1], "val": [2, 3], "test": list(range(4, 12))})

    def episode_classes(batch) -> list[set[int]]:
        return [set((batch.support_x[t, :, 0, 0, 0] * 255).round().long().tolist()) for t in range(batch.tasks)]

    within = episode_classes(ds.sampler("test", ways=3, shots=1, queries=1, seed=0, within_alphabet=True).sample(300))
    alphabets = [{names[c].split("/")[0] for c in classes} for classes in within]
    assert all(len(a) == 1 for a in alphabets)
    counts = {a: sum(x == {a} for x in alphabets) for a in "ABC"}
    assert counts["C"] == 0 and counts["A"] > 100 and counts["B"] > 100  # uniform over A and B only
    assert all(len(c) == 3 for c in within)
    mixed = episode_classes(ds.sampler("test", ways=3, shots=1, queries=1, seed=0).sample(300))
    assert sum(len({names[c].split("/")[0] for c in classes}) > 1 for classes in mixed) > 100
    with pytest.raises(DataError, match="no alphabet has 5 classes"):
        ds.sampler("test", ways=5, shots=1, queries=1, seed=0, within_alphabet=True)
