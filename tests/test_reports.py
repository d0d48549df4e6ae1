"""Reading results: models ranked per axis, the report and compare commands, live progress."""

from __future__ import annotations

import json
import os
import pty
import re
import subprocess
import sys
from pathlib import Path

import pytest

from flexharness.cli import main
from flexharness.results.compare import compare, ranking
from toy import build_tiny_bert

FAST = ("train: {epochs: 1, learning_rate: 3.0e-3, batch_size: 16, warmup_ratio: 0.0, seeds: [0, 1], "
        "max_train_samples: 64, max_eval_samples: 64}")
TWO = """tasks:
  - {name: polarity, dataset: reviews, metric: accuracy}
  - {name: polarity_f1, dataset: reviews, metric: [f1, accuracy]}
"""


@pytest.fixture(scope="module")
def wide_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_bert(tmp_path_factory.mktemp("wide-bert"), hidden=48)


def test_two_models_are_ranked_by_p_avg_with_sigma_p(pytester: pytest.Pytester, suite_text, tiny_model, wide_model,
                                                     capsys) -> None:
    pytester.makefile(".flex.yaml", toy=suite_text(TWO, train=FAST))
    result = pytester.runpytest(f"--model={tiny_model}", f"--model={wide_model}", "--flex-json=out.json",
                                "--flex-report-dir=report")
    result.assert_outcomes(passed=8)
    doc = json.loads((pytester.path / "out.json").read_text())
    assert len(doc["aggregates"]) == 2  # one per model
    (group,) = ranking(doc)
    best, second = group["models"]
    assert (best["rank"], second["rank"]) == (1, 2) and best["p_avg"] >= second["p_avg"]
    assert group["tied_by_test"]  # every pair has a paired P_avg test, so ranks are ranges
    result.stdout.fnmatch_lines(["ranking: toy / tasks (rank ranges from paired tests, σ_P and win rate beside it)",
                                 "rank *model *P_avg *σ_P *win rate *cases",
                                 f"{best['rank_label']}. *{Path(best['model']).name} *{best['p_avg']:.4f} *"
                                 f"{best['sigma_p']:.4f} *{best['win_rate']:.2f} *2/2",
                                 f"{second['rank_label']}. *{Path(second['model']).name} *{second['p_avg']:.4f} *"])
    summary = (pytester.path / "report" / "summary.md").read_text()
    assert "### Ranking: toy / tasks" in summary and re.search(rf"\| {best['rank_label']}\. +\| {Path(best['model']).name} +\|", summary)
    report_dir = pytester.path / "report"
    assert {p.name for p in report_dir.iterdir()} >= {"summary.md", "cases.png", "flexibility-toy.png", "index.html"}
    page = (report_dir / "index.html").read_text(encoding="utf-8")
    assert page.count('src="data:image/png;base64,') == len(list(report_dir.glob("*.png")))
    assert "Ranking: toy / tasks" in page and "Model comparisons (paired)" in page

    assert main(["report", str(pytester.path / "out.json"), "--markdown", str(pytester.path / "r.md")]) == 0
    printed = capsys.readouterr().out
    assert "ranking: toy / tasks" in printed and "tasks/polarity_f1" in printed
    assert (pytester.path / "r.md").read_text().startswith("# flexharness results")

    for name, model in (("a.json", tiny_model), ("b.json", wide_model)):
        part = {**doc, "cases": [c for c in doc["cases"] if c["model"] == str(model)],
                "aggregates": [a for a in doc["aggregates"] if a["model"] == str(model)]}
        (pytester.path / name).write_text(json.dumps(part))
    a, b = (json.loads((pytester.path / n).read_text()) for n in ("a.json", "b.json"))
    rows = {r["name"]: r for r in compare(a, b)["cases"]}
    for case in a["cases"]:
        other = next(c for c in b["cases"] if c["name"] == case["name"])
        assert rows[case["name"]]["delta"] == pytest.approx(other["score"] - case["score"])
    assert main(["compare", str(pytester.path / "a.json"), str(pytester.path / "b.json"),
                 "--markdown", str(pytester.path / "cmp.md")]) == 0
    printed = capsys.readouterr().out
    delta = rows["polarity"]["delta"]
    assert f"{delta:+.4f}" in printed and "tasks/P_avg" in printed
    assert re.search(r"\| case +\| +A \| A 95 % CI +\| +B \| B 95 % CI +\| +B − A \| verdict +\|",
                     (pytester.path / "cmp.md").read_text())
    interval = next(c["interval"] for c in a["cases"] if c["name"] == "polarity")
    assert f"[{interval['low']:.4f}, {interval['high']:.4f}]" in printed  # each side's interval beside its score


def test_compare_is_direction_aware_and_lists_unmatched_cases() -> None:
    def doc(model: str, scores: dict[str, float], higher: bool = True) -> dict:
        return {"cases": [{"suite": "s", "model": model, "axis": "tasks", "name": n, "score": v,
                           "higher_is_better": higher} for n, v in scores.items()], "aggregates": [], "gates": []}

    rows = {r["name"]: r["verdict"] for r in compare(doc("x", {"a": 0.5, "b": 0.5, "old": 1.0}),
                                                      doc("y", {"a": 0.6, "b": 0.4, "new": 1.0}))["cases"]}
    assert rows == {"a": "better (untested)", "b": "worse (untested)", "old": "only in A", "new": "only in B"}
    lower = compare(doc("x", {"a": 0.5}, higher=False), doc("y", {"a": 0.6}, higher=False))
    assert lower["cases"][0]["verdict"] == "worse (untested)"


def test_report_of_a_file_that_is_not_results_says_so(tmp_path: Path, capsys) -> None:
    (tmp_path / "x.json").write_text('{"hello": 1}')
    assert main(["report", str(tmp_path / "x.json")]) == 2
    assert "is not a flexharness results file" in capsys.readouterr().err


def test_progress_lines_in_a_log(pytester: pytest.Pytester, suite_text) -> None:
    pytester.makefile(".flex.yaml", toy=suite_text(TWO, train=FAST))
    result = pytester.runpytest("--flex-progress=0.001", "-k", "polarity_f1 and seed0")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["flexharness: tasks/polarity_f1[[]seed0]  epoch 1/1  step 1/4  loss *  * ex/s  *s",
                                 "flexharness: tasks/polarity_f1[[]seed0]  epoch 1/1  step 4/4  loss *"])
    quiet = pytester.runpytest("--flex-progress=0", "--flex-no-cache", "-k", "polarity_f1 and seed0")
    assert "flexharness: tasks/" not in quiet.stdout.str()


def test_progress_rewrites_one_line_on_a_terminal(pytester: pytest.Pytester, suite_text) -> None:
    pytester.makefile(".flex.yaml", toy=suite_text(TWO, train=FAST))
    leader, follower = pty.openpty()
    command = [sys.executable, "-m", "pytest", "--flex-progress=0.001", "-k", "polarity and not f1 and seed0",
               "-p", "no:cacheprovider"]
    proc = subprocess.Popen(command, cwd=pytester.path, stdin=follower, stdout=follower, stderr=follower,
                            env={**os.environ, "COLUMNS": "100"})
    os.close(follower)
    chunks = []
    while True:
        try:
            chunk = os.read(leader, 4096)
        except OSError:  # the terminal is closed once the run has ended
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(leader)
    assert proc.wait(timeout=600) == 0
    out = b"".join(chunks).decode("utf-8", "replace")
    assert "\r    tasks/polarity[seed0]  epoch 1/1  step 4/4" in out
    assert "flexharness: tasks/" not in out  # no log lines on a terminal
    assert "1 passed" in out
