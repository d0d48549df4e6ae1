"""The classification head's ``pooling``: resolution from the model's files, the cache key, and every method."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from flexharness.store import keys as cache
from flexharness.engine import adapt, models, pooling, train
from flexharness.engine.weights import Kept
from flexharness.rules import metrics
from flexharness.suite.spec import Case, DatasetSpec, TrainConfig
from toy import build_tiny_bert, build_tiny_decoder, encoded_split


@pytest.fixture(scope="module")
def sentence_model(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> str:
    """The tiny BERT with a sentence-transformers mean-pooling config, as all-MiniLM-L6-v2 ships it."""
    folder = tmp_path_factory.mktemp("st") / "model"
    shutil.copytree(tiny_model, folder)
    (folder / "modules.json").write_text(json.dumps([
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}]))
    (folder / "1_Pooling").mkdir()
    (folder / "1_Pooling" / "config.json").write_text(json.dumps(
        {"pooling_mode_cls_token": False, "pooling_mode_mean_tokens": True}))
    return str(folder)


@pytest.fixture(scope="module")
def no_pooler_model(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A BERT checkpoint saved without its pooler: the classifier's pooler would start random."""
    from transformers import BertModel

    folder = build_tiny_bert(tmp_path_factory.mktemp("nopooler"))
    config = BertModel.from_pretrained(folder).config
    BertModel(config, add_pooling_layer=False).save_pretrained(folder)
    return str(folder)


@pytest.fixture(scope="module")
def decoder(tmp_path_factory: pytest.TempPathFactory) -> str:
    return str(build_tiny_decoder(tmp_path_factory.mktemp("gpt2"), "gpt2"))


def test_auto_reads_the_pooling_the_checkpoint_was_trained_with(tiny_model: Path, sentence_model: str,
                                                                 no_pooler_model: str, decoder: str) -> None:
    assert models.pooling_of("auto", str(tiny_model)) == "pooler"
    assert models.pooling_of("auto", sentence_model) == "mean"
    assert models.pooling_of("auto", no_pooler_model) == "mean"
    assert models.pooling_of("auto", decoder) == models.pooling_of("pooler", decoder) == "last"
    assert models.pooling_of("cls", sentence_model) == "cls"
    assert pooling.checkpoint_names(no_pooler_model) and not any(
        "pooler" in name for name in pooling.checkpoint_names(no_pooler_model))


def _case(**train_keys: object) -> Case:
    return Case(suite="s", axis="tasks", name="t", dataset=DatasetSpec(name="d"), metrics=("accuracy",),
                train=TrainConfig(**train_keys))


def test_the_key_holds_pooling_only_when_the_model_trains_something_else(tiny_model: Path, sentence_model: str,
                                                                        decoder: str) -> None:
    def keyed(case: Case, model: str) -> dict:
        return cache.with_pooling(cache.canonical_case(case), case, model)["train"]

    old = set(cache.canonical_case(_case())["train"])
    assert "pooling" not in old
    assert set(keyed(_case(), str(tiny_model))) == old == set(keyed(_case(pooling="pooler"), str(tiny_model)))
    assert set(keyed(_case(pooling="last"), decoder)) == old
    assert keyed(_case(), sentence_model)["pooling"] == "mean"
    assert keyed(_case(pooling="cls"), str(tiny_model))["pooling"] == "cls"
    assert cache.case_fingerprint(_case(pooling="mean")) != cache.case_fingerprint(_case())


@pytest.mark.parametrize("mode", ["cls", "mean", "last"])
def test_a_pooled_head_ignores_padding_and_replaces_the_models_own(tiny_model: Path, mode: str) -> None:
    ref = str(tiny_model)
    model = models.fresh_model(ref, 2, 0, pooling=mode)
    assert adapt.head_modules(model) == ["classifier"] and model.bert.pooler is None
    assert type(model).pooling == mode
    _, eval_set = encoded_split(ref, seed=5)
    pad = models.load_tokenizer(ref).pad_token_id
    with torch.inference_mode():
        batched = model(**train.collate(eval_set, np.arange(20), pad, "cpu")).logits
        alone = torch.cat([model(**train.collate(eval_set, np.array([i]), pad, "cpu")).logits for i in range(20)])
    assert len(set(eval_set.lengths[:20].tolist())) > 1
    torch.testing.assert_close(batched, alone, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("labels", [2, 1])
def test_a_pooled_head_gives_the_loss_the_transformers_classifiers_give(tiny_model: Path, labels: int) -> None:
    """With ``labels`` it returns the loss as HF Trainer expects it: cross-entropy, or MSE for one label."""
    ref = str(tiny_model)
    model = models.fresh_model(ref, labels, 0, pooling="mean").eval()
    _, eval_set = encoded_split(ref, seed=5)
    batch = train.collate(eval_set, np.arange(8), models.load_tokenizer(ref).pad_token_id, "cpu")
    target = torch.tensor([0, 1] * 4) if labels == 2 else torch.linspace(-1.0, 1.0, 8)
    with torch.inference_mode():
        out = model(**batch, labels=target)
        assert model(**batch).loss is None
    expected = (torch.nn.functional.cross_entropy(out.logits, target) if labels == 2
                else torch.nn.functional.mse_loss(out.logits.squeeze(-1), target))
    torch.testing.assert_close(out.loss, expected)


RECIPE = {"epochs": 4, "learning_rate": 2e-2, "batch_size": 16, "warmup_ratio": 0.0, "pooling": "mean"}


@pytest.mark.parametrize("method", ["full", "lora", "head"])
def test_every_method_trains_the_pooled_head(tiny_model: Path, method: str) -> None:
    ref = str(tiny_model)
    train_set, eval_set = encoded_split(ref, 400, seed=5)
    pad = models.load_tokenizer(ref).pad_token_id
    model = models.fresh_model(ref, 2, 0, pooling="mean")
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    rate = {"learning_rate": 3e-3, "epochs": 5} if method == "full" else {}
    config = TrainConfig(**(RECIPE | rate), method=method, lora_dropout=0.0)
    stats = train.fine_tune(model, train_set, config, 0, "cpu", pad, regression=False)
    changed = {name for name, p in model.named_parameters() if not torch.equal(before[name], p)}
    head = {"classifier.weight", "classifier.bias"}
    if method == "head":  # a random encoder's features hold too little for a head alone to learn the toy task
        assert changed == head and stats.trainable_params == sum(before[n].numel() for n in head)
    elif method == "lora":
        targets = adapt.default_targets("bert")
        assert changed == head | {n for n in before if n.endswith(".weight") and n.split(".")[-2] in targets}
    else:
        predicted = train.predict(model, eval_set, 64, "cpu", pad, regression=False)
        assert head < changed and metrics.METRICS["accuracy"].compute(eval_set.labels, predicted) > 0.9


def test_kept_weights_and_int8_work_on_a_pooled_model(tiny_model: Path, tmp_path: Path) -> None:
    from flexharness.engine import surgery

    ref = str(tiny_model)
    train_set, eval_set = encoded_split(ref, seed=5)
    pad = models.load_tokenizer(ref).pad_token_id
    trained = models.fresh_model(ref, 2, 0, pooling="mean")
    train.fine_tune(trained, train_set, TrainConfig(**RECIPE), 0, "cpu", pad, regression=False)
    kept = Kept(tmp_path / "w.safetensors")
    kept.save(trained, {"steps": 1})
    loaded = models.fresh_model(ref, 2, 1, pooling="mean")
    assert kept.load_into(loaded) == {"steps": 1}
    expected = train.predict_outputs(trained, eval_set, 64, "cpu", pad, regression=False)
    np.testing.assert_allclose(train.predict_outputs(loaded, eval_set, 64, "cpu", pad, regression=False), expected)
    quantized = torch.ao.quantization.quantize_dynamic(loaded, {torch.nn.Linear}, dtype=torch.qint8)
    assert any(surgery.is_quantized_linear(m) for m in quantized.modules())
    outputs = train.predict_outputs(quantized, eval_set, 64, "cpu", pad, regression=False)
    assert (outputs.argmax(1) == expected.argmax(1)).mean() > 0.9


def test_a_suite_records_its_pooling_and_compresses_a_pooled_model(pytester: pytest.Pytester, sentence_model: str,
                                                                  toy_csv: Path) -> None:
    pytester.makefile(".flex.yaml", p=f"""
suite: p
model: {sentence_model}
train: {{epochs: 3, learning_rate: 3.0e-3, batch_size: 16, warmup_ratio: 0.0, seeds: [0]}}
datasets:
  reviews: {{files: {{train: {toy_csv}}}, label: label}}
tasks:
  - {{name: polarity, dataset: reviews, metric: accuracy}}
  - {{name: polarity-cls, dataset: reviews, metric: accuracy, train: {{pooling: cls, method: head}}}}
compression:
  task: polarity
  methods: [{{method: layers, keep: 1}}, {{method: heads, fraction: 0.5}}]
""")
    result = pytester.runpytest("--flex-json=out.json", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=4)
    cases = {c["name"]: c for c in json.loads((pytester.path / "out.json").read_text())["cases"]}
    assert {name: case["pooling"] for name, case in cases.items()} == {
        "polarity": "mean", "polarity-cls": "cls", "layers-1": "mean", "heads-50": "mean"}


def test_an_unknown_pooling_names_file_line_and_key(tmp_path: Path, toy_csv: Path) -> None:
    from flexharness.axes import load_suite
    from flexharness.errors import SuiteError

    path = tmp_path / "p.flex.yaml"
    path.write_text(f"suite: p\nmodel: x\ndatasets:\n  d:\n    files: {{train: {toy_csv}}}\n"
                    "tasks:\n  - {name: s, dataset: d, metric: accuracy, train: {pooling: meen}}\n")
    with pytest.raises(SuiteError, match=r"p.flex.yaml:\d+: tasks\[0\].train.pooling: .*did you mean 'mean'"):
        load_suite(path)
