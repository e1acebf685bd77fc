"""folder, cifar_fs and sinusoid on tiny data written by the tests."""

from __future__ import annotations

import math
import pickle
import shutil

import pytest
import torch
from test_data_layouts import cifar_tree, folder_tree, no_network, write_rgb

from nas_meta.config import DataConfig
from nas_meta.data import cifar_fs as cifar_module
from nas_meta.data import folder as folder_module
from nas_meta.data import load_dataset
from nas_meta.errors import ConfigError, DataError

# ------------------------------------------------------------------ folder


def test_folder_defaults_rgb_84_and_seeded_split(tmp_path):
    root = folder_tree(tmp_path)
    ds = load_dataset(DataConfig(dataset="folder", data_root=str(root)))
    assert ds.input_shape == (3, 84, 84) and ds.images.shape[0] == 50
    assert [len(ds.splits[s]) for s in ("train", "val", "test")] == [6, 2, 2]
    # The colour survives: class03 image 2 was (60, 20, 200), saved as JPEG (lossy: +-2).
    img = ds.images[(ds.labels == ds.class_names.index("class03")).nonzero()[2, 0]]
    assert (img[:, 40, 40].int() - torch.tensor([60, 20, 200])).abs().max() <= 2
    again = load_dataset(DataConfig(dataset="folder", data_root=str(root)))
    other = load_dataset(DataConfig(dataset="folder", data_root=str(root), seed=1))
    assert again.splits == ds.splits and other.splits != ds.splits


def test_folder_split_files(tmp_path):
    root = folder_tree(tmp_path)
    (root / "train.txt").write_text("# miniImageNet-style\nclass00\nclass01\nclass02\n\n")
    (root / "val.txt").write_text("class03\nclass04\n")
    (root / "test.txt").write_text("class05  # trailing comment\nclass06\n")
    ds = load_dataset(DataConfig(dataset="folder", data_root=str(root), image_size=10))
    named = {s: [ds.class_names[c] for c in ids] for s, ids in ds.splits.items()}
    assert named == {
        "train": ["class00", "class01", "class02"],
        "val": ["class03", "class04"],
        "test": ["class05", "class06"],
    }
    assert ds.images.shape[0] == 35  # the unlisted classes are not loaded


@pytest.mark.parametrize(
    "val_text,match",
    [
        ("class03\nclass99\n", r"val.txt:2: class 'class99' has no folder"),
        ("../outside\n", r"val.txt:1: class '../outside' is not a folder directly inside"),
        ("class03/../../outside\n", r"is not a folder directly inside"),
        ("class00\n", r"val.txt:1: class 'class00' is already in split 'train'"),
    ],
)
def test_folder_bad_split_files(tmp_path, val_text, match):
    root = folder_tree(tmp_path / "root")
    (tmp_path / "outside").mkdir()
    write_rgb(tmp_path / "outside" / "x.png", (1, 2, 3))
    (root / "train.txt").write_text("class00\n")
    (root / "test.txt").write_text("class05\n")
    (root / "val.txt").write_text(val_text)
    with pytest.raises(DataError, match=match):
        load_dataset(DataConfig(dataset="folder", data_root=str(root)))


def test_folder_partial_split_files(tmp_path):
    root = folder_tree(tmp_path)
    (root / "train.txt").write_text("class00\n")
    with pytest.raises(DataError, match=r"split files must come as a set of three; missing .*val.txt.*test.txt"):
        load_dataset(DataConfig(dataset="folder", data_root=str(root)))


def test_folder_bad_input(tmp_path):
    root = folder_tree(tmp_path, classes=4)
    (root / "class04").mkdir()
    with pytest.raises(DataError, match=f"empty class folder {root / 'class04'}"):
        load_dataset(DataConfig(dataset="folder", data_root=str(root)))
    shutil.rmtree(root / "class04")
    bad = root / "class02" / "img1.jpg"
    bad.write_bytes(bad.read_bytes()[:-200])
    with pytest.raises(DataError, match=f"unreadable image {bad}"):
        load_dataset(DataConfig(dataset="folder", data_root=str(root)))
    with pytest.raises(DataError, match="is not a folder"):
        load_dataset(DataConfig(dataset="folder", data_root=str(tmp_path / "missing")))
    empty_root = tmp_path / "empty"
    empty_root.mkdir()
    with pytest.raises(DataError, match="no class folders in"):
        load_dataset(DataConfig(dataset="folder", data_root=str(empty_root)))


def test_folder_class_too_small_and_too_few_classes(tmp_path):
    root = folder_tree(tmp_path, classes=10, images=3)
    ds = load_dataset(DataConfig(dataset="folder", data_root=str(root), image_size=8))
    small = ds.class_names[ds.splits["val"][0]]
    with pytest.raises(DataError, match=rf"class '{small}' in split 'val' has 3 images, fewer than shots\+queries=4"):
        ds.sampler("val", ways=2, shots=1, queries=3, seed=0)
    with pytest.raises(DataError, match=r"split 'test' has 2 classes, fewer than ways=5"):
        ds.sampler("test", ways=5, shots=1, queries=1, seed=0)


def test_folder_cache(tmp_path, monkeypatch):
    root = folder_tree(tmp_path / "data", classes=5)
    cfg = DataConfig(dataset="folder", data_root=str(root), cache_dir=str(tmp_path / "cache"), image_size=8)
    first = load_dataset(cfg)
    monkeypatch.setattr(folder_module, "read_images", lambda *a, **k: pytest.fail("cache not used"))
    second = load_dataset(cfg)
    assert torch.equal(first.images, second.images) and first.class_names == second.class_names


# ------------------------------------------------------------------ cifar_fs


def test_cifar_fs_split_and_labels(tmp_path, monkeypatch):
    no_network(monkeypatch)
    root, meta_names = cifar_tree(tmp_path)
    ds = load_dataset(DataConfig(dataset="cifar_fs", data_root=str(root)))
    assert ds.input_shape == (3, 32, 32) and ds.images.shape[0] == 400
    assert [len(ds.splits[s]) for s in ("train", "val", "test")] == [64, 16, 20]
    assert {ds.class_names[c] for c in ds.splits["test"]} == set(cifar_module.TEST_CLASSES)
    assert {ds.class_names[c] for c in ds.splits["val"]} == set(cifar_module.VAL_CLASSES)
    assert "whale" in cifar_module.TEST_CLASSES and "otter" in cifar_module.VAL_CLASSES
    # Every pixel holds the meta label it was written with: the name must survive relabelling.
    written = ds.images[:, 0, 0, 0].long()
    assert all(ds.class_names[int(y)] == meta_names[int(v)] for y, v in zip(ds.labels, written, strict=True))
    small = load_dataset(DataConfig(dataset="cifar_fs", data_root=str(root), image_size=16))
    assert small.input_shape == (3, 16, 16)


def test_cifar_fs_missing_does_not_download(tmp_path, monkeypatch):
    no_network(monkeypatch)
    with pytest.raises(DataError, match=r"no CIFAR-100 under .*cifar-100-python.*--download"):
        load_dataset(DataConfig(dataset="cifar_fs", data_root=str(tmp_path)))


def test_cifar_fs_refuses_code_in_pickles(tmp_path):
    root, _ = cifar_tree(tmp_path)

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    with open(root / "cifar-100-python" / "meta", "wb") as f:
        pickle.dump({"fine_label_names": Evil()}, f)
    with pytest.raises(DataError, match=r"unreadable CIFAR-100 file .*meta: refusing to load builtins.print"):
        load_dataset(DataConfig(dataset="cifar_fs", data_root=str(root)))


# ------------------------------------------------------------------ sinusoid


def test_sinusoid_tasks():
    ds = load_dataset(DataConfig(dataset="sinusoid"))
    assert ds.task == "regression" and ds.input_shape == (1,)
    batch = ds.sampler("train", ways=5, shots=10, queries=7, seed=0).sample(64)
    assert batch.ways == 1 and batch.support_x.shape == (64, 10, 1) and batch.query_y.shape == (64, 7, 1)
    assert batch.support_x.dtype == torch.float32 and batch.query_y.dtype == torch.float32
    x = torch.cat([batch.support_x, batch.query_x], 1).squeeze(-1).double()
    y = torch.cat([batch.support_y, batch.query_y], 1).squeeze(-1).double()
    assert float(x.abs().max()) <= 5.0
    # y = A sin(x - phi) = a sin x + b cos x with a = A cos phi, b = -A sin phi: fit on the support,
    # predict the query exactly; A in [0.1, 5] and phi in [0, pi] mean b <= 0.
    basis = torch.stack([torch.sin(x), torch.cos(x)], -1)  # (T, 17, 2)
    coef = torch.linalg.lstsq(basis[:, :10], y[:, :10, None]).solution  # (T, 2, 1)
    assert torch.allclose((basis[:, 10:] @ coef).squeeze(-1), y[:, 10:], atol=1e-4)
    amplitude = coef.squeeze(-1).norm(dim=-1)
    phase = torch.atan2(-coef[:, 1, 0], coef[:, 0, 0])
    assert 0.1 - 1e-4 <= float(amplitude.min()) and float(amplitude.max()) <= 5 + 1e-4
    assert -1e-4 <= float(phase.min()) and float(phase.max()) <= math.pi + 1e-4


def test_sinusoid_streams_are_seeded_per_split():
    ds = load_dataset(DataConfig(dataset="sinusoid"))
    a = ds.sampler("train", ways=1, shots=5, queries=5, seed=0).sample(3)
    b = ds.sampler("train", ways=1, shots=5, queries=5, seed=0).sample(3)
    c = ds.sampler("val", ways=1, shots=5, queries=5, seed=0).sample(3)
    d = ds.sampler("train", ways=1, shots=5, queries=5, seed=1).sample(3)
    assert torch.equal(a.support_y, b.support_y)
    assert not torch.equal(a.support_y, c.support_y) and not torch.equal(a.support_y, d.support_y)
    assert a.to("cpu").ways == 1
    with pytest.raises(ConfigError):
        ds.sampler("train", ways=1, shots=0, queries=5, seed=0)
