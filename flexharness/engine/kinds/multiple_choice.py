"""Multiple choice (SWAG, HellaSwag, COPA, ARC-style): a context, an optional stem, N choices, one right.

Each choice is encoded as the pair (context, stem + choice), as transformers' ``run_swag`` does; an
``AutoModelForMultipleChoice`` scores the N pairs of an item together and is trained with cross-entropy
over them. The stored outputs are the choice probabilities (items × N), so accuracy, intervals, paired
tests and output ensembles work as for a classifier.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Any, Iterable

import numpy as np

from flexharness.engine import data
from flexharness.engine.kinds.base import TaskKind, local
from flexharness.errors import DataError
from flexharness.rules import curves, metrics
from flexharness.suite.schema import Reader
from flexharness.suite.spec import Case, DatasetSpec, Filter

SCORES = ("accuracy",)


@dataclass(frozen=True, eq=False)
class Items(data.Examples):
    """Items: ``texts`` holds contexts, stems and the choices joined (digests, slices), ``labels`` the right
    choice's index, ``choices`` each item's choices."""

    choices: tuple[tuple[str, ...], ...] = ()

    def take(self, indices: np.ndarray) -> "Items":
        base = super().take(indices)
        return Items(base.texts, base.labels, base.rows, tuple(self.choices[i] for i in indices))


@dataclass(frozen=True, eq=False)
class Encoded(data.Encoded):
    """Token ids of every (item, choice) pair, item after item; ``lengths`` are tokens per item (all choices),
    ``pair_lengths`` per pair."""

    pair_lengths: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    choices: int = 2

    def arrays(self) -> dict[str, np.ndarray]:
        pairs = data.Encoded(self.input_ids, self.token_type_ids, self.pair_lengths, self.labels)
        return pairs.arrays()


class MultipleChoice(TaskKind):
    key = "multiple_choice"
    no_probe = ("a linear probe reads one text's pooled features: it is not defined for multiple choice, whose "
                "items are several texts")
    model_class = "AutoModelForMultipleChoice"
    dataset_keys = ("context", "question", "choices")
    metric_kinds = (metrics.CLASSIFICATION,)

    def read_dataset(self, reader: Reader) -> tuple[tuple[str, Any], ...]:
        if reader.has("text"):
            raise reader.error("text", "a multiple_choice dataset names its columns with 'context', 'question' "
                                       "and 'choices'")
        choices = reader.str_or_list("choices", required=True)
        if len(choices) == 1 and isinstance(reader.raw("choices"), list):
            raise reader.error("choices", "name one list column, or two or more columns of one choice each")
        if len(set(choices)) != len(choices):
            raise reader.error("choices", "each choice column may be named once")
        question = reader.typed("question", str)
        return (("context", reader.typed("context", str, required=True)),
                *((("question", question),) if question else ()),
                ("choices", choices if isinstance(reader.raw("choices"), list) else choices[0]))

    def check_case(self, case: Case) -> str | None:
        wrong = [m for m in case.metrics if m not in SCORES]
        if wrong:
            return (f"metric '{wrong[0]}' does not score a multiple_choice task (dataset '{case.dataset.name}'); "
                    f"use {', '.join(SCORES)}")
        return None

    def check_data(self, case: Case) -> None:
        if local(case.dataset):
            _prepare(case.dataset, case.where, case.train.max_train_samples, case.train.max_eval_samples)

    def prepare(self, spec: DatasetSpec, where: tuple[Filter, ...], label_kind: str,
                max_train: int | None, max_eval: int | None) -> data.Prepared:
        return _prepare(spec, where, max_train, max_eval)

    def encode(self, examples: Items, tokenizer: Any, max_length: int) -> Encoded:
        n_choices = len(examples.choices[0]) if examples.choices else 2
        contexts, stems = examples.texts[0], examples.texts[1]
        firsts = [context for context in contexts for _ in range(n_choices)]
        seconds = [f"{stem} {choice}".strip() for stem, item in zip(stems, examples.choices) for choice in item]
        out = tokenizer(firsts, seconds, truncation=True, max_length=max_length, padding=False,
                        return_attention_mask=False, return_token_type_ids=None)
        pairs = data.Encoded(tuple(np.asarray(x, dtype=np.int64) for x in out["input_ids"]), None,
                             np.zeros(0, np.int64), examples.labels)
        types = out.get("token_type_ids")
        types = tuple(np.asarray(x, dtype=np.int64) for x in types) if types is not None else None
        return _items(pairs.input_ids, types, examples.labels, n_choices, None)

    def restored(self, arrays: dict[str, np.ndarray], examples: Items, key: str | None) -> Encoded:
        pairs = data.Encoded.from_arrays(arrays, examples.labels, key)
        n_choices = len(examples.choices[0]) if examples.choices else 2
        return _items(pairs.input_ids, pairs.token_type_ids, examples.labels, n_choices, key)

    def tokens_problem(self, arrays: Any, examples: Items, vocab_size: int, token_types: bool) -> str | None:
        n_choices = len(examples.choices[0]) if examples.choices else 2
        return data.tokens_problem(arrays, len(examples) * n_choices, vocab_size, token_types)

    def num_labels(self, prepared: data.Prepared) -> int:
        return 1   # one score per choice; the head is shared by the choices

    def hold_out_texts(self, examples: Items) -> Any:
        return ITEMS.texts(examples)

    def host_batch(self, encoded: Encoded, indices: np.ndarray, pad_id: int, pin: bool,
                   with_labels: bool) -> dict[str, Any]:
        from flexharness.engine import train

        c = encoded.choices
        pairs = (indices[:, None] * c + np.arange(c)[None]).ravel()
        flat = data.Encoded(encoded.input_ids, encoded.token_type_ids, encoded.pair_lengths, encoded.labels)
        batch = train.host_batch(flat, pairs, pad_id, pin=False)
        batch = {name: tensor.view(len(indices), c, -1) for name, tensor in batch.items()}
        if with_labels:
            import torch

            batch["labels"] = torch.from_numpy(np.ascontiguousarray(encoded.labels[indices]))
        return {name: tensor.pin_memory() for name, tensor in batch.items()} if pin else batch

    def loss(self, logits: Any, labels: Any) -> Any:
        import torch.nn.functional as F

        return F.cross_entropy(logits.float(), labels)

    def row_outputs(self, logits: Any, batch: dict[str, Any]) -> list[np.ndarray]:
        return list(logits.float().softmax(-1).cpu().numpy())

    def majority_score(self, prepared: data.Prepared, metric_names: tuple[str, ...]) -> float:
        """Always the commonest right position of training (chance, for shuffled choices)."""
        return curves.majority_baseline(prepared.train.labels, prepared.eval.labels, metric_names)


def _items(ids: tuple[np.ndarray, ...], types: tuple[np.ndarray, ...] | None, labels: np.ndarray, n_choices: int,
           key: str | None) -> Encoded:
    pair_lengths = np.fromiter((len(x) for x in ids), dtype=np.int64, count=len(ids))
    per_item = pair_lengths.reshape(-1, n_choices).sum(axis=1) if len(ids) else np.zeros(0, np.int64)
    return Encoded(ids, types, per_item, labels, key, pair_lengths, n_choices)


def _passage(items: Items) -> Iterable[tuple[str, str]]:
    """What an item reads whatever its stem: items of one context and choices stay on one side of a hold-out."""
    return zip(items.texts[0], items.texts[2])


ITEMS = data.RowKind("items", texts=_passage)


@functools.lru_cache(maxsize=16)
def _prepare(spec: DatasetSpec, where: tuple[Filter, ...], max_train: int | None, max_eval: int | None
             ) -> data.Prepared:
    columns = dict(spec.columns)
    source = data.load_source(spec)
    train_rows, eval_names = data.train_split(spec, source), data.eval_split_names(spec, source)
    train = _read(spec, train_rows, where, spec.train_split, columns)
    evals = [(name, _read(spec, source[name], where, name, columns)) for name in eval_names]
    counts = {len(examples.choices[0]) for _, examples in [("train", train), *evals] if len(examples)}
    if len(counts) > 1:
        raise DataError(f"dataset '{spec.name}': splits have different numbers of choices ({len(counts)} numbers); "
                        "every item of a task needs as many choices", *spec.locate("choices"))
    names = tuple(str(i) for i in range(max(counts, default=0)))
    return data.split_rows(spec, where, train, evals, names, max_train, max_eval, ITEMS)


def _read(spec: DatasetSpec, split: Any, where: tuple[Filter, ...], name: str, columns: dict[str, Any]) -> Items:
    """The split's items that ``where`` keeps: context, stem, choices, and the right choice's index."""
    choice_columns = columns["choices"] if isinstance(columns["choices"], tuple) else (columns["choices"],)
    wanted = [(columns["context"], "context"), *([(columns["question"], "question")] if "question" in columns else []),
              *((c, "choices") for c in choice_columns), (spec.label, "label")]
    present = set(split.column_names)
    located = [(c, spec.locate(key)) for c, key in wanted] + [(f.column, (spec.origin, f.line, f.key)) for f in where]
    for column, location in located:
        if column not in present:
            raise DataError(f"split '{name}' has no column '{column}' ({len(present)} columns, none of that name"
                            f"{data._case_hint(column, present)}); name a column the data has", *location)
    table = split.select_columns(sorted({c for c, _ in wanted} | {f.column for f in where})).to_dict()
    keep, contexts, stems, items, labels = [], [], [], [], []
    bad = {"choices": 0, "label": 0}
    for i in range(len(table[spec.label])):
        if not all(data._passes(f, table[f.column][i]) for f in where):
            continue
        choices = (table[choice_columns[0]][i] if len(choice_columns) == 1
                   else [table[c][i] for c in choice_columns])
        if not isinstance(choices, list) or len(choices) < 2 or not all(isinstance(c, str) for c in choices):
            bad["choices"] += 1
            continue
        label = _index(table[spec.label][i], choices)
        if label is None:
            bad["label"] += 1
            continue
        keep.append(i)
        contexts.append(str(table[columns["context"]][i] or ""))
        stems.append(str(table[columns["question"]][i] or "") if "question" in columns else "")
        items.append(tuple(choices))
        labels.append(label)
    _complain(spec, name, bad, {len(c) for c in items})
    texts = (tuple(contexts), tuple(stems), tuple("\x1f".join(c) for c in items))
    return Items(texts, np.asarray(labels, dtype=np.int64), np.asarray(keep, dtype=np.int64), tuple(items))


def _index(label: Any, choices: list[str]) -> int | None:
    """The right choice: the label as one choice's text, else as an index."""
    if isinstance(label, str) and label in choices:
        return choices.index(label)
    if isinstance(label, bool):
        return None
    try:
        index = int(label)
    except (TypeError, ValueError):
        return None
    return index if 0 <= index < len(choices) and float(label) == index else None


def _complain(spec: DatasetSpec, split: str, bad: dict[str, int], numbers: set[int]) -> None:
    """Counts only: choices and labels come from the data (docs/security.md)."""
    if bad["choices"]:
        raise DataError(f"split '{split}': {bad['choices']} rows do not hold two or more text choices",
                        *spec.locate("choices"))
    if bad["label"]:
        raise DataError(f"split '{split}': {bad['label']} rows have a label that is neither the index of a choice "
                        "nor the text of one", *spec.locate("label"))
    if len(numbers) > 1:
        raise DataError(f"split '{split}': items have different numbers of choices ({', '.join(map(str, sorted(numbers)))}); "
                        "every item of a task needs as many", *spec.locate("choices"))
