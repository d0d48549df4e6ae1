"""Hypothesis properties: valid suites load, expand and round-trip; invalid ones raise SuiteError only;
aggregation keeps its promises. No fine-tuning here: every example takes milliseconds."""

from __future__ import annotations

import copy
import json
import math
import tempfile
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from flexharness.rules import aggregate as agg
from flexharness.collect import RESULT_PROPERTY
from flexharness.errors import SuiteError
from flexharness.rules.metrics import CLASSIFICATION, METRICS, REGRESSION
from flexharness.options import Options
from flexharness.session import Controller
from flexharness.axes import load_suite
from flexharness.suite import expand

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])

names = st.text("abcdefghijklmnopqrstuvwxyz_", min_size=1, max_size=10)
seeds = st.lists(st.integers(0, 10_000), min_size=1, max_size=3, unique=True)
positive_floats = st.floats(1e-8, 10.0, allow_nan=False, allow_infinity=False)


@st.composite
def train_configs(draw: st.DrawFn) -> dict[str, Any]:
    options = {
        "epochs": st.integers(1, 5), "learning_rate": positive_floats, "batch_size": st.integers(1, 256),
        "eval_batch_size": st.integers(1, 256), "max_length": st.integers(1, 512),
        "warmup_ratio": st.floats(0, 0.99), "weight_decay": st.floats(0, 1), "max_grad_norm": positive_floats,
        "seeds": seeds, "max_train_samples": st.integers(1, 10**6), "max_eval_samples": st.integers(1, 10**6),
        "group_by_length": st.booleans(),
    }
    keys = draw(st.lists(st.sampled_from(sorted(options)), unique=True, max_size=6))
    return {key: draw(options[key]) for key in keys}


@st.composite
def valid_suites(draw: st.DrawFn) -> dict[str, Any]:
    """A suite as plain data: datasets over the one CSV, tasks of one metric direction, optional gates."""
    dataset_names = draw(st.lists(names, min_size=1, max_size=3, unique=True))
    datasets = {}
    for name in dataset_names:
        spec: dict[str, Any] = {"files": {"train": "data.csv"}}
        spec.update(draw(st.fixed_dictionaries({}, optional={
            "text": st.sampled_from(["text", ["text", "text"]]), "label": st.just("label"),
            "eval_fraction": st.floats(0.01, 0.99), "label_names": st.just(["negative", "positive"])})))
        datasets[name] = spec
    direction = draw(st.booleans())
    metrics = sorted(m for m, spec in METRICS.items() if spec.higher_is_better == direction
                     and spec.kind in (CLASSIFICATION, REGRESSION))   # the metrics of sequence classification
    tasks = []
    for name in draw(st.lists(names, min_size=1, max_size=5, unique=True)):
        task: dict[str, Any] = {"name": name, "dataset": draw(st.sampled_from(dataset_names)),
                                "metric": draw(st.sampled_from(metrics))}
        if draw(st.booleans()):
            task["train"] = draw(train_configs())
        if draw(st.booleans()):
            task["where"] = draw(st.sampled_from([{"label": ["positive", "negative"]}, {"label": "positive"},
                                                  {"text": {"matches": "(?i)good|bad"}}]))
        tasks.append(task)
    suite = {"suite": draw(names), "model": draw(names), "train": draw(train_configs()),
             "datasets": datasets, "tasks": tasks}
    if draw(st.booleans()):
        suite["gates"] = {"tasks": {"p_avg": {"min": draw(st.floats(0, 1))}, "sigma_p": {"max": draw(st.floats(0, 1))}},
                          "case_min": draw(st.floats(0, 1))}
    return suite


@pytest.fixture(scope="module")
def workdir() -> Path:
    with tempfile.TemporaryDirectory() as directory:
        (Path(directory) / "data.csv").write_text("text,label\ngood film,positive\nbad film,negative\n")
        yield Path(directory)


def write_suite(workdir: Path, data: Any, name: str = "gen.flex.yaml") -> Path:
    path = workdir / name
    path.write_text(yaml.safe_dump(data, sort_keys=False) if not isinstance(data, str) else data, encoding="utf-8")
    return path


def seeds_of(suite: dict[str, Any], task: dict[str, Any]) -> int:
    return len(task.get("train", {}).get("seeds") or suite["train"].get("seeds") or [0])


@SETTINGS
@given(suite=valid_suites(), models=st.lists(names, min_size=1, max_size=3, unique=True))
def test_valid_suites_load_and_expand_into_models_times_cases_times_seeds(workdir: Path, suite: dict,
                                                                         models: list[str]) -> None:
    loaded = load_suite(write_suite(workdir, suite))
    assert [c.name for c in loaded.cases] == [t["name"] for t in suite["tasks"]]
    planned = expand(loaded, tuple(models))
    assert len(planned) == len(models) * sum(seeds_of(suite, t) for t in suite["tasks"])
    assert len({p.name for p in planned}) == len(planned)  # every item id is unique


def _report(nodeid: str, outcome: str, record: dict | None) -> pytest.TestReport:
    props = [(RESULT_PROPERTY, json.dumps(record))] if record else []
    return pytest.TestReport(nodeid, (nodeid, None, nodeid), {}, outcome, None, "call", user_properties=props)


@SETTINGS
@given(suite=valid_suites(), data=st.data())
def test_a_synthetic_run_round_trips_through_the_results_json(workdir: Path, suite: dict, data: st.DataObject) -> None:
    """Scores in, document out: strict JSON that reads back unchanged, one entry per (model, case)."""
    path = write_suite(workdir, suite)
    options = Options(models=(), json_path=None, report_dir=None, data_dir=None, seeds=None, epochs=None,
                      max_train_samples=None, device="cpu", trust_remote_code=False, patterns=("*.flex.yaml",))
    controller = Controller(workdir, options)
    planned = expand(load_suite(path), (suite["model"],))
    controller.expect(f"{path.name}::{p.name}" for p in planned)
    for p in planned:
        score = data.draw(st.one_of(st.none(), st.floats(-1, 1)), label=p.name)
        record = {"score": score, "metrics": {m: score for m in p.case.metrics}, "device": "cpu",
                  "train_examples": 1, "eval_examples": 1} if score is not None else None
        controller.record(_report(f"{path.name}::{p.name}", "passed" if record else "failed", record))
    controller.compute_gates()
    doc = controller.document()
    assert json.loads(json.dumps(doc, allow_nan=False)) == doc
    assert len(doc["cases"]) == len(suite["tasks"])
    for case in doc["cases"]:
        seed_scores = list(case["seeds"].values())
        assert (case["score"] is None) == (None in seed_scores)
        assert case["status"] == ("passed" if case["score"] is not None else "failed")


# --- invalid suites: one mutation of a valid one ------------------------------------------------------

WRONG_TYPES = st.one_of(st.text(min_size=1).filter(lambda t: not _numeric(t)),
                        st.lists(st.text(max_size=3), min_size=1, max_size=2),
                        st.dictionaries(names, st.integers(), max_size=2), st.booleans())


def _numeric(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _mappings(suite: dict) -> list[tuple[dict, set[str]]]:
    """The mappings a mutation may touch, each with its allowed keys."""
    from flexharness.axes import AXES
    from flexharness.axes.tasks import TASK_KEYS
    from flexharness.spec import TrainConfig
    from flexharness.suite import COMMON_KEYS, DATASET_KEYS

    train_keys = set(TrainConfig.__dataclass_fields__)
    found = [(suite, {*COMMON_KEYS, *AXES.keys()}), (suite["train"], train_keys)]
    found += [(spec, set(DATASET_KEYS)) for spec in suite["datasets"].values()]
    found += [(task, set(TASK_KEYS)) for task in suite["tasks"]]
    found += [(task["train"], train_keys) for task in suite["tasks"] if "train" in task]
    return found


OUT_OF_RANGE = {
    "epochs": st.integers(-5, 0), "batch_size": st.integers(-5, 0), "max_length": st.integers(-5, 0),
    "learning_rate": st.floats(-1, 0), "warmup_ratio": st.one_of(st.floats(-1, -1e-9), st.floats(1, 5)),
    "weight_decay": st.floats(-1, -1e-9), "max_train_samples": st.integers(-5, 0),
    "seeds": st.one_of(st.just([]), st.just([1, 1]), st.lists(st.integers(-9, -1), min_size=1, max_size=2)),
}


@st.composite
def invalid_suites(draw: st.DrawFn) -> tuple[dict, str]:
    suite = copy.deepcopy(draw(valid_suites()))
    kind = draw(st.sampled_from(["unknown key", "wrong type", "out of range", "bad metric", "not finite"]))
    if kind == "unknown key":
        mapping, allowed = draw(st.sampled_from(_mappings(suite)))
        key = draw(names.filter(lambda k: k not in allowed))
        mapping[key] = draw(st.integers())
    elif kind == "wrong type":
        key = draw(st.sampled_from(["epochs", "learning_rate", "batch_size", "warmup_ratio", "seeds"]))
        suite["train"][key] = draw(WRONG_TYPES)
    elif kind == "out of range":
        key = draw(st.sampled_from(sorted(OUT_OF_RANGE)))
        target = draw(st.sampled_from([suite["train"]] + [t.setdefault("train", {}) for t in suite["tasks"]]))
        target[key] = draw(OUT_OF_RANGE[key])
    elif kind == "bad metric":
        task = draw(st.sampled_from(suite["tasks"]))
        task["metric"] = draw(st.text(min_size=1, max_size=12).filter(lambda m: m not in METRICS))
    else:
        suite["train"][draw(st.sampled_from(["learning_rate", "weight_decay"]))] = draw(
            st.sampled_from([math.inf, -math.inf, math.nan]))
    return suite, kind


@SETTINGS
@given(mutated=invalid_suites())
def test_invalid_suites_raise_suite_error_naming_the_file(workdir: Path, mutated: tuple[dict, str]) -> None:
    suite, _ = mutated
    path = write_suite(workdir, suite)
    with pytest.raises(SuiteError) as info:
        load_suite(path)
    assert str(info.value).startswith(f"{path}:")


yaml_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=20)),
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=12), inner, max_size=4)),
    max_leaves=20)


@SETTINGS
@given(document=st.one_of(st.text(max_size=200), yaml_values,
                          st.fixed_dictionaries({"suite": names}, optional={k: yaml_values for k in (
                              "train", "datasets", "tasks", "gates", "model", "domains")})))
def test_any_document_loads_or_raises_suite_error_and_nothing_else(workdir: Path, document: Any) -> None:
    path = write_suite(workdir, document, "fuzz.flex.yaml")
    try:
        load_suite(path)
    except SuiteError:
        pass


# --- aggregation ---------------------------------------------------------------------------------------

scores = st.floats(-1e6, 1e6, allow_nan=False, allow_infinity=False)


def cases_of(values: list[float | None], higher_is_better: bool = True) -> list[agg.CaseScore]:
    return [agg.CaseScore("s", "m", "tasks", f"c{i}", higher_is_better, {"0": v}) for i, v in enumerate(values)]


@SETTINGS
@given(values=st.lists(scores, min_size=1, max_size=30))
def test_p_avg_lies_within_the_scores_and_sigma_is_zero_exactly_when_all_equal(values: list[float]) -> None:
    (summary,) = agg.aggregate(cases_of(values))
    assert min(values) <= summary.p_avg <= max(values)
    assert (summary.sigma_p == 0.0) == (len(set(values)) == 1)
    assert summary.sigma_p >= 0.0 and summary.n == len(values) and summary.missing == 0


@SETTINGS
@given(values=st.lists(scores, min_size=1, max_size=30), data=st.data())
def test_aggregates_do_not_depend_on_case_order(values: list[float], data: st.DataObject) -> None:
    cases = cases_of(values)
    shuffled = data.draw(st.permutations(cases))
    assert agg.aggregate(cases) == agg.aggregate(shuffled)


@SETTINGS
@given(values=st.lists(st.one_of(st.none(), scores), min_size=1, max_size=20),
       threshold=scores, higher=st.booleans())
def test_any_missing_score_makes_every_gate_incomplete_and_failed(values: list[float | None], threshold: float,
                                                                  higher: bool) -> None:
    assume(None in values)
    cases = cases_of(values, higher)
    (summary,) = agg.aggregate(cases)
    assert summary.p_avg is None and summary.sigma_p is None and summary.missing == values.count(None)
    gates = agg.axis_gates(summary, {"p_avg": {"min": threshold}, "sigma_p": {"max": abs(threshold)}})
    gates.append(agg.case_min_gate(cases, threshold, "s", "m"))
    assert all(not g.passed and g.message.startswith("incomplete") for g in gates)


@SETTINGS
@given(values=st.lists(scores, min_size=1, max_size=20), threshold=scores, higher=st.booleans())
def test_the_p_avg_gate_honours_the_metric_direction(values: list[float], threshold: float, higher: bool) -> None:
    (summary,) = agg.aggregate(cases_of(values, higher))
    (gate,) = agg.axis_gates(summary, {"p_avg": {"min": threshold}})
    assert gate.passed == (summary.p_avg >= threshold if higher else summary.p_avg <= threshold)


@SETTINGS
@given(values=st.lists(st.one_of(st.none(), scores), min_size=1, max_size=20), data=st.data(), higher=st.booleans())
def test_case_floors_judge_exactly_the_named_cases_in_their_direction(values: list[float | None],
                                                                      data: st.DataObject, higher: bool) -> None:
    cases = cases_of(values, higher)
    named = data.draw(st.lists(st.sampled_from(cases), unique_by=lambda c: c.name))
    floors = {f"{c.axis}/{c.name}": data.draw(scores) for c in named}
    gates = agg.suite_gates(cases, {"s": {"cases": floors}})
    assert [g.name for g in gates] == [f"cases/{c.axis}/{c.name}.min" for c in cases if c in named]
    for gate, case in zip(gates, [c for c in cases if c in named]):
        floor = floors[f"{case.axis}/{case.name}"]
        if case.score is None:
            assert not gate.passed and gate.message.startswith("incomplete")
        else:
            assert gate.passed == (case.score >= floor if higher else case.score <= floor)


@SETTINGS
@given(seed_scores=st.lists(st.floats(0, 1), min_size=1, max_size=5))
def test_a_case_score_is_the_mean_of_its_seeds_and_within_them(seed_scores: list[float]) -> None:
    case = agg.CaseScore("s", "m", "tasks", "c", True, {str(i): v for i, v in enumerate(seed_scores)})
    assert min(seed_scores) <= case.score <= max(seed_scores)
    assert math.isclose(case.score, sum(seed_scores) / len(seed_scores), rel_tol=1e-12, abs_tol=1e-15)
    assert (case.seed_std == 0.0) == (len(set(seed_scores)) == 1)
