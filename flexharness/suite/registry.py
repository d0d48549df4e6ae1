"""An ordered, closed registry of what a suite names by key (an axis, a task kind): key → lazy
``"module:attr"`` reference, resolved once to an instance of one base type.

A plugin registers a ``"module:ClassName"`` string without importing it; the module is imported on
first use. The order is the order of registration, built-in entries first. A key that is taken is
refused, an unknown key gets a did-you-mean and the list of known keys. The suite reader itself
imports no entry: it receives a registry as a parameter and asks :meth:`Registry.unknown`.
"""

from __future__ import annotations

import importlib
from typing import Generic, Iterator, Mapping, TypeVar

from flexharness.errors import FlexError
from flexharness.suite.schema import did_you_mean

T = TypeVar("T")


class RegistryError(FlexError):
    """A key that is unknown or taken, or a target that is not of the registry's type."""


class Registry(Generic[T]):
    """Keys in order, each resolved once to an instance of ``base`` whose ``key`` attribute is that key."""

    def __init__(self, entries: Mapping[str, str], base: type[T], noun: str) -> None:
        self._built_in = tuple(entries)
        self._targets = dict(entries)
        self._loaded: dict[str, T] = {}
        self._base = base
        self.noun = noun   # what an entry is called in messages: "axis", "task kind"

    def register(self, key: str, target: str) -> None:
        """Add an entry after the built-in ones; ``target`` is ``"module:ClassName"``."""
        if key in self._targets:
            raise RegistryError(f"{self.noun} key '{key}' is taken by {self._targets[key]}")
        if ":" not in target:
            raise RegistryError(f"{self.noun} '{key}': expected 'module:ClassName', got {target!r}")
        self._targets[key] = target

    def unregister(self, key: str) -> None:
        """Remove an entry added with :meth:`register` (built-in entries stay)."""
        if key in self._built_in:
            raise RegistryError(f"{self.noun} '{key}' is built in and cannot be removed")
        self._targets.pop(key, None)
        self._loaded.pop(key, None)

    def keys(self) -> tuple[str, ...]:
        return tuple(self._targets)

    def unknown(self, key: str) -> str | None:
        """Why ``key`` names no entry (with a did-you-mean and the known keys), or None."""
        if key in self._targets:
            return None
        return f"unknown {self.noun} '{key}'{did_you_mean(key, self._targets)}; known: {', '.join(self._targets)}"

    def get(self, key: str) -> T:
        complaint = self.unknown(key)
        if complaint:
            raise RegistryError(complaint)
        if key not in self._loaded:
            module_name, _, attr = self._targets[key].partition(":")
            found = getattr(importlib.import_module(module_name), attr)
            entry = found() if isinstance(found, type) else found
            if not isinstance(entry, self._base) or getattr(entry, "key", None) != key:
                raise RegistryError(f"{self._targets[key]} is not a {self._base.__name__} with key '{key}'")
            self._loaded[key] = entry
        return self._loaded[key]

    def __iter__(self) -> Iterator[T]:
        return (self.get(key) for key in self._targets)
