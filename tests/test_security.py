"""Suites are data, never code: the checks behind docs/security.md."""

from __future__ import annotations

import ast
import json
import math
from pathlib import Path

import pytest

import flexharness.suite.reader
from flexharness.errors import SuiteError
from flexharness.results.io import write_json
from flexharness.axes import load_suite
from toy import build_tiny_bert, sentiment_rows, write_csv

PACKAGE = Path(flexharness.suite.reader.__file__).parent


@pytest.mark.parametrize("tag", [
    "!!python/object/apply:os.system ['touch {marker}']",
    "!!python/object/new:os.system ['touch {marker}']",
    "!!python/name:os.system",
    "!!python/module:os",
    "!custom {{x: 1}}",
])
def test_yaml_tags_that_build_objects_are_rejected_and_never_run(tmp_path: Path, tag: str) -> None:
    marker = tmp_path / "pwned"
    suite = tmp_path / "evil.flex.yaml"
    suite.write_text(f"suite: evil\ndescription: {tag.format(marker=marker)}\n")
    with pytest.raises(SuiteError, match=r"evil\.flex\.yaml:2: unsupported YAML tag .*suites are plain data"):
        load_suite(suite)
    assert not marker.exists()


class _Forbidden(ast.NodeVisitor):
    """Calls and imports that would turn data into code or read our own files as pickles."""

    CALLS = {"eval", "exec", "compile", "__import__", "load", "unsafe_load", "full_load", "loads"}
    MODULES = {"pickle", "cPickle", "dill", "marshal", "shelve", "joblib", "cloudpickle"}

    def __init__(self) -> None:
        self.found: list[str] = []

    def visit_Call(self, node: ast.Call) -> None:
        func = node.func
        name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
        owner = getattr(func.value, "id", "") if isinstance(func, ast.Attribute) else ""
        if name in {"eval", "exec", "compile", "__import__"} and (isinstance(func, ast.Name) or owner == "builtins"):
            self.found.append(f"{name}() at line {node.lineno}")
        if owner in {"yaml", "torch", "pickle"} and name in self.CALLS:
            self.found.append(f"{owner}.{name}() at line {node.lineno}")
        if owner in {"np", "numpy"} and name == "load" and not any(
                k.arg == "allow_pickle" and isinstance(k.value, ast.Constant) and k.value.value is False
                for k in node.keywords):
            self.found.append(f"{owner}.load() without allow_pickle=False at line {node.lineno}")
        self.generic_visit(node)

    def visit_Import(self, node: ast.Import) -> None:
        self.found += [f"import {a.name}" for a in node.names if a.name.split(".")[0] in self.MODULES]

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        if (node.module or "").split(".")[0] in self.MODULES:
            self.found.append(f"from {node.module} import ...")


@pytest.mark.parametrize("source", sorted(PACKAGE.rglob("*.py")), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_no_eval_exec_pickle_or_unsafe_yaml_in_the_package(source: Path) -> None:
    visitor = _Forbidden()
    visitor.visit(ast.parse(source.read_text(encoding="utf-8")))
    assert visitor.found == []


def test_the_forbidden_call_check_can_fail() -> None:
    visitor = _Forbidden()
    visitor.visit(ast.parse("import pickle\nyaml.load(x)\neval('1')\ntorch.load(p)\nmodel.eval()\n"
                            "np.load(p)\nnp.load(p, allow_pickle=True)\nnp.load(p, allow_pickle=False)\n"))
    assert len(visitor.found) == 6  # model.eval() is a method, not the builtin; np.load without pickles is fine


def test_the_only_yaml_loader_is_the_safe_one() -> None:
    from flexharness.suite.yamlio import _LineLoader

    import yaml

    assert issubclass(_LineLoader, yaml.SafeLoader)
    assert not issubclass(_LineLoader, (yaml.FullLoader, yaml.UnsafeLoader))


REMOTE_CODE = '''
from pathlib import Path

from transformers import BertConfig, BertForSequenceClassification

Path({marker!r}).write_text("the model's own code ran")


class MarkedConfig(BertConfig):
    model_type = "marked-bert"


class MarkedModel(BertForSequenceClassification):
    config_class = MarkedConfig
'''


def remote_code_model(directory: Path, marker: Path) -> Path:
    """A local model whose config asks for code from its own folder, which leaves a marker when run."""
    build_tiny_bert(directory)
    config = json.loads((directory / "config.json").read_text())
    config.update(model_type="marked-bert",
                  auto_map={"AutoConfig": "custom.MarkedConfig",
                            "AutoModelForSequenceClassification": "custom.MarkedModel"})
    (directory / "config.json").write_text(json.dumps(config))
    (directory / "custom.py").write_text(REMOTE_CODE.format(marker=str(marker)))
    return directory


def test_model_code_runs_only_with_the_command_line_opt_in(pytester: pytest.Pytester, suite_text) -> None:
    marker = pytester.path / "remote-code-ran"
    model = remote_code_model(pytester.mkdir("remote-model"), marker)
    train = "train: {epochs: 1, batch_size: 16, seeds: [0], max_train_samples: 32, max_eval_samples: 32}"
    pytester.makefile(".flex.yaml", toy=suite_text("tasks:\n  - {name: t, dataset: reviews, metric: accuracy}\n",
                                                   train=train))
    refused = pytester.runpytest("-p", "no:cacheprovider", f"--model={model}")
    refused.assert_outcomes(failed=1)
    refused.stdout.fnmatch_lines([f"tasks/t (model {model}, seed 0): model '{model}' ships its own Python code, "
                                  "which flexharness does not run unless you pass --flex-trust-remote-code; *"])
    assert not marker.exists()
    trusted = pytester.runpytest("-p", "no:cacheprovider", f"--model={model}", "--flex-trust-remote-code")
    trusted.assert_outcomes(passed=1)
    assert marker.exists()


def test_a_suite_cannot_switch_on_remote_code(tmp_path: Path) -> None:
    suite = tmp_path / "s.flex.yaml"
    suite.write_text("suite: s\ntrust_remote_code: true\n")
    with pytest.raises(SuiteError, match=r"s\.flex\.yaml:2: trust_remote_code: unknown key"):
        load_suite(suite)


def test_relative_data_paths_start_at_the_suite_folder(pytester: pytest.Pytester, tiny_model: Path) -> None:
    nested = pytester.mkdir("suites") / "team"
    write_csv(nested / "data" / "reviews.csv", sentiment_rows(50))
    write_csv(pytester.path / "data" / "reviews.csv", sentiment_rows(300))  # a decoy where the run starts
    (nested / "rel.flex.yaml").write_text(
        f"suite: rel\nmodel: {tiny_model}\ntrain: {{epochs: 1, batch_size: 16, seeds: [0]}}\n"
        "datasets:\n  reviews: {files: {train: data/reviews.csv}, eval_fraction: 0.2}\n"
        "tasks:\n  - {name: t, dataset: reviews, metric: accuracy}\n")
    result = pytester.runpytest("-p", "no:cacheprovider", "--flex-json=out.json", "suites")
    result.assert_outcomes(passed=1)
    (case,) = json.loads((pytester.path / "out.json").read_text())["cases"]
    assert (case["train_examples"], case["eval_examples"]) == (40, 10)  # the suite folder's 50 rows


def test_results_are_strict_json_even_with_non_finite_numbers(tmp_path: Path) -> None:
    out = tmp_path / "out.json"
    write_json(out, {"cases": [{"score": math.nan, "metrics": {"mse": math.inf}, "seeds": {"0": 0.5}}]})

    def refuse(constant: str) -> None:
        raise AssertionError(f"non-standard JSON constant {constant}")

    doc = json.loads(out.read_text(), parse_constant=refuse)
    assert doc == {"cases": [{"score": None, "metrics": {"mse": None}, "seeds": {"0": 0.5}}]}
