"""Tidy tables: a real run's results as pandas frames and Parquet/CSV files; per-example rows recompute scores.

The column names and types of the fixed tables are pinned here: they are part of the contract (docs/export.md).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from flexharness.cli import main
from flexharness.results import frames
from flexharness.results.io import write_json
from flexharness.rules.metrics import score

# pandas registers its pyarrow extension types when it first loads its Parquet engine: load it here, once, so that
# pytester's in-process run (which forgets modules it imported) does not register them a second time.
pd.io.parquet.get_engine("pyarrow")

CHEAP = ("train: {epochs: 3, learning_rate: 3.0e-3, batch_size: 16, warmup_ratio: 0.0, seeds: [0, 1], "
         "max_train_samples: 200, max_eval_samples: 40}")
TASKS = ("slices: {by: length, bins: 2}\ntasks:\n  - {name: sentiment, dataset: reviews, metric: [accuracy, macro_f1]}\n"
         "  - {name: polarity, dataset: reviews, metric: accuracy, where: {label: [positive, negative]}}\n"
         "compression:\n  task: polarity\n  train: {seeds: [0]}\n  methods:\n    - {method: magnitude, sparsity: 0.5}\n")

CASES = {"suite": "string", "model": "string", "axis": "string", "case": "string", "seed": "Int64",
         "status": "string", "metric": "string", "higher_is_better": "boolean", "score": "float64",
         "case_score": "float64", "seed_std": "float64", "interval_low": "float64", "interval_high": "float64",
         "train_method": "string", "precision": "string", "device": "string", "train_seconds": "float64",
         "eval_seconds": "float64", "setup_seconds": "float64", "steps": "Int64", "final_loss": "float64",
         "train_examples": "Int64", "eval_examples": "Int64", "trainable_params": "Int64", "total_params": "Int64",
         "cached": "boolean", "energy_kwh": "float64", "energy_measured": "boolean", "energy_source": "string",
         "dataset": "string", "id": "string"}
AGGREGATES = {"suite": "string", "model": "string", "axis": "string", "n": "Int64", "missing": "Int64",
              "p_avg": "float64", "sigma_p": "float64", "mean_seed_std": "float64", "higher_is_better": "boolean",
              "p_avg_low": "float64", "p_avg_high": "float64", "sigma_p_low": "float64", "sigma_p_high": "float64",
              "level": "float64"}
GATES = {"suite": "string", "model": "string", "name": "string", "passed": "boolean", "value": "float64",
         "threshold": "float64", "message": "string"}
EXAMPLES = {"suite": "string", "model": "string", "axis": "string", "case": "string", "seed": "Int64",
            "example": "Int64", "label": "float64", "prediction": "float64", "correct": "boolean",
            "probabilities": "object", "length": "Int64"}


def dtypes(frame: pd.DataFrame, names: dict[str, str]) -> dict[str, str]:
    return {name: str(frame[name].dtype) for name in list(frame.columns)[:len(names)]}


def test_a_runs_tables_pin_their_columns_and_examples_recompute_every_score(
        pytester: pytest.Pytester, suite_text) -> None:
    pytester.makefile(".flex.yaml", toy=suite_text(TASKS + "gates:\n  case_min: 0.0\n", train=CHEAP))
    result = pytester.runpytest("-p", "no:cacheprovider", "--flex-json=out.json", "--flex-export=tables")
    result.assert_outcomes(passed=6)
    doc = json.loads((pytester.path / "out.json").read_text())
    tables = frames.frames(pytester.path / "out.json")

    assert dtypes(tables["cases"], CASES) == CASES
    assert dtypes(tables["aggregates"], AGGREGATES) == AGGREGATES
    assert dtypes(tables["gates"], GATES) == GATES
    assert dtypes(tables["examples"], EXAMPLES) == EXAMPLES
    cases = tables["cases"]
    assert len(cases) == 5 and set(cases["status"]) == {"passed"}  # 2 tasks x 2 seeds, compression x 1
    assert {"recipe_learning_rate", "recipe_epochs", "metric_accuracy", "metric_macro_f1", "sparsity",
            "retention"} <= set(cases.columns)
    assert (cases["recipe_learning_rate"] == 3.0e-3).all() and (cases["precision"] == "fp32").all()
    assert (cases["train_seconds"] > 0).all() and (cases["steps"] > 0).all()

    examples = tables["examples"]
    assert set(examples["axis"]) == {"tasks"}  # compression keeps no outputs: its score is a retention ratio
    for case in doc["cases"][:2]:
        for seed, expected in case["seeds"].items():
            rows = examples[(examples["case"] == case["name"]) & (examples["seed"] == int(seed))]
            assert len(rows) == case["eval_examples"]
            found, _ = score(tuple(case["metric"].split("+")), rows["label"].to_numpy().astype(int),
                             rows["prediction"].to_numpy().astype(int))
            assert found == expected
    probabilities = np.stack(examples["probabilities"].to_numpy())
    assert np.allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)
    assert (examples["length"] > 0).all() and examples["prediction"].nunique() > 1 and examples["correct"].any()
    assert set(tables["slices"]["name"]) == {"q1", "q2"}

    for name, frame in tables.items():  # the run option wrote the same tables
        written = pd.read_parquet(pytester.path / "tables" / f"{name}.parquet")
        assert list(written.columns) == list(frame.columns), name
        assert len(written) == len(frame), name
    assert (pd.read_parquet(pytester.path / "tables" / "cases.parquet")["score"] == cases["score"]).all()


def test_export_command_writes_every_section_as_csv(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    doc = {"version": 1, "cases": [], "aggregates": [], "gates": [], "comparisons": [],
           "stability": [{"suite": "s", "model": "m", "task": "t", "setting": {"learning_rate": 0.1},
                          "expected_max": [0.5, 0.6]}], "transfer": []}
    write_json(tmp_path / "r.json", doc)
    assert main(["export", str(tmp_path / "r.json"), "--to", str(tmp_path / "t"), "--format", "csv"]) == 0
    assert "stability.csv  (1 rows)" in capsys.readouterr().out
    assert sorted(p.name for p in (tmp_path / "t").iterdir()) == [
        "aggregates.csv", "cases.csv", "comparisons.csv", "examples.csv", "gates.csv", "slices.csv", "stability.csv"]
    stability = pd.read_csv(tmp_path / "t" / "stability.csv")
    assert list(stability.columns) == ["suite", "model", "task", "expected_max", "setting.learning_rate"]
    assert json.loads(stability["expected_max"][0]) == [0.5, 0.6]
    assert list(pd.read_csv(tmp_path / "t" / "cases.csv").columns)[:len(CASES)] == list(CASES)


def test_without_pyarrow_export_says_how_to_install_it(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    write_json(tmp_path / "r.json", {"version": 1, "cases": [], "aggregates": [], "gates": []})
    monkeypatch.setitem(sys.modules, "pyarrow", None)  # what an interpreter without pyarrow finds
    assert main(["export", str(tmp_path / "r.json"), "--to", str(tmp_path / "t")]) == 2
    assert ("flexharness export: Parquet files need pyarrow: pip install 'flexharness[export]' (or --format csv)"
            in capsys.readouterr().err)
    (tmp_path / "blocker").write_text("a file")
    assert main(["export", str(tmp_path / "r.json"), "--to", str(tmp_path / "blocker")]) == 2
    assert "--to: cannot write" in capsys.readouterr().err


def test_energy_per_item_is_in_the_records_and_the_tables_labelled_measured_or_estimated(
        pytester: pytest.Pytester, suite_text) -> None:
    one = "tasks:\n  - {name: polarity, dataset: reviews, metric: accuracy, where: {label: [positive, negative]}}\n"
    pytester.makefile(".flex.yaml", toy=suite_text(one, train=CHEAP.replace("seeds: [0, 1]", "seeds: [0]")))
    pytester.runpytest("-p", "no:cacheprovider", "--flex-json=out.json", "--flex-energy").assert_outcomes(passed=1)
    run = json.loads((pytester.path / "out.json").read_text())["cases"][0]["per_seed"]["0"]
    assert run["energy_kwh"] > 0 and isinstance(run["energy_measured"], bool)
    counters = Path("/sys/class/powercap/intel-rapl").exists() and os.access("/sys/class/powercap/intel-rapl", os.R_OK)
    assert run["energy_source"].endswith("(estimated)") != run["energy_measured"]
    if not counters:   # no power counters on this machine: codecarbon's model of the CPU's draw, said so
        assert not run["energy_measured"] and "CPU" in run["energy_source"]
    cases = frames.frames(pytester.path / "out.json")["cases"]
    assert cases["energy_kwh"].iloc[0] == run["energy_kwh"]
    assert cases["energy_source"].iloc[0] == run["energy_source"]


def test_energy_without_codecarbon_says_which_extra_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    from flexharness.engine import energy

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None if name == "codecarbon" else real(name))
    with pytest.raises(energy.EnergyUnavailable, match=r"^--flex-energy needs codecarbon: pip install "
                                                       r"'flexharness\[energy\]'$"):
        energy.check()
