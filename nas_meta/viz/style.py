"""One style for every picture nas_meta writes, and figures that need no global backend.

Figures are made with ``matplotlib.figure.Figure`` and an Agg canvas, never with pyplot: nothing
here changes matplotlib's global state, so importing nas_meta next to a notebook's own plots
leaves them alone.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..errors import ConfigError
from ..fileio import atomic_write

__all__ = [
    "DPI",
    "TITLE_SIZE",
    "TEXT_SIZE",
    "SMALL_SIZE",
    "PICTURE_FORMATS",
    "new_figure",
    "picture_format",
    "save_figure",
    "save_png",
]

DPI = 120
TITLE_SIZE = 12
TEXT_SIZE = 8
SMALL_SIZE = 7
# The formats a picture's path may name by its suffix.  savefig is told the format outright: given
# a file object (atomic_write's), it would not read the suffix and would write PNG bytes into x.svg.
PICTURE_FORMATS = ("png", "svg", "pdf")


def new_figure(width: float, height: float, *, rows: int = 1, cols: int = 1) -> tuple[Any, Any]:
    """(figure, axes) on an Agg canvas: one ``Axes`` for 1x1, else an array of them."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height))
    FigureCanvasAgg(fig)
    axes = fig.subplots(rows, cols)
    return fig, axes


def save_png(fig: Any, path: str | Path, *, dpi: int = DPI) -> Path:
    """Write ``fig`` to ``path`` atomically (no half-written picture)."""
    path = Path(path)
    atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=dpi))
    return path


def picture_format(path: str | Path, flag: str = "picture path") -> str:
    """The format ``path``'s suffix names (any case); ConfigError naming ``flag`` and the
    supported suffixes when it names none of PICTURE_FORMATS."""
    suffix = Path(path).suffix.lower().lstrip(".")
    if suffix not in PICTURE_FORMATS:
        choices = ", ".join(f".{name}" for name in PICTURE_FORMATS)
        raise ConfigError(f"{flag} {str(path)!r}: unsupported picture suffix; choose from {choices}")
    return suffix


def save_figure(fig: Any, path: str | Path, *, dpi: int = DPI) -> Path:
    """Write ``fig`` to ``path`` atomically, in the format its suffix names (:func:`picture_format`)."""
    path = Path(path)
    fmt = picture_format(path)
    atomic_write(path, lambda f: fig.savefig(f, format=fmt, dpi=dpi))
    return path
