"""The smallest registry that works: a name maps to a factory (a class or a function)."""
from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Any, Generic, TypeVar

T = TypeVar("T")


class RegistryError(KeyError):
    """A lookup or registration error whose message a person can act on."""

    def __str__(self) -> str:  # KeyError quotes its message; we want it plain
        return str(self.args[0]) if self.args else ""


_all_registries: list[Registry] = []


def all_registries() -> list[Registry]:
    """Every registry created in this process (the admin's plugin page lists them)."""
    return list(_all_registries)


class Registry(Generic[T]):
    """Register by name, get by name; unknown names fail with the list of known ones.

    >>> sources = Registry("source")
    >>> @sources.register("danbooru")
    ... class Danbooru: ...
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, T] = {}
        self._origins: dict[str, str] = {}
        self._lock = threading.Lock()
        _all_registries.append(self)

    def register(self, name: str, obj: T | None = None, *, origin: str = "built-in") -> Any:
        if not name or not isinstance(name, str):
            raise RegistryError(f"A {self.kind} needs a non-empty name")

        def _add(target: T) -> T:
            with self._lock:
                if name in self._entries and self._entries[name] is not target:
                    raise RegistryError(
                        f"{self.kind} {name!r} is already registered (by {self._origins[name]})"
                    )
                self._entries[name] = target
                self._origins[name] = origin
            return target

        if obj is not None:
            return _add(obj)
        return _add

    def unregister(self, name: str) -> None:
        with self._lock:
            self._entries.pop(name, None)
            self._origins.pop(name, None)

    def get(self, name: str) -> T:
        try:
            return self._entries[name]
        except KeyError:
            known = ", ".join(sorted(self._entries)) or "none"
            raise RegistryError(f"Unknown {self.kind} {name!r}; known: {known}") from None

    def origin(self, name: str) -> str:
        self.get(name)
        return self._origins[name]

    def names(self) -> list[str]:
        return sorted(self._entries)

    def items(self) -> list[tuple[str, T]]:
        return sorted(self._entries.items())

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._entries)


FactoryRegistry = Registry[Callable[..., Any]]
