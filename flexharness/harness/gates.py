"""Gates become test results: reports sent through pytest's own report hooks.

That is what puts them in the terminal, in ``--junitxml`` and in the exit
status, on the controller only, so they appear once with or without xdist.
"""

from __future__ import annotations

import pytest

from flexharness.harness.session import Controller
from flexharness.names import model_labels
from flexharness.rules.aggregate import GateResult


def gate_nodeid(controller: Controller, gate: GateResult) -> str:
    """``FILE::gates/NAME``, with ``[MODEL]`` when the suite ran several models and the gate judges one of them
    (a gate over all models, fusion across models, has none)."""
    models = {s.planned.model for s in controller.items.values() if s.suite.name == gate.suite}
    label = model_labels(sorted(models)).get(gate.model) if len(models) > 1 else None
    suffix = f"[{label}]" if label else ""
    return f"{controller.suite_file(gate.suite)}::gates/{gate.name}{suffix}"


def report_gates(config: pytest.Config, controller: Controller) -> None:
    for gate in controller.compute_gates():
        nodeid = gate_nodeid(controller, gate)
        file = nodeid.split("::", 1)[0]
        location = (file, None, nodeid.split("::", 1)[1])
        config.hook.pytest_runtest_logstart(nodeid=nodeid, location=location)
        for when in ("setup", "call", "teardown"):
            failed = when == "call" and not gate.passed
            report = pytest.TestReport(
                nodeid=nodeid, location=location, keywords={"flex_gate": 1}, when=when,
                outcome="failed" if failed else "passed",
                longrepr=f"gate {gate.name} ({gate.suite}, model {gate.model}): {gate.message}" if failed else None,
                user_properties=[("value", gate.value), ("threshold", gate.threshold), ("message", gate.message)]
                if when == "call" else [],
            )
            config.hook.pytest_runtest_logreport(report=report)
        config.hook.pytest_runtest_logfinish(nodeid=nodeid, location=location)
