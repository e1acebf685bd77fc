"""What the commands share: the one-line-error parser, option groups and their overrides, progress lines."""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NoReturn, TextIO

from ..config import CHECKPOINTS, DEVICES, LR_SCHEDULES, REFITS, RunConfig, is_device_name
from ..errors import ConfigError
from ..record import format_score
from ..search.progress import StepMeter

PROG = "nas-meta"


class Parser(argparse.ArgumentParser):
    """argparse, but a usage mistake is one line (the usage block is behind --help)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message}\n")


def _first_existing(path: Path) -> Path:
    """``path`` or its nearest ancestor that exists (what mkdir -p would create below)."""
    while not path.exists() and path.parent != path:
        path = path.parent
    return path


def check_folder(path: str | Path, flag: str) -> Path:
    """``path`` as a folder the run can write into: it is one, or can be created (its first
    existing ancestor is a writable folder).  ConfigError in one line naming the path otherwise."""
    folder = Path(path).expanduser()
    probe = _first_existing(folder)
    if not probe.is_dir():
        if probe == folder:
            raise ConfigError(f"{flag} {str(folder)!r} is a file, not a folder")
        raise ConfigError(f"{flag} {str(folder)!r} cannot be created: {str(probe)!r} is a file")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise ConfigError(f"{flag} {str(folder)!r} is not writable: no permission to write in {str(probe)!r}")
    return folder


def check_file(path: str | Path, flag: str) -> Path:
    """``path`` as a file the run can write: not a folder, in a folder that is or can be made."""
    file = Path(path).expanduser()
    if file.is_dir():
        raise ConfigError(f"{flag} {str(file)!r} is a folder, not a file")
    probe = _first_existing(file.parent)
    if not probe.is_dir():
        raise ConfigError(f"{flag} {str(file)!r} cannot be written: {str(probe)!r} is a file, not a folder")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise ConfigError(f"{flag} {str(file)!r} is not writable: no permission to write in {str(probe)!r}")
    return file


# The help text's default: default_cache_dir() refuses where there is no home, and --help must still work.
CACHE_DIR_HELP = "dataset cache (default: $XDG_CACHE_HOME/nas_meta, else ~/.cache/nas_meta)"


def default_cache_dir() -> str:
    """Where generated and preprocessed datasets are kept between runs (XDG convention).  Called
    only when the user gave no --cache-dir: without XDG_CACHE_HOME and with HOME empty or unset,
    ``~`` would be "/" or a guess (the cache landing in /.cache), so the user is asked instead."""
    xdg = os.environ.get("XDG_CACHE_HOME")
    if xdg:
        return str(Path(xdg) / "nas_meta")
    home = os.environ.get("HOME")
    if not home:
        state = "empty" if home == "" else "unset"
        raise ConfigError(
            f"HOME is {state} and XDG_CACHE_HOME is unset: no folder for the dataset cache; "
            "give --cache-dir DIR or set XDG_CACHE_HOME"
        )
    return str(Path(home) / ".cache" / "nas_meta")


def device_name(text: str) -> str:
    """argparse ``type`` of --device: one of DEVICES or cuda:N.  Whether this machine has that
    GPU is for resolve_device to say, after parsing, in its own one line."""
    if not is_device_name(text):
        raise argparse.ArgumentTypeError(f"unknown device {text!r}; choose from {list(DEVICES)} or cuda:N")
    return text


def add_location_options(p: Any, *, data_root: str = "folder of a real dataset (omniglot, folder, cifar_fs)") -> None:
    """--data-root and --cache-dir: where the dataset is on this machine and where its cache goes."""
    p.add_argument("--data-root", default=None, help=data_root)
    p.add_argument("--cache-dir", default=None, help=CACHE_DIR_HELP)


def cache_dir(args: argparse.Namespace) -> str:
    """--cache-dir, else the default cache folder, as a folder the run can write into."""
    return str(check_folder(args.cache_dir or default_cache_dir(), "--cache-dir"))


def add_device_option(p: Any, *, default: str | None, help: str = "auto, cpu, cuda or cuda:N") -> None:
    p.add_argument("--device", default=default, type=device_name, help=help)


def add_data_options(p: Any) -> None:
    p.add_argument(
        "--split",
        default=None,
        choices=("lake", "vinyals"),
        help="omniglot protocol: lake (alphabets held out) or vinyals (+rotations) (default: lake)",
    )
    p.add_argument("--image-size", type=int, default=None, help="resize images to this (default: the dataset's)")
    p.add_argument("--download", action="store_true", help="let torchvision download the dataset (online only)")


def data_overrides(args: argparse.Namespace) -> dict[str, Any]:
    data: dict[str, Any] = {"cache_dir": cache_dir(args), "download": args.download}
    for name in ("data_root", "split", "image_size", "rotations", "augment"):
        if getattr(args, name, None) is not None:
            data[name] = getattr(args, name)
    return data


def add_recipe_options(p: Any) -> None:
    # The training recipe; None means "the preset's / dataset's default" (see config.py).
    p.add_argument(
        "--rotations",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="training classes' 90/180/270-degree rotations as new training classes",
    )
    p.add_argument(
        "--augment",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="random affine jitter of training episodes (shift, rotation, scale, shear)",
    )
    p.add_argument(
        "--train-ways",
        type=int,
        default=None,
        help="classes per training episode, e.g. 60 for ProtoNet (default: --ways)",
    )
    p.add_argument("--weight-decay", type=float, default=None, help="AdamW weight decay (default: 0, plain Adam)")
    p.add_argument("--lr-schedule", default=None, choices=LR_SCHEDULES, help="outer learning rate (default: constant)")
    p.add_argument(
        "--checkpoint",
        default=None,
        choices=CHECKPOINTS,
        help="keep the best validation checkpoint's weights or the last step's (default: last)",
    )
    add_refit_option(p)


def add_refit_option(p: Any) -> None:
    p.add_argument(
        "--refit",
        default=None,
        choices=REFITS,
        help="final models train on the train classes, or on train+val for the steps validation "
        "chose (default: train; export: the study's)",
    )


def recipe_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The learner's recipe options the user typed (the data ones go through data_overrides)."""
    return {
        name: getattr(args, name)
        for name in ("train_ways", "weight_decay", "lr_schedule", "checkpoint", "refit")
        if getattr(args, name, None) is not None
    }


def add_study_options(p: argparse.ArgumentParser, *, many: bool) -> None:
    if many:
        p.add_argument(
            "--study", action="append", required=True, help="study name or shell glob; repeat for a comparison"
        )
    else:
        p.add_argument("--study", required=True, help="study name")
    p.add_argument("--storage", default=None, help="storage URL (default: the study folder in --results-dir)")
    p.add_argument("--results-dir", default=RunConfig().results_dir, help="where study folders are (default: results)")


def add_budget_options(p: Any) -> None:
    p.add_argument("--iterations", type=int, default=None, help="meta-training steps (default: preset's)")
    p.add_argument("--meta-batch", type=int, default=None, help="episodes per meta-training step (default: preset's)")


def budget(args: argparse.Namespace) -> dict[str, int | None]:
    """--iterations / --meta-batch as the user typed them (None: the preset's or the study's), for
    ``make_config(budget=...)`` or ``LearnerConfig.budget``."""
    return {"iterations": args.iterations, "meta_batch": args.meta_batch}


def positive(name: str, value: int | None) -> None:
    if value is not None and value < 1:
        raise ConfigError(f"--{name} must be a positive integer, got {value}")


def format_test(test: dict[str, Any], task: str) -> str:
    if task == "classification":
        return f"{100 * test['mean']:.2f}% ± {100 * test['ci95']:.2f}"
    return f"{test['mean']:.4f} ± {test['ci95']:.4f}"


def step_printer(
    stream: TextIO | None = None,
    *,
    task: str | None = None,
    clock: Callable[[], float] = time.perf_counter,
) -> Callable[[int, int, float | None], None]:
    """``progress(step, total, val)`` for meta-training outside a search (evaluate, export
    --retrain), on ``stream`` (stderr): on a terminal one line rewritten in place (ended at the
    last step), in a log a line at each new validation score and at least every
    PROGRESS_LINE_SECONDS (nas_meta.search.progress.StepMeter). The score reads ``val acc 91.2%``
    (or ``val mse``) when ``task`` is given, else ``val 0.9120``."""
    out = stream or sys.stderr
    meter = StepMeter(bool(getattr(out, "isatty", lambda: False)()), clock=clock)

    def score(val: float) -> str:
        if task is None:
            return f"val {val:.4f}"
        return f"val {'acc' if task == 'classification' else 'mse'} {format_score(val, task)}"

    def progress(step: int, total: int, val: float | None) -> None:
        if not meter.update(step, total, val):
            return
        text = "  " + meter.text(None if meter.val is None else score(meter.val))
        if meter.tty:
            out.write(f"\r\033[K{text}" + ("\n" if step == total else ""))
        else:
            out.write(text + "\n")
        out.flush()

    return progress


@contextlib.contextmanager
def graceful_interrupt() -> Iterator[Callable[[], bool]]:
    """First Ctrl-C: stop at the next training step (a safe point: a KeyboardInterrupt raised at
    an arbitrary moment can land in a garbage-collector callback, where Python ignores it).
    A second Ctrl-C interrupts at once."""
    requested = threading.Event()

    def handler(signum: int, frame: object) -> None:
        if requested.is_set():
            raise KeyboardInterrupt
        requested.set()
        print(f"\n{PROG}: stopping at the next step (Ctrl-C again to stop at once)", file=sys.stderr)

    if threading.current_thread() is not threading.main_thread():
        yield requested.is_set
        return
    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield requested.is_set
    finally:
        signal.signal(signal.SIGINT, previous)
