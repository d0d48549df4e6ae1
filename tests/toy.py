"""Tiny, real artefacts for tests: a random-weight BERT built from a config, and learnable data.

The model has a few hundred thousand parameters and a word-level vocabulary,
so a fine-tuning run takes seconds on a CPU and still exercises every real
code path (tokenizer, AutoModelForSequenceClassification, save/load).
"""

from __future__ import annotations

import csv
import json
import random
from pathlib import Path

POSITIVE = ["good", "great", "fine", "lovely", "superb", "happy"]
NEGATIVE = ["bad", "awful", "poor", "sad", "terrible", "boring"]
NEUTRAL = ["movie", "film", "the", "was", "a", "plot", "actor", "show", "really", "quite", "it", "and"]
TOPICS = ["flight", "phone", "car", "game"]
SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def build_tiny_bert(directory: Path, hidden: int = 32, layers: int = 2, heads: int = 2) -> Path:
    """Save a random-weight BERT and its tokenizer to ``directory``; returns it."""
    import torch
    from transformers import BertConfig, BertModel, BertTokenizer

    vocab = SPECIAL + POSITIVE + NEGATIVE + NEUTRAL + TOPICS
    tokenizer = BertTokenizer(vocab={word: i for i, word in enumerate(vocab)})
    config = BertConfig(vocab_size=len(vocab), hidden_size=hidden, num_hidden_layers=layers,
                        num_attention_heads=heads, intermediate_size=hidden * 2, max_position_embeddings=64)
    torch.manual_seed(1234)
    BertModel(config).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


def sentence(rng: random.Random, sentiment: str) -> str:
    words = [rng.choice(NEUTRAL) for _ in range(rng.randint(3, 8))]
    pool = {"positive": POSITIVE, "negative": NEGATIVE}.get(sentiment)
    if pool:
        words.insert(rng.randrange(len(words) + 1), rng.choice(pool))
    words.insert(rng.randrange(len(words) + 1), rng.choice(TOPICS))
    return " ".join(words)


def sentiment_rows(n: int, seed: int = 0, labels: tuple[str, ...] = ("positive", "negative")) -> list[dict]:
    """Rows whose label is decided by one sentiment word: learnable in one or two epochs."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        label = labels[i % len(labels)]
        rows.append({"text": sentence(rng, label), "label": label, "score": 1.0 if label == "positive" else 0.0})
    return rows


def write_csv(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def failed_testcases(junit: Path) -> list[str]:
    """Names of the testcases that a JUnit XML file reports as failed."""
    import xml.etree.ElementTree as ET

    return [tc.get("name") for tc in ET.parse(junit).iter("testcase") if tc.find("failure") is not None]
