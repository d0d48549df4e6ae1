"""Adaptation methods (full, LoRA, head) and decoder LMs as classifiers, on tiny random-weight models."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from flexharness.store import keys as cache
from flexharness.axes import load_suite
from flexharness.engine import adapt, data, models, train
from flexharness.errors import SuiteError, TrainingError
from flexharness.rules import metrics
from flexharness.suite.spec import Case, DatasetSpec, TrainConfig
from toy import build_tiny_decoder, encoded_split

FAMILIES = ("gpt2", "llama", "qwen2")
RECIPES = {"full": TrainConfig(epochs=4, learning_rate=3e-3, batch_size=16, warmup_ratio=0.0),
           "lora": TrainConfig(epochs=4, learning_rate=2e-2, batch_size=16, warmup_ratio=0.0, method="lora",
                               lora_dropout=0.0),
           "head": TrainConfig(epochs=4, learning_rate=2e-2, batch_size=16, warmup_ratio=0.0, method="head")}


@pytest.fixture(scope="module", params=FAMILIES)
def decoder(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> str:
    return str(build_tiny_decoder(tmp_path_factory.mktemp(request.param), request.param))


def test_a_decoder_without_pad_token_pads_with_eos_and_pools_the_last_real_token(decoder: str) -> None:
    tokenizer = models.load_tokenizer(decoder)
    model = models.fresh_model(decoder, 2, 0)
    assert tokenizer.pad_token_id == tokenizer.eos_token_id == model.config.pad_token_id
    assert tokenizer.padding_side == "right"
    _, eval_set = encoded_split(decoder, seed=3)
    batched = _logits(model, eval_set, range(len(eval_set.lengths)), tokenizer.pad_token_id)
    alone = torch.cat([_logits(model, eval_set, [i], tokenizer.pad_token_id) for i in range(len(eval_set.lengths))])
    assert len(set(eval_set.lengths.tolist())) > 1  # the batch really is padded
    torch.testing.assert_close(batched, alone, atol=1e-5, rtol=1e-4)


def _logits(model, encoded: data.Encoded, indices, pad_id: int) -> torch.Tensor:
    with torch.inference_mode():
        return model(**train.collate(encoded, np.array(list(indices)), pad_id, "cpu")).logits


@pytest.mark.parametrize("method", ["full", "lora", "head"])
def test_each_method_trains_what_it_says_and_learns(decoder: str, method: str) -> None:
    train_set, eval_set = encoded_split(decoder, seed=3)
    pad = models.load_tokenizer(decoder).pad_token_id
    model = models.fresh_model(decoder, 2, 0)
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    stats = train.fine_tune(model, train_set, RECIPES[method], 0, "cpu", pad, regression=False)
    after = dict(model.named_parameters())
    assert set(after) == set(before)  # a LoRA adapter is merged back: a plain model with the same weights' names
    changed = {name for name in before if not torch.equal(before[name], after[name])}
    head = {name for name in before if name.split(".")[0] in adapt.head_modules(model)}
    assert stats.method == method and stats.total_params == sum(p.numel() for p in before.values())
    accuracy = metrics.METRICS["accuracy"].compute(
        eval_set.labels, train.predict(model, eval_set, 64, "cpu", pad, regression=False))
    if method == "head":
        assert changed == head and stats.trainable_params == sum(before[n].numel() for n in head)
    elif method == "lora":
        targets = adapt.default_targets(model.config.model_type)
        assert changed == head | {n for n in before if n.endswith(".weight") and n.split(".")[-2] in targets}
        assert stats.trainable_params == _lora_size(model, targets, 8) + sum(before[n].numel() for n in head)
        assert stats.trainable_params < 0.2 * stats.total_params
    else:
        assert changed == set(before) and stats.trainable_params == stats.total_params
    if method != "head":  # a random-weight model's frozen features carry no signal; MiniLM's do (docs/methods.md)
        assert accuracy >= (0.8 if method == "full" else 0.65), accuracy  # chance is 0.5


def _lora_size(model, targets: tuple[str, ...], rank: int) -> int:
    """r·(in + out) per adapted weight, from the weights' own shapes."""
    return sum(rank * sum(p.shape) for n, p in model.named_parameters()
               if n.endswith(".weight") and n.split(".")[-2] in targets)


def test_int8_works_on_a_lora_model(tiny_model: Path) -> None:
    from flexharness.engine import surgery

    train_set, _ = encoded_split(str(tiny_model), seed=3)
    model = models.fresh_model(str(tiny_model), 2, 0)
    train.fine_tune(model, train_set, RECIPES["lora"], 0, "cpu", 0, regression=False)
    quantized = surgery.quantize_int8(model, "cpu")
    assert any(surgery.is_quantized_linear(m) for m in quantized.modules())


def _case(**train: object) -> Case:
    return Case(suite="s", axis="tasks", name="t", dataset=DatasetSpec(name="d"), metrics=("accuracy",),
                train=TrainConfig(**train))


def test_a_default_method_case_keeps_its_cache_key() -> None:
    keys_before_methods = {"epochs", "learning_rate", "batch_size", "eval_batch_size", "max_length", "warmup_ratio",
                           "weight_decay", "max_grad_norm", "max_train_samples", "max_eval_samples",
                           "group_by_length"}
    assert set(cache.canonical_case(_case())["train"]) == keys_before_methods
    fingerprints = {cache.case_fingerprint(_case(**kw)) for kw in
                    ({}, {"method": "lora"}, {"method": "head"}, {"method": "lora", "lora_rank": 4},
                     {"gradient_checkpointing": True})}
    assert len(fingerprints) == 5


def _suite(tmp_path: Path, body: str, toy_csv: Path) -> Path:
    path = tmp_path / "m.flex.yaml"
    path.write_text(f"suite: m\nmodel: x\ndatasets:\n  d:\n    files: {{train: {toy_csv}}}\n{body}")
    return path


def test_a_method_list_expands_a_task_into_one_case_per_method(tmp_path: Path, toy_csv: Path) -> None:
    path = _suite(tmp_path, "train: {lora_rank: 4}\ntasks:\n  - {name: s, dataset: d, metric: accuracy, "
                            "train: {method: [full, lora]}}\n  - {name: h, dataset: d, metric: accuracy}\n"
                            "gates: {cases: {tasks/s-lora: {min: 0.5}}}\n", toy_csv)
    suite = load_suite(path)
    assert [(c.name, c.train.method, c.train.lora_rank) for c in suite.cases] == [
        ("s-full", "full", 4), ("s-lora", "lora", 4), ("h", "full", 4)]
    path.write_text(path.read_text().replace("gates: {cases: {tasks/s-lora: {min: 0.5}}}\n", ""))
    overridden = load_suite(path, {"method": "head"})  # --flex-method replaces the list: one case, its plain name
    assert [(c.name, c.train.method) for c in overridden.cases] == [("s", "head"), ("h", "head")]


@pytest.mark.parametrize("train, message", [
    ("{method: loar}", r"m.flex.yaml:\d+: tasks\[0\].train.method: unknown method 'loar' \(did you mean 'lora'\?\)"),
    ("{method: [full, full]}", "each method may be listed once"),
    ("{lora_dropout: 1.5}", "lora_dropout: must be in"),
    ("{lora_rank: 0}", "lora_rank: must be greater than 0"),
    ("{lora_target_modules: []}", "lora_target_modules: expected a string or a non-empty list"),
])
def test_bad_method_keys_name_file_line_and_key(tmp_path: Path, toy_csv: Path, train: str, message: str) -> None:
    path = _suite(tmp_path, f"tasks:\n  - {{name: s, dataset: d, metric: accuracy, train: {train}}}\n", toy_csv)
    with pytest.raises(SuiteError, match=message):
        load_suite(path)


GPT2_SUITE = """suite: dec
model: {model}
train: {{epochs: 4, learning_rate: 2.0e-2, batch_size: 16, warmup_ratio: 0.0, max_length: 32, seeds: [0],
        max_train_samples: 160, max_eval_samples: 80, lora_dropout: 0.0}}
datasets:
  reviews: {{files: {{train: {data}}}, label: label}}
tasks:
  - {{name: polarity, dataset: reviews, metric: accuracy, train: {{method: [full, lora, head]}}}}
{extra}"""


def test_a_decoder_suite_compares_methods_end_to_end(pytester: pytest.Pytester, tmp_path: Path,
                                                     toy_csv: Path) -> None:
    model = build_tiny_decoder(tmp_path / "gpt2", "gpt2")
    pytester.makefile(".flex.yaml", dec=GPT2_SUITE.format(model=model, data=toy_csv, extra=""))
    result = pytester.runpytest("-p", "no:cacheprovider", "--flex-json=out.json")
    result.assert_outcomes(passed=3)
    cases = {c["name"]: c for c in json.loads((pytester.path / "out.json").read_text())["cases"]}
    assert sorted(cases) == ["polarity-full", "polarity-head", "polarity-lora"]
    trained = {name: (c["train_method"], c["trainable_params"] / c["total_params"]) for name, c in cases.items()}
    assert trained["polarity-full"] == ("full", 1.0)
    assert trained["polarity-head"][0] == "head" and trained["polarity-head"][1] < 0.01
    assert trained["polarity-lora"][0] == "lora" and trained["polarity-head"][1] < trained["polarity-lora"][1] < 0.2
    assert cases["polarity-full"]["score"] > 0.8


@pytest.mark.parametrize("extra, message", [
    ("compression: {task: polarity, train: {method: full}, methods: [{method: heads, fraction: 0.5}]}",
     "*dec.flex.yaml:*: compression/heads-50: model '*': method 'heads' knows the layers and heads of bert, "
     "distilbert, roberta models; this model is 'gpt2'*"),
    ("compression: {task: polarity, train: {method: full}, methods: [{method: int8}]}",
     "*compression/int8: model '*': 'gpt2' models keep their weights in Conv1D layers*"),
    ("compression: {task: polarity, methods: [{method: int8}]}",
     "*compression.train.method: a method list expands tasks only; 'compression/int8' inherits*"),
])
def test_what_a_decoder_cannot_do_fails_at_collection(pytester: pytest.Pytester, tmp_path: Path, toy_csv: Path,
                                                      extra: str, message: str) -> None:
    model = build_tiny_decoder(tmp_path / "gpt2", "gpt2")
    pytester.makefile(".flex.yaml", dec=GPT2_SUITE.format(model=model, data=toy_csv, extra=extra))
    result = pytester.runpytest("-p", "no:cacheprovider", "--collect-only")
    result.stdout.fnmatch_lines(["*ERROR collecting*", message])
    result.stdout.no_fnmatch_line("*Traceback*")


def test_an_encoder_decoder_model_fails_at_collection(pytester: pytest.Pytester, tmp_path: Path,
                                                      toy_csv: Path) -> None:
    t5 = tmp_path / "t5"
    t5.mkdir()
    (t5 / "config.json").write_text(json.dumps({"model_type": "t5", "is_encoder_decoder": True}))
    pytester.makefile(".flex.yaml", dec=GPT2_SUITE.format(model=t5, data=toy_csv, extra=""))
    result = pytester.runpytest("-p", "no:cacheprovider", "--collect-only")
    result.stdout.fnmatch_lines(["*dec.flex.yaml: model: '*t5' is an encoder-decoder model ('t5'); flexharness "
                                 "fine-tunes encoders and decoder-only LMs as classifiers*"])


def test_lora_on_an_architecture_without_default_targets_asks_for_them(tiny_model: Path) -> None:
    model = models.fresh_model(str(tiny_model), 2, 0)
    model.config.model_type = "no-such-architecture"
    with pytest.raises(TrainingError, match="LoRA has no default target modules for 'no-such-architecture' models; "
                                            "name them with 'lora_target_modules'"):
        adapt.prepare(model, TrainConfig(method="lora"), "cpu")
    adapted = adapt.prepare(model, TrainConfig(method="lora", lora_target_modules=("query",)), "cpu")
    assert 0 < adapted.trainable < adapted.total
