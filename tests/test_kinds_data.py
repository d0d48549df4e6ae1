"""The packaged task-kind demo data (suites/kinds_data) is what its script builds from the corpus."""
from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

DATA = Path(__file__).resolve().parent.parent / "suites" / "kinds_data"
FILES = sorted(p.relative_to(DATA) for p in DATA.rglob("*") if p.is_file() and p.suffix in {".jsonl", ".conll"})


@pytest.fixture(scope="module")
def rebuilt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("kinds_data")
    subprocess.run([sys.executable, str(DATA / "make.py"), "--out", str(out)], check=True)
    return out


def test_the_script_reproduces_the_committed_files_byte_for_byte(rebuilt: Path) -> None:
    built = sorted(p.relative_to(rebuilt) for p in rebuilt.rglob("*") if p.is_file())
    assert built == FILES
    for name in FILES:
        assert (rebuilt / name).read_bytes() == (DATA / name).read_bytes(), name


def test_every_answer_is_the_span_its_answer_start_points_at() -> None:
    for split in ("train", "validation"):
        for line in (DATA / "qa" / f"{split}.jsonl").read_text(encoding="utf-8").splitlines():
            row = json.loads(line)
            (text,), (start,) = row["answers"]["text"], row["answers"]["answer_start"]
            assert text and row["context"][start:start + len(text)] == text


def test_the_conll_and_jsonl_taggings_hold_the_same_sentences() -> None:
    for split in ("train", "validation"):
        blocks = (DATA / "ner" / f"{split}.conll").read_text(encoding="utf-8").strip().split("\n\n")
        conll = [[tuple(line.split(" ")) for line in block.split("\n")] for block in blocks]
        rows = [json.loads(line) for line in (DATA / "ner" / f"{split}.jsonl").read_text(encoding="utf-8").splitlines()]
        assert conll == [list(zip(row["tokens"], row["tags"])) for row in rows]


def _entity_names(split: str) -> set[str]:
    """The entities of a split as lower-cased word runs (a final 's dropped), read back from the JSONL."""
    names = set()
    for line in (DATA / "ner" / f"{split}.jsonl").read_text(encoding="utf-8").splitlines():
        row, current = json.loads(line), []
        for token, tag in [*zip(row["tokens"], row["tags"]), ("", "O")]:
            if tag.startswith("I-"):
                current.append(token.lower())
                continue
            if current:
                names.add(" ".join(current).removesuffix("'s"))
            current = [token.lower()] if tag.startswith("B-") else []
    return names


def test_no_validation_entity_is_named_by_a_training_sentence() -> None:
    """The tagging split is by name: validation asks for places and companies training never tagged."""
    train, validation = _entity_names("train"), _entity_names("validation")
    assert len(train) >= 20 and len(validation) >= 10
    assert not train & validation
    words = {t.lower() for line in (DATA / "ner" / "train.jsonl").read_text(encoding="utf-8").splitlines()
             for t in json.loads(line)["tokens"]}
    assert not {name for name in validation if " " not in name} & words


def test_multiple_choice_items_have_four_distinct_choices_and_shuffled_labels() -> None:
    rows = [json.loads(line) for line in (DATA / "mc" / "train.jsonl").read_text(encoding="utf-8").splitlines()]
    assert all(len(set(row["choices"])) == 4 for row in rows)
    assert {row["label"] for row in rows} == {0, 1, 2, 3}


def _check_module():
    spec = importlib.util.spec_from_file_location("kinds_check", DATA / "check.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _results(tmp_path: Path, reported: dict[str, dict[str, float]]) -> Path:
    """A results file of three cases (one per kind) and its stored outputs, written as a run writes them."""
    cases = [{"model": "m", "axis": "tasks", "name": name, "kind": kind, "metrics": reported[name]}
             for name, kind in (("mc", "multiple_choice"), ("ner", "token_classification"), ("qa", "extractive_qa"))]
    path = tmp_path / "out.json"
    path.write_text(json.dumps({"cases": cases}))
    arrays = {"0/labels": np.array([0, 2]), "0/outputs": np.array([[0.7, 0.2, 0.1], [0.5, 0.1, 0.4]]),
              "1/labels": np.array([[1, 2, 0, 5], [0, 0, -100, -100]]),
              "1/outputs": np.array([[1, 2, 0, 0], [1, 0, -100, -100]]),
              "2/labels": np.array(["The Delta\x1fDelta", "@united"]), "2/outputs": np.array(["delta!", "@united now"]),
              "index": np.array(json.dumps([{"model": "m", "axis": "tasks", "case": c["name"], "seed": 0} for c in cases]))}
    np.savez(tmp_path / "out.predictions.npz", **arrays)
    return path


def test_check_recomputes_each_kind_and_fails_on_a_wrong_report(tmp_path: Path) -> None:
    """By hand: 1 of 2 choices right; entities gold {ORG 0-1, T1 3}, predicted {ORG 0-1, T0 0 of row 2}:
    P 1/2, R 1/2; 4 of 6 words right; "delta!" matches a gold exactly, "@united now" has F1 2/3."""
    check = _check_module()
    right = {"mc": {"accuracy": 0.5}, "ner": {"entity_f1": 0.5, "token_accuracy": 4 / 6},
             "qa": {"exact_match": 0.5, "squad_f1": (1 + 2 / 3) / 2}}
    assert check.main(str(_results(tmp_path, right))) == 0
    wrong = dict(right, qa={"exact_match": 1.0, "squad_f1": (1 + 2 / 3) / 2})
    assert check.main(str(_results(tmp_path, wrong))) == 1
