"""Golden keys: a case fingerprint and result-cache keys pinned as hex, so that moving or reshaping the code
that computes them provably invalidates no one's result cache (change a pinned value only on purpose, and
say in the commit that every user's cache is recomputed)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from flexharness.store import keys as cache
from flexharness.axes import AXES, load_suite
from flexharness.axes.fusion import ingredient_case, other_datasets
from flexharness.store.keys import KeyedAs
from flexharness.suite.spec import Planned

SUITE = """\
suite: golden
model: model
train: {epochs: 1, seeds: [0, 1], max_train_samples: 40}
datasets:
  reviews:
    files: {train: data.csv}
    text: text
    label: label
tasks:
  - {name: sentiment, dataset: reviews, metric: accuracy}
domains:
  dataset: reviews
  metric: macro_f1
  members:
    flights: {where: {text: {matches: flight}}}
    phones: {where: {text: {matches: phone}}}
  transfer: true
compression:
  task: sentiment
  methods:
    - {method: magnitude, sparsity: [0.5]}
    - {method: int8}
fusion: {task: sentiment, methods: [ensemble, uniform_soup]}
"""
ROWS = "text,label\n" + "".join(f"{w} flight {i},{'positive' if w == 'good' else 'negative'}\n"
                                for i in range(20) for w in ("good", "bad"))
PINNED = {
    "fingerprint tasks/sentiment": "6a5b3c2f5a271071",
    "key tasks/sentiment":
        "5f69ec6cd3f4ee9ce43b11396e57b9ece58486cb79c54d138ae81cf89d34029e",
    "key domains/flights":
        "44808862e4956ce0987589f14859d58ceb08d6fe4efa585543275273d1f7c054",
    "key compression/magnitude-50":
        "86bd0454fdd67b88e0b8a72ccb8c3972547d5948bf422890b848a301b57305b8",
    "weights tasks/sentiment":
        "3bf796b60272ea27d44e502cba4052aab2238246e3256c1188483c78753c1b09",
    # changed on purpose: a fusion item's key names the runs it combines (FusionAxis.cache_case); its runs'
    # own keys (below) are unchanged, so a rerun recomputes the fused scores from the stored runs, no fine-tune
    "key fusion/sentiment-ensemble":
        "0759093790d439bbf258c9efddbd9441a9cc9c2d5ce3f0b0e2541bca4bf34824",
    "key fusion ingredient seed1":
        "9afdca3aa7012ddf33e2a580dc5201b8e78c7a20f7accd6bda1092affd4bea9d",
}


@pytest.fixture
def golden_suite(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "config.json").write_text('{"model_type": "bert"}\n')
    (tmp_path / "data.csv").write_text(ROWS)
    (tmp_path / "golden.flex.yaml").write_text(SUITE)
    monkeypatch.setattr(cache, "library_versions", lambda: {"flexharness": "0", "torch": "0", "transformers": "0",
                                                           "datasets": "0"})
    return load_suite(tmp_path / "golden.flex.yaml")


def test_keys_are_the_pinned_ones(golden_suite) -> None:
    cases = {f"{c.axis}/{c.name}": c for c in golden_suite.cases}
    found = {"fingerprint tasks/sentiment": cache.case_fingerprint(cases["tasks/sentiment"])}
    for name in ("tasks/sentiment", "domains/flights", "compression/magnitude-50", "fusion/sentiment-ensemble"):
        planned = Planned(f"{name}[seed0]", cases[name], str(Path(golden_suite.path).parent / "model"), 0)
        found[f"key {name}"] = cache.result_key(planned, "cpu", AXES.get(cases[name].axis).keyed_as(cases[name]))[0]
    found["weights tasks/sentiment"] = cache.weights_key(cases["tasks/sentiment"], planned.model, 0, "cpu")
    recipe = ingredient_case(cases["fusion/sentiment-ensemble"])  # a fusion run, stored under a key of its own
    found["key fusion ingredient seed1"] = cache.result_key(Planned("fusion/sentiment[run-seed1]", recipe, planned.model,
                                                                    1), "cpu", KeyedAs(inputs=other_datasets(recipe)))[0]
    assert found == PINNED


def test_a_fusion_item_of_other_runs_has_another_key(golden_suite) -> None:
    """``runs: [0, 1]`` and ``runs: [0, 1, 2]`` start at the same seed: their items must not share a record."""
    case = next(c for c in golden_suite.cases if c.axis == "fusion" and c.name == "sentiment-ensemble")
    more = replace(case, train=replace(case.train, seeds=(0, 1, 2)))
    model = str(Path(golden_suite.path).parent / "model")
    axis = AXES.get("fusion")
    keys = {cache.result_key(Planned("fusion/x[seed0]", c, model, 0), "cpu", axis.keyed_as(c))[0] for c in (case, more)}
    assert len(keys) == 2
