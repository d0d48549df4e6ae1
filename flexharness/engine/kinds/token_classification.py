"""Token classification (NER, POS, chunking): words and one tag per word, entity-level scores.

Rows come from list columns (JSONL, Parquet, ``save_to_disk``, the hub) or CoNLL files; tags are
strings or ids with ``label_names``. ``AutoModelForTokenClassification`` is trained with cross-entropy
on each word's first sub-word; the stored outputs are the predicted tag codes per word
(``rules.tagging``), so intervals, paired tests and slices resample sentences and recompute entity F1.
"""

from __future__ import annotations

import functools
from typing import Any, Iterable, Mapping

import numpy as np

from flexharness.engine import data
from flexharness.engine.kinds import conll, tagged
from flexharness.engine.kinds.base import TaskKind, local
from flexharness.errors import DataError
from flexharness.rules import metrics, tagging
from flexharness.suite.schema import Reader, did_you_mean
from flexharness.suite.spec import Case, DatasetSpec, Filter

DEFAULTS = {"tokens": "tokens", "tags": "tags", "tag_scheme": "IOB2", "conll_tag_column": -1}


class TokenClassification(TaskKind):
    key = "token_classification"
    no_probe = ("a linear probe on pooled sentence features has one label per text: it is not defined for "
                "tagging")
    model_class = "AutoModelForTokenClassification"
    dataset_keys = tuple(DEFAULTS)
    file_formats = {".conll": "conll"}
    metric_kinds = (metrics.TAGGING,)
    ensemble_method = "vote"

    def read_dataset(self, reader: Reader) -> tuple[tuple[str, Any], ...]:
        scheme = reader.typed("tag_scheme", str, DEFAULTS["tag_scheme"], check=lambda v: None if v in tagging.SCHEMES
                              else f"seqeval reads {', '.join(tagging.SCHEMES)}, not {v!r}"
                                   f"{did_you_mean(v, tagging.SCHEMES)}")
        column = reader.typed("conll_tag_column", int, DEFAULTS["conll_tag_column"],
                              check=lambda v: "column 0 is the token; the tag is another column" if v == 0 else None)
        if reader.has("conll_tag_column") and reader.raw("format") != "conll" and not all(
                str(ref).lower().endswith(".conll") for ref in (reader.raw("files") or {}).values()):
            raise reader.error("conll_tag_column", "only CoNLL files have tag columns: add 'format: conll'")
        if reader.has("text") or reader.has("label"):
            name = "text" if reader.has("text") else "label"
            raise reader.error(name, "a token_classification dataset names its columns with 'tokens' and 'tags'")
        return (("tokens", reader.typed("tokens", str, DEFAULTS["tokens"])),
                ("tags", reader.typed("tags", str, DEFAULTS["tags"])), ("tag_scheme", scheme),
                ("conll_tag_column", column))

    def check_case(self, case: Case) -> str | None:
        complaint = super().check_case(case)
        if complaint:
            return complaint
        if case.slices and case.slices.by == "agreement":
            return ("'slices: {by: agreement}' ranks examples that are right or wrong, and a tagged sentence is "
                    "partly right; slice it 'by: length' or by a column")
        return None

    def check_data(self, case: Case) -> None:
        if local(case.dataset):
            _prepare(case.dataset, case.where, case.train.max_train_samples, case.train.max_eval_samples)

    def load_source(self, spec: DatasetSpec) -> Any:
        return _source(spec, _columns(spec))

    def relabelled(self, other: data.Prepared, label_names: tuple[str, ...] | None, source: str, target: str
                   ) -> tagged.TaggedExamples:
        if other.label_names != label_names:   # counts only: tag names come from the data
            raise DataError(f"{target} has other tags than {source} ({len(other.label_names or ())} and "
                            f"{len(label_names or ())}); set 'label_names' on the datasets so that all share one "
                            "tag list")
        return other.eval

    def example_labels(self, examples: tagged.TaggedExamples) -> np.ndarray:
        return tagged.word_labels(examples)

    def example_lengths(self, encoded: tagged.Windows) -> np.ndarray:
        return np.bincount(encoded.sentence, weights=encoded.lengths, minlength=len(encoded.labels)).astype(np.int64)

    def ensemble(self, runs: list[Mapping[str, np.ndarray]], data: Any) -> np.ndarray:
        """A vote per word (stored outputs are tags, not probabilities); a tie goes to the lowest tag code."""
        stacked = np.stack([r["outputs"] for r in runs])
        codes = np.unique(stacked[stacked != tagging.PAD])
        if not codes.size:
            return stacked[0]
        votes = np.stack([(stacked == code).sum(axis=0) for code in codes])
        return np.where(stacked[0] == tagging.PAD, tagging.PAD, codes[votes.argmax(axis=0)])

    def prepare(self, spec: DatasetSpec, where: tuple[Filter, ...], label_kind: str,
                max_train: int | None, max_eval: int | None) -> data.Prepared:
        return _prepare(spec, where, max_train, max_eval)

    def encode(self, examples: tagged.TaggedExamples, tokenizer: Any, max_length: int) -> tagged.Windows:
        return tagged.encode(examples, tokenizer, max_length)

    def restored(self, arrays: dict[str, np.ndarray], examples: tagged.TaggedExamples, key: str | None
                 ) -> tagged.Windows:
        return tagged.restored(arrays, examples, key)

    def tokens_problem(self, arrays: Any, examples: tagged.TaggedExamples, vocab_size: int, token_types: bool
                       ) -> str | None:
        return tagged.problem(arrays, examples, vocab_size, token_types)

    def num_labels(self, prepared: data.Prepared) -> int:
        return len(prepared.train.classes)

    def hold_out_texts(self, examples: tagged.TaggedExamples) -> Any:
        return SENTENCES.texts(examples)

    def host_batch(self, encoded: tagged.Windows, indices: np.ndarray, pad_id: int, pin: bool,
                   with_labels: bool) -> dict[str, Any]:
        from flexharness.engine import train

        batch = train.host_batch(encoded, indices, pad_id, pin)
        if with_labels:
            import torch

            labels = np.full(tuple(batch["input_ids"].shape), tagged.IGNORED, dtype=np.int64)
            for row, i in enumerate(indices):
                labels[row, :encoded.lengths[i]] = encoded.token_labels[i]
            batch["labels"] = torch.from_numpy(labels)
            batch["labels"] = batch["labels"].pin_memory() if pin else batch["labels"]
        return batch

    def loss(self, logits: Any, labels: Any) -> Any:
        import torch.nn.functional as F

        return F.cross_entropy(logits.float().flatten(0, 1), labels.flatten(), ignore_index=tagged.IGNORED)

    def row_outputs(self, logits: Any, batch: dict[str, Any]) -> list[np.ndarray]:
        return list(logits.argmax(-1).cpu().numpy())

    def gather(self, encoded: tagged.Windows, rows: list[np.ndarray]) -> np.ndarray:
        return tagged.gather(encoded, rows)

    def majority_score(self, prepared: data.Prepared, metric_names: tuple[str, ...]) -> float:
        """Every word tagged with the commonest training tag (``O`` in NER: entity F1 0)."""
        codes = np.concatenate(prepared.train.tags)
        labels = tagged.word_labels(prepared.eval)
        common = np.bincount(codes).argmax()
        return metrics.score(metric_names, labels, np.where(labels == tagging.PAD, tagging.PAD, common))[0]


def _source(spec: DatasetSpec, columns: dict[str, Any]) -> Any:
    if spec.format == "conll" or (spec.files and all(ref.lower().endswith(".conll") for _, ref in spec.files)):
        return _conll(spec, columns["conll_tag_column"])
    return data.load_source(spec)


_CONLL: dict[tuple[DatasetSpec, int], Any] = {}


def _conll(spec: DatasetSpec, column: int) -> Any:
    """CoNLL files read once per process."""
    if (spec, column) not in _CONLL:
        _CONLL[(spec, column)] = conll.load(spec, column)
    return _CONLL[(spec, column)]


def _columns(spec: DatasetSpec) -> dict[str, Any]:
    columns = {**DEFAULTS, **dict(spec.columns)}
    if spec.format == "conll" or (spec.files and all(ref.lower().endswith(".conll") for _, ref in spec.files)):
        columns |= {"tokens": conll.TOKENS, "tags": conll.TAGS}
    return columns


def _words(sentences: tagged.TaggedExamples) -> Iterable[tuple[str]]:
    """A sentence's words without its tags: one sentence tagged two ways stays on one side of a hold-out."""
    return ((words,) for words in sentences.texts[0])


SENTENCES = data.RowKind("sentences", texts=_words)


@functools.lru_cache(maxsize=16)
def _prepare(spec: DatasetSpec, where: tuple[Filter, ...], max_train: int | None, max_eval: int | None
             ) -> data.Prepared:
    columns = _columns(spec)
    source = _source(spec, columns)
    names = _tag_names(spec, data.train_split(spec, source), columns)
    codes, complaint = tagging.parse_tags(names, columns["tag_scheme"])
    if complaint:
        raise DataError(f"dataset '{spec.name}': {complaint}", *spec.locate("tag_scheme"))
    classes = _classes(codes, columns["tag_scheme"])
    read = {split: _sentences(spec, source[split], where, split, columns, names, codes, classes)
            for split in (spec.train_split, *data.eval_split_names(spec, source))}
    train = read.pop(spec.train_split)
    return data.split_rows(spec, where, train, list(read.items()), names, max_train, max_eval, SENTENCES)


def _tag_names(spec: DatasetSpec, split: Any, columns: dict[str, Any]) -> tuple[str, ...]:
    """Tag names in id order: ``label_names``, the column's class names, or the training tags sorted."""
    _require(spec, split, columns, (), spec.train_split)
    feature = split.features[columns["tags"]]
    class_names = getattr(getattr(feature, "feature", None), "names", None)
    if spec.label_names:
        return spec.label_names
    if class_names:
        return tuple(class_names)
    found = {tag for row in split[columns["tags"]] if isinstance(row, list) for tag in row}
    if any(not isinstance(tag, str) for tag in found):
        raise DataError(f"column '{columns['tags']}' holds tag ids, not tag names; list the names in id order "
                        "with 'label_names'", *spec.locate("tags"))
    return tuple(sorted(found))


def _classes(codes: np.ndarray, scheme: str) -> np.ndarray:
    """The codes a model may predict: ``O`` and each type with every prefix of the scheme (IOB1 is read as IOB2)."""
    types = int((codes.max() - 1) // 4 + 1) if codes.size and codes.max() > 0 else 0
    prefixes = (0, 1, 2, 3) if scheme == "IOBES" else (0, 1)
    return np.asarray(sorted({0, *(1 + 4 * t + p for t in range(types) for p in prefixes)}), dtype=np.int64)


def _require(spec: DatasetSpec, split: Any, columns: dict[str, Any], where: tuple[Filter, ...], name: str) -> None:
    present = set(split.column_names)
    needs = [(columns["tokens"], spec.locate("tokens")), (columns["tags"], spec.locate("tags"))]
    for column, location in needs + [(f.column, (spec.origin, f.line, f.key)) for f in where]:
        if column not in present:
            raise DataError(f"split '{name}' has no column '{column}' ({len(present)} columns, none of that name"
                            f"{data._case_hint(column, present)}); name a column the data has", *location)


def _sentences(spec: DatasetSpec, split: Any, where: tuple[Filter, ...], name: str, columns: dict[str, Any],
               names: tuple[str, ...], codes: np.ndarray, classes: np.ndarray) -> tagged.TaggedExamples:
    """The split's sentences that ``where`` keeps, tags as codes; empty sentences are left out."""
    _require(spec, split, columns, where, name)
    table = split.select_columns(sorted({columns["tokens"], columns["tags"], *(f.column for f in where)})).to_dict()
    words_column, tags_column = table[columns["tokens"]], table[columns["tags"]]
    index = {tag: i for i, tag in enumerate(names)}
    keep, words, tags, bad, unknown = [], [], [], 0, 0
    for i, (row_words, row_tags) in enumerate(zip(words_column, tags_column)):
        if not all(data._passes(f, table[f.column][i]) for f in where):
            continue
        if not isinstance(row_words, list) or not isinstance(row_tags, list) or len(row_words) != len(row_tags) \
                or not all(isinstance(w, str) for w in row_words):
            bad += 1
            continue
        ids = [t if isinstance(t, int) and not isinstance(t, bool) and 0 <= t < len(names) else index.get(t)
               for t in row_tags]
        if any(t is None for t in ids):
            unknown += 1
            continue
        if row_words:
            keep.append(i)
            words.append(tuple(row_words))
            tags.append(_coded(codes[np.asarray(ids, dtype=np.int64)], columns["tag_scheme"]))
    _complain(spec, name, columns, bad, unknown, len(names))
    return tagged.tagged(words, tags, np.asarray(keep, dtype=np.int64), classes)


def _coded(sentence_codes: np.ndarray, scheme: str) -> np.ndarray:
    return tagging.iob1_to_iob2(sentence_codes) if scheme == "IOB1" else sentence_codes


def _complain(spec: DatasetSpec, split: str, columns: dict[str, Any], bad: int, unknown: int, n_tags: int) -> None:
    """Counts only: tokens and tags come from the data (docs/security.md)."""
    if bad:
        raise DataError(f"split '{split}': {bad} rows do not hold a list of words in '{columns['tokens']}' and a list "
                        f"of as many tags in '{columns['tags']}'; every row is one sentence", *spec.locate("tags"))
    if unknown:
        raise DataError(f"split '{split}': {unknown} sentences hold tags that are not among the {n_tags} tags of "
                        "training; list every tag in 'label_names'", *spec.locate("tags"))
