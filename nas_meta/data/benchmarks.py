"""The few-shot image benchmarks researchers keep on disk, read offline in their usual layouts.

``mini_imagenet``: miniImageNet as Ravi & Larochelle (ICLR 2017) released it: ``images/`` (the
84x84 JPEGs) and ``train.csv`` / ``val.csv`` / ``test.csv`` (``filename,label``), 64 / 16 / 20
classes of 600 images.  ``--data-root`` is the folder that holds them.

``cub``: CUB-200-2011 (Wah et al. 2011) as its archive unpacks, ``CUB_200_2011/images/<class>/``
(under ``--data-root``), with the class split of Chen et al. ("A Closer Look at Few-shot
Classification", ICLR 2019): the 200 class folders in sorted order, index i to train when i is
even (100), validation when i % 4 == 1 (50), test when i % 4 == 3 (50).  Images are resized
(shorter side) and centre-cropped to 84x84 by default.

Both are read once into the tensor cache; a missing or malformed file is one DataError naming it.
"""

from __future__ import annotations

import csv
from pathlib import Path

import torch
from torch import Tensor

from ..config import DataConfig
from ..errors import DataError
from .base import DATASETS, ImageDataset
from .cache import cached_tensors, fingerprint_files
from .imagefiles import DECODER_VERSION, class_folder_name, decode_names, encode_names, list_images, read_images

__all__ = ["build_mini_imagenet", "build_cub", "MINI_IMAGENET_CLASSES", "cub_split"]

MINI_IMAGENET_CLASSES = {"train": 64, "val": 16, "test": 20}
DEFAULT_SIZE = 84
CUB_FOLDER = "CUB_200_2011"


def _root(cfg: DataConfig, name: str, layout: str) -> Path:
    if not cfg.data_root:
        raise DataError(f"dataset {name!r} needs --data-root DIR, the folder that holds {layout}")
    root = Path(cfg.data_root).expanduser()
    if not root.is_dir():
        raise DataError(f"--data-root {str(root)!r} is not a folder; {name} needs {layout} there")
    return root


def _read_csv(path: Path) -> list[tuple[str, str]]:
    """(filename, label) rows of a Ravi & Larochelle split file."""
    if not path.is_file():
        raise DataError(f"missing {path}: miniImageNet needs train.csv, val.csv and test.csv beside images/")
    try:
        # UTF-8 whatever the locale (a BOM dropped): the release's files are ASCII.
        with open(path, newline="", encoding="utf-8-sig") as f:
            rows = list(csv.reader(f))
    except UnicodeDecodeError:
        raise DataError(f"{path} is not UTF-8 text; save it with the UTF-8 encoding") from None
    except (OSError, csv.Error) as exc:
        raise DataError(f"unreadable {path}: {exc}") from None
    if not rows or [c.strip() for c in rows[0]] != ["filename", "label"]:
        raise DataError(f"{path}: the first line must be 'filename,label', got {rows[0] if rows else 'nothing'}")
    out = []
    for number, row in enumerate(rows[1:], start=2):
        if len(row) != 2 or not row[0].strip() or not row[1].strip():
            raise DataError(f"{path}, line {number}: expected 'filename,label', got {','.join(row)!r}")
        out.append((row[0].strip(), row[1].strip()))
    return out


def _split_dataset(name: str, t: dict[str, Tensor]) -> ImageDataset:
    classes: dict[str, list[str]] = decode_names(t["classes"])
    names = [c for split in ("train", "val", "test") for c in classes[split]]
    splits, start = {}, 0
    for split in ("train", "val", "test"):
        splits[split] = list(range(start, start + len(classes[split])))
        start += len(classes[split])
    return ImageDataset(name, t["images"], t["labels"], names, splits)


@DATASETS.register("mini_imagenet")
def build_mini_imagenet(cfg: DataConfig) -> ImageDataset:
    """miniImageNet from ``cfg.data_root`` (``images/`` and the three split CSVs), 84x84 RGB."""
    root = _root(cfg, "mini_imagenet", "images/ and train.csv, val.csv, test.csv (Ravi & Larochelle)")
    rows = {split: _read_csv(root / f"{split}.csv") for split in ("train", "val", "test")}
    classes: dict[str, list[str]] = {}
    owner: dict[str, str] = {}
    for split, entries in rows.items():
        classes[split] = sorted({label for _, label in entries})
        for label in classes[split]:
            if label in owner:
                raise DataError(f"class {label!r} is in both {owner[label]}.csv and {split}.csv under {root}")
            owner[label] = split
        expected = MINI_IMAGENET_CLASSES[split]
        if len(classes[split]) != expected:
            raise DataError(
                f"{root / (split + '.csv')} lists {len(classes[split])} classes; "
                f"miniImageNet's {split} split has {expected}"
            )
    files = [root / "images" / filename for entries in rows.values() for filename, _ in entries]
    missing = next((f for f in files if not f.is_file()), None)
    if missing is not None:
        raise DataError(f"missing image {missing} (listed in the split CSVs)")
    size = cfg.image_size or DEFAULT_SIZE
    csvs = [root / f"{split}.csv" for split in rows]
    key: dict[str, object] = {"dataset": "mini_imagenet", "root": str(root.resolve())}
    key.update(files=fingerprint_files(csvs + files, root), size=size, decoder=DECODER_VERSION)

    def read() -> dict[str, Tensor]:
        index = {label: i for i, label in enumerate(c for s in ("train", "val", "test") for c in classes[s])}
        labels = [index[label] for entries in rows.values() for _, label in entries]
        images = read_images(files, mode="RGB", size=size, crop=True)
        return {"images": images, "labels": torch.tensor(labels), "classes": encode_names(classes)}

    return _split_dataset("mini_imagenet", cached_tensors(cfg.cache_dir, "mini_imagenet", key, read))


def cub_split(folders: list[str]) -> dict[str, list[str]]:
    """Chen et al.'s class split of the sorted CUB class folders: even index train, i % 4 == 1
    validation, i % 4 == 3 test."""
    ordered = sorted(folders)
    return {
        "train": [f for i, f in enumerate(ordered) if i % 2 == 0],
        "val": [f for i, f in enumerate(ordered) if i % 4 == 1],
        "test": [f for i, f in enumerate(ordered) if i % 4 == 3],
    }


@DATASETS.register("cub")
def build_cub(cfg: DataConfig) -> ImageDataset:
    """CUB-200-2011 from ``cfg.data_root/CUB_200_2011/images/<class>/``, Chen et al.'s split, 84x84 RGB."""
    root = _root(cfg, "cub", f"{CUB_FOLDER}/images/<200 class folders>")
    images_dir = root / CUB_FOLDER / "images"
    if not images_dir.is_dir():
        raise DataError(f"missing {images_dir}: unpack CUB_200_2011.tgz into {root}")
    folders = sorted(class_folder_name(p) for p in images_dir.iterdir() if p.is_dir() and not p.name.startswith("."))
    if len(folders) != 200:
        raise DataError(f"{images_dir} holds {len(folders)} class folders; CUB-200-2011 has 200")
    classes = cub_split(folders)
    files: list[Path] = []
    labels: list[int] = []
    ordered = [c for s in ("train", "val", "test") for c in classes[s]]
    for i, folder in enumerate(ordered):
        found = list_images(images_dir / folder)
        if not found:
            raise DataError(f"class folder {images_dir / folder} has no images")
        files += found
        labels += [i] * len(found)
    size = cfg.image_size or DEFAULT_SIZE
    key = {
        "dataset": "cub",
        "root": str(root.resolve()),
        "files": fingerprint_files(files, root),
        "size": size,
        "decoder": DECODER_VERSION,
    }

    def read() -> dict[str, Tensor]:
        images = read_images(files, mode="RGB", size=size, crop=True)
        return {"images": images, "labels": torch.tensor(labels), "classes": encode_names(classes)}

    return _split_dataset("cub", cached_tensors(cfg.cache_dir, "cub", key, read))
