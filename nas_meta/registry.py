"""One registry kind for everything chosen by name: space kinds, ops, datasets, learners, samplers.

>>> OPS = Registry("op")
>>> @OPS.register("identity")
... def build_identity(c_in, c_out, stride): ...
>>> OPS.get("identitty")
Traceback (most recent call last):
nas_meta.errors.ConfigError: unknown op 'identitty'; choose from ['identity']
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from .errors import ConfigError

__all__ = ["Registry"]

T = TypeVar("T")


class Registry(Generic[T]):
    """A name -> object table that refuses duplicates and names the choices on a miss."""

    def __init__(self, kind: str, error: type[Exception] = ConfigError) -> None:
        self.kind = kind
        self._error = error
        self._items: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator: ``@REGISTRY.register("name")``. A second object under one name is refused."""

        def decorator(obj: T) -> T:
            self.add(name, obj)
            return obj

        return decorator

    def add(self, name: str, obj: T) -> None:
        if not isinstance(name, str) or not name:
            raise ValueError(f"a {self.kind} name must be a non-empty string, got {name!r}")
        if name in self._items:
            raise ValueError(f"{self.kind} {name!r} is already registered")
        self._items[name] = obj

    def remove(self, name: str) -> T:
        """Unregister ``name`` and return its object (a test or a plugin undoing its registration)."""
        try:
            return self._items.pop(name)
        except KeyError:
            raise self._error(f"unknown {self.kind} {name!r}; choose from {self.names()}") from None

    def get(self, name: str) -> T:
        try:
            return self._items[name]
        except (KeyError, TypeError):
            raise self._error(f"unknown {self.kind} {name!r}; choose from {self.names()}") from None

    def names(self) -> list[str]:
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        # A name read from a file may be a list or a mapping: unhashable, and never a registered name.
        return isinstance(name, str) and name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._items)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {self.names()})"
