"""Extractive question answering (SQuAD v1.1 and v2.0 style): the answer is a span of the context.

Rows are questions (``engine.qa_data``: SQuAD layout or flat columns, every
``answer_start`` checked); batches hold windows of question + context
(``engine.qa_spans``); the model is an ``AutoModelForQuestionAnswering`` whose
loss is the mean of the start and end cross-entropies. The stored per-example
outputs are the predicted answer strings, one per question, and the stored
labels the gold answers, so intervals, paired tests and regression gates
resample questions and recompute exact match and F1 (``rules.squad``). A run
that an output ensemble combines also keeps each window's start and end logits
(float16); the ensemble averages them per window over the runs and
post-processes the mean as one run's logits are (``qa_spans.best_answers``),
so its stored outputs are answers too. docs/kinds.md.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

import numpy as np

from flexharness.engine import qa_data, qa_spans
from flexharness.engine.kinds.base import TaskKind, local
from flexharness.errors import DataError
from flexharness.rules import metrics
from flexharness.rules.metrics import EXTRACTIVE_QA
from flexharness.rules.squad import split_scores
from flexharness.suite.schema import Reader
from flexharness.suite.spec import Case, DatasetSpec, Filter

LOGITS = "start_end_logits"   # what a run an output ensemble combines keeps per split (windows × tokens × 2)
KEYS = ("question", "context", "answers", "answer_text", "answer_start", "doc_stride", "max_answer_length",
        "n_best", "null_threshold")
FOREIGN_KEYS = ("text", "label", "label_names")   # sequence classification's columns, which QA does not read


def _at_least(low: int) -> Callable[[int], str | None]:
    return lambda v: None if v >= low else f"must be at least {low}"


class ExtractiveQA(TaskKind):
    key = "extractive_qa"
    no_probe = "a probe fits a classifier on frozen sentence features; for answer spans no probe is defined"
    model_class = "AutoModelForQuestionAnswering"
    dataset_keys = KEYS
    metric_kinds = (EXTRACTIVE_QA,)
    ensemble_method = "mean_start_end_logits"
    ensemble_fields = (LOGITS,)

    # ---- the suite ----------------------------------------------------------------------------------

    def read_dataset(self, reader: Reader) -> tuple[tuple[str, Any], ...]:
        flat = [k for k in ("answer_text", "answer_start") if reader.has(k)]
        if flat and reader.has("answers"):
            raise reader.error(flat[0], "give 'answers' (SQuAD layout) or 'answer_text' and 'answer_start' (flat "
                                        "columns), not both")
        if len(flat) == 1:
            raise reader.error(flat[0], "flat answers need both 'answer_text' and 'answer_start'")
        found = {name: reader.typed(name, str, name) for name in ("question", "context")}
        found |= ({"answer_text": reader.typed("answer_text", str), "answer_start": reader.typed("answer_start", str)}
                  if flat else {"answers": reader.typed("answers", str, "answers")})
        found |= {"doc_stride": reader.typed("doc_stride", int, None, check=_at_least(0)),
                  "max_answer_length": reader.typed("max_answer_length", int, qa_spans.MAX_ANSWER_LENGTH,
                                                    check=_at_least(1)),
                  "n_best": reader.typed("n_best", int, qa_spans.N_BEST, check=_at_least(1)),
                  "null_threshold": reader.typed("null_threshold", float, 0.0)}
        return tuple(found.items())

    def check_case(self, case: Case) -> str | None:
        written = [k for k in FOREIGN_KEYS if k in dict(case.dataset.lines)]
        if written:
            return (f"dataset '{case.dataset.name}' is extractive QA, which reads 'question', 'context' and "
                    f"'answers' (or 'answer_text' + 'answer_start'), not '{written[0]}'")
        complaint = super().check_case(case)   # metrics of other kinds
        if complaint:
            return complaint
        stride = dict(case.dataset.columns).get("doc_stride")
        if stride is not None and stride >= case.train.max_length:
            return f"'doc_stride: {stride}' must be below 'max_length: {case.train.max_length}'"
        if case.slices and case.slices.by == "agreement":
            return ("'slices: by: agreement' is not defined for extractive QA (right or wrong is a matter of "
                    "degree: F1); slice by length or by a column of the data")
        return None

    # ---- data ---------------------------------------------------------------------------------------

    def check_data(self, case: Case) -> None:
        """Columns, types and every answer_start, read at collection (a located ``DataError``); a hub dataset
        without a local copy is read, and checked, when its case runs."""
        if local(case.dataset):
            self.prepare(case.dataset, case.where, case.label_kind, case.train.max_train_samples,
                         case.train.max_eval_samples)

    def prepare(self, spec: DatasetSpec, where: tuple[Filter, ...], label_kind: str,
                max_train: int | None, max_eval: int | None) -> Any:
        found = dict(spec.columns)
        columns = qa_data.Columns(found["question"], found["context"], found.get("answers"),
                                  found.get("answer_text"), found.get("answer_start"))
        settings = qa_spans.Settings(found["doc_stride"], found["max_answer_length"], found["n_best"],
                                     found["null_threshold"])
        return qa_data.prepare(spec, where, columns, settings, max_train, max_eval)

    def encoding_inputs(self, examples: qa_data.Questions) -> dict[str, Any]:
        return {"doc_stride": examples.settings.doc_stride, "windows": 1}

    def encode(self, examples: qa_data.Questions, tokenizer: Any, max_length: int) -> qa_spans.Windows:
        return examples.windows(tokenizer, max_length)

    def restored(self, arrays: dict[str, np.ndarray], examples: qa_data.Questions, key: str | None
                 ) -> qa_spans.Windows:
        return qa_spans.Windows.restored(arrays, examples.without_tokens(), key)

    def tokens_problem(self, arrays: Any, examples: qa_data.Questions, vocab_size: int,
                       token_types: bool) -> str | None:
        names = {"input_ids", "offsets", "positions", "example", "context_offsets", *(("token_type_ids",)
                                                                                       if token_types else ())}
        if set(arrays) != names:
            return f"holds {', '.join(sorted(arrays)) or 'nothing'} where {', '.join(sorted(names))} was expected"
        windows = len(arrays["offsets"]) - 1
        example = arrays["example"]
        if len(example) != windows or len(arrays["positions"]) != windows or len(arrays["context_offsets"]) != windows:
            return "windows, their questions and their answer positions do not match"
        if windows and (np.any(np.diff(example) < 0) or example[0] != 0 or example[-1] != len(examples) - 1):
            return f"windows of other questions than the {len(examples)} asked"
        ids = {k: v for k, v in arrays.items() if k in qa_spans.TOKEN_ARRAYS}
        from flexharness.engine import data

        return data.tokens_problem(ids, windows, vocab_size, token_types)

    def example_lengths(self, encoded: qa_spans.Windows) -> np.ndarray:
        """Tokens of all a question's windows together."""
        return np.bincount(encoded.example, weights=encoded.lengths, minlength=len(encoded.contexts)).astype(np.int64)

    def num_labels(self, prepared: Any) -> int:
        return 2   # a start and an end logit per token

    def train_labels(self, examples: qa_data.Questions) -> np.ndarray:
        return qa_data.answerable(examples)

    def hold_out_texts(self, examples: qa_data.Questions) -> Any:
        return qa_data.QUESTIONS.texts(examples)

    # ---- batches, loss, outputs ----------------------------------------------------------------------

    def host_batch(self, data: qa_spans.Windows, indices: np.ndarray, pad_id: int, pin: bool,
                   with_labels: bool) -> dict[str, Any]:
        from flexharness.engine import train

        return train.host_batch(data, indices, pad_id, pin, data.positions if with_labels else None)

    def logits(self, output: Any) -> Any:
        import torch

        return torch.stack([output.start_logits, output.end_logits], dim=-1)

    def loss(self, logits: Any, labels: Any) -> Any:
        import torch.nn.functional as F

        logits = logits.float()
        return (F.cross_entropy(logits[..., 0], labels[:, 0]) + F.cross_entropy(logits[..., 1], labels[:, 1])) / 2

    def row_outputs(self, logits: Any, batch: dict[str, Any]) -> list[np.ndarray]:
        lengths = batch["attention_mask"].sum(-1).tolist()
        values = logits.float().cpu().numpy()
        return [values[row, :n] for row, n in enumerate(lengths)]

    def gather(self, data: qa_spans.Windows, rows: list[np.ndarray]) -> np.ndarray:
        """The predicted answer of each question, post-processed over its windows' start and end logits."""
        return _answers(data, _padded(data, rows))

    def ensemble_arrays(self, data: qa_spans.Windows, rows: list[np.ndarray]) -> dict[str, np.ndarray]:
        """The windows' start and end logits in float16 (half the bytes of float32, about three significant
        digits), and the answers post-processed from those rounded logits: spans whose scores differ by less
        than the rounding may swap, and this way an ensemble of one run is exactly that run."""
        logits = _padded(data, rows).astype(np.float16)
        return {"outputs": _answers(data, logits.astype(np.float32)), LOGITS: logits}

    def ensemble(self, runs: list[Mapping[str, np.ndarray]], data: qa_spans.Windows) -> np.ndarray:
        """The runs' start and end logits averaged per window, then post-processed as one run's are: the best
        span over all windows of a question, with ``n_best``, ``max_answer_length`` and ``null_threshold``."""
        shape = (*data.offsets.shape[:2], 2)
        wrong = [run[LOGITS].shape for run in runs if run[LOGITS].shape != shape]
        if wrong:
            raise DataError(f"stored start and end logits of shape {wrong[0]} do not fit the split's windows "
                            f"{shape}; clear the cache with --cache-clear")
        return _answers(data, np.mean(np.stack([run[LOGITS].astype(np.float32) for run in runs]), axis=0))

    def score(self, metric_names: tuple[str, ...], labels: np.ndarray, outputs: np.ndarray
              ) -> tuple[float, dict[str, float]]:
        """The named metrics make the score; SQuAD v2.0's HasAns / NoAns scores are reported beside them."""
        score, per_metric = metrics.score_outputs(metric_names, labels, outputs)
        return score, per_metric | split_scores(labels, outputs)

    def majority_score(self, prepared: Any, metric_names: tuple[str, ...]) -> float:
        """The score of answering nothing: the share of unanswerable questions (0 on SQuAD v1.1 data)."""
        labels = prepared.eval.labels
        return metrics.score(metric_names, labels, np.full(len(labels), "", dtype=str))[0]


def _padded(data: qa_spans.Windows, rows: list[np.ndarray]) -> np.ndarray:
    """Each window's (tokens × 2) start and end logits in one float32 array: windows × longest window × 2."""
    logits = np.zeros((len(rows), data.offsets.shape[1], 2), dtype=np.float32)
    for w, row in enumerate(rows):
        logits[w, :len(row)] = row
    return logits


def _answers(data: qa_spans.Windows, logits: np.ndarray) -> np.ndarray:
    """The questions' answers from their windows' start and end logits, with the dataset's settings."""
    settings = data.settings
    answers = qa_spans.best_answers(logits[..., 0], logits[..., 1], data, settings.with_null, settings.null_threshold,
                                    settings.n_best, settings.max_answer_length)
    return qa_data.text_array(answers.texts)
