"""Search spaces: a YAML file -> a function ``build(choose) -> architecture graph``.

``base.py`` holds the ``Space`` class, the YAML reader and ``load_space``; each kind lives in its own
module (``cell.py``: DARTS cells; ``stacks.py``: ``chain`` and ``mlp``) and registers itself in
``SPACE_KINDS``.  The file format is documented in search_spaces/README.md.

    >>> import random
    >>> space = load_space("chain")
    >>> space.from_params(space.sample(random.Random(0)).graph["params"]).graph["space"]
    'chain'
"""

from .base import (
    SPACE_KINDS,
    SPACES_DIR,
    Choose,
    Space,
    draw_space,
    list_spaces,
    load_known_arch,
    load_space,
    resolve_known_arch,
)
from .cell import CellSpace, build_cells
from .stacks import ChainSpace, MlpSpace

__all__ = [
    "Space",
    "CellSpace",
    "ChainSpace",
    "MlpSpace",
    "SPACE_KINDS",
    "SPACES_DIR",
    "Choose",
    "load_space",
    "list_spaces",
    "draw_space",
    "load_known_arch",
    "resolve_known_arch",
    "build_cells",
]
