"""miniImageNet and CUB-200-2011 in their usual layouts, read offline from tiny fake trees."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from PIL import Image

from nas_meta.config import DataConfig
from nas_meta.data import load_dataset
from nas_meta.data.benchmarks import cub_split
from nas_meta.errors import DataError


def _jpeg(path, seed: int, size=(12, 10)) -> None:
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)).save(path)


def make_mini_imagenet(root, per_class: int = 2) -> None:
    (root / "images").mkdir(parents=True)
    counts = {"train": 64, "val": 16, "test": 20}
    n = 0
    for split, classes in counts.items():
        lines = ["filename,label"]
        for c in range(classes):
            label = f"n{split}{c:05d}"
            for i in range(per_class):
                name = f"{label}{i:08d}.jpg"
                _jpeg(root / "images" / name, n)
                n += 1
                lines.append(f"{name},{label}")
        (root / f"{split}.csv").write_text("\n".join(lines) + "\n")


def make_cub(root, per_class: int = 1) -> None:
    images = root / "CUB_200_2011" / "images"
    for c in range(1, 201):
        folder = images / f"{c:03d}.Bird_{c}"
        folder.mkdir(parents=True)
        for i in range(per_class):
            _jpeg(folder / f"Bird_{c}_{i}.jpg", c * 10 + i, size=(14, 9))


def test_mini_imagenet_has_its_64_16_20_classes_at_84x84(tmp_path):
    make_mini_imagenet(tmp_path / "mini")
    ds = load_dataset(
        DataConfig(dataset="mini_imagenet", data_root=str(tmp_path / "mini"), cache_dir=str(tmp_path / "c"))
    )
    assert ds.input_shape == (3, 84, 84)
    assert {s: len(ds.splits[s]) for s in ("train", "val", "test")} == {"train": 64, "val": 16, "test": 20}
    assert len(ds.labels) == 200
    # The classes of a split are exactly those its CSV lists.
    val_names = {ds.class_names[i] for i in ds.splits["val"]}
    assert val_names == {f"nval{c:05d}" for c in range(16)}
    # Pixels come from the files: the first training image, resized (shorter side) and centre-cropped.
    episode = ds.sampler("train", ways=5, shots=1, queries=1, seed=0).sample(2)
    assert episode.support_x.shape == (2, 5, 3, 84, 84)
    again = load_dataset(
        DataConfig(dataset="mini_imagenet", data_root=str(tmp_path / "mini"), cache_dir=str(tmp_path / "c"))
    )
    assert torch.equal(again.images, ds.images)  # from the cache


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda r: (r / "val.csv").unlink(), "missing {root}/val.csv"),
        (
            lambda r: (r / "test.csv").write_text("file,label\na.jpg,x\n"),
            "{root}/test.csv: the first line must be 'filename,label'",
        ),
        (
            lambda r: (r / "images" / "ntrain0000100000000.jpg").unlink(),
            "missing image {root}/images/ntrain0000100000000.jpg",
        ),
        (
            lambda r: (r / "images" / "ntest0000000000000.jpg").write_bytes(b"not a jpeg"),
            "unreadable image {root}/images/ntest0000000000000.jpg",
        ),
        (
            lambda r: (r / "val.csv").write_text("filename,label\nntrain0000000000000.jpg,n0\n"),
            "lists 1 classes; miniImageNet's val split has 16",
        ),
    ],
)
def test_a_broken_mini_imagenet_names_the_file(tmp_path, damage, message):
    root = tmp_path / "mini"
    make_mini_imagenet(root, per_class=1)
    damage(root)
    with pytest.raises(DataError, match=None) as exc:
        load_dataset(DataConfig(dataset="mini_imagenet", data_root=str(root), cache_dir=str(tmp_path / "c")))
    assert message.format(root=root) in str(exc.value)
    assert "\n" not in str(exc.value)


def test_cub_uses_chen_et_als_class_split(tmp_path):
    make_cub(tmp_path / "cub")
    ds = load_dataset(DataConfig(dataset="cub", data_root=str(tmp_path / "cub"), cache_dir=str(tmp_path / "c")))
    assert ds.input_shape == (3, 84, 84)
    sizes = {s: len(ds.splits[s]) for s in ("train", "val", "test")}
    assert sizes == {"train": 100, "val": 50, "test": 50}
    names = sorted(f"{c:03d}.Bird_{c}" for c in range(1, 201))
    # Chen et al. (write_CUB_filelist.py): index i of the sorted folders, even -> base, 1 mod 4 -> val, 3 mod 4 -> novel
    assert {ds.class_names[i] for i in ds.splits["train"]} == set(names[0::2])
    assert {ds.class_names[i] for i in ds.splits["val"]} == set(names[1::4])
    assert {ds.class_names[i] for i in ds.splits["test"]} == set(names[3::4])
    assert cub_split(list(reversed(names)))["val"][0] == "002.Bird_2"


def test_cub_missing_or_incomplete_is_one_error_naming_the_folder(tmp_path):
    with pytest.raises(DataError, match="missing .*CUB_200_2011/images: unpack CUB_200_2011.tgz"):
        load_dataset(DataConfig(dataset="cub", data_root=str(tmp_path), cache_dir=str(tmp_path / "c")))
    make_cub(tmp_path / "cub")
    victim = tmp_path / "cub" / "CUB_200_2011" / "images" / "007.Bird_7"
    for f in victim.iterdir():
        f.unlink()
    with pytest.raises(DataError, match="class folder .*007.Bird_7 has no images"):
        load_dataset(DataConfig(dataset="cub", data_root=str(tmp_path / "cub"), cache_dir=str(tmp_path / "c")))
    random.seed(0)
