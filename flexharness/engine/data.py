"""Data sources → filtered, label-mapped, deterministically split examples → token ids.

Sources are read with the ``datasets`` library (local files, ``save_to_disk``
folders, the hub). Everything after loading is deterministic: the same suite
gives the same train and eval rows on every machine and every seed, so seeds
vary only the initialisation and the batch order.
"""

from __future__ import annotations

import functools
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np

from flexharness.engine import hub
from flexharness.engine.labels import label_map
from flexharness.errors import DataError, causes, first_line, short_repr
from flexharness.rules.metrics import CLASSIFICATION, REGRESSION
from flexharness.suite.resources import resolve_path
from flexharness.suite.spec import FILE_FORMATS, DatasetSpec, Filter
from flexharness.suite.reader import local_hub

DATA_SEED = 0  # fixed: subsampling and hold-out never depend on the training seed
EVAL_SPLIT_NAMES = ("eval", "validation", "dev", "test")
MAX_EVAL_OVERLAP = 0.2   # share of evaluation rows that may be exact copies of training rows


@dataclass(frozen=True, eq=False)
class Examples:
    texts: tuple[tuple[str, ...], ...]   # one tuple per text column
    labels: np.ndarray                   # int64 ids, or float32 for regression
    rows: np.ndarray | None = None       # each example's row in its source split (to read other columns)

    def __len__(self) -> int:
        return len(self.labels)

    def take(self, indices: np.ndarray) -> "Examples":
        return Examples(tuple(tuple(col[i] for i in indices) for col in self.texts), self.labels[indices],
                        None if self.rows is None else self.rows[indices])


@dataclass(frozen=True, eq=False)
class Prepared:
    train: Examples
    evals: tuple[tuple[str, Examples], ...]   # (split name, examples); the first is the case's own
    label_names: tuple[str, ...] | None       # None for regression
    held_out_copies: int | None = None        # rows of a hold-out this module made that repeat another row's text

    @property
    def eval(self) -> Examples:
        return self.evals[0][1]

    @property
    def eval_split(self) -> str:
        return self.evals[0][0]

    @property
    def num_labels(self) -> int:
        return len(self.label_names) if self.label_names else 1


@functools.lru_cache(maxsize=8)
def load_source(spec: DatasetSpec) -> Any:
    """The raw ``datasets.DatasetDict`` of a source, read once per process."""
    import datasets

    datasets.disable_progress_bars()  # they would interleave with pytest's own output
    try:
        if spec.disk:
            loaded = datasets.load_from_disk(str(resolve_path(spec.disk, Path(spec.base_dir))))
            return loaded if isinstance(loaded, datasets.DatasetDict) else datasets.DatasetDict({"train": loaded})
        if spec.hub:
            source = dict(spec.hub)
            local = _mirrored(spec)
            if local is not None:
                return datasets.load_from_disk(str(local))
            return datasets.load_dataset(_hub_path(spec), source.get("name"), revision=source.get("revision"))
        return _load_files(spec)
    except DataError:
        raise
    except Exception as exc:  # datasets raises many types; the user needs one clear line
        key = "disk" if spec.disk else "hub" if spec.hub else "files"
        message = _source_hint(spec, exc)
        if spec.hub and hub.unreachable(exc):
            hub.go_offline()
        raise DataError(message, *spec.locate(key)) from None


def mirror_path(spec: DatasetSpec) -> Path | None:
    """Where ``--flex-data-dir`` would hold a hub dataset: DIR/PATH/NAME (NAME is 'default' without one)."""
    if not spec.hub or not spec.hub_mirror:
        return None
    source = dict(spec.hub)
    return Path(spec.hub_mirror).expanduser() / source["path"] / (source.get("name") or "default")


def _mirrored(spec: DatasetSpec) -> Path | None:
    path = mirror_path(spec)
    return path if path is not None and path.is_dir() else None


def _hub_path(spec: DatasetSpec) -> str:
    """A folder next to the suite file, or a hub id that no folder of the working directory can shadow."""
    path = dict(spec.hub)["path"]
    folder = local_hub(spec)
    if folder is None and Path(path).exists():
        raise DataError(f"'{path}' is no folder next to the suite file, so it names a hub dataset, but the working "
                        "directory holds a folder of that name, which datasets would read instead; run from another "
                        "folder, or write the path relative to the suite file", *spec.locate("hub"))
    return folder or path


def _load_files(spec: DatasetSpec) -> Any:
    import datasets

    files = {split: str(resolve_path(ref, Path(spec.base_dir))) for split, ref in spec.files}
    suffix = Path(next(iter(files.values()))).suffix.lower()
    fmt = spec.format or FILE_FORMATS[suffix]
    kwargs: dict[str, Any] = {}
    if spec.encoding:
        kwargs["encoding"] = spec.encoding
    if suffix == ".tsv":
        kwargs["delimiter"] = "\t"
    return datasets.load_dataset(fmt, data_files=files, **kwargs)


def _source_hint(spec: DatasetSpec, exc: Exception) -> str:
    *_, cause = causes(exc)  # datasets wraps the real reason (say a UnicodeDecodeError) in a generic error
    if spec.hub and isinstance(exc, ConnectionError):
        cause = exc  # "Couldn't reach ... on the Hub" says more than the cache miss underneath it
    reason = first_line(cause, type(cause).__name__).rstrip(".")
    if spec.hub:
        source = dict(spec.hub)
        return (f"cannot load hub dataset '{source['path']}'"
                f"{' (' + source['name'] + ')' if source.get('name') else ''}: {reason}{hub.note()}. "
                "Offline: fill the datasets "
                "cache once where the hub is reachable and set HF_DATASETS_OFFLINE=1, or save it with "
                "save_to_disk() under --flex-data-dir DIR as DIR/PATH/NAME, or point the dataset at local "
                "files with 'files:'")
    if isinstance(cause, UnicodeDecodeError) or "invalid utf8" in reason.lower().replace("-", ""):
        return (f"cannot decode the data as {spec.encoding or 'utf-8'} ({reason}); "
                "set 'encoding' to the files' encoding, e.g. 'encoding: latin-1'")
    return (f"cannot read the data: {type(cause).__name__}: {short_repr(unquoted(reason), 160)[1:-1]}; "
            f"check that the files are valid {spec.format or 'CSV, JSON or Parquet'}")


def unquoted(reason: str) -> str:
    """A reader library's reason with what it quotes from the file (a cell, a line: data) left out."""
    return re.sub(r"'[^']*'|\"[^\"]*\"|`[^`]*`", "'…'", reason)


@functools.lru_cache(maxsize=32)
def prepare(spec: DatasetSpec, where: tuple[Filter, ...], kind: str,
            max_train: int | None, max_eval: int | None) -> Prepared:
    """Rows for one case: filtered, labels mapped, eval split chosen or held out, subsampled."""
    source = load_source(spec)
    split = train_split(spec, source)
    train_rows = _kept_rows(spec, spec.train_split, where)
    eval_names = eval_split_names(spec, source)
    label_names, encode = label_map(spec, split, train_rows[1], kind)
    train = Examples(train_rows[0], encode(train_rows[1], spec.train_split), train_rows[2])
    evals = []
    for name in eval_names:
        texts, raw, kept = _kept_rows(spec, name, where)
        evals.append((name, Examples(texts, encode(raw, name), kept)))
    return split_rows(spec, where, train, evals, label_names, max_train, max_eval,
                      RowKind(label_kind=kind, per_label=True))


def train_split(spec: DatasetSpec, source: Any) -> Any:
    """The source's training split; a located error that lists the splits it has when there is none."""
    if spec.train_split not in source:
        raise DataError(f"no split '{spec.train_split}' (has: {', '.join(source)}); set 'train_split' to one of them",
                        *spec.locate("train_split"))
    return source[spec.train_split]


def eval_split_names(spec: DatasetSpec, source: Any) -> tuple[str, ...]:
    """The named evaluation splits, else the first conventional one; empty means 'hold out a fraction of train'."""
    missing = [split for split in spec.eval_splits if split not in source]
    if missing:
        raise DataError(f"no split '{missing[0]}' (has: {', '.join(source)}); set 'eval_split' to existing splits",
                        *spec.locate("eval_split"))
    return spec.eval_splits or tuple(s for s in EVAL_SPLIT_NAMES if s in source and s != spec.train_split)[:1]


@dataclass(frozen=True)
class FilteredSizes:
    """Row counts after ``where``, before hold-out and subsampling; ``eval`` (the smallest evaluation
    split) is None when evaluation is held out of train."""

    train: int
    eval: int | None
    labels: int


@functools.lru_cache(maxsize=32)
def filtered_sizes(spec: DatasetSpec, where: tuple[Filter, ...], kind: str) -> FilteredSizes:
    """How many rows a filter keeps, and how many labels the whole dataset has (1 for regression)."""
    source = load_source(spec)
    split = train_split(spec, source)
    kept = _kept_rows(spec, spec.train_split, where)[1]
    eval_sizes = [len(_kept_rows(spec, name, where)[1]) for name in eval_split_names(spec, source)]
    eval_rows = min(eval_sizes) if eval_sizes else None
    names, _ = label_map(spec, split, _kept_rows(spec, spec.train_split, ())[1], kind)
    return FilteredSizes(len(kept), eval_rows, len(names) if names else 1)


def hold_out_size(n: int, fraction: float) -> int:
    """Rows the hold-out puts into evaluation: at least one when there is any."""
    return min(n, max(1, round(n * fraction)))


@functools.lru_cache(maxsize=64)
def _kept_rows(spec: DatasetSpec, split_name: str, where: tuple[Filter, ...]) -> tuple[tuple, tuple, np.ndarray]:
    """:func:`_rows` of a source's split, once per process: collection's size checks and every case's
    preparation filter the same rows (a regular expression over every row of the split), and must agree."""
    texts, raw, kept = _rows(spec, load_source(spec)[split_name], where, split_name)
    kept.setflags(write=False)
    return texts, tuple(raw), kept


def _rows(spec: DatasetSpec, split: Any, where: tuple[Filter, ...], split_name: str
          ) -> tuple[tuple, list, np.ndarray]:
    """(texts per column, raw labels, the kept rows' positions in ``split``) of the rows ``where`` keeps."""
    columns = set(split.column_names)
    needs = [(c, spec.locate("text")) for c in spec.text] + [(spec.label, spec.locate("label"))]
    for needed, location in needs + [(f.column, (spec.origin, f.line, f.key)) for f in where]:
        if needed not in columns:
            raise DataError(f"split '{split_name}' has no column '{needed}' ({len(columns)} columns, none of "
                            f"that name{_case_hint(needed, columns)}); name a column the data has", *location)
    table = split.select_columns(sorted({*spec.text, spec.label, *(f.column for f in where)})).to_dict()
    keep = [i for i in range(len(table[spec.label])) if _kept(table, i, spec, where)]
    texts = tuple(tuple(str(table[c][i]) for i in keep) for c in spec.text)
    return texts, [table[spec.label][i] for i in keep], np.asarray(keep, dtype=np.int64)


def _case_hint(needed: str, columns: set[str]) -> str:
    """A hint that names no column the suite did not write: only that one differs in case or spaces.

    Column names come from the file (for a CSV, its first line), and messages never show a file's
    contents (docs/security.md).
    """
    return "; one differs from it only in case or spaces" if any(
        c.strip().lower() == needed.strip().lower() for c in columns) else ""


def _kept(table: dict, i: int, spec: DatasetSpec, where: tuple[Filter, ...]) -> bool:
    if _missing(table[spec.label][i]) or any(_missing(table[c][i]) for c in spec.text):
        return False
    return all(_passes(f, table[f.column][i]) for f in where)


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _passes(rule: Filter, value: Any) -> bool:
    if rule.matches is not None:
        return value is not None and _compiled(rule.matches).search(str(value)) is not None
    return value in rule.values or str(value) in {str(v) for v in rule.values}


@functools.lru_cache(maxsize=64)
def _compiled(pattern: str) -> re.Pattern:
    return re.compile(pattern)


def stratified_indices(labels: np.ndarray, n: int, rng: np.random.Generator, stratify: bool) -> np.ndarray:
    """``n`` indices chosen at random, keeping class proportions (largest-remainder rounding)."""
    if n >= len(labels):
        return np.arange(len(labels))
    if not stratify:
        return np.sort(rng.permutation(len(labels))[:n])
    classes, counts = np.unique(labels, return_counts=True)
    quotas = counts * n / len(labels)
    take = np.floor(quotas).astype(int)
    for c in np.argsort(-(quotas - take), kind="stable")[: n - take.sum()]:
        take[c] += 1
    chosen = [rng.permutation(np.flatnonzero(labels == cls))[:k] for cls, k in zip(classes, take)]
    return np.sort(np.concatenate(chosen))


def _row_texts(examples: Examples) -> Iterable[tuple[str, ...]]:
    return zip(*examples.texts)


def _labels(examples: Examples) -> np.ndarray:
    return examples.labels


@dataclass(frozen=True)
class RowKind:
    """What :func:`split_rows`, the end of preparation every task kind shares, needs to know of a kind's rows.

    ``noun`` names a row in messages; ``strata`` gives one label per row whose shares draws keep (the kind's
    ``TaskKind.train_labels``), drawn plainly for ``label_kind`` regression (values have no classes); ``texts``
    gives each row's text, which a hold-out keeps on one side with every row of the same text (a QA context);
    ``per_label``: a classifier, whose training needs a row per label and two labels."""

    noun: str = "examples"
    strata: Callable[[Examples], np.ndarray] = _labels
    label_kind: str = CLASSIFICATION
    texts: Callable[[Examples], Iterable[tuple[str, ...]]] = _row_texts
    per_label: bool = False


def split_rows(spec: DatasetSpec, where: tuple[Filter, ...], train: Examples, evals: list[tuple[str, Examples]],
               label_names: tuple[str, ...] | None, max_train: int | None, max_eval: int | None,
               rows: RowKind = RowKind()) -> Prepared:
    """The end of every kind's preparation: evaluation splits the user named (refused when they copy training
    rows) or one held out of train here (rows of one text on one side, so it holds no copy), then each
    subsampled and its size checked. One path, so every kind holds out, samples and checks alike."""
    copies = None
    if evals:
        _check_overlap(spec, train, evals)
    else:
        train, held_out, copies = hold_out(train, spec.eval_fraction, rows.label_kind, rows.strata(train),
                                           rows.texts(train))
        evals = [(f"held-out {spec.eval_fraction:g} of {spec.train_split}", held_out)]
    train = _subsample(train, max_train, rows)
    evals = [(name, _subsample(examples, max_eval, rows)) for name, examples in evals]
    for name, examples in evals:
        _check_sizes(spec, where, train, examples, name, max_train, rows, label_names)
    return Prepared(train, tuple(evals), label_names, copies)


def _subsample(examples: Examples, n: int | None, rows: RowKind) -> Examples:
    if n is None or n >= len(examples):
        return examples
    rng = np.random.default_rng(DATA_SEED)
    return examples.take(stratified_indices(rows.strata(examples), n, rng, stratify=rows.label_kind != REGRESSION))


def text_key(texts: tuple[str, ...]) -> tuple[str, ...]:
    """A row's texts as the overlap check and the hold-out compare them: case and runs of spaces ignored."""
    return tuple(" ".join(text.split()).casefold() for text in texts)


def hold_out(examples: Examples, fraction: float, kind: str, labels: np.ndarray | None = None,
             texts: Iterable[tuple[str, ...]] | None = None) -> tuple[Examples, Examples, int]:
    """(rest, held out, copies): a stratified ``fraction`` held out, every group of rows with one text (after
    :func:`text_key`) on one side, so retweets cannot leak; ``copies`` counts rows repeating another's text.
    ``labels``: what to stratify on when it is not ``examples.labels`` (a task kind's training labels);
    ``texts``: each row's text when it is not the row's texts (a question's context).

    The plain stratified draw over all rows, then each row follows its group's first row: without repeated
    texts this is exactly the plain draw, and with them only the copies move."""
    groups: dict[tuple[str, ...], int] = {}
    leaders = []
    member = np.empty(len(examples), dtype=np.int64)
    for index, row in enumerate(zip(*examples.texts) if texts is None else texts):
        member[index] = groups.setdefault(text_key(row), len(groups))
        if member[index] == len(leaders):
            leaders.append(index)
    rng = np.random.default_rng(DATA_SEED)
    drawn = np.zeros(len(examples), dtype=bool)
    strata = examples.labels if labels is None else labels
    drawn[stratified_indices(strata, hold_out_size(len(examples), fraction), rng, stratify=kind != REGRESSION)] = True
    held = drawn[np.asarray(leaders, dtype=np.int64)][member]
    return examples.take(np.flatnonzero(~held)), examples.take(np.flatnonzero(held)), len(examples) - len(leaders)


def _check_overlap(spec: DatasetSpec, train: Examples, evals: list[tuple[str, Examples]]) -> None:
    """Refuse an evaluation split that repeats the training rows: its score would measure memory, not transfer.

    Exact copies (every text column and the label) are counted against the whole training split
    before subsampling; natural duplicates (retweets, boilerplate) stay well below the limit.
    """
    seen = {(text_key(row), label) for row, label in zip(zip(*train.texts), train.labels.tolist())}
    for name, examples in evals:
        copies = sum((text_key(row), label) in seen for row, label in zip(zip(*examples.texts),
                                                                          examples.labels.tolist()))
        if len(examples) and copies / len(examples) > MAX_EVAL_OVERLAP:
            raise DataError(f"dataset '{spec.name}': {copies} of {len(examples)} rows of the evaluation split "
                            f"'{name}' ({copies / len(examples):.0%}) are exact copies of training rows, more than "
                            f"the {MAX_EVAL_OVERLAP:.0%} allowed; a score on training data says nothing about "
                            "flexibility: evaluate on rows the model is not trained on", *spec.locate())


def _check_sizes(spec: DatasetSpec, where: tuple[Filter, ...], train: Examples, evaluation: Examples,
                 eval_name: str, max_train: int | None, rows: RowKind, names: tuple[str, ...] | None) -> None:
    """A case needs two training rows (a classifier: as many as labels, and two labels) and one eval row."""
    classes = names if rows.per_label else None
    need = max(2, len(classes) if classes else 2)
    per_label = " (one per label)" if rows.per_label else ""
    # The fix is usually in the case's 'where' when it has one, else in the dataset itself.
    location = (spec.origin, where[0].line, where[0].key) if where else spec.locate()
    if len(train) < need and max_train is not None and len(train) == max_train:
        raise DataError(f"max_train_samples {max_train} (in the suite, or --flex-max-train-samples) keeps fewer "
                        f"training {rows.noun} than the {need} a case needs{per_label}; raise it", *location)
    if len(train) < need:
        raise DataError(f"only {len(train)} training {rows.noun} after filtering (need at least {need}); "
                        "loosen 'where' or add data", *location)
    if len(evaluation) == 0:
        raise DataError(f"the evaluation split '{eval_name}' is empty after filtering; loosen 'where', "
                        "raise 'eval_fraction' or name an 'eval_split'", *location)
    if classes and len(np.unique(train.labels)) < 2:
        raise DataError("training holds a single label; a classifier needs at least two: loosen 'where'", *location)


@dataclass(frozen=True, eq=False)
class Encoded:
    """Token ids per example (unpadded) and their lengths; padding happens per batch."""

    input_ids: tuple[np.ndarray, ...]
    token_type_ids: tuple[np.ndarray, ...] | None
    lengths: np.ndarray
    labels: np.ndarray
    key: str | None = None   # the array-cache key of these ids (``diskcache``): what decides them, hashed

    def arrays(self) -> dict[str, np.ndarray]:
        """Every example's ids end to end with their offsets: a few flat arrays, however many examples."""
        offsets = np.concatenate([[0], np.cumsum(self.lengths)]).astype(np.int64)
        arrays = {"input_ids": _flat(self.input_ids), "offsets": offsets}
        if self.token_type_ids is not None:
            arrays["token_type_ids"] = _flat(self.token_type_ids)
        return arrays

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray], labels: np.ndarray, key: str | None) -> "Encoded":
        """The inverse of :meth:`arrays`: each example's ids are a view into one array."""
        offsets = arrays["offsets"]
        cuts = offsets[1:-1]
        ids = tuple(np.split(arrays["input_ids"].astype(np.int64), cuts))
        types = arrays.get("token_type_ids")
        types = tuple(np.split(types.astype(np.int64), cuts)) if types is not None else None
        return cls(ids, types, np.diff(offsets), labels, key)


def _flat(rows: tuple[np.ndarray, ...]) -> np.ndarray:
    return np.concatenate(rows).astype(np.int32) if rows else np.zeros(0, dtype=np.int32)


def tokens_problem(arrays: Any, rows: int, vocab_size: int, token_types: bool) -> str | None:
    """What keeps stored token arrays from being the tokens of ``rows`` examples, or None."""
    names = {"input_ids", "offsets", *(("token_type_ids",) if token_types else ())}
    if set(arrays) != names:
        return f"holds {', '.join(sorted(arrays)) or 'nothing'} where {', '.join(sorted(names))} was expected"
    ids, offsets = arrays["input_ids"], arrays["offsets"]
    if any(a.ndim != 1 or a.dtype.kind not in "iu" for a in arrays.values()):
        return "not flat integer arrays"
    if len(offsets) != rows + 1:
        return f"offsets for {len(offsets) - 1} examples where there are {rows}"
    if offsets[0] != 0 or offsets[-1] != len(ids) or np.any(np.diff(offsets) < 0):
        return "offsets out of order"
    if len(ids) and (ids.min() < 0 or ids.max() >= vocab_size):
        return f"token ids outside the vocabulary of {vocab_size}"
    if token_types and len(arrays["token_type_ids"]) != len(ids):
        return "token type ids not one per token"
    return None


def encode(examples: Examples, tokenizer: Any, max_length: int) -> Encoded:
    """Tokenize once, without padding: dynamic padding per batch wastes no compute on pad tokens."""
    columns = [list(col) for col in examples.texts]
    out = tokenizer(*columns, truncation=True, max_length=max_length, padding=False,
                    return_attention_mask=False, return_token_type_ids=None)
    ids = tuple(np.asarray(x, dtype=np.int64) for x in out["input_ids"])
    types = out.get("token_type_ids")
    types = tuple(np.asarray(x, dtype=np.int64) for x in types) if types is not None else None
    return Encoded(ids, types, np.fromiter((len(x) for x in ids), dtype=np.int64, count=len(ids)), examples.labels)


def labels_as(other: Prepared, names: tuple[str, ...] | None, source: str, target: str) -> np.ndarray:
    """``other``'s evaluation labels as ids of a model trained with the label order ``names`` (a model of
    ``source``, e.g. "domain 'a'", scored on ``target``); a label that model never saw is a :class:`DataError`."""
    if names is None or other.label_names == names:
        return other.eval.labels
    index = {name: i for i, name in enumerate(names)}
    unknown = {other.label_names[i] for i in np.unique(other.eval.labels)} - set(index)
    if unknown:  # counts only: label values come from the data (docs/security.md)
        raise DataError(f"{target} has {len(unknown)} label value{'s' if len(unknown) > 1 else ''} that {source} "
                        f"never shows in training (it has {len(names)} labels); set 'label_names' on the datasets "
                        "so that all domains share one label list")
    mapping = np.asarray([index.get(n, -1) for n in other.label_names], dtype=np.int64)
    return mapping[other.eval.labels]
