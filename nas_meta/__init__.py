"""nas_meta: neural architecture search for few-shot learning.

    >>> from nas_meta.config import make_config
    >>> from nas_meta.search.runner import run_search
    >>> outcome = run_search(make_config("smoke", search={"space": "chain"}))  # doctest: +SKIP

Submodules are imported lazily, so ``import nas_meta.config`` does not import torch.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_LAZY = {
    "load": ("export", "load"),
    "export_onnx": ("export", "export_onnx"),
    "load_space": ("spaces", "load_space"),
    "build": ("model.network", "build"),
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        module, attr = _LAZY[name]
        return getattr(importlib.import_module(f".{module}", __name__), attr)
    raise AttributeError(f"module 'nas_meta' has no attribute {name!r}")
