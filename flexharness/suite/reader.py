"""Reading a suite file: YAML → validated, frozen :class:`Suite`, each axis's section read by its axis.

This module knows the keys every suite shares (``suite``, ``model``, ``train``,
``datasets``, ``gates``) and offers the readers that axes reuse for their own
sections; which axes exist it learns from the ``axes`` it is given (the
registry's, see ``flexharness.axes``). Everything here is plain data (no torch,
no datasets) so that collection is fast and every error is found before any
fine-tuning starts.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any, ClassVar, Collection, Mapping, Protocol, Sequence

from flexharness.errors import SuiteError, short_repr
from flexharness.names import model_label
from flexharness.rules.metrics import METRICS, REGRESSION
from flexharness.rules.slices import AGREEMENT, LENGTH, RESERVED_SLICES
from flexharness.suite.gatespec import GatedAxis, read_gates
from flexharness.suite.resources import path_problem, position_limit, resolve_path, suite_relative
from flexharness.suite.schema import (Reader, coerce, did_you_mean, display_name, fraction, nfc, non_negative,
                                     open_fraction, positive)
from flexharness.suite.spec import (FILE_FORMATS, PARALLEL_MODES, POOLINGS, PRECISIONS, Case, DatasetSpec, Filter,
                                    Planned, SliceSpec, Suite, TrainConfig)
from flexharness.suite.yamlio import Located, load_yaml

COMMON_KEYS = ("suite", "description", "model", "train", "datasets", "slices", "gates")
MAX_ITEMS = 10_000   # items (model x case x seed, and fusion's runs) one suite may plan; a large real suite plans hundreds


_TRAIN_CHECKS = {
    "epochs": (int, positive), "learning_rate": (float, positive), "batch_size": (int, positive),
    "eval_batch_size": (int, positive), "max_length": (int, positive), "warmup_ratio": (float, fraction),
    "weight_decay": (float, non_negative), "max_grad_norm": (float, positive),
    "max_train_samples": (int, positive), "max_eval_samples": (int, positive), "group_by_length": (bool, None),
    "precision": (str, lambda value: _one_of(value, PRECISIONS)),
    "lora_rank": (int, positive), "lora_alpha": (float, positive), "lora_dropout": (float, fraction),
    "gradient_checkpointing": (bool, None), "devices": (int, positive),
    "parallel": (str, lambda value: _one_of(value, PARALLEL_MODES)),
    "pooling": (str, lambda value: _one_of(value, POOLINGS)),
}
TRAIN_METHODS = ("full", "lora", "head")   # how a case adapts the model: all weights, a LoRA adapter, the head only


def _one_of(value: str, choices: tuple[str, ...]) -> str | None:
    if value in choices:
        return None
    return f"expected one of {', '.join(choices)}, got {value!r}{did_you_mean(value, choices)}"


@dataclass(frozen=True)
class SuiteContext:
    """What an axis reading its section may use: the suite's name, datasets, train defaults, earlier cases."""

    name: str
    datasets: Mapping[str, DatasetSpec]
    defaults: TrainConfig
    cases: tuple[Case, ...]


class KindReader(Protocol):
    """The part of a task kind this module uses (the whole interface is ``flexharness.engine.kinds.TaskKind``)."""

    key: str
    dataset_keys: tuple[str, ...]
    file_formats: dict[str, str]

    def read_dataset(self, reader: Reader) -> tuple[tuple[str, Any], ...]: ...

    def check_case(self, case: Case) -> str | None: ...


class Kinds(Protocol):
    """The registry of task kinds (``flexharness.engine.kinds.KINDS``), as this module uses it."""

    def unknown(self, key: str) -> str | None: ...

    def get(self, key: str) -> KindReader: ...


DEFAULT_KIND = "sequence_classification"


class SectionReader(GatedAxis, Protocol):
    """The part of an axis this module uses (the whole interface is ``flexharness.axes.base.Axis``)."""

    expands_methods: ClassVar[bool]   # a method list under ``train:`` becomes one case per method

    def parse(self, top: Reader, context: SuiteContext) -> tuple[Case, ...]: ...


def load_suite(path: str | Path, axes: Sequence[SectionReader], overrides: Mapping[str, Any] | None = None,
               hub_mirror: str | None = None, kinds: Kinds | None = None) -> Suite:
    """Load and validate one suite file; each axis in ``axes`` (in order) reads its own section.

    ``overrides`` are train keys from the command line; ``hub_mirror`` is a folder of local copies of
    hub datasets, looked up before the hub; ``kinds`` the task kinds a dataset's ``kind:`` may name (each
    reads its own dataset keys and checks its cases); without it, every dataset is sequence classification.
    """
    path = Path(path)
    top = Reader(load_yaml(path), str(path))
    top.only((*COMMON_KEYS, *(axis.key for axis in axes)))
    name = nfc(top.typed("suite", str, required=True,
                         check=lambda v: display_name(v) if v.strip() else "must not be empty"))
    defaults = read_train(top.child("train"), TrainConfig())
    datasets = {key: replace(spec, hub_mirror=hub_mirror) if spec.hub and not local_hub(spec) else spec
                for key, spec in _datasets(top.child("datasets"), path.parent, kinds).items()}
    if not any(top.raw(axis.key) for axis in axes):
        raise top.error(None, "the suite defines no cases: add a 'tasks:' list")
    cases: tuple[Case, ...] = ()
    for axis in axes:
        if top.raw(axis.key) is not None:
            cases += axis.parse(top, SuiteContext(name, datasets, defaults, cases))
            check_expansion(top, axis.key, item_count(cases), "items (cases x seeds) up to this section")
    cases = _default_slices(cases, read_slices(top, "slices"), str(path))
    cases = tuple(_apply_overrides(c, overrides or {}, str(path)) for c in cases)
    check_expansion(top, None, item_count(cases, methods=True), "items once method lists are expanded")
    cases = expand_methods(cases, str(path), [axis.key for axis in axes if axis.expands_methods])
    _check_kinds(cases, kinds, str(path))
    return Suite(
        name=name, path=str(path), description=top.typed("description", str, ""),
        model=_model(top, path.parent), cases=cases, gates=read_gates(top.child("gates"), cases, axes),
    )


def check_expansion(reader: Reader, key: str | None, count: int, what: str) -> int:
    """The one bound on what a suite makes the harness build, checked on the count before anything is built:
    a few written numbers multiply (a grid, ``runs: 1000000000``, models x cases) into more than memory holds."""
    if count > MAX_ITEMS:
        raise reader.error(key, f"expands to {count:,} {what}, more than the {MAX_ITEMS:,} a suite may plan; "
                                "write fewer values, or split it into several suites")
    return count


def item_count(cases: Sequence[Case], methods: bool = False) -> int:
    """Items the cases plan for one model (an item combining several seeds counts each run it trains);
    ``methods``: a task's method list counts once per method."""
    return sum(len(c.train.seeds) * (len(c.train.method) if methods and not isinstance(c.train.method, str) else 1)
               for c in cases)


SLICE_KEYS = ("by", "bins", "values", "edges")
SLICE_BINS_LIMIT = 20


def read_slices(reader: Reader, name: str) -> SliceSpec | None:
    """``slices: {by: length | agreement, bins: N}`` or ``{by: COLUMN, values: [...] | edges: [...]}`` under
    ``name`` of ``reader``, or None."""
    if reader.raw(name) is None:
        return None
    section = reader.child(name)
    section.only(SLICE_KEYS)
    by = section.typed("by", str, required=True, check=lambda v: None if v.strip() else "must not be empty")
    bins = section.typed("bins", int, 3, check=lambda v: None if 2 <= v <= SLICE_BINS_LIMIT
                         else f"must be from 2 to {SLICE_BINS_LIMIT}")
    values, edges = _slice_values(section), _slice_edges(section)
    if by in (LENGTH, AGREEMENT):
        if values is not None or edges is not None:
            raise section.error("values" if values is not None else "edges",
                                f"'by: {by}' names its own slices; 'values' and 'edges' are for a column")
    elif (values is None) == (edges is None):
        raise section.error("by", f"slicing by column '{by}' needs the slices named in the suite: 'values: [a, b]' "
                                  "(rows with other values go to 'other') or, for numbers, 'edges: [0.5, 0.8]'; "
                                  "a slice is never named by a value read from the data")
    return SliceSpec(by, bins, values, edges, reader.key(name), reader.line_of(name))


def _slice_values(section: Reader) -> tuple[Any, ...] | None:
    raw = section.raw("values")
    if raw is None:
        return None
    if not isinstance(raw, list) or not raw or not all(isinstance(v, (str, int, float, bool)) for v in raw):
        raise section.error("values", "expected a non-empty list of values of the column, e.g. [airline, apple]")
    names = [str(v) for v in raw]
    if len(raw) > SLICE_BINS_LIMIT or len(set(names)) != len(names) or set(names) & set(RESERVED_SLICES):
        raise section.error("values", f"expected at most {SLICE_BINS_LIMIT} distinct values, none named "
                                      f"{' or '.join(map(repr, RESERVED_SLICES))}")
    for value in names:
        complaint = display_name(value)
        if complaint:
            raise section.error("values", complaint)
    return tuple(raw)


def _slice_edges(section: Reader) -> tuple[float, ...] | None:
    if section.raw("edges") is None:
        return None
    raw = section.raw("edges")
    edges = [coerce(v, float) for v in raw] if isinstance(raw, list) else []
    if not edges or len(edges) >= SLICE_BINS_LIMIT or any(not isinstance(e, float) for e in edges) \
            or any(a >= b for a, b in zip(edges, edges[1:])):
        raise section.error("edges", f"expected an ascending list of at most {SLICE_BINS_LIMIT - 1} distinct finite "
                                     "numbers, e.g. [0.5, 0.8]")
    return tuple(edges)


def _default_slices(cases: tuple[Case, ...], default: SliceSpec | None, path: str) -> tuple[Case, ...]:
    """The suite's ``slices:`` for every case without its own; agreement needs right and wrong answers."""
    cases = tuple(replace(c, slices=default) if c.slices is None and default else c for c in cases)
    for case in cases:
        if case.slices and case.slices.by == "agreement" and case.label_kind == REGRESSION:
            raise SuiteError(path, case.slices.line, case.slices.key,
                             f"'{case.axis}/{case.name}' has a regression metric ({case.metric}): no example is "
                             "right or wrong, so 'by: agreement' cannot rank them; slice it 'by: length' or by a "
                             "column")
    return cases


def _model(top: Reader, base_dir: Path) -> str | None:
    """The suite's ``model``: a local folder is found next to the suite file, like its data."""
    model = top.typed("model", str, check=lambda v: None if v.strip() else "must not be empty")
    return suite_relative(model, base_dir) if model is not None else None


def local_hub(spec: DatasetSpec) -> str | None:
    """The folder a ``hub: {path: ...}`` names next to the suite file, or None for a hub id."""
    path = dict(spec.hub)["path"]
    found = suite_relative(path, Path(spec.base_dir))
    return found if found != path or Path(path).expanduser().is_absolute() else None


def read_train(reader: Reader, base: TrainConfig) -> TrainConfig:
    """A ``train:`` mapping over ``base``: the keys it sets win, the others are inherited."""
    reader.only([f.name for f in fields(TrainConfig)])
    values: dict[str, Any] = {}
    for key, (kind, check) in _TRAIN_CHECKS.items():
        value = reader.typed(key, kind, check=check)
        if value is not None:
            values[key] = value
    if reader.has("seeds"):
        values["seeds"] = reader.seeds("seeds")
    if reader.has("method"):
        values["method"] = _methods(reader)
    if reader.has("lora_target_modules"):
        values["lora_target_modules"] = reader.str_or_list("lora_target_modules")
    train = replace(base, **values)
    if train.parallel == "fsdp" and train.method != "full":
        raise reader.error("parallel" if reader.has("parallel") else "method",
                           f"'parallel: fsdp' shards the weights that 'method: full' trains; 'method: "
                           f"{train.method}' trains few of them and fits one device: use 'parallel: ddp'")
    return train


def _methods(reader: Reader) -> str | tuple[str, ...]:
    """``method: lora``, or a list (``[full, lora]``) that expands a task into one case per method."""
    methods = reader.str_or_list("method")
    for method in methods:
        if method not in TRAIN_METHODS:
            raise reader.error("method", f"unknown method '{method}'{did_you_mean(method, TRAIN_METHODS)}; "
                                         f"known: {', '.join(TRAIN_METHODS)}")
    if len(set(methods)) != len(methods):
        raise reader.error("method", "each method may be listed once")
    return methods[0] if len(methods) == 1 else methods


def expand_methods(cases: tuple[Case, ...], path: str, expanding: Collection[str]) -> tuple[Case, ...]:
    """A case of an axis in ``expanding`` whose ``method`` is a list becomes one case per method, named
    ``NAME-METHOD``; a case of another axis that inherits a list is refused."""
    expanded: list[Case] = []
    for case in cases:
        if isinstance(case.train.method, str):
            expanded.append(case)
        elif case.axis not in expanding:
            raise SuiteError(path, case.line, f"{case.axis}.train.method",
                             f"a method list expands {' and '.join(expanding) or 'no section'} only; "
                             f"'{case.axis}/{case.name}' inherits {list(case.train.method)}: give it one method, "
                             "e.g. 'train: {method: full}'")
        else:
            expanded += [replace(case, name=f"{case.name}-{method}", train=replace(case.train, method=method))
                         for method in case.train.method]
    for axis in expanding:
        names = [c.name for c in expanded if c.axis == axis]
        twice = next((name for name in names if names.count(name) > 1), None)
        if twice:
            raise SuiteError(path, None, axis, f"two cases are named '{twice}' once method lists are expanded; "
                                               "rename one of them")
    return tuple(expanded)


def _check_kinds(cases: tuple[Case, ...], kinds: Kinds | None, path: str) -> None:
    """Each case's task kind may refuse it (a metric it cannot score, an axis or method it cannot run)."""
    for case in cases:
        complaint = kinds.get(case.kind).check_case(case) if kinds else None
        if complaint:
            raise SuiteError(path, case.line, f"{case.axis}.{case.name}", complaint)


def _datasets(reader: Reader, base_dir: Path, kinds: Kinds | None = None) -> dict[str, DatasetSpec]:
    specs = {}
    for name in reader.data:
        specs[name] = _dataset(reader.child(name), name, base_dir, kinds)
    return specs


DATASET_KEYS = ("files", "hub", "disk", "format", "encoding", "text", "label", "label_names",
                 "train_split", "eval_split", "eval_fraction")


def _kind(reader: Reader, kinds: Kinds | None) -> KindReader | None:
    """The kind a dataset's ``kind:`` names (None for the default), its own keys allowed beside the common ones."""
    key = reader.typed("kind", str, DEFAULT_KIND)
    complaint = kinds.unknown(key) if kinds else (None if key == DEFAULT_KIND else f"unknown task kind '{key}'")
    if complaint:
        raise reader.error("kind", complaint)
    kind = kinds.get(key) if kinds and key != DEFAULT_KIND else None
    reader.only((*DATASET_KEYS, "kind", *(kind.dataset_keys if kind else ())))
    return kind


def _dataset(reader: Reader, name: str, base_dir: Path, kinds: Kinds | None = None) -> DatasetSpec:
    kind = _kind(reader, kinds)
    formats = {**FILE_FORMATS, **(kind.file_formats if kind else {})}
    sources = [k for k in ("files", "hub", "disk") if reader.has(k)]
    if len(sources) != 1:
        raise reader.error(None, "give exactly one source: 'files', 'hub' or 'disk'")
    files = _files(reader.child("files"), base_dir) if reader.has("files") else ()
    suffixes = {Path(ref).suffix.lower() for _, ref in files}
    if files and not reader.has("format") and (len(suffixes) != 1 or not suffixes <= set(formats)):
        raise reader.error("files", f"cannot tell the file format from {', '.join(sorted(suffixes))}; "
                                    f"add 'format: {', '.join(sorted(set(formats.values())))}'")
    hub: tuple[tuple[str, str], ...] = ()
    if reader.has("hub"):
        hub_reader = reader.child("hub")
        hub_reader.only(("path", "name", "revision"))
        hub = tuple((k, hub_reader.typed(k, str, required=k == "path"))
                    for k in ("path", "name", "revision") if hub_reader.has(k) or k == "path")
    disk = reader.typed("disk", str)
    if disk is not None:
        _check_exists(reader, "disk", disk, base_dir, folder=True)
    fmt = reader.typed("format", str, check=lambda v: None if v in set(formats.values())
                       else f"unknown format{did_you_mean(v, set(formats.values()))}; use "
                            f"{', '.join(sorted(set(formats.values())))}")
    label_names, train_split, eval_splits = _labels_and_splits(reader)
    return DatasetSpec(
        name=name, files=files, hub=hub, disk=disk, base_dir=str(base_dir.resolve()), format=fmt,
        encoding=reader.typed("encoding", str), text=_text_columns(reader),
        label=reader.typed("label", str, "label"), label_names=label_names,
        train_split=train_split, eval_splits=eval_splits,
        eval_fraction=reader.typed("eval_fraction", float, 0.2, check=open_fraction),
        kind=kind.key if kind else DEFAULT_KIND, columns=kind.read_dataset(reader) if kind else (),
        origin=reader.path, lines=(("", reader.line), *((k, reader.line_of(k)) for k in reader.data)),
    )


def _labels_and_splits(reader: Reader) -> tuple[tuple[str, ...] | None, str, tuple[str, ...]]:
    label_names = reader.str_or_list("label_names") or None
    if label_names and len(set(label_names)) != len(label_names):
        raise reader.error("label_names", "label names must be distinct")
    train_split = reader.typed("train_split", str, "train")
    eval_splits = reader.str_or_list("eval_split")
    if train_split in eval_splits:
        raise reader.error("eval_split", f"'{train_split}' is the training split: scores on training data say "
                                         "nothing about flexibility; name other splits, or drop 'eval_split' to "
                                         "hold out 'eval_fraction'")
    if len(set(eval_splits)) != len(eval_splits):
        raise reader.error("eval_split", "split names must be distinct")
    return label_names, train_split, eval_splits


def _text_columns(reader: Reader) -> tuple[str, ...]:
    columns = reader.str_or_list("text", ("text",))
    if len(columns) > 2:
        raise reader.error("text", "give one text column, or two for a sentence-pair task")
    return columns


def _files(reader: Reader, base_dir: Path) -> tuple[tuple[str, str], ...]:
    if not reader.data:
        raise reader.error(None, "map split names to files, e.g. {train: data/train.csv}")
    result = []
    for split, ref in reader.data.items():
        if not isinstance(ref, str):
            raise reader.error(split, "expected a file path (relative to the suite file) or pkg://PACKAGE/PATH")
        _check_exists(reader, split, ref, base_dir)
        result.append((split, ref))
    _check_distinct_files(reader, result, base_dir)
    return tuple(result)


def _check_distinct_files(reader: Reader, files: list[tuple[str, str]], base_dir: Path) -> None:
    """One file under two splits (through any spelling or symlink) would score a model on its training data."""
    seen: dict[Path, str] = {}
    for split, ref in files:
        real = resolve_path(ref, base_dir).resolve()
        if real in seen:
            raise reader.error(split, f"the same file as split '{seen[real]}' ({real}): a model scored on the rows "
                                      "it was trained on says nothing about flexibility; give each split its own "
                                      "file, or drop the evaluation split to hold out 'eval_fraction'")
        seen[real] = split


def _check_exists(reader: Reader, key: str, ref: str, base_dir: Path, folder: bool = False) -> None:
    """Missing or unreadable data fails at collection, before any case starts."""
    complaint = path_problem(ref, base_dir, folder)
    if complaint:
        raise reader.error(key, complaint)


def dataset_ref(reader: Reader, datasets: dict[str, DatasetSpec]) -> DatasetSpec:
    name = reader.typed("dataset", str, required=True)
    if name not in datasets:
        known = ", ".join(sorted(datasets)) or "none defined"
        raise reader.error("dataset", f"no dataset named '{name}' under 'datasets:'{did_you_mean(name, datasets)}"
                                      f" (known: {known})")
    return datasets[name]


def read_metrics(reader: Reader) -> tuple[str, ...]:
    names = reader.str_or_list("metric", required=True)
    for metric in names:
        if metric not in METRICS:
            raise reader.error("metric", f"unknown metric '{metric}'{did_you_mean(metric, METRICS)}; "
                                         f"known: {', '.join(METRICS)}")
    kinds = {METRICS[m].kind for m in names}
    directions = {METRICS[m].higher_is_better for m in names}
    if len(kinds) > 1 or len(directions) > 1:
        raise reader.error("metric", "metrics of one case must all be classification or all regression, "
                                     "with the same direction")
    return names


def read_filters(reader: Reader) -> tuple[Filter, ...]:
    filters = []
    for column, rule in reader.data.items():
        if isinstance(rule, dict):
            sub = Reader(rule, reader.path, reader.key(column), reader.line_of(column))
            sub.only(("matches",))
            pattern = sub.typed("matches", str, required=True)
            try:
                re.compile(pattern)
            except re.error as exc:
                raise sub.error("matches", f"invalid regular expression {short_repr(pattern)}: {exc}") from None
            filters.append(Filter(column, matches=pattern, key=reader.key(column), line=reader.line_of(column)))
        else:
            values = rule if isinstance(rule, list) else [rule]
            if not values or not all(isinstance(v, (str, int, float, bool)) for v in values):
                raise reader.error(column, "expected a value, a list of values, or {matches: REGEX}")
            filters.append(Filter(column, values=tuple(values), key=reader.key(column), line=reader.line_of(column)))
    return tuple(filters)


SETTING = "setting"     # a case param: the (train field, value) pairs its name and record say it trained with
TRAIN_ROWS = "size"     # a case param: the exact number of training rows it trains on (a learning-curve point)
OPTION_OF = {"seeds": "--flex-seeds", "epochs": "--flex-epochs", "max_train_samples": "--flex-max-train-samples",
             "precision": "--flex-precision", "method": "--flex-method"}


def _apply_overrides(case: Case, overrides: Mapping[str, Any], path: str) -> Case:
    """The command line's train keys on a case; refused where they would change what the case is named for."""
    if not overrides:
        return case
    params = dict(case.params)
    for field, value in dict(params.get(SETTING) or ()).items():
        if field in overrides and overrides[field] != value:
            raise SuiteError(path, case.line, f"{case.axis}/{case.name}",
                             f"{OPTION_OF[field]} {overrides[field]} replaces {field}: {value}, which this case is "
                             f"named for: the settings of a grid over '{field}' would all train alike and be "
                             "recorded as what they were not; drop the option, or the grid dimension")
    cap, rows = overrides.get("max_train_samples"), params.get(TRAIN_ROWS)
    if cap is not None and rows is not None and cap < rows:
        raise SuiteError(path, case.line, f"{case.axis}/{case.name}",
                         f"--flex-max-train-samples {cap} keeps fewer training examples than the {rows} this "
                         "learning-curve point is named for; drop the option, raise it, or drop the size")
    return replace(case, train=replace(case.train, **overrides))


def check_max_length(suite: Suite, models: Sequence[str]) -> None:
    """A ``max_length`` written in the suite must fit every local model's position table (read from config.json).

    The default (128) is not checked: the engine truncates to the model's limit. Hub models are
    checked by nothing here (collection reads no network).
    """
    limits = {model: limit for model in models if (limit := position_limit(model)) is not None}
    if not limits or all(case.train.max_length <= min(limits.values()) for case in suite.cases):
        return
    model, limit = min(limits.items(), key=lambda item: item[1])
    for key, line, value in _written(load_yaml(suite.path), "", "max_length"):
        if isinstance(value, int) and value > limit:
            raise SuiteError(suite.path, line, key, f"{value} tokens are more than model {model_label(model)} "
                                                    f"takes ({limit} positions, from its config.json); "
                                                    f"use {limit} or less")


def _written(data: Any, prefix: str, name: str) -> list[tuple[str, int, Any]]:
    """(dotted key, line, value) of every ``name`` key in a loaded YAML tree, in document order."""
    found = []
    if isinstance(data, dict):
        for key, value in data.items():
            dotted = f"{prefix}.{key}" if prefix else key
            if key == name:
                found.append((dotted, data.line_of(key) if isinstance(data, Located) else 0, value))
            found += _written(value, dotted, name)
    elif isinstance(data, list):
        for i, value in enumerate(data):
            found += _written(value, f"{prefix}[{i}]", name)
    return found


def expand(suite: Suite, models: tuple[str, ...]) -> list[Planned]:
    """Items in a stable order; the model appears in the id only when several are evaluated."""
    count = len(models) * item_count(suite.cases)
    if count > MAX_ITEMS:
        raise SuiteError(suite.path, None, "model", f"{len(models)} models x {item_count(suite.cases):,} items "
                                                    f"expand to {count:,} items, more than the {MAX_ITEMS:,} a "
                                                    "suite may plan; evaluate fewer models per run")
    labels = _unique_labels(models)
    return [
        Planned(f"{case.axis}/{case.name}[{labels[model] + '-' if len(models) > 1 else ''}{_seed_label(case, seed)}]",
                case, model, seed)
        for model in models for case in suite.cases for seed in _item_seeds(case)
    ]


COMBINES_SEEDS = "combines_seeds"   # a case param: one item combines the runs of all its seeds (fusion)


def _item_seeds(case: Case) -> tuple[int, ...]:
    return case.train.seeds[:1] if dict(case.params).get(COMBINES_SEEDS) else case.train.seeds


def run_seeds(planned: Planned) -> tuple[int, ...]:
    """The seeds of the runs one item uses: every seed of its case when it combines them (fusion), else its own."""
    return planned.case.train.seeds if dict(planned.case.params).get(COMBINES_SEEDS) else (planned.seed,)


def _seed_label(case: Case, seed: int) -> str:
    """``seed0``, or ``seeds0-1-2`` for an item that combines the runs of several seeds."""
    if dict(case.params).get(COMBINES_SEEDS):
        return "seeds" + "-".join(str(s) for s in case.train.seeds)
    return f"seed{seed}"


def _unique_labels(models: tuple[str, ...]) -> dict[str, str]:
    labels: dict[str, str] = {}
    for ref in models:
        label = model_label(ref)
        taken = set(labels.values())
        labels[ref] = label if label not in taken else f"{label}{len(labels)}"
    return labels
