"""``cifar_fs``: CIFAR-FS (Bertinetto et al., "Meta-learning with differentiable closed-form
solvers", ICLR 2019): CIFAR-100's 100 classes x 600 images (its train and test parts merged),
split by class into 64 train, 16 val and 20 test classes.

The split is theirs, by class name (their ``splits/bertinetto/{val,test}.txt``; train is the rest).
Data is torchvision's ``cifar-100-python`` folder under ``--data-root``; it is fetched with
torchvision only when ``download`` is set.  The pickles are read with an unpickler that accepts
only the builtins and numpy arrays they contain, so a planted file cannot run code.
"""

from __future__ import annotations

import io
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ..config import DataConfig
from ..errors import DataError
from .base import DATASETS, SPLITS, ImageDataset
from .cache import cached_tensors, fingerprint_files

__all__ = ["build_cifar_fs", "VAL_CLASSES", "TEST_CLASSES", "TRAIN_CLASSES"]

FOLDER = "cifar-100-python"
PARTS = ("train", "test")
VAL_CLASSES = (
    "otter", "motorcycle", "television", "lamp", "crocodile", "shark", "butterfly", "beaver",
    "beetle", "tractor", "flatfish", "maple_tree", "camel", "crab", "sea", "cattle",
)  # fmt: skip
TEST_CLASSES = (
    "baby", "bed", "bicycle", "chimpanzee", "fox", "leopard", "man", "pickup_truck", "plain",
    "poppy", "rocket", "rose", "snail", "sweet_pepper", "table", "telephone", "wardrobe", "whale",
    "woman", "worm",
)  # fmt: skip
TRAIN_CLASSES = (
    "apple", "aquarium_fish", "bear", "bee", "bottle", "bowl", "boy", "bridge", "bus", "can",
    "castle", "caterpillar", "chair", "clock", "cloud", "cockroach", "couch", "cup", "dinosaur",
    "dolphin", "elephant", "forest", "girl", "hamster", "house", "kangaroo", "keyboard",
    "lawn_mower", "lion", "lizard", "lobster", "mountain", "mouse", "mushroom", "oak_tree",
    "orange", "orchid", "palm_tree", "pear", "pine_tree", "plate", "porcupine", "possum", "rabbit",
    "raccoon", "ray", "road", "seal", "shrew", "skunk", "skyscraper", "snake", "spider", "squirrel",
    "streetcar", "sunflower", "tank", "tiger", "train", "trout", "tulip", "turtle", "willow_tree",
    "wolf",
)  # fmt: skip
assert (len(TRAIN_CLASSES), len(VAL_CLASSES), len(TEST_CLASSES)) == (64, 16, 20)
assert len(set(TRAIN_CLASSES) | set(VAL_CLASSES) | set(TEST_CLASSES)) == 100


def how_to_get(root: Path | str) -> str:
    """The remedy for missing data, naming where the files must go."""
    return (
        "pass --download to fetch it with torchvision when online, or extract cifar-100-python.tar.gz "
        f"from https://www.cs.toronto.edu/~kriz/cifar.html into {root}"
    )


_ALLOWED = {
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("_codecs", "encode"),
}


class _SafeUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in _ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}")
        return super().find_class(module, name)


def _unpickle(path: Path) -> dict[str, Any]:
    try:
        with open(path, "rb") as f:
            doc = _SafeUnpickler(io.BufferedReader(f), encoding="latin1").load()
    except FileNotFoundError:
        raise
    except Exception as exc:  # truncated file, wrong format, forbidden object
        raise DataError(f"unreadable CIFAR-100 file {path}: {exc}") from None
    if not isinstance(doc, dict):
        raise DataError(f"unreadable CIFAR-100 file {path}: not a dict")
    return doc


def _download(root: Path) -> None:
    import torchvision  # only when asked

    try:
        for train in (True, False):
            torchvision.datasets.CIFAR100(str(root), train=train, download=True)
    except Exception as exc:
        raise DataError(f"could not download CIFAR-100 into {root}: {exc}") from None


def _integers(value: Any, high: int, path: Path, what: str) -> np.ndarray:
    """``value`` as an integer array with every entry in [0, high]; DataError naming the file otherwise.

    Checked before any cast: numpy would wrap 300 to 44 as uint8, truncate 1.5 to 1 and let -1
    pick the last class, and an index past the end would fail deep inside the relabelling."""
    try:
        array = np.asarray(value)
    except (ValueError, TypeError) as exc:  # ragged nested lists
        raise DataError(f"unreadable CIFAR-100 file {path}: {what}: {exc}") from None
    if array.size == 0:
        return array.astype(np.int64)
    if array.dtype.kind not in "iu":
        raise DataError(f"{path}: {what} must be integers, got {array.dtype} values")
    if array.min() < 0 or array.max() > high:  # no temporaries the size of the 60,000 images
        first = int(np.flatnonzero((array < 0) | (array > high))[0])
        raise DataError(f"{path}: {what} holds {array.flat[first]} at position {first}; expected 0 to {high}")
    return array


def _read(folder: Path, size: int) -> dict[str, Tensor]:
    names = _unpickle(folder / "meta").get("fine_label_names")
    expected = set(TRAIN_CLASSES + VAL_CLASSES + TEST_CLASSES)
    # Types first (a list of names could hold an unhashable entry); 100 distinct names, each a label.
    if (
        not isinstance(names, list)
        or not all(isinstance(n, str) for n in names)
        or len(names) != len(expected)
        or set(names) != expected
    ):
        raise DataError(f"{folder / 'meta'} does not list CIFAR-100's 100 fine classes")
    images, labels = [], []
    for part in PARTS:
        path = folder / part
        doc = _unpickle(path)
        missing = [k for k in ("data", "fine_labels") if k not in doc]
        if missing:
            raise DataError(f"unreadable CIFAR-100 file {path}: no {missing[0]!r} entry")
        pixels = _integers(doc["data"], 255, path, "'data'")
        # A label indexes the meta file's 100 names.
        fine = _integers(doc["fine_labels"], len(names) - 1, path, "'fine_labels'").astype(np.int64)
        if fine.ndim != 1:
            raise DataError(f"{path}: 'fine_labels' must be a flat list of labels, got shape {fine.shape}")
        try:
            data = pixels.astype(np.uint8, copy=False).reshape(-1, 3, 32, 32)
        except ValueError as exc:
            raise DataError(f"unreadable CIFAR-100 file {path}: 'data': {exc}") from None
        if len(fine) != len(data):
            raise DataError(f"{path}: {len(data)} images but {len(fine)} labels")
        images.append(torch.from_numpy(data))
        labels.append(torch.from_numpy(fine))
    x, y = torch.cat(images), torch.cat(labels)
    if size != 32:
        x = F.interpolate(x.float(), size=(size, size), mode="bilinear", antialias=True, align_corners=False)
        x = x.round_().clamp_(0, 255).to(torch.uint8)
    # Relabel in the meta file's order as 0..99; class names travel as the split lists below.
    order = torch.tensor([sorted(names).index(n) for n in names])
    return {"images": x.contiguous(), "labels": order[y]}


@DATASETS.register("cifar_fs")
def build_cifar_fs(cfg: DataConfig) -> ImageDataset:
    """CIFAR-FS from ``cfg.data_root/cifar-100-python`` (downloaded first only if asked)."""
    if not cfg.data_root:
        raise DataError(f"dataset 'cifar_fs' needs --data-root DIR; {how_to_get('DIR')}")
    root = Path(cfg.data_root).expanduser()
    folder = root / FOLDER
    files = [folder / f for f in ("meta", *PARTS)]
    if cfg.download and not all(f.is_file() for f in files):
        _download(root)
    missing = [str(f) for f in files if not f.is_file()]
    if missing:
        raise DataError(f"no CIFAR-100 under {root} (missing {missing}); {how_to_get(root)}")
    size = cfg.image_size or 32
    key = {"dataset": "cifar_fs", "root": str(root.resolve()), "files": fingerprint_files(files, root), "size": size}
    t = cached_tensors(cfg.cache_dir, "cifar_fs", key, lambda: _read(folder, size))
    names = sorted(TRAIN_CLASSES + VAL_CLASSES + TEST_CLASSES)  # label i is the i-th name
    index = {n: i for i, n in enumerate(names)}
    wanted = {"train": TRAIN_CLASSES, "val": VAL_CLASSES, "test": TEST_CLASSES}
    splits = {s: sorted(index[n] for n in wanted[s]) for s in SPLITS}
    return ImageDataset("cifar_fs", t["images"], t["labels"], names, splits)
