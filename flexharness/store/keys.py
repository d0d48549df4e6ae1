"""Result-cache keys: pure functions of a case, its data, the model and the libraries.

The key hashes everything that decides a record; anything else (a case's line in the file, the other
seeds of the case) is left out, so that editing one case reruns that case only. These functions know no
axis: what an axis adds to a key (the case an item shares its record with, other datasets it reads) is
handed in by the caller. ``tests/test_keys_golden.py`` pins their hex.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import importlib.metadata
import json
from pathlib import Path
from typing import Any, Iterable

from flexharness.engine.data import mirror_path
from flexharness.engine.models import model_identity, pooling_key
from flexharness.files import path_fingerprint
from flexharness.suite.resources import resolve_path
from flexharness.suite.spec import Case, DatasetSpec, Planned

# Train fields added after the first release, with their defaults: a field that holds its default is left out of
# the key, so records cached before the field existed are still found.
ADDED_TRAIN_FIELDS: dict[str, Any] = {
    "precision": "auto", "method": "full", "lora_rank": 8, "lora_alpha": 16.0, "lora_dropout": 0.1,
    "lora_target_modules": None, "gradient_checkpointing": False, "devices": 1, "parallel": "ddp",
    "pooling": "auto",
}
CHOICE_PARAMS = ("choose", "across_models")   # case parameters that choose among records on the controller,
                                               # never change one
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
    fields["params"] = _portable(tuple(p for p in fields["params"] if p[0] not in CHOICE_PARAMS))
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


@dataclasses.dataclass(frozen=True)
class KeyedAs:
    """What an axis says about an item's key: the case whose record it shares (a stability item with the tasks
    recipe is the tasks item) and the other datasets it reads (a domain's transfer targets)."""

    case: Case | None = None
    inputs: tuple[DatasetSpec, ...] = ()


def result_key(planned: Planned, device: str, keyed_as: KeyedAs = KeyedAs()) -> tuple[str | None, str | None]:
    """(record key, model fingerprint); the key is None when something it needs cannot be known yet."""
    model = model_identity(planned.model)
    model_print = digest(model)[:16] if model else None
    case = keyed_as.case or planned.case
    data = data_identity(case.dataset)
    for spec in keyed_as.inputs:
        extra = data_identity(spec)
        data = data + extra if data is not None and extra is not None else None
    if model is None or data is None:
        return None, model_print
    parts = {"case": with_pooling(canonical_case(case), case, planned.model), "data": data, "model": model,
             "seed": planned.seed, "device": device, "versions": library_versions()}
    return digest(parts), model_print


def with_pooling(fields: dict[str, Any], case: Case, model: str) -> dict[str, Any]:
    """``fields`` (a canonical case) with the pooling ``model`` trains in place of the one asked: absent for the
    model's own head, as in keys made before ``pooling`` existed; ``auto`` that pools otherwise changes the key."""
    fields["train"].pop("pooling", None)
    found = pooling_key(case.train.pooling, model)
    if found:
        fields["train"]["pooling"] = found
    return fields


EVALUATION_ONLY = ("max_eval_samples", "eval_batch_size")   # train settings that decide no weight


def training_recipe(case: Case) -> dict[str, Any]:
    """What decides the weights of a case's plain fine-tune: its data and filters, metrics (the head and the
    loss) and train settings, as the result-cache key holds them; not the suite, axis, name or parameters,
    nor evaluation splits after the first, nor the train settings only evaluation reads (none of them changes
    what is trained on), so that a compression case's dense model and its task's item share one recipe even
    when the compression section scores fewer rows."""
    dataset = dataclasses.replace(case.dataset, eval_splits=case.dataset.eval_splits[:1])
    fields = canonical_case(dataclasses.replace(case, suite="", axis="", name="", params=(), dataset=dataset))
    for key in ("suite", "axis", "name", "params"):
        fields.pop(key)
    for key in EVALUATION_ONLY:
        fields["train"].pop(key, None)
    return fields



def weights_key(case: Case, model: str, seed: int, device: str) -> str | None:
    """The key of the fine-tuned weights of ``case``'s training recipe for one model and seed: the result-cache
    key's inputs with the recipe in place of the case; None while a hub model is not downloaded yet."""
    model_id = model_identity(model)
    data = data_identity(case.dataset)
    if model_id is None or data is None:
        return None
    return digest({"recipe": with_pooling(training_recipe(case), case, model), "data": data, "model": model_id,
                   "seed": seed, "device": device, "versions": library_versions()})


