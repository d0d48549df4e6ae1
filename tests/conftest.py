from __future__ import annotations

import os
from pathlib import Path

# Imported here, once, so that pytester's in-process runs find them in sys.modules: re-importing
# datasets in a second run registers pyarrow extension types twice and fails.
import datasets  # noqa: F401
import peft  # noqa: F401
import pytest
import torch  # noqa: F401
import transformers  # noqa: F401

from toy import build_tiny_bert, sentiment_rows, write_csv

if os.environ.get("PYTEST_XDIST_WORKER"):
    # Under `pytest tests -n 2` each worker is one of two processes on (typically) two cores: one torch thread
    # each, and the same for the pytest runs the tests start in subprocesses, instead of two each and
    # oversubscribed cores. benchmarks/bench_tests.py measures the difference.
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))


# The modules whose tests run longest (`pytest tests -n 2 --durations=40`: the real Slurm 82 s, MiniLM
# against its random copy 50 s, DDP and FSDP 35 s) go first, so that the two xdist workers do not end
# with one of them alone on a long test. Whole modules move, so module-scoped fixtures are set up once.
SLOW_MODULES = ("test_slurm.py", "test_significance.py", "test_ddp.py")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    rank = {name: place for place, name in enumerate(SLOW_MODULES)}
    items.sort(key=lambda item: rank.get(item.path.name, len(SLOW_MODULES)))   # stable: the rest keep their order


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random-weight BERT (~40k parameters) saved with its tokenizer."""
    return build_tiny_bert(tmp_path_factory.mktemp("tiny-bert"))


@pytest.fixture(scope="session")
def toy_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_csv(tmp_path_factory.mktemp("data") / "reviews.csv", sentiment_rows(400))


TRAIN = "train: {epochs: 5, learning_rate: 3.0e-3, batch_size: 16, warmup_ratio: 0.0, seeds: [0]}"


@pytest.fixture
def suite_text(tiny_model: Path, toy_csv: Path):
    """Build suite YAML around the tiny model and toy data; callers add tasks and gates."""

    def make(body: str, train: str = TRAIN) -> str:
        return (f"suite: toy\nmodel: {tiny_model}\n{train}\n"
                f"datasets:\n  reviews:\n    files: {{train: {toy_csv}}}\n    label: label\n{body}")

    return make
