"""Tiny, real artefacts for tests: a random-weight BERT built from a config, and learnable data.

The model has a few hundred thousand parameters and a word-level vocabulary,
so a fine-tuning run takes seconds on a CPU and still exercises every real
code path (tokenizer, AutoModelForSequenceClassification, save/load).
"""

from __future__ import annotations

import csv
import json
import random
import shutil
from pathlib import Path
from typing import Any

POSITIVE = ["good", "great", "fine", "lovely", "superb", "happy"]
NEGATIVE = ["bad", "awful", "poor", "sad", "terrible", "boring"]
NEUTRAL = ["movie", "film", "the", "was", "a", "plot", "actor", "show", "really", "quite", "it", "and"]
TOPICS = ["flight", "phone", "car", "game"]
SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def build_tiny_bert(directory: Path, hidden: int = 32, layers: int = 2, heads: int = 2, positions: int = 64,
                    dropout: float = 0.1) -> Path:
    """Save a random-weight BERT and its tokenizer to ``directory``; returns it."""
    import torch
    from transformers import BertConfig, BertModel, BertTokenizer

    vocab = SPECIAL + POSITIVE + NEGATIVE + NEUTRAL + TOPICS
    tokenizer = BertTokenizer(vocab={word: i for i, word in enumerate(vocab)})
    config = BertConfig(vocab_size=len(vocab), hidden_size=hidden, num_hidden_layers=layers,
                        num_attention_heads=heads, intermediate_size=hidden * 2, max_position_embeddings=positions,
                        hidden_dropout_prob=dropout, attention_probs_dropout_prob=dropout)
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


DECODER_SPECIAL = {"gpt2": ["<|endoftext|>"], "llama": ["<unk>", "<s>", "</s>"], "qwen2": ["<|endoftext|>"]}


def _word_tokenizer(family: str) -> object:
    """A word-level fast tokenizer without a pad token, as decoder LMs ship them; Llama's adds BOS."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    special = DECODER_SPECIAL[family]
    if family == "qwen2":
        return _byte_level_bpe(special[0])
    vocab = {word: i for i, word in enumerate(special + POSITIVE + NEGATIVE + NEUTRAL + TOPICS)}
    unknown = "<unk>" if family == "llama" else special[0]
    core = Tokenizer(models.WordLevel(vocab, unk_token=unknown))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    if family == "llama":
        core.post_processor = processors.TemplateProcessing(single="<s> $A", pair="<s> $A $B",
                                                            special_tokens=[("<s>", vocab["<s>"])])
        return PreTrainedTokenizerFast(tokenizer_object=core, bos_token="<s>", eos_token="</s>", unk_token="<unk>")
    return PreTrainedTokenizerFast(tokenizer_object=core, bos_token=special[0], eos_token=special[0],
                                   unk_token=special[0])


def _byte_level_bpe(eos: str) -> object:
    """Qwen2 checkpoints load their tokenizer as a byte-level BPE (transformers rebuilds it from vocabulary and
    merges), so the toy one is such a BPE, trained offline on the toy words."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    core = Tokenizer(models.BPE())
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=[eos],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    words = POSITIVE + NEGATIVE + NEUTRAL + TOPICS
    core.train_from_iterator([" ".join(words)] + [f" {w}" for w in words] * 4, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=core, eos_token=eos, unk_token=eos)


def build_tiny_decoder(directory: Path, family: str = "gpt2", hidden: int = 32, layers: int = 2) -> Path:
    """Save a random-weight GPT-2, Llama or Qwen2 LM and a word-level tokenizer without a pad token."""
    import torch
    from transformers import AutoModelForCausalLM, GPT2Config, LlamaConfig, Qwen2Config

    tokenizer = _word_tokenizer(family)
    size = len(tokenizer)
    if family == "gpt2":
        config = GPT2Config(vocab_size=size, n_embd=hidden, n_layer=layers, n_head=2, n_positions=64,
                            bos_token_id=0, eos_token_id=0)
    else:
        kind = LlamaConfig if family == "llama" else Qwen2Config
        config = kind(vocab_size=size, hidden_size=hidden, intermediate_size=hidden * 2, num_hidden_layers=layers,
                      num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=64,
                      bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id)
    torch.manual_seed(1234)
    AutoModelForCausalLM.from_config(config).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


TAG_OF = {**{w: "POS" for w in POSITIVE}, **{w: "NEG" for w in NEGATIVE}, **{w: "TOP" for w in TOPICS}}


def tagged_rows(n: int, seed: int = 0, long_every: int = 0, scheme: str = "IOB2") -> list[dict]:
    """Sentences whose tags follow the words: a topic word is a TOP entity, one or two sentiment words in a
    row a POS or NEG entity, the rest O. Every ``long_every``-th sentence is ~80 words (longer than the tiny
    model's positions). ``scheme``: IOB2, IOB1 or IOBES tags; ``topic`` is a sentence-level column."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        words: list[str] = []
        for _ in range(rng.randint(20, 26) if long_every and i % long_every == 0 else 1):
            words += [rng.choice(NEUTRAL) for _ in range(rng.randint(1, 3))]
            pool = rng.choice([POSITIVE, NEGATIVE, TOPICS])
            words += [rng.choice(pool) for _ in range(1 if pool is TOPICS else rng.randint(1, 2))]
            words += [rng.choice(NEUTRAL) for _ in range(rng.randint(0, 2))]
        rows.append({"tokens": words, "tags": _tags(words, scheme), "topic": TOPICS[i % len(TOPICS)]})
    return rows


def _tags(words: list[str], scheme: str) -> list[str]:
    types = [TAG_OF.get(w) for w in words]
    tags = []
    for i, kind in enumerate(types):
        if kind is None:
            tags.append("O")
            continue
        starts = i == 0 or types[i - 1] != kind or kind == "TOP"
        ends = i + 1 == len(types) or types[i + 1] != kind or types[i + 1] == "TOP"
        prefix = "B" if starts else "I"
        if scheme == "IOBES":
            prefix = {(True, True): "S", (True, False): "B", (False, True): "E", (False, False): "I"}[(starts, ends)]
        elif scheme == "IOB1":
            prefix = "B" if starts and i > 0 and types[i - 1] == kind else "I"
        tags.append(f"{prefix}-{kind}")
    return tags


def write_conll(path: Path, rows: list[dict], docstart: bool = True) -> Path:
    """A CoNLL file: TOKEN POS TAG per line (the tag last), a blank line between sentences."""
    lines = ["-DOCSTART- -X- O", ""] if docstart else []
    for row in rows:
        lines += [f"{word} X {tag}" for word, tag in zip(row["tokens"], row["tags"])] + [""]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


def choice_rows(n: int, seed: int = 0, choices: int = 3) -> list[dict]:
    """Items whose right choice is the one that goes on in the context's positive tone: it holds a positive
    word, the others a negative one. The label is the right choice's index; ``answer`` holds its text;
    ``choice0``... the choices as columns."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        sentiment = "positive"
        same, other = POSITIVE, NEGATIVE
        right = rng.randrange(choices)
        options = [f"{rng.choice(NEUTRAL)} {rng.choice(same if j == right else other)}" for j in range(choices)]
        rows.append({"context": sentence(rng, sentiment), "stem": rng.choice(NEUTRAL), "choices": options,
                     "label": right, "answer": options[right], **{f"choice{j}": c for j, c in enumerate(options)}})
    return rows


def build_zoo(source: Path, directory: Path, layers: tuple[int, ...]) -> list[Path]:
    """Candidate models from one BERT checkpoint, offline: the encoder truncated to each of ``layers``, and a
    random-weight copy of the whole (seed 0); every folder keeps the source's tokenizer and other files."""
    import torch
    from transformers import BertModel

    zoo = []
    for count in layers:
        model = BertModel.from_pretrained(source)
        model.encoder.layer = model.encoder.layer[:count]
        model.config.num_hidden_layers = count
        zoo.append(_saved_beside(model, source, directory / f"layers-{count}"))
    torch.manual_seed(0)
    zoo.append(_saved_beside(BertModel(BertModel.from_pretrained(source).config), source, directory / "random"))
    return zoo


def _saved_beside(model: object, source: Path, target: Path) -> Path:
    """``model`` saved in ``target`` with every file of ``source`` that is not a weight file."""
    shutil.copytree(source, target, ignore=shutil.ignore_patterns("*.safetensors", "*.bin", "*.index.json"))
    model.save_pretrained(target)
    return target


def encoded_split(ref: str, n: int = 240, seed: int = 3) -> tuple[Any, Any]:
    """(train, evaluation) token ids of ``n`` toy sentiment rows for a model's tokenizer, cut 2:1, at 32 tokens:
    for tests that call the training loop directly."""
    import numpy as np

    from flexharness.engine import data, models

    rows = sentiment_rows(n, seed=seed)
    labels = np.array([int(r["label"] == "positive") for r in rows])
    examples = data.Examples((tuple(r["text"] for r in rows),), labels)
    tokenizer = models.load_tokenizer(ref)
    cut = n * 2 // 3
    return (data.encode(examples.take(np.arange(cut)), tokenizer, 32),
            data.encode(examples.take(np.arange(cut, n)), tokenizer, 32))
