"""Search spaces: a YAML file -> a function ``build(choose) -> architecture graph``.

A space never builds modules: it makes a ``networkx.DiGraph`` (see ``nas_meta.graph``) from a few
named categorical choices, and ``nas_meta.model.network.build`` compiles it.  ``choose(name, options)``
may be ``optuna.Trial.suggest_categorical``, a seeded random choice (:meth:`Space.sample`) or a
look-up in stored params (:meth:`Space.from_params`); a name always comes with the same options.

    >>> import random
    >>> space = load_space("cell")
    >>> arch = space.sample(random.Random(0))
    >>> space.from_params(arch.graph["params"]).graph == arch.graph
    True

Kinds: ``cell`` (DARTS cells), ``chain`` (stacked conv blocks, Conv-4 is one point), ``mlp``.
The file format is documented in search_spaces/README.md.
"""

from __future__ import annotations

import functools
import math
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar, NoReturn

import networkx as nx

from .. import graph
from ..errors import SpaceError
from ..fileio import decode_utf8
from ..model.ops import OPS
from ..registry import Registry

__all__ = [
    "Space",
    "SPACE_KINDS",
    "SPACES_DIR",
    "Choose",
    "load_space",
    "list_spaces",
    "draw_space",
    "load_known_arch",
    "resolve_known_arch",
    "MAX_DEPTH",
    "MAX_WIDTH",
    "MAX_CELL_NODES",
    "MAX_CELLS",
    "MAX_OPTIONS",
]

Choose = Callable[[str, list], Any]


def _find_spaces_dir() -> Path:
    # Shipped as package data (nas_meta/search_spaces) in a wheel; the repo's top-level folder otherwise.
    here = Path(__file__).resolve().parent.parent  # nas_meta/
    packaged = here / "search_spaces"
    return packaged if packaged.is_dir() else here.parent / "search_spaces"


SPACES_DIR = _find_spaces_dir()
SPACE_KINDS: Registry[type[Space]] = Registry("space kind", error=SpaceError)


class Reader:
    """Typed access to a YAML mapping; every error names the file and the key."""

    def __init__(self, doc: dict[str, Any], path: Path, keys: tuple[str, ...]) -> None:
        self.doc, self.path = doc, path
        unknown = sorted(set(doc) - set(keys) - {"kind", "name", "description", "recipe"})
        if unknown:
            self.fail(unknown[0], f"is not a key of a {doc['kind']} space; choose from {sorted(keys)}")

    def fail(self, key: str, message: str) -> NoReturn:
        raise SpaceError(f"{self.path}: key {key!r} {message}")

    def get(self, key: str, default: Any) -> Any:
        if key not in self.doc:
            if default is REQUIRED:
                self.fail(key, "is missing")
            return default
        return self.doc[key]

    def options(self, key: str, default: Any, check: Callable[[Any], bool], what: str) -> list:
        """A value or a non-empty list of values (a choice); returns the list of options."""
        value = self.get(key, default)
        values = value if isinstance(value, list) else [value]
        if not values:
            self.fail(key, f"must be {what} or a non-empty list of them, got []")
        if len(values) > MAX_OPTIONS:
            self.fail(key, f"lists {len(values):,} options; at most {MAX_OPTIONS} are allowed")
        for item in values:
            if not check(item):
                self.fail(key, f"must be {what} or a list of them, got {item!r}")
        if len(set(map(repr, values))) != len(values):
            self.fail(key, f"lists an option twice: {values}")
        return values


REQUIRED = object()


# Bounds of a space file's numbers, checked before anything is built: no few-shot backbone comes
# near them, and past them a file is a mistake that would otherwise run for hours or exhaust memory.
MAX_DEPTH = 64  # blocks or layers of a chain, resnet or mlp space
MAX_CELL_NODES = 16  # intermediate nodes of a cell
MAX_CELLS = 32  # cells in a layout
MAX_OPTIONS = 256  # options one key may list
MAX_WIDTH = graph.MAX_WIDTH


def bounded_int(high: int) -> Callable[[Any], bool]:
    """A positive integer up to ``high``."""
    return lambda x: positive_int(x) and x <= high


def positive_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool) and x >= 1


def one_of(*allowed: Any) -> Callable[[Any], bool]:
    # By type too: YAML's `true` must not pass for 1, nor 1 for `true`.
    return lambda x: any(type(x) is type(a) and x == a for a in allowed)


def _positive_number(high: float) -> Callable[[Any], bool]:
    return lambda x: isinstance(x, (int, float)) and not isinstance(x, bool) and 0 < x <= high


def _non_negative_number(high: float) -> Callable[[Any], bool]:
    return lambda x: isinstance(x, (int, float)) and not isinstance(x, bool) and 0 <= x <= high


# The training choices a space file may offer beside its graph's (its ``recipe:`` block): key ->
# (check, what a value must be, the learners it applies to; None: every learner).  Each is drawn
# by the same ``choose`` as the graph's choices, under the name ``recipe:<key>``.
RECIPE_KEYS: dict[str, tuple[Callable[[Any], bool], str, tuple[str, ...] | None]] = {
    "outer_lr": (_positive_number(1.0), "a learning rate in (0, 1]", None),
    "weight_decay": (_non_negative_number(1.0), "a weight decay in [0, 1]", None),
    "lr_schedule": (one_of("constant", "cosine"), "constant or cosine", None),
    "augment": (one_of(True, False), "true or false", None),
    # ProtoNet trains on wider episodes than it tests on (Snell et al. 2017); a MAML head has
    # exactly --ways outputs, so the ways of its training episodes are not free.
    "train_ways": (bounded_int(1_000), "a number of classes from 2 to 1,000", ("protonet",)),
    "inner_lr": (_positive_number(10.0), "an inner learning rate in (0, 10]", ("maml", "fomaml")),
    "inner_steps": (bounded_int(1_000), "a number of inner steps from 1 to 1,000", ("maml", "fomaml")),
}
RECIPE_PREFIX = "recipe:"


def recipe_applies(key: str, algo: str) -> bool:
    """Whether recipe key ``key`` is a choice for learner ``algo``."""
    learners = RECIPE_KEYS[key][2]
    return learners is None or algo in learners


def read_recipe(doc: Any, path: Path) -> dict[str, list]:
    """A space file's ``recipe:`` block -> {key: options}; SpaceError naming the file, the key and
    the valid keys or values."""
    if doc is None:
        return {}
    if not isinstance(doc, dict):
        raise SpaceError(f"{path}: key 'recipe' must be a mapping of training choices, got {type(doc).__name__}")
    out = {}
    for key, value in doc.items():
        if key not in RECIPE_KEYS:
            raise SpaceError(f"{path}: key 'recipe.{key}' is not a training choice; choose from {sorted(RECIPE_KEYS)}")
        check, what, _ = RECIPE_KEYS[key]
        reader = Reader({"kind": "recipe", key: value}, path, (key,))
        options = reader.options(key, REQUIRED, check, what)
        if key == "train_ways" and any(v < 2 for v in options):
            reader.fail(key, f"must be {what}, got {options}")
        out[key] = options
    return out


class Space:
    """A named search space.  Subclasses (one per kind) define ``choices`` and ``_build``."""

    kind: ClassVar[str]
    keys: ClassVar[tuple[str, ...]]

    def __init__(self, name: str, path: Path, doc: dict[str, Any]) -> None:
        self.name, self.path = name, path
        self.description = str(doc.get("description", ""))
        self._choices: dict[str, list] = {}
        self.recipe = read_recipe(doc.get("recipe"), path)  # the training choices it offers

    def recipe_choices(self, algo: str) -> dict[str, list]:
        """The recipe choices that apply to learner ``algo`` and are real choices (two options or more)."""
        return {key: options for key, options in self.recipe.items() if len(options) > 1 and recipe_applies(key, algo)}

    def candidates(self, algo: str) -> int:
        """Distinct candidates for learner ``algo``: architectures x the recipe choices that apply."""
        return self.size() * math.prod(len(options) for options in self.recipe_choices(algo).values())

    def recipe_skipped(self, algo: str) -> list[str]:
        """Recipe keys the space offers that do not apply to learner ``algo`` (never drawn)."""
        return sorted(k for k in self.recipe if not recipe_applies(k, algo))

    def draw(self, choose: Choose, algo: str) -> nx.DiGraph:
        """:meth:`build`, then the recipe's choices for learner ``algo``: a candidate is an
        architecture *and* how it is trained (``arch.graph["recipe"]``, part of its fingerprint).
        A recipe key with one option is fixed for every candidate."""
        arch = self.build(choose)
        recipe = {}
        for key, options in self.recipe.items():
            if not recipe_applies(key, algo):
                continue
            if len(options) == 1:
                recipe[key] = options[0]
            else:
                recipe[key] = choose(RECIPE_PREFIX + key, list(options))
                arch.graph["params"][RECIPE_PREFIX + key] = recipe[key]
        if recipe:
            arch.graph["recipe"] = recipe
        return arch

    def _add_choice(self, name: str, options: list) -> None:
        if len(options) > 1:  # a single option is a fixed value, not a choice
            self._choices[name] = list(options)

    def choices(self) -> dict[str, list]:
        """Every choice name -> its options (conditional ones included, e.g. block5_width)."""
        return {name: list(options) for name, options in self._choices.items()}

    def size(self) -> int:
        """Number of distinct architectures (distinct assignments of the choices that are asked)."""
        raise NotImplementedError

    def _build(self, choose: Callable[[str, list], Any]) -> nx.DiGraph:
        raise NotImplementedError

    def template(self) -> nx.DiGraph:
        """The space's graph for pictures: edges carry ``label`` (their candidate ops)."""
        raise NotImplementedError

    def build(self, choose: Choose) -> nx.DiGraph:
        """Make one architecture, asking ``choose(name, options)`` for each choice it needs."""
        params: dict[str, Any] = {}

        def ask(name: str, options: list) -> Any:
            if len(options) == 1:
                return options[0]
            if self._choices.get(name) != options:
                raise RuntimeError(f"bug: choice {name!r} asked with {options}, declared {self._choices.get(name)}")
            value = choose(name, list(options))
            params[name] = value
            return value

        arch = self._build(ask)
        # Nodes that cannot reach the output (an unused cell input) would be extra sinks.
        out = "output" if "output" in arch else graph.sink(arch)
        arch.remove_nodes_from(set(arch) - nx.ancestors(arch, out) - {out})
        arch.graph.update(space=self.name, kind=self.kind, params=params)
        graph.validate(arch, OPS)
        return arch

    def sample(self, rng: random.Random) -> nx.DiGraph:
        """One architecture drawn uniformly choice by choice from ``rng`` (same seed, same arch)."""
        return self.build(lambda name, options: options[rng.randrange(len(options))])

    def from_params(self, params: dict[str, Any], *, algo: str | None = None) -> nx.DiGraph:
        """Rebuild the architecture of stored params; keys the space does not ask are ignored.
        With ``algo`` the candidate gets its whole recipe for that learner back (:meth:`draw`);
        without, the recipe choices the params hold and the fixed ones of every learner."""

        def lookup(name: str, options: list) -> Any:
            if name not in params:
                raise SpaceError(f"space {self.name!r}: params lack choice {name!r} (options {options})")
            value = params[name]
            if not any(value == o and type(value) is type(o) for o in options):
                raise SpaceError(f"space {self.name!r}: choice {name!r} = {value!r} is not one of {options}")
            return value

        if algo is not None:
            return self.draw(lookup, algo)
        arch = self.build(lookup)
        recipe = {k: v[0] for k, v in self.recipe.items() if len(v) == 1 and RECIPE_KEYS[k][2] is None}
        for key, options in self.recipe.items():
            if RECIPE_PREFIX + key in params and len(options) > 1:
                recipe[key] = lookup(RECIPE_PREFIX + key, options)
                arch.graph["params"][RECIPE_PREFIX + key] = recipe[key]
        if recipe:
            arch.graph["recipe"] = recipe
        return arch

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, choices={len(self._choices)}, size={self.size()})"


def options_text(options: list) -> str:
    text = [str(o).lower() if isinstance(o, bool) else str(o) for o in options]
    return text[0] if len(text) == 1 else "{" + ",".join(text) + "}"


# --- files ------------------------------------------------------------------------------------


def list_spaces() -> list[str]:
    """Names of the shipped spaces (the YAML files in ``SPACES_DIR``)."""
    return sorted(p.stem for p in SPACES_DIR.glob("*.yaml"))


class _DuplicateKeyError(Exception):
    """A mapping of a space file gives one key twice (a plain YAML load keeps the last silently)."""

    def __init__(self, key: Any, first: int, second: int) -> None:
        super().__init__(f"key {key!r} is given twice (lines {first} and {second})")


# A space file holds tens of values; one whose aliases expand to more is refused when read.
MAX_YAML_VALUES = 100_000


def _expanded_size(node: Any, sizes: dict[int, int]) -> int:
    """How many values a YAML node stands for once its aliases are expanded (a node that an alias
    names is shared: counted each time, computed once)."""
    known = sizes.get(id(node))
    if known is not None:
        return known
    sizes[id(node)] = 1  # a cycle through an alias counts once (PyYAML refuses it when constructing)
    total = 1
    if isinstance(node.value, list):
        for item in node.value:
            for child in item if isinstance(item, tuple) else (item,):
                total += _expanded_size(child, sizes)
                if total > MAX_YAML_VALUES:
                    break
    sizes[id(node)] = total
    return total


@functools.cache
def _space_loader() -> type:
    """yaml.SafeLoader, refusing duplicate keys and values PyYAML cannot convert (an integer of
    thousands of digits, a date like 2024-13-45) as YAML errors instead of ValueError."""
    import yaml

    class SpaceLoader(yaml.SafeLoader):
        def get_single_node(self) -> Any:
            node = super().get_single_node()
            if node is not None and _expanded_size(node, {}) > MAX_YAML_VALUES:
                # Aliases of aliases ("billion laughs") expand to more values than the file holds.
                raise yaml.composer.ComposerError(
                    None, None, f"expands to more than {MAX_YAML_VALUES:,} values through its aliases", node.start_mark
                )
            return node

        def construct_mapping(self, node: Any, deep: bool = False) -> dict[Any, Any]:
            if isinstance(node, yaml.MappingNode):
                seen: dict[Any, int] = {}
                for key_node, _ in node.value:
                    if key_node.tag == "tag:yaml.org,2002:merge":
                        continue  # `<<: *base` keys may be overridden: that is what a merge is for
                    key = self.construct_object(key_node, deep=True)
                    line = key_node.start_mark.line + 1
                    try:
                        first = seen.get(key)
                    except TypeError:
                        continue  # an unhashable key: SafeLoader refuses it below, naming it
                    if first is not None:
                        raise _DuplicateKeyError(key, first, line)
                    seen[key] = line
            return super().construct_mapping(node, deep=deep)

        def construct_object(self, node: Any, deep: bool = False) -> Any:
            try:
                return super().construct_object(node, deep=deep)
            except (ValueError, OverflowError) as exc:
                shown = repr(node.value) if isinstance(node.value, str) and len(node.value) <= 20 else "a value"
                reason = str(exc).split(";")[0]  # not Python's advice to raise its own limits
                raise yaml.constructor.ConstructorError(
                    None, None, f"cannot read {shown}: {reason}", node.start_mark
                ) from None

    return SpaceLoader


def load_space(name_or_path: str | Path) -> Space:
    """A shipped space by name (``"cell"``) or any YAML file by path; SpaceError otherwise."""
    text = str(name_or_path)
    path = Path(text)
    if not (path.suffix in (".yaml", ".yml") or path.is_file() or "/" in text):
        path = SPACES_DIR / f"{text}.yaml"
        if not path.is_file():
            raise SpaceError(f"unknown space {text!r}; choose from {list_spaces()} or give a path to a .yaml file")
    import yaml  # here, not at the top: building architectures needs no YAML (bench/gpu.py runs without it)

    try:
        data = path.read_bytes()
    except OSError as exc:
        raise SpaceError(f"cannot read space file {str(path)!r}: {exc.strerror or exc}") from None
    text = decode_utf8(data, path, SpaceError)  # a space file is UTF-8 text
    try:
        doc = yaml.load(text, Loader=_space_loader())
    except _DuplicateKeyError as exc:
        raise SpaceError(f"{path}: {exc}") from None
    except yaml.MarkedYAMLError as exc:
        # The problem, not the context line ("while constructing a mapping") that str(exc) starts with.
        where = f" (line {exc.problem_mark.line + 1}, column {exc.problem_mark.column + 1})" if exc.problem_mark else ""
        problem = (exc.problem or str(exc).strip().splitlines()[0]).strip()
        raise SpaceError(f"{path}: not valid YAML: {problem}{where}") from None
    except yaml.YAMLError as exc:
        first = str(exc).strip().splitlines()[0]
        raise SpaceError(f"{path}: not valid YAML: {first}") from None
    except RecursionError:
        # PyYAML composes nested collections recursively; no space file nests more than a few levels.
        raise SpaceError(f"{path}: not valid YAML: lists or mappings nested too deeply") from None
    if not isinstance(doc, dict):
        raise SpaceError(f"{path}: a space file must be a mapping with a 'kind' key, got {type(doc).__name__}")
    # Keys are names.  YAML also makes keys of numbers, null and booleans (yes/no/on/off), and keys
    # of mixed types cannot even be sorted for the unknown-key message.
    for key in doc:
        if not isinstance(key, str):
            raise SpaceError(f"{path}: key {key!r} is not a name ({type(key).__name__}); keys are names such as 'kind'")
    if "kind" not in doc:
        raise SpaceError(f"{path}: missing key 'kind'; choose from {SPACE_KINDS.names()}")
    # Type first: a list or mapping cannot be looked up in the registry (unhashable).
    if not isinstance(doc["kind"], str) or doc["kind"] not in SPACE_KINDS:
        raise SpaceError(f"{path}: key 'kind' is {doc['kind']!r}; choose from {SPACE_KINDS.names()}")
    name = doc.get("name", path.stem)
    if not isinstance(name, str) or not name:
        raise SpaceError(f"{path}: key 'name' must be a non-empty string, got {name!r}")
    return SPACE_KINDS.get(doc["kind"])(name, path, doc)


def draw_space(space: Space, path: str | Path) -> None:
    """Draw a space's graph to a PNG: nodes, and on each edge its candidate ops or options."""
    from ..viz.arch import draw_space as draw

    draw(space, path)


def load_known_arch(entry: str) -> tuple[str, nx.DiGraph]:
    """``path/arch.json`` or the name of a space with exactly one architecture (conv4) ->
    (name, architecture)."""
    from ..errors import ConfigError

    path = Path(entry)
    if path.suffix == ".json" or path.is_file():
        return (path.stem if path.stem != "arch" else path.parent.name), graph.load_json(path)
    space = load_space(entry)
    if space.size() != 1:
        raise ConfigError(
            f"{entry!r} is a space of {space.size():,} architectures; give a space "
            "with exactly one (such as conv4) or an architecture JSON"
        )
    return space.name, space.build(lambda _name, options: options[0])


def resolve_known_arch(entry: str, input_shape: tuple[int, ...]) -> tuple[str, dict]:
    """``--enqueue path/arch.json`` or ``--baseline conv4`` -> (name, arch JSON), validated by
    compiling it for the dataset's input."""
    from ..model import network

    name, arch = load_known_arch(entry)
    network.build(arch, input_shape)  # SpaceError now if it does not fit the data
    return name, graph.to_json(arch)
