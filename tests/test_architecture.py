"""The architecture is a rule the build checks: import-linter contracts, no import cycles, and an axis is one module.

The toy axis below lives in the test's own folder and reaches the harness through
``AXES.register`` alone: suite reading, collection, the session, gates and reports
run it without knowing it exists.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import flexharness
from flexharness.axes import AXES, RegistryError

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = Path(flexharness.__file__).parent


def _lint_imports(package_parent: Path) -> subprocess.CompletedProcess:
    """Run import-linter with this project's contracts on the package found under ``package_parent``."""
    code = ("import sys; from importlinter.cli import lint_imports; "
            f"sys.exit(lint_imports(config_filename={str(ROOT / 'pyproject.toml')!r}, no_cache=True))")
    return subprocess.run([sys.executable, "-c", code], cwd=package_parent, capture_output=True, text=True,
                          env={"PYTHONPATH": str(package_parent), "PATH": "/usr/bin:/bin"}, timeout=120)


def test_the_import_contracts_hold() -> None:
    result = _lint_imports(PACKAGE.parent)
    assert result.returncode == 0, result.stdout[-3000:]
    assert "0 broken" in result.stdout


@pytest.mark.parametrize("module, line, contract", [
    ("results/report.py", "import torch", "never import torch"),
    ("engine/train.py", "import pytest", "knows no pytest"),
    ("axes/tasks.py", "from flexharness.harness import session", "Axes never import the pytest side"),
    ("rules/aggregate.py", "from flexharness.axes import AXES", "One direction"),
    ("store/keys.py", "from flexharness.axes import AXES", "The store imports no axis"),
    ("suite/reader.py", "from flexharness.engine import data", "suite reader never import"),
    ("harness/options.py", "from flexharness.harness import session", "pytest side in one direction"),
])
def test_a_forbidden_import_breaks_a_contract(tmp_path: Path, module: str, line: str, contract: str) -> None:
    copy = tmp_path / "flexharness"
    shutil.copytree(PACKAGE, copy, ignore=shutil.ignore_patterns("__pycache__"))
    target = copy / module
    target.write_text(target.read_text(encoding="utf-8") + f"\n\ndef _added() -> None:\n    {line}\n",
                      encoding="utf-8")
    result = _lint_imports(tmp_path)
    assert result.returncode != 0
    assert contract in result.stdout and "BROKEN" in result.stdout


def test_the_package_has_no_import_cycle() -> None:
    import grimp

    graph = grimp.build_graph("flexharness")
    cycles = sorted(f"{importer} -> {imported} -> ... -> {importer}"
                    for importer in graph.modules for imported in graph.find_modules_directly_imported_by(importer)
                    if graph.chain_exists(importer=imported, imported=importer))
    assert cycles == []


def test_the_top_of_the_package_holds_only_the_commands_and_the_leaves() -> None:
    top = sorted(p.name for p in PACKAGE.iterdir() if p.suffix == ".py" or (p / "__init__.py").is_file())
    assert top == ["__init__.py", "axes", "cli.py", "engine", "errors.py", "files.py", "harness", "names.py",
                   "plugin.py", "results", "rules", "store", "suite"]


def test_no_axis_is_named_outside_the_axes() -> None:
    """Only the registry line knows the built-in axes: the rest of the package reaches them through it."""
    keys = "|".join(AXES.keys())
    named = re.compile(rf"""(["'])({keys})\1""")
    found = [f"{path.relative_to(PACKAGE)}:{number}: {line.strip()}"
             for path in sorted(PACKAGE.rglob("*.py")) if path.relative_to(PACKAGE).parts[0] != "axes"
             for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
             if named.search(line)]
    assert found == []


def test_the_registry_refuses_taken_and_unknown_keys() -> None:
    with pytest.raises(RegistryError, match="taken"):
        AXES.register("tasks", "somewhere:Else")
    with pytest.raises(RegistryError, match="did you mean 'domains'"):
        AXES.get("domain")
    with pytest.raises(RegistryError, match="module:ClassName"):
        AXES.register("loose", "no_colon_here")
    assert AXES.keys()[:3] == ("tasks", "domains", "compression")


TOY_AXIS = '''
"""A fourth axis in one module: each case scores the value the suite gives it."""
from flexharness.axes.base import Axis
from flexharness.rules.aggregate import GateResult
from flexharness.suite.spec import Case, DatasetSpec


class ToyAxis(Axis):
    key = "toy"
    gate_stats = ("spread",)
    document_keys = ("toy_notes",)

    def parse(self, top, context):
        section = top.child("toy")
        section.only(("values",))
        values = section.child("values")
        return tuple(Case(suite=context.name, axis="toy", name=name, dataset=DatasetSpec(name="none"),
                          metrics=("accuracy",), train=context.defaults, line=values.line_of(name),
                          params=(("value", values.typed(name, float, required=True)),))
                     for name in values.data)

    def run(self, case, model, seed, context):
        value = dict(case.params)["value"]
        return {"score": value, "metrics": {"accuracy": value}, "device": "cpu", "seed": seed,
                "train_examples": 0, "eval_examples": 0}

    def case_fields(self, case, records):
        return {"toy_value": dict(case.params)["value"]}

    def sections(self, scored):
        return {"toy_notes": [{"case": s.case.name, "seeds": len(s.records)} for s in scored]}

    def finish(self, doc, gate_specs):
        gates = []
        for suite, model in dict.fromkeys((c["suite"], c["model"]) for c in doc["cases"] if c["axis"] == "toy"):
            bound = ((gate_specs.get(suite) or {}).get("toy") or {}).get("spread", {}).get("max")
            scores = [c["score"] for c in doc["cases"] if (c["axis"], c["suite"], c["model"]) == ("toy", suite, model)]
            if bound is None:
                continue
            if None in scores:
                gates.append(GateResult("toy/spread.max", False, None, bound, "incomplete", suite, model))
                continue
            spread = max(scores) - min(scores)
            gates.append(GateResult("toy/spread.max", spread <= bound, spread, bound,
                                    f"spread = {spread:.4f}, required <= {bound:g}", suite, model))
        return gates

    def terminal_lines(self, doc):
        return ["", f"toy section: {len(doc['toy_notes'])} notes"] if doc.get("toy_notes") else []
'''


@pytest.fixture
def toy_axis(pytester: pytest.Pytester):
    pytester.makepyfile(toy_axis=TOY_AXIS)
    pytester.syspathinsert()
    AXES.register("toy", "toy_axis:ToyAxis")
    yield
    AXES.unregister("toy")
    sys.modules.pop("toy_axis", None)


def test_a_fourth_axis_is_one_module_and_one_registry_line(pytester: pytest.Pytester, toy_axis: None,
                                                          tiny_model: Path) -> None:
    pytester.makefile(".flex.yaml", toy=f"""suite: toy
model: {tiny_model}
train: {{seeds: [0, 1]}}
toy:
  values: {{low: 0.4, high: 0.9}}
gates:
  toy: {{p_avg: {{min: 0.6}}, spread: {{max: 0.3}}}}
""")
    result = pytester.runpytest("-m", "toy", "-v", "--flex-json=out.json", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=4 + 1, failed=1)  # 2 cases x 2 seeds, p_avg passes, the spread gate fails
    result.stdout.fnmatch_lines(["*toy.flex.yaml::toy/low?seed0? PASSED*", "*gates/toy/p_avg*min PASSED*",
                                 "*gates/toy/spread*max FAILED*[[]100%[]]", "toy section: 2 notes"])
    doc = json.loads((pytester.path / "out.json").read_text())
    assert [(c["name"], c["score"], c["toy_value"]) for c in doc["cases"]] == [("low", 0.4, 0.4), ("high", 0.9, 0.9)]
    assert doc["aggregates"][0]["p_avg"] == pytest.approx(0.65)
    assert doc["toy_notes"] == [{"case": "low", "seeds": 2}, {"case": "high", "seeds": 2}]


def test_an_unregistered_axis_is_an_unknown_suite_key(pytester: pytest.Pytester, tiny_model: Path) -> None:
    pytester.makefile(".flex.yaml", toy=f"suite: toy\nmodel: {tiny_model}\ntoy:\n  values: {{a: 0.5}}\n")
    result = pytester.runpytest()
    result.stdout.fnmatch_lines(["*toy.flex.yaml:3: toy: unknown key; allowed here: *tasks*"])
    assert result.ret != 0
