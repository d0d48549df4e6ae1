"""A results file as tidy pandas tables: one row per run, aggregate, comparison, axis entry and example.

``frames("out.json")["cases"]`` in a notebook; ``flexharness export`` and
``--flex-export`` write the same tables as Parquet or CSV files. The column
names and types of the fixed tables are part of the contract (docs/export.md);
the axes' own sections become tables named by their results-JSON key, their
columns the entries' keys (nested keys joined with dots). pandas (and pyarrow
for Parquet) come with the ``export`` extra; they are imported on first use.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterable, Mapping

import numpy as np

from flexharness.errors import FlexError
from flexharness.results import predictions
from flexharness.results.io import read_results
from flexharness.rules.metrics import predictions_from_outputs

EXTRA = "pip install 'flexharness[export]'"
FORMATS = ("parquet", "csv")
NOT_SECTIONS = ("cases", "aggregates", "gates", "comparisons", "suites", "merged_from")

# (column, dtype) of the fixed tables; "string" is pandas' nullable string type, "Int64" its nullable integer
CASES = (("suite", "string"), ("model", "string"), ("axis", "string"), ("case", "string"), ("seed", "Int64"),
         ("status", "string"), ("metric", "string"), ("higher_is_better", "boolean"), ("score", "float64"),
         ("case_score", "float64"), ("seed_std", "float64"), ("interval_low", "float64"),
         ("interval_high", "float64"), ("train_method", "string"), ("precision", "string"), ("device", "string"),
         ("train_seconds", "float64"), ("eval_seconds", "float64"), ("setup_seconds", "float64"),
         ("steps", "Int64"), ("final_loss", "float64"), ("train_examples", "Int64"), ("eval_examples", "Int64"),
         ("trainable_params", "Int64"), ("total_params", "Int64"), ("cached", "boolean"),
         ("energy_kwh", "float64"), ("energy_measured", "boolean"), ("energy_source", "string"),
         ("dataset", "string"), ("id", "string"))
AGGREGATES = (("suite", "string"), ("model", "string"), ("axis", "string"), ("n", "Int64"), ("missing", "Int64"),
              ("p_avg", "float64"), ("sigma_p", "float64"), ("mean_seed_std", "float64"),
              ("higher_is_better", "boolean"), ("p_avg_low", "float64"), ("p_avg_high", "float64"),
              ("sigma_p_low", "float64"), ("sigma_p_high", "float64"), ("level", "float64"))
GATES = (("suite", "string"), ("model", "string"), ("name", "string"), ("passed", "boolean"),
         ("value", "float64"), ("threshold", "float64"), ("message", "string"))
EXAMPLES = (("suite", "string"), ("model", "string"), ("axis", "string"), ("case", "string"), ("seed", "Int64"),
            ("example", "Int64"), ("label", "float64"), ("prediction", "float64"), ("correct", "boolean"),
            ("probabilities", "object"), ("length", "Int64"))


class ExportUnavailable(FlexError):
    """pandas (or pyarrow, for Parquet) is not installed."""


def _pandas() -> Any:
    try:
        import pandas
    except ImportError:
        raise ExportUnavailable(f"tables need pandas: {EXTRA}") from None
    return pandas


def frames(path: str | Path) -> dict[str, Any]:
    """Every table of the results file ``path`` (and of the per-example outputs beside it)."""
    return frames_of(read_results(str(path)), predictions.read_beside(path))


def frames_of(doc: Mapping[str, Any], entries: Iterable[tuple[dict[str, Any], Mapping[str, np.ndarray]]] = ()
              ) -> dict[str, Any]:
    """The tables of a results document and its per-example ``entries`` (see ``predictions.read_beside``)."""
    tables = {"cases": _table(CASES, _case_rows(doc)),
              "aggregates": _table(AGGREGATES, [_aggregate_row(a) for a in doc.get("aggregates") or []]),
              "comparisons": _loose(doc.get("comparisons") or []),
              "gates": _table(GATES, doc.get("gates") or []),
              "slices": _loose(_slice_rows(doc)),
              "examples": _table(EXAMPLES, _example_rows(doc, entries))}
    for key, value in doc.items():
        if key not in NOT_SECTIONS and isinstance(value, list) and value and isinstance(value[0], dict):
            tables[key] = _loose(value)
    return tables


def _table(columns: tuple[tuple[str, str], ...], rows: list[Mapping[str, Any]]) -> Any:
    """Fixed columns with fixed types first; any further keys of the rows after them, as they come."""
    pd = _pandas()
    frame = pd.DataFrame(rows, columns=None if rows else [name for name, _ in columns])
    fixed = {name: dtype for name, dtype in columns}
    for name in fixed:
        if name not in frame:
            frame[name] = None
    extra = [name for name in frame.columns if name not in fixed]
    frame = frame[[*fixed, *extra]]
    return frame.astype({name: dtype for name, dtype in fixed.items() if dtype != "object"})


def _loose(rows: list[Mapping[str, Any]]) -> Any:
    """An axis section: nested keys flattened (``setting.learning_rate``), lists kept as JSON text."""
    pd = _pandas()
    frame = pd.json_normalize([dict(row) for row in rows])
    for name in frame.columns:
        if frame[name].map(lambda v: isinstance(v, (list, dict))).any():
            frame[name] = frame[name].map(lambda v: json.dumps(v) if isinstance(v, (list, dict)) else v)
    return frame


def _case_rows(doc: Mapping[str, Any]) -> list[dict[str, Any]]:
    """One row per (suite, model, case, seed): the seed's own numbers, the recipe and the axis's fields."""
    rows = []
    for case in doc.get("cases") or []:
        interval = case.get("interval") or {}
        base = {"suite": case["suite"], "model": case["model"], "axis": case["axis"], "case": case["name"],
                "metric": case["metric"], "higher_is_better": case["higher_is_better"], "case_score": case["score"],
                "seed_std": case["seed_std"], "interval_low": interval.get("low"),
                "interval_high": interval.get("high"), "dataset": (case.get("dataset") or {}).get("name"),
                **{key: case.get(key) for key in ("train_method", "train_examples", "eval_examples",
                                                  "trainable_params", "total_params", "id")},
                **{f"recipe_{key}": _cell(value) for key, value in (case.get("recipe") or {}).items()},
                **{key: _cell(value) for key, value in case.items() if key not in CASE_KEYS}}
        runs = case.get("per_seed") or {}
        for seed, score in case["seeds"].items():
            run = runs.get(seed) or {"status": case["status"], "score": score, "metrics": {},
                                     "train_seconds": case.get("train_seconds") if len(case["seeds"]) == 1 else None}
            rows.append({**base, **{key: value for key, value in run.items() if key != "metrics"},
                         "seed": int(seed), "score": score,
                         **{f"metric_{name}": value for name, value in run["metrics"].items()}})
    return rows


# keys of a results-JSON case that the cases table shows under other names, or leaves to other tables
CASE_KEYS = {"suite", "model", "axis", "name", "metric", "higher_is_better", "seeds", "score", "seed_std", "status",
             "cached", "cached_items", "fingerprint", "model_fingerprint", "items", "metrics", "train_examples",
             "eval_examples", "train_method", "trainable_params", "total_params", "train_seconds", "interval",
             "recipe", "dataset", "per_seed", "id", "slices"}


def _cell(value: Any) -> Any:
    """A scalar stays; a list or mapping (a stability setting, the runs of a fusion case) becomes JSON text."""
    return json.dumps(value) if isinstance(value, (list, dict, tuple)) else value


def _slice_rows(doc: Mapping[str, Any]) -> list[dict[str, Any]]:
    """One row per difficulty slice of a case (``slices`` of the case in the results JSON)."""
    return [{"suite": case["suite"], "model": case["model"], "axis": case["axis"], "case": case["name"],
             "by": found.get("by"), **entry}
            for case in doc.get("cases") or [] for found in [case.get("slices") or {}]
            for entry in found.get("slices") or []]


def _aggregate_row(row: Mapping[str, Any]) -> dict[str, Any]:
    p_avg, sigma_p = row.get("p_avg_interval") or {}, row.get("sigma_p_interval") or {}
    return {**{name: row.get(name) for name, _ in AGGREGATES}, "p_avg_low": p_avg.get("low"),
            "p_avg_high": p_avg.get("high"), "sigma_p_low": sigma_p.get("low"), "sigma_p_high": sigma_p.get("high"),
            "level": p_avg.get("level") or sigma_p.get("level")}


def _example_rows(doc: Mapping[str, Any], entries: Iterable[tuple[dict[str, Any], Mapping[str, np.ndarray]]]
                  ) -> list[dict[str, Any]]:
    """One row per stored example: its label, the prediction the case's score counts, the probabilities."""
    rows = []
    for meta, arrays in entries:
        outputs = np.asarray(arrays["outputs"], dtype=np.float64)
        outputs = outputs.reshape(len(outputs), -1)
        labels = np.asarray(arrays["labels"])
        predicted = predictions_from_outputs(outputs)
        classes = outputs.shape[1] > 1
        columns = {_column_name(field): np.asarray(values) for field, values in arrays.items()
                   if field.startswith("column:")}
        lengths = arrays.get(predictions.LENGTHS)
        for i in range(len(labels)):
            rows.append({"suite": meta["suite"], "model": meta["model"], "axis": meta["axis"], "case": meta["case"],
                         "seed": int(meta["seed"]), "example": i, "label": float(labels[i]),
                         "prediction": float(predicted[i]),
                         "correct": bool(labels[i] == predicted[i]) if classes else None,
                         "probabilities": outputs[i].tolist() if classes else None,
                         "length": int(lengths[i]) if lengths is not None else None,
                         **{name: values[i].item() for name, values in columns.items()}})
    return rows


def _column_name(field: str) -> str:
    """``column:HEX`` (see ``predictions.column_field``) as ``slice_NAME``."""
    return "slice_" + bytes.fromhex(field.partition(":")[2]).decode("utf-8", "surrogatepass")


def require(fmt: str) -> None:
    """Raise :class:`ExportUnavailable` unless the libraries that write ``fmt`` files are installed."""
    if fmt not in FORMATS:
        raise ExportUnavailable(f"format {fmt!r}: expected parquet or csv")
    _pandas()
    if fmt == "parquet":
        try:
            import pyarrow  # noqa: F401
        except ImportError:
            raise ExportUnavailable(f"Parquet files need pyarrow: {EXTRA} (or --format csv)") from None


def write(tables: Mapping[str, Any], directory: str | Path, fmt: str = "parquet") -> list[Path]:
    """One file per table (``cases.parquet``, ...). Returns the files written."""
    require(fmt)
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, frame in tables.items():
        target = directory / f"{name}.{fmt}"
        if fmt == "parquet":
            frame.to_parquet(target, index=False)
        else:
            frame.assign(**{col: frame[col].map(_csv_cell) for col in frame.columns if frame[col].dtype == object}
                         ).to_csv(target, index=False)
        written.append(target)
    return written


def _csv_cell(value: Any) -> Any:
    return json.dumps(value) if isinstance(value, list) else value
