"""``folder``: any ``<root>/<class>/*.png|jpg|jpeg`` tree (miniImageNet exports, users' data).

Classes are the sub-folders of ``--data-root``.  Splits come from ``train.txt``, ``val.txt`` and
``test.txt`` in the root when present (one class folder name a line; blank lines and ``#``
comments ignored; only the listed classes are loaded), otherwise from a seeded 60/20/20 split of
the classes.  Images are RGB, resized so the shorter side is ``image_size`` (84 by default, the
miniImageNet size) and centre-cropped to a square.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor

from ..config import DataConfig
from ..errors import DataError
from .base import DATASETS, SPLITS, ImageDataset, split_by_fraction
from .cache import cached_tensors, fingerprint_files
from .imagefiles import DECODER_VERSION, class_folder_name, decode_names, encode_names, list_images, read_images

__all__ = ["build_folder", "read_split_files"]

SPLIT_FILES = {s: f"{s}.txt" for s in SPLITS}


def read_split_files(root: Path) -> dict[str, list[str]] | None:
    """Class names per split from ``root/{train,val,test}.txt``, or None when there are none.

    DataError for a partial set of files, an entry that is not a class folder directly in
    ``root`` (a missing folder, or a path escaping the root) or a class in two splits.
    """
    present = {s: root / f for s, f in SPLIT_FILES.items() if (root / f).is_file()}
    if not present:
        return None
    if len(present) < len(SPLITS):
        missing = [str(root / SPLIT_FILES[s]) for s in SPLITS if s not in present]
        raise DataError(f"split files must come as a set of three; missing {missing}")
    real_root = root.resolve()
    owner: dict[str, str] = {}
    splits: dict[str, list[str]] = {}
    for split, path in present.items():
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise DataError(f"unreadable split file {path}: {exc.strerror or exc}") from None
        try:
            # A BOM (Windows editors) would otherwise become part of the first class name.
            lines = data.decode("utf-8-sig").splitlines()
        except UnicodeDecodeError as exc:
            # exc.object: the bytes after a BOM, which exc.start counts from
            bad_line = exc.object[: exc.start].count(b"\n") + 1
            raise DataError(
                f"split file {path} is not UTF-8 text (byte 0x{exc.object[exc.start]:02x} on line {bad_line}); "
                "save it with the UTF-8 encoding"
            ) from None
        names: list[str] = []
        for number, line in enumerate(lines, 1):
            name = line.split("#", 1)[0].strip()
            if not name:
                continue
            target = (root / name).resolve()
            # A class must be a folder directly inside the root: no '..', no absolute paths, no
            # symlinks leading elsewhere.
            if target.parent != real_root:
                raise DataError(f"{path}:{number}: class {name!r} is not a folder directly inside {root}")
            if not target.is_dir():
                raise DataError(f"{path}:{number}: class {name!r} has no folder {root / name}")
            if name in owner:
                raise DataError(f"{path}:{number}: class {name!r} is already in split {owner[name]!r}")
            owner[name] = split
            names.append(name)
        splits[split] = names
    return splits


@DATASETS.register("folder")
def build_folder(cfg: DataConfig) -> ImageDataset:
    """Classes from the sub-folders of ``cfg.data_root`` (see the module docstring)."""
    if not cfg.data_root:
        raise DataError("dataset 'folder' needs --data-root DIR holding one sub-folder of images per class")
    root = Path(cfg.data_root).expanduser()
    if not root.is_dir():
        raise DataError(f"data root {root} is not a folder; expected <root>/<class>/*.png|jpg|jpeg")
    size = cfg.image_size or 84
    listed = read_split_files(root)
    if listed is None:
        classes = sorted(class_folder_name(p) for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    else:
        classes = sorted(sum(listed.values(), []))
    if not classes:
        raise DataError(f"no class folders in {root}; expected <root>/<class>/*.png|jpg|jpeg")
    files = []
    for name in classes:
        images = list_images(root / name)
        if not images:
            raise DataError(f"empty class folder {root / name}: no .png/.jpg/.jpeg images")
        files.append(images)
    all_files = [p for f in files for p in f]
    key = {
        "dataset": "folder",
        "root": str(root.resolve()),
        "classes": classes,
        "files": fingerprint_files(all_files, root),
        "size": size,
        "decoder": DECODER_VERSION,
    }

    def build() -> dict[str, Tensor]:
        images = read_images(all_files, mode="RGB", size=size, crop=True)
        labels = torch.arange(len(classes)).repeat_interleave(torch.tensor([len(f) for f in files]))
        return {"images": images, "labels": labels, "classes": encode_names(classes)}

    t = cached_tensors(cfg.cache_dir, "folder", key, build)
    if decode_names(t["classes"]) != classes:  # a hash collision would be the only way here
        raise RuntimeError("cache entry holds other classes than its key")
    if listed is None:
        splits = split_by_fraction(len(classes), cfg.seed)
    else:
        index = {c: i for i, c in enumerate(classes)}
        splits = {s: sorted(index[c] for c in listed[s]) for s in SPLITS}
    return ImageDataset("folder", t["images"], t["labels"], classes, splits)
