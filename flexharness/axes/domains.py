"""The domains axis: one fine-tuning per (model, domain, seed), scored in its own domain and,
with ``transfer: true``, on every other domain's evaluation split without fine-tuning again.

A domain is a ``where`` filter over the section's default dataset, or a dataset of its own.
The section, the collection-time size check and the cross-domain scoring of an
item live here; the matrix arithmetic on the controller is in ``transfer.py``.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from flexharness.axes import transfer
from flexharness.axes.base import Axis, RunContext, Scored
from flexharness.errors import DataError, SuiteError
from flexharness.rules.aggregate import GateResult
from flexharness.schema import Reader
from flexharness.spec import Case, DatasetSpec, Filter, Suite
from flexharness.suite import SuiteContext, dataset_ref, read_filters, read_metrics, read_train

SECTION_KEYS = ("dataset", "metric", "train", "members", "transfer")
MEMBER_KEYS = ("where", "dataset")
TARGETS = transfer.TARGETS
NAME = re.compile(r"^[A-Za-z0-9_.-]+$")
SIZES_CACHE_VERSION = 1


@dataclass(frozen=True)
class Domain:
    name: str
    dataset: DatasetSpec
    where: tuple[Filter, ...]
    line: int


class DomainsAxis(Axis):
    key = "domains"
    gate_stats = ("transfer_gap",)
    document_keys = ("transfer", "transfer_summary")

    def parse(self, top: Reader, context: SuiteContext) -> tuple[Case, ...]:
        """One case per member of the ``domains:`` section."""
        if not top.raw("domains"):
            return ()
        reader = top.child("domains")
        reader.only(SECTION_KEYS)
        default = dataset_ref(reader, context.datasets) if reader.has("dataset") else None
        metrics = read_metrics(reader)
        train = read_train(reader.child("train"), context.defaults)
        with_transfer = reader.typed("transfer", bool, False)
        domains = _members(reader.child("members"), default, context.datasets)
        if with_transfer and len(domains) < 2:
            raise reader.error("transfer", "a transfer matrix needs at least two domains under 'members'")
        params = ((TARGETS, tuple(domains)),) if with_transfer else ()
        return tuple(Case(suite=context.name, axis=self.key, name=d.name, dataset=d.dataset, metrics=metrics,
                          train=train, where=d.where, line=d.line, params=params) for d in domains)

    def check_gates(self, gates: Reader, cases: tuple[Case, ...]) -> None:
        _check_gap_gate(gates, any(dict(c.params).get(TARGETS) for c in cases if c.axis == self.key))

    def check(self, suite: Suite, cache: Any = None) -> None:
        check_sizes(suite, cache)

    def cache_inputs(self, case: Case) -> tuple[DatasetSpec, ...]:
        return transfer_datasets(case)

    def run(self, case: Case, model: str, seed: int, context: RunContext) -> dict[str, Any]:
        from flexharness.engine import runner

        return runner.run_case(case, model, seed, context.device_option, context.trust_remote_code,
                               context.progress, lambda own, predict: transfer_record(case, own, predict))

    def case_fields(self, case: Case, records: list[dict[str, Any]]) -> dict[str, Any]:
        return {"domain": case.name}

    def sections(self, scored: Sequence[Scored]) -> dict[str, list[dict[str, Any]]]:
        return transfer.raw_sections(s for s in scored if dict(s.spec.params).get(TARGETS))

    def finish(self, doc: dict[str, Any], gate_specs: Mapping[str, Mapping[str, Any]]) -> list[GateResult]:
        found = transfer.from_document(doc)
        doc["transfer"], doc["transfer_summary"] = transfer.entries(found), transfer.summaries(found)
        return transfer.gap_gates(found, gate_specs)

    def terminal_lines(self, doc: Mapping[str, Any]) -> list[str]:
        return transfer.table_lines(doc)

    def markdown_lines(self, doc: Mapping[str, Any]) -> list[str]:
        return transfer.markdown_lines(doc)

    def plots(self, doc: Mapping[str, Any], directory: Path) -> list[Path]:
        return transfer.heatmaps(doc, directory)


def _members(reader: Reader, default: DatasetSpec | None, datasets: Mapping[str, DatasetSpec]) -> list[Domain]:
    if not reader.data:
        raise reader.error(None, "name the domains, e.g. members: {airline: {where: {text: {matches: 'flight'}}}}")
    domains = []
    for name in reader.data:
        if not NAME.match(name):
            raise reader.error(name, "a domain name may hold only letters, digits, '_', '.' and '-' "
                                     "(it becomes part of the test id)")
        member = reader.child(name)
        member.only(MEMBER_KEYS)
        if not member.has("where") and not member.has("dataset"):
            raise member.error(None, "a domain needs a 'where' filter over the default dataset, or its own 'dataset'")
        if member.has("dataset"):
            spec = dataset_ref(member, datasets)
        elif default is None:
            raise member.error(None, "no dataset for this domain: set 'domains.dataset' (the default source) "
                                     "or give the domain its own 'dataset'")
        else:
            spec = default
        if len(spec.eval_splits) > 1:
            raise member.error(None, f"dataset '{spec.name}' names several evaluation splits "
                                     f"({', '.join(spec.eval_splits)}); a domain is scored on one: give it a "
                                     "dataset with a single 'eval_split'")
        domains.append(Domain(name, spec, read_filters(member.child("where")), member.line))
    return domains


def _check_gap_gate(gate: Reader, has_transfer: bool) -> None:
    if not gate.has("transfer_gap"):
        return
    if not has_transfer:
        raise gate.error("transfer_gap", "a transfer gap needs 'transfer: true' under 'domains:'")
    bounds = gate.child("transfer_gap")
    if bounds.has("min"):
        raise bounds.error("min", "a transfer gap takes only 'max': a positive gap is a loss, so it has an upper bound")
    bounds.only(("max",))
    bounds.typed("max", float, required=True)


def targets(case: Case) -> tuple[Domain, ...]:
    """The domains a case is scored on besides its own (empty without transfer)."""
    return tuple(d for d in dict(case.params).get(TARGETS, ()) if d.name != case.name)


def transfer_datasets(case: Case) -> tuple[DatasetSpec, ...]:
    """The datasets a case reads besides its own: those of its transfer targets (for the result cache's key)."""
    return tuple(dict.fromkeys(d.dataset for d in targets(case) if d.dataset != case.dataset))


# --- collection: every domain must hold enough data --------------------------------------------------------


def check_sizes(suite: Suite, cache: Any = None) -> None:
    """Raise a :class:`SuiteError` for a domain with fewer training examples than labels or an empty eval split.

    The counts need the data, so they are read once and kept in ``cache`` (pytest's
    ``config.cache``) keyed by the files' sizes and modification times: later collections
    read no data at all. Hub sources are not checked here (collection must not need the
    network); their items report the same problem.
    """
    for case in suite.cases:
        if case.axis != "domains":
            continue
        key = _sizes_key(case)
        if key is None:
            continue
        sizes = _valid_sizes(cache.get(key, None), key) if cache is not None else None
        if sizes is None:
            sizes = _sizes(case)
            if cache is not None:
                cache.set(key, sizes)
        problem = sizes.get("problem") or _size_problem(case, sizes)
        if problem:
            raise SuiteError(suite.path, case.line, f"domains.members.{case.name}", f"domain '{case.name}': {problem}")


SIZE_FIELDS = ("train", "labels", "eval", "matched", "held_out")


class SizesCacheWarning(UserWarning):
    """A cached domain-size entry was of the wrong shape, and was counted again."""


def _valid_sizes(found: Any, key: str) -> dict[str, Any] | None:
    """A cached entry as :func:`_sizes` writes it, or None (with one warning when one was there but damaged)."""
    if found is None:
        return None
    if isinstance(found, dict) and (isinstance(found.get("problem"), str) or all(
            isinstance(found.get(k), int) and not isinstance(found[k], bool) and found[k] >= 0 for k in SIZE_FIELDS)):
        return found
    warnings.warn(SizesCacheWarning(f"domain-size cache: ignored the damaged entry {key}; counting again"),
                  stacklevel=2)
    return None


def _sizes(case: Case) -> dict[str, Any]:
    """Training and evaluation examples the case will see (after hold-out and subsampling)."""
    from flexharness.engine import data, kinds

    try:
        found = kinds.of(case).filtered_sizes(case.dataset, case.where, case.label_kind)
    except DataError as exc:
        return {"problem": str(exc)}
    held_out = data.hold_out_size(found.train, case.dataset.eval_fraction) if found.eval is None else 0
    train, evaluation = found.train - held_out, found.eval if found.eval is not None else held_out
    cap = case.train
    return {"train": min(train, cap.max_train_samples or train), "labels": found.labels,
            "eval": min(evaluation, cap.max_eval_samples or evaluation), "matched": found.train, "held_out": held_out}


def _size_problem(case: Case, sizes: dict[str, Any]) -> str | None:
    need = max(2, sizes["labels"])
    if sizes["train"] < need:
        held = f", {sizes['held_out']} held out for evaluation" if sizes["held_out"] else ""
        return (f"only {sizes['train']} training example{'s' if sizes['train'] != 1 else ''} after filtering "
                f"({sizes['matched']} rows of '{case.dataset.train_split}' kept{held}), fewer than the {need} "
                f"needed (dataset '{case.dataset.name}' has {sizes['labels']} label"
                f"{'s' if sizes['labels'] != 1 else ''}); loosen its 'where' or add data")
    if sizes["eval"] == 0:
        return (f"its evaluation split is empty after filtering (0 examples, {sizes['train']} for training); "
                "loosen its 'where' or name another 'eval_split'")
    return None


def _sizes_key(case: Case) -> str | None:
    """A cache key that changes with the suite's data settings and with the data files themselves."""
    from flexharness.resources import resolve_path

    spec = case.dataset
    if spec.hub:
        return None
    refs = [spec.disk] if spec.disk else [ref for _, ref in spec.files]
    try:
        files = [path for ref in refs for path in _files_under(resolve_path(ref, Path(spec.base_dir)))]
        stamps = [(str(path), path.stat().st_size, path.stat().st_mtime_ns) for path in files]
    except OSError:
        return None
    text = json.dumps([SIZES_CACHE_VERSION, repr(spec), repr(case.where), case.label_kind, case.train.max_train_samples,
                       case.train.max_eval_samples, stamps])
    return f"flexharness/domain-sizes/{hashlib.sha256(text.encode()).hexdigest()[:24]}"


def _files_under(root: Path) -> list[Path]:
    if not root.is_dir():
        return [root]
    return sorted(Path(d) / f for d, _, files in os.walk(root) for f in files)


# --- items: score the fine-tuned model on the other domains ------------------------------------------------


def transfer_record(case: Case, own: Any, predict: Callable[[Any], np.ndarray]) -> dict[str, Any]:
    """Fields a domains item adds to its record: its domain and, with transfer, the cross-domain scores.

    ``own`` is the case's prepared data (its label order is the model's); ``predict`` runs the
    fine-tuned model on another prepared dataset's evaluation split.
    """
    from flexharness.engine import kinds
    from flexharness.rules import metrics

    kind = kinds.of(case)
    scores, sizes, start = {}, {}, time.perf_counter()
    for target in targets(case):
        try:
            other = kind.prepare(target.dataset, target.where, case.label_kind, case.train.max_train_samples,
                                 case.train.max_eval_samples)
        except DataError as exc:
            raise DataError(f"transfer target domain '{target.name}': {exc}") from None
        labels = kind.example_labels(kind.relabelled(other, own.label_names, f"domain '{case.name}'",
                                                     f"domain '{target.name}'"))
        scores[target.name] = metrics.score(case.metrics, labels, predict(other))[0]
        sizes[target.name] = len(other.eval)
    extra: dict[str, Any] = {"domain": case.name}
    if targets(case):
        extra |= {"transfer": scores, "transfer_eval_examples": sizes,
                  "transfer_seconds": round(time.perf_counter() - start, 3)}
    return extra

