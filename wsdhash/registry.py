"""A tiny name -> factory registry; wsdhash keeps one instance per component family."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

T = TypeVar("T")


class Registry(Generic[T]):
    """Maps names to factories for one family of components (datasets, backbones, ...).

    Registration is explicit (`REGISTRY.register("name")(factory)` at module level of
    the module that defines the factory); lookups of unknown names raise a `KeyError`
    that lists what is known.
    """

    def __init__(self, family: str):
        self.family = family
        self._entries: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        def decorator(entry: T) -> T:
            if name in self._entries:
                raise ValueError(f"{self.family} {name!r} is already registered.")
            self._entries[name] = entry
            return entry

        return decorator

    def get(self, name: str) -> T:
        try:
            return self._entries[name]
        except KeyError:
            known = ", ".join(sorted(self._entries)) or "none"
            raise KeyError(f"Unknown {self.family} {name!r}; known: {known}.") from None

    def names(self) -> list[str]:
        return sorted(self._entries)

    def in_registration_order(self) -> list[str]:
        """The names in the order they were registered (listings that follow a
        published order, e.g. `wsdhash.data.prepare`'s table)."""
        return list(self._entries)

    def __contains__(self, name: str) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())
