"""The packaged task-kind demo data (suites/kinds_data) is what its script builds from the corpus."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

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


def test_multiple_choice_items_have_four_distinct_choices_and_shuffled_labels() -> None:
    rows = [json.loads(line) for line in (DATA / "mc" / "train.jsonl").read_text(encoding="utf-8").splitlines()]
    assert all(len(set(row["choices"])) == 4 for row in rows)
    assert {row["label"] for row in rows} == {0, 1, 2, 3}
