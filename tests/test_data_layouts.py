"""Tiny datasets in every supported layout, written by the tests into temporary folders, and
the suite every image dataset must pass (disjoint splits, shapes, determinism).

The other ``test_data_*`` files import the builders from here.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image, ImageDraw

from nas_meta.config import DataConfig
from nas_meta.data import DATASETS, ImageDataset, load_dataset
from nas_meta.data import cifar_fs as cifar_module

# ------------------------------------------------------------------ builders of tiny layouts


def write_character(path: Path, seed: int, size: int = 20) -> None:
    """A black-on-white drawing (like Omniglot's PNGs): a bar whose place depends on ``seed``."""
    img = Image.new("L", (size, size), 255)
    draw = ImageDraw.Draw(img)
    x = 2 + seed % 7
    draw.rectangle([x, 2, x + 4, size - 6], fill=0)
    draw.line([0, size - 3, size - 1 - seed % 5, size - 3], fill=0, width=2)
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path)


def write_set(folder: Path, alphabets: dict[str, int], drawings: int = 4, offset: int = 0) -> None:
    for a, (name, chars) in enumerate(alphabets.items()):
        for c in range(chars):
            for d in range(drawings):
                path = folder / name / f"character{c + 1:02d}" / f"{a:02d}{c:02d}_{d + 1:02d}.png"
                write_character(path, a * 7 + c + d + offset)


def omniglot_torchvision(root: Path) -> Path:
    write_set(root / "omniglot-py" / "images_background", {"Alpha": 3, "Beta": 3, "Gamma": 3})
    write_set(root / "omniglot-py" / "images_evaluation", {"Delta": 3, "Epsilon": 3})
    return root


def omniglot_minimal(root: Path) -> Path:
    write_set(root / "images_background_small1", {"Greek": 3, "Korean": 2})
    write_set(root / "images_background_small2", {"Greek": 3, "Tagalog": 4})
    return root


def write_rgb(path: Path, color: tuple[int, int, int], size: tuple[int, int] = (40, 30)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, color).save(path)


def folder_tree(root: Path, classes: int = 10, images: int = 5) -> Path:
    suffixes = [".png", ".jpg", ".JPEG"]
    for c in range(classes):
        for i in range(images):
            write_rgb(root / f"class{c:02d}" / f"img{i}{suffixes[i % 3]}", (20 * c % 256, 10 * i, 200))
    (root / "class00" / "notes.txt").write_text("not an image")
    return root


CIFAR_NAMES = sorted(cifar_module.TRAIN_CLASSES + cifar_module.VAL_CLASSES + cifar_module.TEST_CLASSES)


def cifar_tree(root: Path, per_class: tuple[int, int] = (3, 1)) -> tuple[Path, list[str]]:
    """Fake ``cifar-100-python`` pickles; meta lists the names in a shuffled order and every pixel
    of an image holds its meta label, so relabelling can be checked."""
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True)
    meta_names = list(CIFAR_NAMES)
    np.random.default_rng(0).shuffle(meta_names)
    with open(folder / "meta", "wb") as f:
        pickle.dump({"fine_label_names": meta_names, "coarse_label_names": ["x"] * 20}, f)
    for part, n in zip(("train", "test"), per_class, strict=True):
        labels = [k for k in range(100) for _ in range(n)]
        data = np.repeat(np.array(labels, dtype=np.uint8)[:, None], 3072, axis=1)
        with open(folder / part, "wb") as f:
            pickle.dump({"data": data, "fine_labels": labels, "coarse_labels": [0] * len(labels)}, f)
    return root, meta_names


def no_network(monkeypatch) -> None:
    def refuse(*args, **kwargs):
        raise AssertionError("a download was attempted without --download")

    monkeypatch.setattr(torchvision.datasets, "Omniglot", refuse)
    monkeypatch.setattr(torchvision.datasets, "CIFAR100", refuse)


# ------------------------------------------------------------------ shared suite


def build_any(name: str, tmp: Path) -> ImageDataset:
    if name == "glyphs":
        return load_dataset(DataConfig(glyph_classes=30, glyph_samples=5))
    if name == "omniglot":
        return load_dataset(DataConfig(dataset="omniglot", data_root=str(omniglot_torchvision(tmp))))
    if name == "omniglot-vinyals":
        return load_dataset(DataConfig(dataset="omniglot", data_root=str(omniglot_torchvision(tmp)), split="vinyals"))
    if name == "folder":
        return load_dataset(DataConfig(dataset="folder", data_root=str(folder_tree(tmp)), image_size=12))
    if name in ("mini_imagenet", "cub"):
        from test_data_benchmarks import make_cub, make_mini_imagenet  # their tiny fake trees

        (make_mini_imagenet if name == "mini_imagenet" else make_cub)(tmp / name, per_class=4)
        return load_dataset(DataConfig(dataset=name, data_root=str(tmp / name), image_size=12, cache_dir=str(tmp)))
    assert name == "cifar_fs"
    return load_dataset(DataConfig(dataset="cifar_fs", data_root=str(cifar_tree(tmp)[0])))


IMAGE_SETS = ["glyphs", "omniglot", "omniglot-vinyals", "folder", "cifar_fs", "mini_imagenet", "cub"]


@pytest.mark.parametrize("name", IMAGE_SETS)
def test_every_image_dataset(name, tmp_path):
    ds = build_any(name, tmp_path)
    assert ds.task == "classification" and ds.images.dtype == torch.uint8
    assert tuple(ds.images.shape[1:]) == ds.input_shape and ds.labels.shape == (len(ds.images),)
    ids = [set(ds.splits[s]) for s in ("train", "val", "test")]
    assert all(ids) and not (ids[0] & ids[1]) and not (ids[0] & ids[2]) and not (ids[1] & ids[2])
    assert set(ds.labels.unique().tolist()) == ids[0] | ids[1] | ids[2]
    for split in ("train", "val", "test"):
        ways = min(2, len(ds.splits[split]))
        a = ds.sampler(split, ways=ways, shots=1, queries=2, seed=3).sample(4)
        b = ds.sampler(split, ways=ways, shots=1, queries=2, seed=3).sample(4)
        assert a.support_x.shape == (4, ways, *ds.input_shape) and a.query_x.shape == (4, 2 * ways, *ds.input_shape)
        assert torch.equal(a.query_x, b.query_x) and int(a.query_y.max()) == ways - 1


def test_registry_lists_every_dataset():
    assert DATASETS.names() == ["cifar_fs", "cub", "folder", "glyphs", "mini_imagenet", "omniglot", "sinusoid"]
