"""Entity-level scores of tagged sentences (seqeval), kept as per-sentence counts so a resample is a sum.

Tags travel as integer *codes* that need no tag names (names come from the data and are never
stored beside outputs): ``0`` is ``O``, ``1 + 4·type + prefix`` is ``B|I|E|S-type``, ``PAD`` marks a
position past a sentence's last word. Entities are found by seqeval — its default mode (conlleval's
rules, any scheme) or its strict mode, whose scheme is IOBES when the gold tags hold an ``E`` or ``S``
and IOB2 otherwise (IOB1 data is rewritten as IOB2 when it is read, :func:`iob1_to_iob2`). Micro scores
sum true positives, predicted and gold entities over sentences, exactly as seqeval's ``f1_score`` does;
macro scores average per type over the types present in gold or prediction.
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

PAD = -100
PREFIXES = ("B", "I", "E", "S")
SCHEMES = ("IOB1", "IOB2", "IOBES")
_SCHEME_PREFIXES = {"IOB1": {"B", "I"}, "IOB2": {"B", "I"}, "IOBES": {"B", "I", "E", "S"}}
_FIXED = 5    # counts columns before the per-type ones: tp, predicted, gold, correct words, words


def parse_tags(names: Sequence[str], scheme: str) -> tuple[np.ndarray, str | None]:
    """(code of each tag name, why one cannot be read under ``scheme`` or None); types are numbered in
    sorted order. The complaint counts tags, never shows them (they come from the data)."""
    allowed = _SCHEME_PREFIXES[scheme]
    split = [None if name == "O" else name.partition("-")[::2] if "-" in name else ("", "") for name in names]
    bad = sum(1 for part in split if part is not None and (part[0] not in allowed or not part[1]))
    if bad:
        return np.zeros(0, np.int64), (f"{bad} of {len(names)} tags are neither 'O' nor PREFIX-TYPE with a prefix "
                                        f"of {scheme} ({', '.join(sorted(allowed))}); set 'tag_scheme' to the "
                                        f"scheme of the data ({', '.join(SCHEMES)})")
    types = {t: i for i, t in enumerate(sorted({part[1] for part in split if part is not None}))}
    codes = [0 if part is None else 1 + 4 * types[part[1]] + PREFIXES.index(part[0]) for part in split]
    return np.asarray(codes, dtype=np.int64), None


def iob1_to_iob2(codes: np.ndarray) -> np.ndarray:
    """IOB1 codes of one sentence as IOB2: an ``I`` that starts an entity (after ``O`` or another type) is ``B``."""
    out = codes.copy()
    previous = 0
    for i, code in enumerate(codes):
        if code > 0 and (code - 1) % 4 == 1 and (previous == 0 or (previous - 1) // 4 != (code - 1) // 4):
            out[i] = code - 1
        previous = code
    return out


def _strings(row: np.ndarray) -> list[str]:
    return ["O" if c == 0 else f"{PREFIXES[(c - 1) % 4]}-T{(c - 1) // 4}" for c in row[row != PAD].tolist()]


def _entities(tags: list[str], scheme: object | None) -> set[tuple[int, int, int]]:
    """(type, start, end) of each entity of one sentence, by seqeval's rules."""
    if scheme is None:
        from seqeval.metrics.sequence_labeling import get_entities

        return {(int(t[1:]), start, end) for t, start, end in get_entities(tags)}
    from seqeval.scheme import Entities

    return {(int(e.tag[1:]), e.start, e.end) for e in Entities([tags], scheme).entities[0]}


def _scheme(labels: np.ndarray, strict: bool) -> object | None:
    if not strict:
        return None
    from seqeval.scheme import IOB2, IOBES

    real = labels[(labels != PAD) & (labels > 0)]
    return IOBES if np.any((real - 1) % 4 >= 2) else IOB2


def counts(labels: np.ndarray, predictions: np.ndarray, strict: bool = False) -> np.ndarray:
    """Per-sentence counts (seeds × sentences × columns): true positive, predicted and gold entities,
    correctly tagged words, words, then true positive, predicted and gold entities of each type."""
    labels, preds = np.asarray(labels), np.asarray(predictions)
    preds = preds[None] if preds.ndim == 2 else preds
    real = np.concatenate([labels[labels > 0], preds[(preds > 0)].ravel()])
    n_types = int((real.max() - 1) // 4 + 1) if real.size else 0
    scheme = _scheme(labels, strict)
    gold = [_entities(_strings(row), scheme) for row in labels]
    out = np.zeros((len(preds), len(labels), _FIXED + 3 * n_types), dtype=np.int64)
    mask = labels != PAD
    for s, seed_preds in enumerate(preds):
        out[s, :, 3] = ((seed_preds == labels) & mask).sum(axis=1)
        out[s, :, 4] = mask.sum(axis=1)
        for n, (row, truth) in enumerate(zip(seed_preds, gold)):
            found = _entities(_strings(np.where(mask[n], row, PAD)), scheme)
            hits = found & truth
            out[s, n, :3] = len(hits), len(found), len(truth)
            for column, entities in ((0, hits), (1, found), (2, truth)):
                for entity_type, *_ in entities:
                    out[s, n, _FIXED + 3 * entity_type + column] += 1
    return out


def _ratio(top: np.ndarray, bottom: np.ndarray) -> np.ndarray:
    return np.divide(top, bottom, out=np.zeros(np.broadcast(top, bottom).shape), where=bottom > 0)


def _f1(tp: np.ndarray, predicted: np.ndarray, gold: np.ndarray) -> np.ndarray:
    return _ratio(2 * tp, predicted + gold)


def _macro(total: np.ndarray) -> np.ndarray:
    per_type = total[..., _FIXED:].reshape(*total.shape[:-1], -1, 3)
    f1 = _f1(per_type[..., 0], per_type[..., 1], per_type[..., 2])
    present = (per_type[..., 1] + per_type[..., 2]) > 0
    return _ratio((f1 * present).sum(-1), present.sum(-1))


FROM_COUNTS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "entity_f1": lambda t: _f1(t[..., 0], t[..., 1], t[..., 2]),
    "entity_precision": lambda t: _ratio(t[..., 0], t[..., 1]),
    "entity_recall": lambda t: _ratio(t[..., 0], t[..., 2]),
    "entity_macro_f1": _macro,
    "token_accuracy": lambda t: _ratio(t[..., 3], t[..., 4]),
}
STRICT = "_strict"   # suffix of the strict-mode metrics (entity_f1_strict, ...)
METRIC_NAMES = (*FROM_COUNTS, *(f"{name}{STRICT}" for name in FROM_COUNTS if name.startswith("entity_")))


def value(metric: str, labels: np.ndarray, predictions: np.ndarray) -> float:
    """One metric of one run (predictions: sentences × words)."""
    return float(replicates(metric, labels, predictions, np.arange(len(labels))[None])[0, 0])


def replicates(metric: str, labels: np.ndarray, predictions: np.ndarray, indices: np.ndarray) -> np.ndarray:
    """The metric on every resample (rows of ``indices``, sentence positions) and seed: B × S."""
    strict = metric.endswith(STRICT)
    found = counts(labels, predictions, strict)                 # S × n × K
    idx = np.asarray(indices)
    weights = np.zeros((len(idx), found.shape[1]))              # B × n: how often each sentence is drawn
    np.add.at(weights, (np.repeat(np.arange(len(idx)), idx.shape[1]), idx.ravel()), 1)
    sums = np.einsum("bn,snk->sbk", weights, found)             # S × B × K
    return FROM_COUNTS[metric.removesuffix(STRICT)](sums).T
