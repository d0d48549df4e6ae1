"""The ordered, closed registry of axes: key → lazy ``"module:attr"`` reference.

Suites name axes by key only. A key's module is imported on first use: a plugin
registers a ``"module:ClassName"`` string without importing it. Every pytest run
uses every registered axis at start-up, since each axis declares its own
command-line options (``Axis.add_options``); that costs about 0.3 s on 2 cores,
against 1.3 s for importing ``flexharness.axes`` itself (mostly numpy), and no
axis module imports torch. The order is the order of suite sections, ids,
summaries and reports. Registering is for plugins and tests (``register``,
before collection), refused for a key that is taken.
"""

from __future__ import annotations

import importlib
from typing import Iterator

from flexharness.axes.base import Axis
from flexharness.errors import FlexError
from flexharness.suite.schema import did_you_mean

BUILT_IN = {
    "tasks": "flexharness.axes.tasks:TasksAxis",
    "domains": "flexharness.axes.domains:DomainsAxis",
    "compression": "flexharness.axes.compression:CompressionAxis",
    "stability": "flexharness.axes.stability:StabilityAxis",
    "probe": "flexharness.axes.probe:ProbeAxis",
    "fusion": "flexharness.axes.fusion:FusionAxis",
    "efficiency": "flexharness.axes.efficiency:EfficiencyAxis",
}


class RegistryError(FlexError):
    """A key that is unknown or taken, or a target that is not an axis."""


class Registry:
    """Keys in order, each resolved once to an :class:`Axis` instance."""

    def __init__(self, entries: dict[str, str]) -> None:
        self._targets = dict(entries)
        self._loaded: dict[str, Axis] = {}

    def register(self, key: str, target: str) -> None:
        """Add an axis after the built-in ones; ``target`` is ``"module:ClassName"``."""
        if key in self._targets:
            raise RegistryError(f"axis key '{key}' is taken by {self._targets[key]}")
        if ":" not in target:
            raise RegistryError(f"axis '{key}': expected 'module:ClassName', got {target!r}")
        self._targets[key] = target

    def unregister(self, key: str) -> None:
        """Remove an axis added with :meth:`register` (built-in axes stay)."""
        if key in BUILT_IN:
            raise RegistryError(f"axis '{key}' is built in and cannot be removed")
        self._targets.pop(key, None)
        self._loaded.pop(key, None)

    def keys(self) -> tuple[str, ...]:
        return tuple(self._targets)

    def get(self, key: str) -> Axis:
        if key not in self._targets:
            raise RegistryError(f"unknown axis '{key}'{did_you_mean(key, self._targets)}; "
                                f"known: {', '.join(self._targets)}")
        if key not in self._loaded:
            module_name, _, attr = self._targets[key].partition(":")
            found = getattr(importlib.import_module(module_name), attr)
            axis = found() if isinstance(found, type) else found
            if not isinstance(axis, Axis) or axis.key != key:
                raise RegistryError(f"{self._targets[key]} is not an Axis with key '{key}'")
            self._loaded[key] = axis
        return self._loaded[key]

    def __iter__(self) -> Iterator[Axis]:
        return (self.get(key) for key in self._targets)


AXES = Registry(BUILT_IN)
