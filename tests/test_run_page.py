"""One page per run from anywhere: ``flexharness report --html`` and ``merge --report-dir`` write the page a run's
``--flex-report-dir`` writes, self-contained and well-formed."""

from __future__ import annotations

import re
from html.parser import HTMLParser
from pathlib import Path

import pytest

from flexharness.cli import main

CHEAP = ("train: {epochs: 1, learning_rate: 3.0e-3, batch_size: 16, warmup_ratio: 0.0, seeds: [0], "
         "max_train_samples: 32, max_eval_samples: 32}")
ONE = ("tasks:\n  - {name: polarity, dataset: reviews, metric: accuracy}\n"
       "compression:\n  task: polarity\n  methods:\n    - {method: magnitude, sparsity: 0.5}\n")
VOID = {"meta", "img", "br", "hr", "link", "input"}


class Balance(HTMLParser):
    """Every tag that opens is closed, in order; void elements stand alone."""

    def __init__(self) -> None:
        super().__init__()
        self.stack: list[str] = []
        self.problems: list[str] = []

    def handle_starttag(self, tag: str, attrs: list) -> None:
        if tag not in VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag: str) -> None:
        if not self.stack or self.stack.pop() != tag:
            self.problems.append(f"</{tag}> at {self.getpos()}")


def well_formed(page: str) -> list[str]:
    parser = Balance()
    parser.feed(page)
    parser.close()
    return parser.problems + [f"<{tag}> never closed" for tag in parser.stack]


def test_report_and_merge_write_the_runs_own_page(pytester: pytest.Pytester, suite_text) -> None:
    pytester.makefile(".flex.yaml", toy=suite_text(ONE, train=CHEAP))
    pytester.runpytest("-p", "no:cacheprovider", "--flex-json=out.json", "--flex-report-dir=run").assert_outcomes(
        passed=2)
    assert main(["report", "out.json", "--html", "again"]) == 0
    assert main(["merge", "out.json", "-o", "merged.json", "--report-dir", "merged"]) == 0
    run, again, merged = (sorted(p.name for p in Path(d).iterdir()) for d in ("run", "again", "merged"))
    assert run == again == merged and {"index.html", "summary.md", "cases.png"} <= set(run)
    page = Path("run/index.html").read_text(encoding="utf-8")
    assert Path("again/index.html").read_text(encoding="utf-8") == page
    assert Path("again/summary.md").read_text() == Path("run/summary.md").read_text()
    merged_page = Path("merged/index.html").read_text(encoding="utf-8")
    assert "merged from 1 results files" in merged_page
    for text in (page, merged_page):
        assert well_formed(text) == []
        assert text.count("<img ") == len([n for n in run if n.endswith(".png")])
        assert not re.search(r"(src|href)=\"(?!data:)", text) and "url(" not in text and "<script" not in text


def test_a_page_folder_that_is_a_file_is_refused_first(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "blocker").write_text("a file")
    assert main(["report", str(tmp_path / "absent.json"), "--html", str(tmp_path / "blocker")]) == 2
    assert "flexharness report: --html: cannot write" in capsys.readouterr().err
    assert main(["merge", str(tmp_path / "absent.json"), "-o", str(tmp_path / "m.json"),
                 "--report-dir", str(tmp_path / "blocker")]) == 2
    assert "it is a file, not a folder" in capsys.readouterr().err
