"""Dataset files in another encoding or with another structure than the usual layouts: folder names
that are not UTF-8, split files and CSVs in other encodings, CIFAR-100 pickles with labels out of
range, 16-bit PNGs.  Each loads correctly or ends as one DataError line naming the file."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from test_data_benchmarks import make_mini_imagenet
from test_data_layouts import CIFAR_NAMES, cifar_tree, folder_tree, omniglot_torchvision

from nas_meta.config import DataConfig
from nas_meta.data import folder as folder_module
from nas_meta.data import imagefiles, load_dataset
from nas_meta.errors import DataError

NOT_UTF8 = os.fsdecode(b"caf\xe9")  # a Latin-1 name as Linux stores it: bytes, not text


def one_line(info: pytest.ExceptionInfo[DataError]) -> str:
    message = str(info.value)
    assert message and "\n" not in message
    return message


def rename_to_not_utf8(path: Path, suffix: str = "") -> Path:
    """``path`` renamed to the bytes b"caf\\xe9" + suffix (skip where the file system refuses such names)."""
    target = path.parent / (NOT_UTF8 + suffix)
    try:
        path.rename(target)
    except (OSError, UnicodeEncodeError):
        pytest.skip("this file system only takes names that are valid text")
    return target


# --- names that are not UTF-8 ----------------------------------------------------------------------


@pytest.mark.parametrize("cache", [False, True])
def test_folder_class_name_that_is_not_utf8_is_one_line_naming_the_folder(tmp_path, cache):
    root = folder_tree(tmp_path / "data", classes=5, images=2)
    rename_to_not_utf8(root / "class03")
    cfg = DataConfig(
        dataset="folder", data_root=str(root), image_size=8, cache_dir=str(tmp_path / "c") if cache else None
    )
    with pytest.raises(DataError) as info:
        load_dataset(cfg)
    message = one_line(info)
    assert message.startswith(f"class folder b'caf\\xe9' in {root} has a name that is not UTF-8 text; rename it")


def test_image_file_name_that_is_not_utf8_loads_and_is_cached(tmp_path, monkeypatch):
    # Only class names leave the loader; an image's name is only a path, whatever its bytes.
    root = folder_tree(tmp_path / "data", classes=5, images=2)
    rename_to_not_utf8(root / "class01" / "img1.jpg", ".jpg")
    cfg = DataConfig(dataset="folder", data_root=str(root), image_size=8, cache_dir=str(tmp_path / "c"))
    first = load_dataset(cfg)
    monkeypatch.setattr(folder_module, "read_images", lambda *a, **k: pytest.fail("cache not used"))
    second = load_dataset(cfg)
    assert first.images.shape[0] == 10 and torch.equal(first.images, second.images)


def test_omniglot_alphabet_or_character_name_that_is_not_utf8_is_one_line(tmp_path):
    root = omniglot_torchvision(tmp_path / "a")
    rename_to_not_utf8(root / "omniglot-py" / "images_background" / "Beta")
    with pytest.raises(DataError, match=r"class folder b'caf\\xe9' in .*images_background has a name that is not"):
        load_dataset(DataConfig(dataset="omniglot", data_root=str(root)))
    root = omniglot_torchvision(tmp_path / "c")
    rename_to_not_utf8(root / "omniglot-py" / "images_evaluation" / "Delta" / "character02")
    with pytest.raises(DataError, match=r"class folder b'caf\\xe9' in .*Delta has a name that is not") as info:
        load_dataset(DataConfig(dataset="omniglot", data_root=str(root)))
    one_line(info)


# --- text files in other encodings ----------------------------------------------------------------


def test_folder_split_files_utf8_with_bom_load_and_latin1_is_one_line(tmp_path):
    root = folder_tree(tmp_path, classes=7, images=2)
    (root / "train.txt").write_bytes(b"\xef\xbb\xbfclass00\nclass01\nclass02\n")  # Windows Notepad's UTF-8
    (root / "val.txt").write_text("class03\nclass04\n")
    (root / "test.txt").write_text("class05\nclass06\n")
    ds = load_dataset(DataConfig(dataset="folder", data_root=str(root), image_size=8))
    assert [ds.class_names[c] for c in ds.splits["train"]] == ["class00", "class01", "class02"]
    (root / "val.txt").write_bytes("class03\n# café\nclass04\n".encode("latin-1"))
    with pytest.raises(DataError) as info:
        load_dataset(DataConfig(dataset="folder", data_root=str(root), image_size=8))
    assert one_line(info) == (
        f"split file {root / 'val.txt'} is not UTF-8 text (byte 0xe9 on line 2); save it with the UTF-8 encoding"
    )


def test_mini_imagenet_csv_in_latin1_is_one_line_and_with_a_bom_loads(tmp_path):
    root = tmp_path / "mini"
    make_mini_imagenet(root, per_class=1)
    csv = root / "val.csv"
    csv.write_bytes(b"\xef\xbb\xbf" + csv.read_bytes())
    ds = load_dataset(DataConfig(dataset="mini_imagenet", data_root=str(root), image_size=8))
    assert len(ds.splits["val"]) == 16
    csv.write_bytes(csv.read_bytes()[3:].replace(b"filename,label\n", "filename,label\n# é\n".encode("latin-1")))
    with pytest.raises(DataError, match=rf"{csv} is not UTF-8 text; save it with the UTF-8 encoding") as info:
        load_dataset(DataConfig(dataset="mini_imagenet", data_root=str(root), image_size=8))
    one_line(info)


# --- CIFAR-100 pickles with another structure ---------------------------------------------------


def rewrite(path: Path, **changes: object) -> None:
    with open(path, "rb") as f:
        doc = pickle.load(f)
    doc.update(changes)
    with open(path, "wb") as f:
        pickle.dump(doc, f)


def labels_with(index: int, value: object, n: int = 300) -> list:
    labels: list = [k for k in range(100) for _ in range(3)][:n]
    labels[index] = value
    return labels


@pytest.mark.parametrize(
    "part, changes, message",
    [
        (
            "train",
            {"fine_labels": labels_with(7, 100)},
            r"train: 'fine_labels' holds 100 at position 7; expected 0 to 99",
        ),
        (
            "train",
            {"fine_labels": labels_with(0, -1)},
            r"train: 'fine_labels' holds -1 at position 0; expected 0 to 99",
        ),
        ("test", {"fine_labels": list(range(99)) + [10**6]}, r"test: 'fine_labels' holds 1000000 at position 99"),
        ("train", {"fine_labels": labels_with(3, 1.5)}, r"train: 'fine_labels' must be integers, got float64 values"),
        ("train", {"fine_labels": labels_with(3, "cat")}, r"train: 'fine_labels' must be integers, got <U21 values"),
        ("train", {"fine_labels": labels_with(3, [1, 2])}, r"unreadable CIFAR-100 file .*train: 'fine_labels': "),
        ("train", {"fine_labels": np.zeros((300, 2), dtype=np.int64)}, r"'fine_labels' must be a flat list of labels"),
        ("train", {"data": np.full((300, 3072), 300, dtype=np.int64)}, r"train: 'data' holds 300 at position 0"),
        ("train", {"data": [[256] * 3072] * 300}, r"train: 'data' holds 256 at position 0; expected 0 to 255"),
        ("train", {"data": np.zeros((300, 100), dtype=np.uint8)}, r"unreadable CIFAR-100 file .*train: 'data': cannot"),
        ("meta", {"fine_label_names": [["apple"]] * 100}, r"meta does not list CIFAR-100's 100 fine classes"),
        ("meta", {"fine_label_names": [*CIFAR_NAMES, "apple"]}, r"meta does not list"),
    ],
)
def test_cifar_fs_labels_and_pixels_out_of_range_are_one_line(tmp_path, part, changes, message):
    root, _ = cifar_tree(tmp_path)
    rewrite(root / "cifar-100-python" / part, **changes)
    with pytest.raises(DataError, match=message) as info:
        load_dataset(DataConfig(dataset="cifar_fs", data_root=str(root), cache_dir=str(tmp_path / "c")))
    one_line(info)
    assert not list((tmp_path / "c").glob("*.pt"))  # nothing cached from a bad file


# --- 16-bit PNGs ------------------------------------------------------------------------------------


def write_16bit_twins(root8: Path, root16: Path, classes: int = 5, images: int = 2) -> None:
    """The same pictures as 8-bit PNGs and as 16-bit greyscale PNGs (value v -> 257 v + noise that
    rounds away), in two folder datasets."""
    rng = np.random.default_rng(0)
    for c in range(classes):
        for i in range(images):
            pixels = rng.integers(0, 256, (6, 6), dtype=np.uint8)
            pixels[0, 0] = 255  # both extremes
            pixels[0, 1] = 0
            noise = rng.integers(0, 120, (6, 6))
            wide = np.minimum(pixels.astype(np.int64) * 257 + noise, 65535).astype(np.uint16)
            for root, array in ((root8, pixels), (root16, wide)):
                (root / f"class{c}").mkdir(parents=True, exist_ok=True)
                Image.fromarray(array).save(root / f"class{c}" / f"img{i}.png")
    with Image.open(root16 / "class0" / "img0.png") as check:
        assert check.mode.startswith("I")  # really 16-bit on disk


def test_16bit_png_loads_like_its_8bit_version_through_the_folder_dataset(tmp_path):
    write_16bit_twins(tmp_path / "eight", tmp_path / "sixteen")
    eight = load_dataset(DataConfig(dataset="folder", data_root=str(tmp_path / "eight"), image_size=6))
    sixteen = load_dataset(DataConfig(dataset="folder", data_root=str(tmp_path / "sixteen"), image_size=6))
    assert sixteen.images.dtype == torch.uint8 and sixteen.images.shape == eight.images.shape
    assert not bool((sixteen.images == 255).all())  # PIL's own convert() made every pixel 255
    assert (sixteen.images.int() - eight.images.int()).abs().max() <= 1
    # Resized, the two stay as close: scaling happens before any resampling.
    small8 = load_dataset(DataConfig(dataset="folder", data_root=str(tmp_path / "eight"), image_size=4))
    small16 = load_dataset(DataConfig(dataset="folder", data_root=str(tmp_path / "sixteen"), image_size=4))
    assert (small16.images.int() - small8.images.int()).abs().max() <= 1


def test_32bit_integer_images_from_older_pillow_scale_like_16bit():
    # Older Pillow opens 16-bit PNGs as mode "I" (32-bit): the same 1/257 scale applies.
    wide = np.array([[0, 257, 32896, 65535]], dtype=np.int32)
    img = Image.fromarray(wide)
    assert img.mode == "I"
    assert np.asarray(imagefiles._to_8bit(img)).tolist() == [[0, 1, 128, 255]]


def test_8bit_images_are_left_as_they_are():
    img = Image.new("RGB", (2, 2), (1, 2, 3))
    assert imagefiles._to_8bit(img) is img


def test_tensors_cached_by_the_clipping_decoder_are_rebuilt_not_reused(tmp_path, monkeypatch):
    # A user who loaded 16-bit PNGs before the fix has white images in the cache under a key that
    # only the files made; the decoder's version in the key makes that entry stale.
    write_16bit_twins(tmp_path / "eight", tmp_path / "sixteen")
    cache = tmp_path / "cache"
    cfg = DataConfig(dataset="folder", data_root=str(tmp_path / "sixteen"), image_size=6, cache_dir=str(cache))
    real_cached_tensors = folder_module.cached_tensors

    def as_before_the_fix(cache_dir, name, key, build):
        old_key = {k: v for k, v in key.items() if k != "decoder"}
        white = build()
        white["images"] = torch.full_like(white["images"], 255)
        return real_cached_tensors(cache_dir, name, old_key, lambda: white)

    monkeypatch.setattr(folder_module, "cached_tensors", as_before_the_fix)
    assert bool((load_dataset(cfg).images == 255).all())
    monkeypatch.setattr(folder_module, "cached_tensors", real_cached_tensors)
    eight = load_dataset(DataConfig(dataset="folder", data_root=str(tmp_path / "eight"), image_size=6))
    assert (load_dataset(cfg).images.int() - eight.images.int()).abs().max() <= 1
