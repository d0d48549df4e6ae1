"""The result cache: each finished (model, case, seed) record is kept and reused on a rerun.

Records live as one JSON file each under pytest's cache directory
(``.pytest_cache/d/flexharness-results``), so ``--cache-clear`` empties it
and a CI cache step can carry it between runs. A file is written to a
temporary name and renamed into place, so a run killed at any moment leaves
either the whole record or none: a rerun recomputes only what had not
finished. The key hashes everything that decides a record; anything else (a
case's line in the file, the other seeds of the case) is left out, so that
editing one case reruns that case only.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import importlib.metadata
import json
import tempfile
import warnings
from pathlib import Path
from typing import Any, Callable, Iterable

import pytest

from flexharness.axes import AXES
from flexharness.engine.models import model_identity
from flexharness.engine.runner import PER_EXAMPLE
from flexharness.engine.weights import Kept
from flexharness.results import predictions
from flexharness.files import RESULTS_LIMIT, path_fingerprint, read_text
from flexharness.resources import resolve_path
from flexharness.results.io import write_atomic
from flexharness.spec import Case, DatasetSpec, Planned

RESULTS_DIR = "flexharness-results"
OUTPUTS_DIR = "flexharness-outputs"
WEIGHTS_DIR = "flexharness-weights"    # fine-tuned weights: soup ingredients (fusion), dense models (compression)
ARRAYS_DIR = "flexharness-arrays"      # token ids and frozen features (engine.diskcache)
OUTPUTS_INPUT = "flex_outputs_dir"     # xdist workerinput key: the run's outputs folder without a cache
OUTPUTS_KEY = pytest.StashKey[Path]()
# Train fields added after the first release, with their defaults: a field that holds its default is left out of
# the key, so records cached before the field existed are still found.
ADDED_TRAIN_FIELDS: dict[str, Any] = {
    "precision": "auto", "method": "full", "lora_rank": 8, "lora_alpha": 16.0, "lora_dropout": 0.1,
    "lora_target_modules": None, "gradient_checkpointing": False,
}
ADDED_DATASET_FIELDS: dict[str, Any] = {"kind": "sequence_classification", "columns": ()}
VERSIONED_PACKAGES = ("flexharness", "torch", "transformers", "datasets")


def digest(value: Any) -> str:
    """sha256 of the canonical JSON of ``value`` (sorted keys, tuples as lists)."""
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def canonical_case(case: Case) -> dict[str, Any]:
    """The case's dataclass fields, without those that cannot change a record (line, seed list) and
    without this machine's folders (suite folder, --flex-data-dir): the data's contents are hashed instead,
    so a baseline or a shard made in another checkout still compares with this one."""
    fields = dataclasses.asdict(case)
    fields.pop("line")
    fields.pop("slices")   # slicing reads the stored outputs; it never changes a record
    fields["train"].pop("seeds")
    for key, default in ADDED_TRAIN_FIELDS.items():
        if fields["train"].get(key) == default:
            fields["train"].pop(key)
    _drop_added(fields["dataset"])
    fields["dataset"].pop("base_dir")
    fields["dataset"].pop("hub_mirror")
    for located in (fields["dataset"], *fields["where"]):  # where a key was written, for error messages
        for key in ("origin", "lines", "key", "line"):
            located.pop(key, None)
    fields["params"] = _portable(fields["params"])
    return fields


_MACHINE_OR_PLACE = ("base_dir", "hub_mirror", "origin", "lines", "key", "line")


def _drop_added(dataset: dict[str, Any]) -> dict[str, Any]:
    """A dataset's fields without those added later at their default: old suites keep their keys."""
    for key, default in ADDED_DATASET_FIELDS.items():
        if key in dataset and dataset[key] == default:
            dataset.pop(key)
    return dataset


def _portable(value: Any) -> Any:
    """Parameters without folders or lines: a domain's transfer targets hold dataset specs of their own."""
    if isinstance(value, dict):
        value = _drop_added(dict(value)) if {"files", "hub", "disk"} <= set(value) else value
        return {k: _portable(v) for k, v in value.items() if k not in _MACHINE_OR_PLACE}
    if isinstance(value, (list, tuple)):
        return [_portable(v) for v in value]
    return value


def case_fingerprint(case: Case) -> str:
    return digest(canonical_case(case))[:16]


def suite_fingerprint(cases: Iterable[Case]) -> str:
    """One value per suite version: changes when any case's configuration changes."""
    return digest(sorted(f"{c.axis}/{c.name}:{case_fingerprint(c)}" for c in cases))[:16]


def data_identity(spec: DatasetSpec) -> list[str] | None:
    """Content hashes of a dataset's local files (a hub dataset's --flex-data-dir copy too); None when one
    is missing (the case will say why)."""
    from flexharness.engine.data import mirror_path

    try:
        paths = [resolve_path(ref, Path(spec.base_dir)) for _, ref in spec.files]
        paths += [resolve_path(spec.disk, Path(spec.base_dir))] if spec.disk else []
        mirror = mirror_path(spec)
        paths += [mirror] if mirror is not None and mirror.is_dir() else []
        paths += local_hub_paths(spec)
        return [path_fingerprint(path) for path in paths]
    except OSError:
        return None


def local_hub_paths(spec: DatasetSpec) -> list[Path]:
    """A ``hub: {path: ...}`` that names a local folder or file: ``datasets.load_dataset`` reads it from disk.

    Both readings of a relative path count (the suite's folder and the working directory): a key that
    holds one file too many only misses, one that holds one too few reuses a stale score.
    """
    if not spec.hub:
        return []
    ref = str(dict(spec.hub).get("path", ""))
    if not ref or ref.startswith("pkg://"):
        return []
    candidates = dict.fromkeys((resolve_path(ref, Path(spec.base_dir)), Path(ref).expanduser()))
    return [path for path in candidates if path.exists()]


@functools.lru_cache(maxsize=1)
def library_versions() -> dict[str, str | None]:
    versions: dict[str, str | None] = {}
    for package in VERSIONED_PACKAGES:
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            versions[package] = None
    return versions


def result_key(planned: Planned, device: str) -> tuple[str | None, str | None]:
    """(record key, model fingerprint); the key is None when something it needs cannot be known yet."""
    model = model_identity(planned.model)
    model_print = digest(model)[:16] if model else None
    axis = AXES.get(planned.case.axis)
    case = axis.cache_case(planned.case)  # e.g. a stability item that is a tasks item shares its record
    data = data_identity(case.dataset)
    for spec in axis.cache_inputs(planned.case):  # e.g. a domain's transfer targets
        extra = data_identity(spec)
        data = data + extra if data is not None and extra is not None else None
    if model is None or data is None:
        return None, model_print
    parts = {"case": canonical_case(case), "data": data, "model": model, "seed": planned.seed,
             "device": device, "versions": library_versions()}
    return digest(parts), model_print


def training_recipe(case: Case) -> dict[str, Any]:
    """What decides the weights of a case's plain fine-tune: its data and filters, metrics (the head and the
    loss) and train settings, as the result-cache key holds them; not the suite, axis, name or parameters,
    nor evaluation splits after the first (they are never trained on), so that a compression case's dense
    model and its task's item share one recipe."""
    dataset = dataclasses.replace(case.dataset, eval_splits=case.dataset.eval_splits[:1])
    fields = canonical_case(dataclasses.replace(case, suite="", axis="", name="", params=(), dataset=dataset))
    for key in ("suite", "axis", "name", "params"):
        fields.pop(key)
    return fields


def weights_key(case: Case, model: str, seed: int, device: str) -> str | None:
    """The key of the fine-tuned weights of ``case``'s training recipe for one model and seed: the result-cache
    key's inputs with the recipe in place of the case; None while a hub model is not downloaded yet."""
    model_id = model_identity(model)
    data = data_identity(case.dataset)
    if model_id is None or data is None:
        return None
    return digest({"recipe": training_recipe(case), "data": data, "model": model_id, "seed": seed,
                   "device": device, "versions": library_versions()})


class CacheRecordWarning(UserWarning):
    """A cached record was damaged or of the wrong shape, and was recomputed."""


_RECORD_TYPES = {"score": "number", "metrics": "metrics", "seed": "int", "device": "str",
                 "train_examples": "int", "eval_examples": "int"}


def entry_problem(entry: Any, key: str, planned: Planned) -> str | None:
    """What is wrong with a stored entry, or None: a record must have the shape a fresh one has."""
    if not isinstance(entry, dict) or not isinstance(entry.get("record"), dict):
        return "not a record"
    if entry.get("key") != key:
        return "stored under another key"
    record = entry["record"]
    problem = _shape_problem(record, _RECORD_TYPES)
    if problem is None and record["seed"] != planned.seed:
        problem = f"seed {record['seed']} where {planned.seed} was asked"
    if problem is None and len(planned.case.scored_names) > 1:
        splits = record.get("splits")
        names = planned.case.dataset.eval_splits
        if not isinstance(splits, dict) or any(not isinstance(splits.get(n), dict) for n in names):
            problem = f"'splits' does not hold every evaluation split ({', '.join(names)})"
        else:
            problem = next(filter(None, (_shape_problem(splits[n], {k: _RECORD_TYPES[k] for k in
                                                                    ("score", "metrics", "eval_examples")})
                                         for n in names)), None)
    return problem


def _shape_problem(record: dict[str, Any], types: dict[str, str]) -> str | None:
    for name, kind in types.items():
        if name not in record:
            return f"'{name}' is missing"
        if not _CHECKS[kind](record[name]):
            return f"'{name}' is not {_KINDS[kind]}"
    return None


def _number(value: Any) -> bool:
    """A score as a fresh record holds it: null (no score), or any number (NaN too: a metric can give it)."""
    return value is None or isinstance(value, (int, float)) and not isinstance(value, bool)


_CHECKS: dict[str, Callable[[Any], bool]] = {
    "number": _number,
    "metrics": lambda v: isinstance(v, dict) and all(isinstance(k, str) and _number(x) for k, x in v.items()),
    "int": lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 0,
    "str": lambda v: isinstance(v, str),
}
_KINDS = {"number": "a number or null", "metrics": "a mapping of metric names to numbers", "int": "a count",
          "str": "a string"}


@dataclasses.dataclass(frozen=True)
class ResultCache:
    """One JSON file per record; ``reuse`` is False under ``--flex-no-cache`` (recompute, then refresh)."""

    directory: Path
    reuse: bool

    @classmethod
    def of(cls, config: pytest.Config, reuse: bool) -> "ResultCache | None":
        cache = getattr(config, "cache", None)  # absent under -p no:cacheprovider
        return cls(cache.mkdir(RESULTS_DIR), reuse) if cache is not None else None

    def get(self, key: str, planned: Planned) -> dict[str, Any] | None:
        """The stored record, or None: absent, or damaged (then one warning, and the item is recomputed)."""
        path = self.directory / f"{key}.json"
        try:
            entry = json.loads(read_text(path, RESULTS_LIMIT))
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            problem: str | None = f"unreadable ({type(exc).__name__})"
        else:
            problem = entry_problem(entry, key, planned)
        if problem:
            warnings.warn(CacheRecordWarning(f"result cache: ignored the record {path.name} for "
                                             f"{planned.name}: {problem}; recomputing it"), stacklevel=2)
            return None
        return entry["record"]

    def put(self, key: str, nodeid: str, record: dict[str, Any]) -> None:
        entry = {"key": key, "nodeid": nodeid, "record": record}
        write_atomic(self.directory / f"{key}.json", lambda handle: json.dump(entry, handle, sort_keys=True))


def outputs_dir(config: pytest.Config) -> Path:
    """Where items keep per-example outputs: beside the result cache, else a temporary folder of this run
    (made by the controller, handed to xdist workers through ``workerinput``)."""
    cache = getattr(config, "cache", None)
    if cache is not None:
        return cache.mkdir(OUTPUTS_DIR)
    given = (getattr(config, "workerinput", None) or {}).get(OUTPUTS_INPUT)
    if given:
        return Path(given)
    if OUTPUTS_KEY not in config.stash:
        config.stash[OUTPUTS_KEY] = Path(tempfile.mkdtemp(prefix="flexharness-outputs-"))
    return config.stash[OUTPUTS_KEY]


def arrays_dir(config: pytest.Config) -> Path:
    """Where token ids and frozen features are kept (``engine.diskcache``): beside the result cache, so later
    runs reuse them and ``--cache-clear`` empties them; else in the run's outputs folder, shared by xdist
    workers."""
    cache = getattr(config, "cache", None)
    return cache.mkdir(ARRAYS_DIR) if cache is not None else outputs_dir(config) / "arrays"


def cached_run(store: ResultCache | None, planned: Planned, nodeid: str, device: str,
               compute: Callable[[], dict[str, Any]], outputs: Path | None = None) -> dict[str, Any]:
    """The stored record when there is one (``cached: true``), else a fresh one, stored before returning.

    A fresh record's per-example arrays go to ``outputs`` as one file named like the record (its
    ``outputs`` key); they never travel inside the record.
    """
    key, model_print = result_key(planned, device)
    if store and store.reuse and key:
        hit = store.get(key, planned)
        if hit is not None:
            return {**hit, "cached": True}
    record = {**compute(), "cached": False, "model_fingerprint": model_print}
    if key is None:  # a hub model is in the local hub cache now
        key, record["model_fingerprint"] = result_key(planned, device)
    per_example = record.pop(PER_EXAMPLE, None)
    if per_example and outputs is not None:
        name = key or digest([nodeid, device, planned.seed, model_print])
        predictions.save(outputs, name, per_example)
        record["outputs"] = name
    if store and key:
        store.put(key, nodeid, record)
    return record


@dataclasses.dataclass(frozen=True)
class ItemStore:
    """Where an item keeps records it makes for itself (the fusion axis's ingredient runs): each by its own
    result-cache key, its per-example outputs beside it, its weights in ``flexharness-weights``; and the
    fine-tuned weights that one item keeps for another to start from (:meth:`kept`).

    Beside the result cache, so reruns and other workers reuse them and ``--cache-clear`` empties them;
    without a cache directory, in the run's temporary outputs folder (shared by xdist workers).
    """

    records: ResultCache
    outputs: Path
    weights: Path
    device: str

    @classmethod
    def of(cls, config: pytest.Config, device: str, reuse: bool) -> "ItemStore":
        outputs = outputs_dir(config)
        cache = getattr(config, "cache", None)
        if cache is not None:
            return cls(ResultCache(cache.mkdir(RESULTS_DIR), reuse), outputs, cache.mkdir(WEIGHTS_DIR), device)
        for sub in ("records", "weights"):
            (outputs / sub).mkdir(exist_ok=True)
        return cls(ResultCache(outputs / "records", reuse), outputs, outputs / "weights", device)

    def kept(self, case: Case, model: str, seed: int) -> Kept | None:
        """Where the fine-tuned weights of ``case``'s training recipe are kept (``weights_key``); None while a
        hub model is not downloaded yet (nothing is kept then)."""
        key = weights_key(case, model, seed, self.device)
        return Kept(self.weights / f"{key}.safetensors", self.records.reuse) if key else None

    def key(self, planned: Planned) -> str:
        """The record's result-cache key; a hub model not downloaded yet gets one from its id."""
        key, _ = result_key(planned, self.device)
        return key or digest([planned.model, canonical_case(planned.case), planned.seed, self.device])
