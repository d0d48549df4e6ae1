"""The report directory: flexibility map and case plots, the self-contained index.html, compare with intervals.

Results documents are built by hand here (the shape of ``--flex-json``), so every
variant — one or many models, with or without intervals, a hostile suite name —
costs no fine-tuning; tests/test_reports.py runs the same code after a real run.
"""

from __future__ import annotations

import base64
import re
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from flexharness.cli import main
from flexharness.files import output_name
from flexharness.results import html, plots, report
from flexharness.results.compare import compare_lines, compare_markdown
from flexharness.results.io import write_json

HOSTILE = "<script>alert('x')</script>"
PNG = b"\x89PNG\r\n\x1a\n"


def ci(low: float, high: float) -> dict[str, Any]:
    return {"low": low, "high": high, "level": 0.95, "resamples": 1000}


def make_doc(models: int = 2, intervals: bool = True, suite: str = "toy") -> dict[str, Any]:
    """Two axes (tasks with two cases, compression with one), ``models`` models, intervals or none."""
    names = [f"org/model-{i}-with-a-rather-long-name" for i in range(models)]
    cases, aggregates = [], []
    for i, model in enumerate(names):
        for axis, case_names in (("tasks", ["sentiment", "polarity"]), ("compression", ["magnitude-after-50"])):
            scores = [0.8 - 0.1 * i - 0.05 * j for j in range(len(case_names))]
            for name, score in zip(case_names, scores):
                cases.append({"suite": suite, "model": model, "axis": axis, "name": name, "metric": "accuracy",
                              "higher_is_better": True, "seeds": {"0": score, "1": score}, "score": score,
                              "seed_std": 0.01, "status": "passed", "relative": axis == "compression",
                              "interval": ci(score - 0.03, score + 0.02) if intervals else None})
            p_avg = sum(scores) / len(scores)
            aggregates.append({"suite": suite, "model": model, "axis": axis, "n": len(scores), "missing": 0,
                               "p_avg": p_avg, "sigma_p": 0.025 if len(scores) > 1 else 0.0, "mean_seed_std": 0.01,
                               "higher_is_better": True,
                               "p_avg_interval": ci(p_avg - 0.02, p_avg + 0.02) if intervals else None,
                               "sigma_p_interval": ci(0.0, 0.05) if intervals else None})
    comparisons = [{"suite": suite, "axis": "tasks", "case": "P_avg", "model_a": names[0], "model_b": names[1],
                    "difference": -0.1, "low": -0.14, "high": -0.06, "p_value": 0.001, "p_adjusted": 0.002,
                    "test": "paired bootstrap", "mde": 0.03, "eval_examples": None, "correction": "holm"}] \
        if intervals and models > 1 else []
    gates = [{"suite": suite, "model": names[0], "name": "tasks/p_avg.min", "passed": True, "value": 0.775,
              "threshold": 0.6, "message": "p_avg.min = 0.7750, required >= 0.6: ok"},
             {"suite": suite, "model": names[-1], "name": "case_min", "passed": False, "value": 0.3,
              "threshold": 0.9, "message": "below 0.9: tasks/polarity"}]
    return {"version": 1, "created": "2026-11-29T12:00:00+00:00", "cases": cases, "aggregates": aggregates,
            "transfer": [], "gates": gates, "comparisons": comparisons, "win_rates": []}


def axis_section(doc: dict[str, Any]) -> list[str]:
    return ["", "### Toy axis section", "", "| knob | value |", "|---|---:|", "| depth | 3 |"]


def axis_plot(doc: dict[str, Any], directory: Path) -> list[Path]:
    plt = plots.pyplot()
    fig, ax = plt.subplots()
    ax.plot([0, 1], [0, 1])
    path = directory / "toy-axis.png"
    fig.savefig(path)
    plt.close(fig)
    return [path]


def test_index_html_holds_every_table_and_every_plot_and_nothing_from_outside(tmp_path: Path) -> None:
    doc = make_doc(models=3, suite=HOSTILE)
    written = report.write_report_dir(tmp_path, doc, [axis_section], [axis_plot])
    pngs = sorted(p for p in tmp_path.iterdir() if p.suffix == ".png")
    assert {p.name for p in pngs} == {"cases.png", output_name("flexibility", HOSTILE), "toy-axis.png"}
    assert {p.name for p in written} == {p.name for p in pngs} | {"summary.md", "index.html"}
    page = (tmp_path / "index.html").read_text(encoding="utf-8")
    for png in pngs:
        assert f'src="data:image/png;base64,{base64.b64encode(png.read_bytes()).decode()}"' in page
    assert page.count("<img ") == len(pngs)
    for heading in ("P_avg 95 % CI", "σ_P 95 % CI", "± seed std", "Ranking:", "Model comparisons (paired)",
                    "Toy axis section", "<td class=\"right\">3</td>"):
        assert heading in page
    assert page.count("<table>") == 7  # gates, aggregates, 2 rankings (tasks, compression), comparisons, cases, toy
    assert "[0.7700, 0.8200]" in page  # a case interval
    assert '<tr class="pass">' in page and '<tr class="fail">' in page
    assert "<script" not in page and html.html.escape(HOSTILE) in page
    assert not re.search(r"https?:", page) and "url(" not in page and "@import" not in page


def test_summary_md_is_unchanged_by_the_split_into_parts(tmp_path: Path) -> None:
    doc = make_doc(models=2)
    text = report.markdown(doc, [axis_section])
    parts = report.markdown_parts(doc, [axis_section])
    for name in ("cases", "aggregates", "ranking", "comparisons", "sections", "gates"):
        assert "\n".join(parts[name]).strip() in text
    assert text.startswith("# flexharness results\n\n**FAILED**: 1 of 2 gates passed, 6 cases.\n\n| case ")
    assert text.index("| suite ") < text.index("### Ranking") < text.index("| gate ")


@pytest.mark.parametrize("models", [1, 3])
@pytest.mark.parametrize("intervals", [True, False])
def test_plots_with_and_without_intervals_and_models(tmp_path: Path, models: int, intervals: bool) -> None:
    doc = make_doc(models=models, intervals=intervals)
    written = plots.write_plots(doc, tmp_path)
    assert [p.name for p in written] == ["flexibility-toy.png", "cases.png"]
    for path in written:
        assert path.read_bytes().startswith(PNG) and path.stat().st_size > 5_000


def test_a_case_without_score_and_a_suite_without_p_avg_still_plot(tmp_path: Path) -> None:
    doc = make_doc(models=2)
    for row in doc["cases"][:2]:
        row.update(score=None, status="error", interval=None, seed_std=None)
    doc["aggregates"][0].update(p_avg=None, sigma_p=None, p_avg_interval=None, sigma_p_interval=None)
    assert [p.name for p in plots.write_plots(doc, tmp_path)] == ["flexibility-toy.png", "cases.png"]
    assert plots.write_plots({**doc, "cases": []}, tmp_path / "empty") == []


def test_error_bars_come_from_the_interval_or_else_the_seed_std() -> None:
    case = {"score": 0.8, "seed_std": 0.01, "interval": ci(0.75, 0.82)}
    kind, (below, above) = plots._case_error(case)
    assert kind == "interval" and below == pytest.approx(0.05) and above == pytest.approx(0.02)
    assert plots._case_error({**case, "interval": None}) == ("seed std", (0.01, 0.01))
    assert plots._case_error({**case, "interval": None, "seed_std": 0.0}) == ("seed std", None)


@given(st.floats(0, 1), st.floats(0, 1), st.floats(0, 1))
def test_error_bar_lengths_are_never_negative(centre: float, a: float, b: float) -> None:
    below, above = plots.error_bar(centre, ci(min(a, b), max(a, b)))
    assert below >= 0 and above >= 0
    assert plots.error_bar(centre, None) is None


def test_markdown_subset_becomes_html() -> None:
    text = "\n".join(["# Title", "", "**PASSED**: 3 of 3 gates, `a|b` and _a note_ and *stress*.", "next line",
                      "", "| name | score | mid |", "|---|---:|:---:|", "| tasks/a_b_c | 0.5 | x |",
                      "", "- gate x: pass -> FAIL", "- second", "### Sub <b>"])
    out = html.markdown_to_html(text)
    assert out.startswith("<h1>Title</h1>\n<p><strong>PASSED</strong>: 3 of 3 gates, <code>a|b</code> and "
                          "<em>a note</em> and <em>stress</em>.<br>\nnext line</p>")
    assert ('<thead><tr><th>name</th><th class="right">score</th><th class="center">mid</th></tr></thead>'
            in out)
    assert '<tr><td>tasks/a_b_c</td><td class="right">0.5</td><td class="center">x</td></tr>' in out
    assert "<ul>\n<li>gate x: pass -&gt; FAIL</li>\n<li>second</li>\n</ul>" in out
    assert out.endswith("<h3>Sub &lt;b&gt;</h3>")


@pytest.mark.parametrize(("source", "expected"), [
    ("<img src=x onerror=alert(1)>", "&lt;img src=x onerror=alert(1)&gt;"),
    ("`**not bold** <i>`", "<code>**not bold** &lt;i&gt;</code>"),
    ("**bold _and italic_**", "<strong>bold <em>and italic</em></strong>"),
    ("snake_case_name and 2*3*4", "snake_case_name and 2*3*4"),
    ('a "quoted" & \'single\'', "a &quot;quoted&quot; &amp; &#x27;single&#x27;"),
])
def test_inline_markup_is_escaped_and_converted(source: str, expected: str) -> None:
    assert html.inline(source) == expected


def test_compare_shows_each_sides_interval(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a, b = make_doc(models=1), make_doc(models=1)
    for case in b["cases"]:
        case["model"] = "other"
        case["score"] += 0.05
    for row in b["aggregates"]:
        row["model"] = "other"
    lines = compare_lines(a, b, ("a.json", "b.json"))
    assert re.search(r"tasks/sentiment\s+0\.8000  \[0\.7700, 0\.8200\]\s+0\.8500  \[0\.7700, 0\.8200\]\s+\+0\.0500",
                     "\n".join(lines))
    assert any("tasks/P_avg" in line and "[0.7550, 0.7950]" in line for line in lines)
    text = compare_markdown(a, b, ("a.json", "b.json"))
    assert re.search(r"\| case +\| +A \| A 95 % CI +\| +B \| B 95 % CI +\| +B − A \| verdict +\|", text)
    assert re.search(r"\| tasks/sentiment +\| +0\.8000 \| \[0\.7700, 0\.8200\] +\| +0\.8500 \| "
                     r"\[0\.7700, 0\.8200\] +\| +\+0\.0500 \| not distinguishable \(intervals\) +\|", text)
    plain = compare_markdown(make_doc(1, intervals=False), make_doc(1, intervals=False), ("a", "b"))
    assert re.search(r"\| case +\| +A \| +B \| +B − A \| verdict +\|", plain) and "95 % CI" not in plain

    write_json(tmp_path / "a.json", a)
    write_json(tmp_path / "b.json", b)
    assert main(["compare", str(tmp_path / "a.json"), str(tmp_path / "b.json")]) == 0
    assert "A 95 % CI" in capsys.readouterr().out


def test_each_panel_holds_only_its_own_suite_and_axis(tmp_path: Path) -> None:
    one, two = make_doc(models=2, suite="first"), make_doc(models=1, suite="second")
    doc = {**one, "cases": one["cases"] + two["cases"], "aggregates": one["aggregates"] + two["aggregates"]}
    panels = plots._panels(doc)
    assert [key for key, _ in panels] == [("first", "tasks"), ("first", "compression"), ("second", "tasks"),
                                          ("second", "compression")]
    plt = plots.pyplot()
    fig, ax = plt.subplots()
    second = [c for c in doc["cases"] if (c["suite"], c["axis"]) == ("second", "tasks")]
    assert plots._grouped_bars(ax, second, ["sentiment", "polarity"], plots.colours(doc)) == {"interval"}
    assert len(ax.patches) == 2  # one model in that suite: one bar per case, none from the other suite
    plt.close(fig)
    assert [p.name for p in plots.write_plots(doc, tmp_path)] == ["flexibility-first.png", "flexibility-second.png",
                                                                  "cases.png"]


def test_a_real_run_with_a_hostile_suite_name_writes_a_safe_page(pytester: pytest.Pytester, suite_text) -> None:
    train = ("train: {epochs: 1, learning_rate: 3.0e-3, batch_size: 16, warmup_ratio: 0.0, seeds: [0], "
             "max_train_samples: 64, max_eval_samples: 64}")
    body = "tasks:\n  - {name: polarity, dataset: reviews, metric: accuracy}\ngates:\n  tasks: {p_avg: {min: 0.0}}\n"
    text = suite_text(body, train=train).replace("suite: toy", 'suite: "<script>alert(1)</script>"')
    pytester.makefile(".flex.yaml", toy=text)
    result = pytester.runpytest("--flex-report-dir=report")
    result.assert_outcomes(passed=2)
    page = (pytester.path / "report" / "index.html").read_text(encoding="utf-8")
    assert "<script" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert page.count('src="data:image/png;base64,') == 2  # the flexibility map and the cases
    assert re.search(r"<td[^>]*>\[\d\.\d{4}, \d\.\d{4}\]</td>", page)  # the case interval from the run's own outputs
