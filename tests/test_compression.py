"""The compression axis: methods on real tiny models, the suite section, and an end-to-end run."""

from __future__ import annotations

import json
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import (AutoModelForSequenceClassification, BertConfig, DistilBertConfig, ElectraConfig,
                          RobertaConfig)

from flexharness.engine import compress, data, models, surgery, train
from flexharness.errors import CompressionError, SuiteError
from flexharness.axes import load_suite
from flexharness.suite.spec import TrainConfig
from toy import sentiment_rows

TINY = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 64,
        "vocab_size": 60, "max_position_embeddings": 64}


def _model(config, num_labels: int = 2):
    torch.manual_seed(0)
    config.num_labels = num_labels
    return AutoModelForSequenceClassification.from_config(config)


ARCHITECTURES = {
    "bert": lambda: BertConfig(**TINY),
    "roberta": lambda: RobertaConfig(**TINY, pad_token_id=1),
    "distilbert": lambda: DistilBertConfig(dim=32, n_layers=2, n_heads=4, hidden_dim=64, vocab_size=60,
                                           max_position_embeddings=64),
}


def _forward_backward(model) -> None:
    ids = torch.randint(5, 60, (3, 12))
    loss = torch.nn.functional.cross_entropy(model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits,
                                             torch.tensor([0, 1, 0]))
    loss.backward()
    assert torch.isfinite(loss)
    assert all(module.weight.grad is not None for _, module in surgery.encoder_linears(model))


def _zero_fraction(model) -> float:
    weights = [m.weight for _, m in surgery.encoder_linears(model)]
    return sum(int((w == 0).sum()) for w in weights) / sum(w.numel() for w in weights)


def _encoded_toy(tiny_model: Path) -> data.Encoded:
    rows = sentiment_rows(96)
    examples = data.Examples((tuple(r["text"] for r in rows),),
                             np.array([r["label"] == "positive" for r in rows], dtype=np.int64))
    return data.encode(examples, models.load_tokenizer(str(tiny_model)), 32)


@pytest.mark.parametrize("scope", ["global", "layer"])
@pytest.mark.parametrize("sparsity", [0.3, 0.7])
def test_magnitude_sparsity_matches_and_survives_fine_tuning(tiny_model: Path, scope: str, sparsity: float) -> None:
    model = models.fresh_model(str(tiny_model), 2, seed=0)
    before = {n: m.weight.detach().clone() for n, m in surgery.encoder_linears(model)}
    masks = surgery.magnitude_masks(model, sparsity, scope)
    assert abs(_zero_fraction(model) - sparsity) <= 0.01
    config = TrainConfig(epochs=2, learning_rate=3e-3, batch_size=16, warmup_ratio=0.0)
    with surgery.keep_masks(masks):
        train.fine_tune(model, _encoded_toy(tiny_model), config, 0, "cpu", 0, False)
    assert abs(_zero_fraction(model) - sparsity) <= 0.01
    for (name, module), (weight, pruned) in zip(surgery.encoder_linears(model), masks):
        assert module.weight is weight
        assert torch.all(module.weight[pruned] == 0), name
        assert not torch.equal(module.weight[~pruned], before[name][~pruned]), f"{name} did not train"
    if scope == "layer":
        for _, module in surgery.encoder_linears(model):
            assert abs(float((module.weight == 0).float().mean()) - sparsity) <= 0.01


def test_masks_are_released_after_fine_tuning(tiny_model: Path) -> None:
    model = models.fresh_model(str(tiny_model), 2, seed=0)
    masks = surgery.magnitude_masks(model, 0.5, "global")
    with surgery.keep_masks(masks):
        pass
    weight = masks[0][0]
    optimizer = torch.optim.SGD([weight], lr=1.0)
    weight.grad = torch.ones_like(weight)
    optimizer.step()
    assert torch.all(weight != 0), "the hook must not outlive its fine-tune"


@pytest.mark.parametrize("arch", sorted(ARCHITECTURES))
def test_head_removal_shrinks_the_model_which_still_trains(arch: str) -> None:
    model = _model(ARCHITECTURES[arch]())
    params = compress.count_params(model)
    batches = [({"input_ids": torch.randint(5, 60, (4, 10))}, torch.tensor([0, 1, 1, 0])) for _ in range(2)]
    importance = surgery.head_importance(model, iter(batches), torch.nn.functional.cross_entropy)
    assert [len(t) for t in importance] == [4, 4] and all(torch.all(t >= 0) for t in importance)
    chosen = surgery.choose_heads(importance, 0.5)
    assert sum(map(len, chosen)) == 4
    surgery.remove_heads(model, chosen)
    assert compress.count_params(model) < params
    _, _, spec = surgery.encoder_layers(model, "heads")
    for layer, dropped in zip(model.base_model.get_submodule(spec.layers), chosen):
        attention = layer.get_submodule(spec.attention)
        assert getattr(attention, spec.count_attr) == 4 - len(dropped)
        assert layer.get_submodule(spec.projections[0]).out_features == (4 - len(dropped)) * 8
        assert layer.get_submodule(spec.output).in_features == (4 - len(dropped)) * 8
        if spec.size_attr:
            assert getattr(attention, spec.size_attr) == (4 - len(dropped)) * 8
    model.train()
    _forward_backward(model)


def test_removed_heads_are_the_least_important_and_every_layer_keeps_one() -> None:
    importance = [torch.tensor([0.9, 0.1, 0.5]), torch.tensor([0.05, 0.02, 0.03])]
    assert surgery.choose_heads(importance, 0.5) == [[1], [1, 2]]
    assert surgery.choose_heads(importance, 0.99) == [[1, 2], [1, 2]]


def test_removing_heads_with_a_mask_of_zeros_changes_nothing() -> None:
    """Slicing is exact: the pruned model equals the full one with those heads' outputs zeroed."""
    model = _model(ARCHITECTURES["bert"]()).eval()
    ids = torch.randint(5, 60, (2, 9))
    masks = [torch.tensor([1.0, 0.0, 1.0, 0.0]), torch.tensor([0.0, 1.0, 1.0, 1.0])]
    hooks = [layer.attention.output.dense.register_forward_pre_hook(
        lambda module, args, mask=mask: (args[0] * mask.repeat_interleave(8),)) for layer, mask in
        zip(model.bert.encoder.layer, masks)]
    with torch.no_grad():
        expected = model(input_ids=ids).logits
    for hook in hooks:
        hook.remove()
    surgery.remove_heads(model, [[1, 3], [0]])
    with torch.no_grad():
        assert torch.allclose(model(input_ids=ids).logits, expected, atol=1e-5)


@pytest.mark.parametrize("which, expected", [("bottom", [0, 1, 2]), ("top", [3, 4, 5]), ("even", [0, 2, 4])])
def test_layer_choice(which: str, expected: list[int]) -> None:
    assert surgery.layer_indices(6, 3, which) == expected


@pytest.mark.parametrize("arch", sorted(ARCHITECTURES))
def test_layers_keeps_k(arch: str) -> None:
    config = ARCHITECTURES[arch]()
    config.num_hidden_layers = 4
    model = _model(config)
    layers = list(model.base_model.get_submodule(surgery.LAYOUTS[arch].layers))
    assert surgery.keep_layers(model, 2, "top") == [2, 3]
    kept = model.base_model.get_submodule(surgery.LAYOUTS[arch].layers)
    assert len(kept) == 2 and kept[0] is layers[2] and model.config.num_hidden_layers == 2
    _forward_backward(model.train())
    with pytest.raises(CompressionError, match="keep 2 of 2 layers removes nothing"):
        surgery.keep_layers(model, 2, "bottom")


def test_int8_shrinks_linear_weights_about_four_times_and_still_predicts() -> None:
    model = _model(BertConfig(**{**TINY, "hidden_size": 128, "intermediate_size": 512})).eval()
    ids = torch.randint(5, 60, (4, 10))
    with torch.no_grad():
        dense_logits = model(input_ids=ids).logits
    dense = compress.measure(model)
    quantized = surgery.quantize_int8(model, "cpu")
    facts = compress.measure(quantized)
    assert facts["params"] == dense["params"] and facts["weights"] == dense["weights"]
    assert 3.5 < dense["linear_mb"] / facts["linear_mb"] < 4.2
    assert facts["size_mb"] < dense["size_mb"]
    with torch.no_grad():
        assert torch.allclose(quantized(input_ids=ids).logits, dense_logits, atol=0.05)


def test_int8_on_cuda_without_torchao_gives_a_skip_reason(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "torchao.quantization", None)
    monkeypatch.setitem(sys.modules, "torchao", None)
    assert "needs torchao" in surgery.int8_unavailable("cuda")
    assert surgery.int8_unavailable("cpu") is None


def test_unsupported_architecture_is_a_clear_error() -> None:
    model = _model(ElectraConfig(**TINY, embedding_size=32))
    for method in ("heads", "layers"):
        with pytest.raises(CompressionError, match=f"method '{method}' supports the architectures bert, "
                                                   "distilbert, roberta; this model is 'electra'"):
            compress.METHODS[method].check(model)
    surgery.magnitude_masks(model, 0.5, "global")  # magnitude works on any Linear encoder
    assert abs(_zero_fraction(model) - 0.5) <= 0.01


# ---- the suite section -----------------------------------------------------------------------------

def _suite(tmp_path: Path, toy_csv: Path, section: str, metric: str = "accuracy") -> Path:
    path = tmp_path / "s.flex.yaml"
    path.write_text(f"suite: s\nmodel: m\ndatasets:\n  reviews:\n    files: {{train: {toy_csv}}}\n"
                    f"tasks:\n  - {{name: polarity, dataset: reviews, metric: {metric}}}\n{section}")
    return path


def test_section_expands_one_case_per_sparsity(tmp_path: Path, toy_csv: Path) -> None:
    section = ("compression:\n  task: polarity\n  train: {epochs: 2}\n  methods:\n"
               "    - {method: magnitude, sparsity: [0.3, 0.5]}\n"
               "    - {method: magnitude, sparsity: 0.9, when: after, scope: layer}\n"
               "    - {method: heads, fraction: 0.5}\n    - {method: layers, keep: 3, which: even}\n"
               "    - {method: int8, name: quantized}\n")
    suite = load_suite(_suite(tmp_path, toy_csv, section))
    cases = [c for c in suite.cases if c.axis == "compression"]
    assert [c.name for c in cases] == ["magnitude-30", "magnitude-50", "magnitude-after-layer-90", "heads-50",
                                       "layers-3-even", "quantized"]
    params = dict(cases[2].params)
    assert params == {"method": "magnitude", "sparsity": 0.9, "when": "after", "scope": "layer",
                      "relative": True, "task": "polarity"}
    assert all(c.train.epochs == 2 and c.metrics == ("accuracy",) for c in cases)
    assert cases[0].line == 12 and cases[-1].line == 16


def test_compression_scores_the_first_of_several_eval_splits(tmp_path: Path, toy_csv: Path) -> None:
    path = tmp_path / "s.flex.yaml"
    for split in "ab":  # a file of its own per split: one file under two splits is refused
        (tmp_path / f"{split}.csv").write_bytes(toy_csv.read_bytes())
    path.write_text(f"suite: s\nmodel: m\ndatasets:\n  reviews:\n    files: {{train: {toy_csv}, a: a.csv, "
                    f"b: b.csv}}\n    eval_split: [a, b]\ntasks:\n  - {{name: polarity, dataset: reviews, "
                    "metric: accuracy}\ncompression:\n  task: polarity\n  methods: [{method: int8}]\n")
    task, case = load_suite(path).cases
    assert task.scored_names == ("polarity:a", "polarity:b")
    assert case.dataset.eval_splits == ("a",) and case.scored_names == ("int8",)


@pytest.mark.parametrize("methods, message", [
    ("{method: magnitdue, sparsity: 0.3}", r":11: compression.methods\[0\].method: unknown method 'magnitdue' "
                                           r"\(did you mean 'magnitude'\?\)"),
    ("{method: magnitude, sparsity: 1.0}", r"sparsity: 1.0 must be in \[0, 1\)"),
    ("{method: magnitude, sparsity: [0.3, -0.1]}", r"sparsity: -0.1 must be in \[0, 1\)"),
    ("{method: magnitude, sparsity: lots}", r"sparsity: 'lots' is not a number"),
    ("{method: magnitude}", r"methods\[0\].sparsity: required key missing"),
    ("{method: magnitude, sparsity: 0.3, when: during}", r"when: expected one of before, after"),
    ("{method: heads, fraction: 0.5, sparsity: 0.3}", r"unknown key; allowed here: fraction, method, name"),
    ("{method: layers, keep: 0}", r"keep: must be greater than 0"),
    ("{method: int8}\n    - {method: int8}", r"duplicate compression case 'int8'"),
])
def test_bad_methods_are_suite_errors(tmp_path: Path, toy_csv: Path, methods: str, message: str) -> None:
    path = _suite(tmp_path, toy_csv, f"compression:\n  task: polarity\n  methods:\n    - {methods}\n")
    with pytest.raises(SuiteError, match=message):
        load_suite(path)


def test_unknown_task_and_relative_lower_is_better_are_suite_errors(tmp_path: Path, toy_csv: Path) -> None:
    with pytest.raises(SuiteError, match=r"compression.task: no case named 'polarty' under 'tasks:' "
                                         r"\(did you mean 'polarity'\?\)"):
        load_suite(_suite(tmp_path, toy_csv, "compression:\n  task: polarty\n  methods: [{method: int8}]\n"))
    with pytest.raises(SuiteError, match="compression.relative: retention needs a higher-is-better metric"):
        load_suite(_suite(tmp_path, toy_csv, "compression:\n  task: polarity\n  methods: [{method: int8}]\n",
                          metric="mse"))


# ---- end to end ----------------------------------------------------------------------------------

COMPRESSION = """tasks:
  - {name: polarity, dataset: reviews, metric: accuracy}
compression:
  task: polarity
  methods:
    - {method: magnitude, sparsity: [0.3]}
    - {method: heads, fraction: 0.5}
    - {method: int8}
gates:
  compression: {p_avg: {min: 0.8}}
"""


def test_compression_cases_run_with_one_dense_fine_tune(pytester: pytest.Pytester, suite_text) -> None:
    pytester.makefile(".flex.yaml", toy=suite_text(COMPRESSION))
    result = pytester.runpytest("-m", "compression", "--flex-json=out.json", "--flex-report-dir=report",
                                "--junitxml=junit.xml")
    result.assert_outcomes(passed=4)
    result.stdout.fnmatch_lines(["compression (score:*", "case*asked*measured*retained*",
                                 "magnitude-30 *0.30 *0.30*", "PASS*compression/p_avg.min*"])
    doc = json.loads((pytester.path / "out.json").read_text())
    cases = {c["name"]: c for c in doc["cases"]}
    assert set(cases) == {"magnitude-30", "heads-50", "int8"}
    dense = {c["dense_score"] for c in cases.values()}
    assert len(dense) == 1 and dense.pop() > 0.7
    for case in cases.values():
        assert case["retention"] == pytest.approx(case["compressed_score"] / case["dense_score"])
        assert case["score"] == pytest.approx(case["retention"])
        assert case["size_mb"] > 0 and case["latency_ms"] > 0
    assert abs(cases["magnitude-30"]["measured_sparsity"] - 0.3) <= 0.01
    assert cases["heads-50"]["params"] < cases["heads-50"]["dense_params"]
    assert cases["int8"]["size_mb"] < cases["int8"]["dense_size_mb"]
    records = [json.loads(prop.get("value")) for prop in ET.parse(pytester.path / "junit.xml").iter("property")
               if prop.get("name") == "flex_result"]
    assert [r["dense_reused"] for r in records] == [False, "memo", "memo"]
    assert (pytester.path / "report" / "compression-tiny-bert0.png").stat().st_size > 0


def test_unsupported_architecture_fails_at_collection(pytester: pytest.Pytester, suite_text,
                                                      tiny_model: Path, tmp_path: Path) -> None:
    electra = tmp_path / "electra"
    AutoModelForSequenceClassification.from_config(ElectraConfig(**TINY, embedding_size=32)).save_pretrained(electra)
    models.load_tokenizer(str(tiny_model)).save_pretrained(electra)
    text = suite_text(COMPRESSION.replace("{method: magnitude, sparsity: [0.3]}", "{method: layers, keep: 1}"))
    pytester.makefile(".flex.yaml", toy=text.replace(f"model: {tiny_model}", f"model: {electra}"))
    result = pytester.runpytest("-m", "compression", "-k", "heads or layers", "--flex-json=out.json")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*toy.flex.yaml:*: compression/layers-1: model '*electra': method 'layers' knows "
                                 "the layers and heads of bert, distilbert, roberta models; this model is 'electra'*"])
    assert "Traceback" not in result.stdout.str()
