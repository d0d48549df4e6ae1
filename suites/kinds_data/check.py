"""Recompute a kinds.flex.yaml run's scores from its stored per-example outputs, independently.

Reads ``RESULTS.json`` (``--flex-json``) and ``RESULTS.predictions.npz`` beside it with json and numpy
only, then scores each task kind its own way: accuracy from the choice probabilities, entity F1 with
seqeval itself on the stored tag codes written out as tags, exact match and F1 with the SQuAD v2.0
evaluation script's rules on the stored answers. Prints reported against recomputed values and exits 1
when one differs:  python suites/kinds_data/check.py RESULTS.json
"""
from __future__ import annotations

import collections
import json
import re
import string
import sys
from pathlib import Path

import numpy as np

PAD = -100
GOLD_SEPARATOR = "\x1f"
TOLERANCE = 1e-9
PUNCTUATION = frozenset(string.punctuation)


def normalize(text: str) -> str:
    """The SQuAD script's normalize_answer: lower case, no punctuation, no articles, one space."""
    text = "".join(c for c in text.lower() if c not in PUNCTUATION)
    return " ".join(re.sub(r"\b(a|an|the)\b", " ", text).split())


def squad_f1(gold: str, predicted: str) -> float:
    gold_tokens, predicted_tokens = normalize(gold).split(), normalize(predicted).split()
    if not gold_tokens or not predicted_tokens:
        return float(gold_tokens == predicted_tokens)
    same = sum((collections.Counter(gold_tokens) & collections.Counter(predicted_tokens)).values())
    if same == 0:
        return 0.0
    precision, recall = same / len(predicted_tokens), same / len(gold_tokens)
    return 2 * precision * recall / (precision + recall)


def qa_scores(labels: np.ndarray, outputs: np.ndarray) -> dict[str, float]:
    exact, f1 = [], []
    for joined, predicted in zip(labels.tolist(), outputs.tolist()):
        golds = [g for g in joined.split(GOLD_SEPARATOR) if normalize(g)] or [""]
        exact.append(max(float(normalize(g) == normalize(predicted)) for g in golds))
        f1.append(max(squad_f1(g, predicted) for g in golds))
    return {"exact_match": float(np.mean(exact)), "squad_f1": float(np.mean(f1))}


def tags(row: np.ndarray) -> list[str]:
    return ["O" if c == 0 else f"{'BIES'[(c - 1) % 4]}-T{(c - 1) // 4}" for c in row[row != PAD].tolist()]


def tagging_scores(labels: np.ndarray, outputs: np.ndarray) -> dict[str, float]:
    from seqeval.metrics import f1_score

    words = labels != PAD
    return {"entity_f1": float(f1_score([tags(r) for r in labels], [tags(r) for r in outputs])),
            "token_accuracy": float((labels[words] == outputs[words]).mean())}


def choice_scores(labels: np.ndarray, outputs: np.ndarray) -> dict[str, float]:
    return {"accuracy": float((outputs.argmax(axis=1) == labels).mean())}


SCORERS = {"multiple_choice": choice_scores, "token_classification": tagging_scores, "extractive_qa": qa_scores}


def stored(results: Path) -> dict[tuple[str, str, str], list[dict[str, np.ndarray]]]:
    """(model, axis, case) -> the stored arrays of each of its seeds."""
    with np.load(results.with_name(f"{results.stem}.predictions.npz"), allow_pickle=False) as found:
        arrays = dict(found)
    out: dict[tuple[str, str, str], list[dict[str, np.ndarray]]] = collections.defaultdict(list)
    for number, meta in enumerate(json.loads(str(arrays["index"]))):
        out[(meta["model"], meta["axis"], meta["case"])].append({f: arrays[f"{number}/{f}"] for f in ("labels", "outputs")})
    return out


def main(path: str) -> int:
    results = Path(path)
    doc = json.loads(results.read_text(encoding="utf-8"))
    per_case = stored(results)
    worst = 0.0
    print(f"{'model':<36} {'case':<28} {'metric':<15} {'reported':>9} {'recomputed':>10}")
    for case in doc["cases"]:
        runs = per_case[(case["model"], case["axis"], case["name"])]
        scores = [SCORERS[case["kind"]](run["labels"], run["outputs"]) for run in runs]
        for metric, own in {m: float(np.mean([s[m] for s in scores])) for m in scores[0]}.items():
            reported = case["metrics"][metric]
            worst = max(worst, abs(reported - own))
            print(f"{case['model'][-36:]:<36} {case['axis'] + '/' + case['name']:<28} {metric:<15} {reported:>9.4f} {own:>10.4f}")
    return 1 if worst > TOLERANCE else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
