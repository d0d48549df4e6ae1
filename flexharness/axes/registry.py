"""The registry of axes (``flexharness.suite.registry.Registry``): key → lazy ``"module:attr"`` reference.

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

from flexharness.axes.base import Axis
from flexharness.suite.registry import Registry, RegistryError

__all__ = ["AXES", "BUILT_IN", "Registry", "RegistryError"]

BUILT_IN = {
    "tasks": "flexharness.axes.tasks:TasksAxis",
    "domains": "flexharness.axes.domains:DomainsAxis",
    "compression": "flexharness.axes.compression:CompressionAxis",
    "stability": "flexharness.axes.stability:StabilityAxis",
    "probe": "flexharness.axes.probe:ProbeAxis",
    "fusion": "flexharness.axes.fusion:FusionAxis",
    "efficiency": "flexharness.axes.efficiency:EfficiencyAxis",
}

AXES: Registry[Axis] = Registry(BUILT_IN, Axis, "axis")
