"""``omniglot``: Lake et al.'s handwritten characters from torchvision's folder layout.

Accepted layouts under ``--data-root DIR`` (every ``images_*`` folder found is used):

* torchvision's: ``DIR/omniglot-py/images_background/<Alphabet>/<characterNN>/*.png`` (and
  ``images_evaluation``);
* a folder of ``images_*`` sets, e.g. the minimal ``images_background_small1`` and
  ``images_background_small2``; a set folder itself (``DIR = .../images_background``).

An alphabet present in several sets (Greek and Latin are in both minimal sets) is merged: one
class per (alphabet, character), drawings deduplicated by file name.  Sets whose name contains
``evaluation`` hold the *evaluation* alphabets, all others the *background* alphabets.

Split protocols (``DataConfig.split``):

* ``lake`` (Lake et al. 2015): test = the evaluation alphabets; the background alphabets are split
  by alphabet into train (80%) and val (20%), seeded.  With background sets only (the minimal
  sets), the alphabets are split 60/20/20 into train/val/test, seeded.
* ``vinyals`` (Vinyals et al. 2016; as in the MAML and ProtoNet papers): characters are shuffled
  (seeded), 1200 go to train and the rest are halved into val and test (with fewer than 1623
  characters, the same proportion 1200/1623 goes to train).  Every character then becomes four
  classes, rotated by 0/90/180/270 degrees, all in its character's split.

Drawings are black ink on white: they are inverted so ink is high (255) on 0, like ``glyphs``, and
resized to ``image_size`` (28 by default) with an area-averaging filter.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
from torch import Tensor

from ..config import DataConfig
from ..errors import ConfigError, DataError
from .base import DATASETS, ImageDataset, split_by_fraction
from .cache import cached_tensors, fingerprint_files
from .imagefiles import DECODER_VERSION, class_folder_name, decode_names, encode_names, list_images, read_images

__all__ = ["build_omniglot", "find_sets", "PROTOCOLS"]

PROTOCOLS = ("lake", "vinyals")
VINYALS_TRAIN, OMNIGLOT_CHARACTERS = 1200, 1623


def how_to_get(root: Path | str) -> str:
    """The remedy for missing data, naming where the files must go."""
    return (
        "pass --download to fetch it with torchvision when online, or unzip images_background.zip and "
        "images_evaluation.zip from https://github.com/brendenlake/omniglot/tree/master/python into "
        f"{Path(root) / 'omniglot-py'}"
    )


def find_sets(root: Path) -> list[Path]:
    """The ``images_*`` set folders under ``root`` (torchvision's ``omniglot-py`` or directly)."""
    if root.name.startswith("images_") and root.is_dir():
        return [root]
    sets: list[Path] = []
    for base in (root / "omniglot-py", root):
        if base.is_dir():
            sets += sorted(p for p in base.iterdir() if p.is_dir() and p.name.startswith("images_"))
    return sets


def _scan(sets: list[Path]) -> tuple[list[tuple[str, str, bool]], list[list[Path]]]:
    """Characters ``(alphabet, character, is_evaluation)`` and their drawings, merged across sets."""
    files: dict[tuple[str, str], dict[str, Path]] = {}
    evaluation: dict[str, bool] = {}
    for s in sets:
        is_eval = "evaluation" in s.name
        for alphabet in sorted(p for p in s.iterdir() if p.is_dir()):
            characters = sorted(p for p in alphabet.iterdir() if p.is_dir())
            for folder in (alphabet, *characters):
                class_folder_name(folder)  # alphabet and character names make the class names
            if not characters:
                raise DataError(f"empty alphabet folder {alphabet}: no character folders in it")
            evaluation[alphabet.name] = evaluation.get(alphabet.name, False) or is_eval
            for character in characters:
                drawings = list_images(character)
                if not drawings:
                    raise DataError(f"empty class folder {character}: no .png/.jpg/.jpeg images")
                merged = files.setdefault((alphabet.name, character.name), {})
                for d in drawings:
                    merged.setdefault(d.name, d)  # the same drawing from a second set is a duplicate
    keys = sorted(files)
    chars = [(a, c, evaluation[a]) for a, c in keys]
    return chars, [[files[k][n] for n in sorted(files[k])] for k in keys]


def _download(root: Path) -> None:
    import torchvision  # only when asked: the import is slow and the download needs the network

    try:
        for background in (True, False):
            torchvision.datasets.Omniglot(str(root), background=background, download=True)
    except Exception as exc:  # URLError, HTTPError, a bad checksum: all mean "no data"
        raise DataError(f"could not download Omniglot into {root / 'omniglot-py'}: {exc}") from None


def _load(root: Path, size: int, cache_dir: str | None) -> tuple[Tensor, Tensor, list[tuple[str, str, bool]]]:
    sets = find_sets(root)
    if not sets:
        looked = f"{root / 'omniglot-py' / 'images_*'} and {root / 'images_*'}"
        raise DataError(f"no Omniglot data under {root} (looked for {looked}); {how_to_get(root)}")
    chars, drawings = _scan(sets)
    if not chars:
        raise DataError(f"no alphabets in {', '.join(str(s) for s in sets)}; {how_to_get(root)}")
    all_files = [p for ds in drawings for p in ds]
    key = {
        "dataset": "omniglot",
        "root": str(root.resolve()),
        "sets": [str(s.resolve()) for s in sets],
        "files": fingerprint_files(all_files, root),
        "size": size,
        "decoder": DECODER_VERSION,
    }

    def build() -> dict[str, Tensor]:
        images = read_images(all_files, mode="L", size=size, invert=True)
        labels = torch.arange(len(chars)).repeat_interleave(torch.tensor([len(d) for d in drawings]))
        return {"images": images, "labels": labels, "chars": encode_names(chars)}

    t = cached_tensors(cache_dir, "omniglot", key, build)
    return t["images"], t["labels"], [tuple(c) for c in decode_names(t["chars"])]


def _lake_split(chars: list[tuple[str, str, bool]], seed: int) -> dict[str, list[int]]:
    alphabets = sorted({a for a, _, _ in chars})
    is_eval = {a: e for a, _, e in chars}
    background = [a for a in alphabets if not is_eval[a]]
    evaluation = [a for a in alphabets if is_eval[a]]
    if evaluation and background:
        parts = split_by_fraction(len(background), seed, (0.8, 0.2, 0.0))
        by_split = {s: {background[i] for i in parts[s]} for s in ("train", "val")}
        by_split["test"] = set(evaluation)
    else:
        # One kind of set only (e.g. the minimal background sets): 60/20/20 of its alphabets.
        parts = split_by_fraction(len(alphabets), seed)
        by_split = {s: {alphabets[i] for i in ids} for s, ids in parts.items()}
    return {s: [i for i, (a, _, _) in enumerate(chars) if a in names] for s, names in by_split.items()}


def _vinyals_split(n: int, seed: int) -> dict[str, list[int]]:
    n_train = VINYALS_TRAIN if n >= OMNIGLOT_CHARACTERS else math.floor(n * VINYALS_TRAIN / OMNIGLOT_CHARACTERS + 0.5)
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).tolist()
    n_val = (n - n_train) // 2
    return {
        "train": sorted(order[:n_train]),
        "val": sorted(order[n_train : n_train + n_val]),
        "test": sorted(order[n_train + n_val :]),
    }


def _rotate(images: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
    """Rotated copies as new classes: class ``c`` turned by ``k`` quarter turns is ``4c + k``."""
    turned = torch.stack([torch.rot90(images, k, dims=(2, 3)) for k in range(4)], 1)  # (N, 4, C, H, W)
    new_labels = (4 * labels.unsqueeze(1) + torch.arange(4)).view(-1)
    return turned.flatten(0, 1), new_labels


@DATASETS.register("omniglot")
def build_omniglot(cfg: DataConfig) -> ImageDataset:
    """Omniglot from ``cfg.data_root`` (downloaded there first only if ``cfg.download``)."""
    if cfg.split not in PROTOCOLS:
        raise ConfigError(f"unknown omniglot split {cfg.split!r}; choose from {list(PROTOCOLS)}")
    if not cfg.data_root:
        raise DataError(f"dataset 'omniglot' needs --data-root DIR; {how_to_get('DIR')}")
    root = Path(cfg.data_root).expanduser()
    if cfg.download and not find_sets(root):
        _download(root)
    size = cfg.image_size or 28
    images, labels, chars = _load(root, size, cfg.cache_dir)
    names = [f"{a}/{c}" for a, c, _ in chars]
    if cfg.split == "lake":
        return ImageDataset("omniglot", images, labels, names, _lake_split(chars, cfg.seed))
    splits = _vinyals_split(len(chars), cfg.seed)
    images, labels = _rotate(images, labels)
    names = [f"{n}/rot{90 * k}" for n in names for k in range(4)]
    splits = {s: [4 * c + k for c in ids for k in range(4)] for s, ids in splits.items()}
    return ImageDataset("omniglot", images, labels, names, splits, rotated_classes=True)
