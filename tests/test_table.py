"""The one table renderer: terminal and Markdown from the same rows, names shown as written, None as '-'."""

from __future__ import annotations

import re

from hypothesis import given, settings
from hypothesis import strategies as st

from flexharness.axes.compression import CompressionAxis
from flexharness.axes import compression_report
from flexharness.names import model_label
from flexharness.results import html, report, table
from flexharness.results.table import Table

ROWS = (("tasks/a", 0.81234, 3, None), ("tasks/b", None, 12, -0.05))
TOY = Table("toy title", ("case", "score", "n", "gain"), ROWS, text=("case",),
            formats={"score": ".4f", "gain": "+.4f"}, heading="Toy", notes=("a note",))


def _markdown_rows(lines: list[str]) -> list[list[str]]:
    """The cells of each pipe-table line, split and unescaped as the HTML page reads them."""
    return [[html.html.unescape(html.inline(cell)) for cell in html._cells(line)] for line in lines
            if line.startswith("|")]


def test_terminal_and_markdown_show_the_same_cells() -> None:
    shown = [["tasks/a", "0.8123", "3", "-"], ["tasks/b", "-", "12", "-0.0500"]]
    assert TOY.cells() == shown
    terminal = table.terminal_lines([TOY])
    assert terminal[:2] == ["", "toy title"] and terminal[-1] == "a note"
    assert [line.split() for line in terminal[2:-1]] == [list(TOY.columns), *shown]
    assert re.fullmatch(r"tasks/a\s+0\.8123\s+3\s+-", terminal[3])   # numbers right-aligned under their heads
    assert len({len(line) for line in terminal[2:-1]}) == 1
    markdown = table.markdown_lines([TOY])
    assert markdown[:3] == ["", "### Toy", ""] and markdown[-2:] == ["", "a note"]
    rows = _markdown_rows(markdown)
    assert rows[0] == list(TOY.columns) and rows[2:] == shown
    assert re.fullmatch(r"\|:-+\|-+:\|-+:\|-+:\|", markdown[4])   # text left, numbers right


def test_none_renders_as_a_dash_in_every_column() -> None:
    empty = Table("", ("name", "x"), ((None, None),), text=("name",), formats={"x": ".4f"})
    assert empty.cells() == [["-", "-"]]
    assert table.terminal_lines([empty])[-1].split() == ["-", "-"]
    assert _markdown_rows(table.markdown_lines([empty]))[-1] == ["-", "-"]


def test_an_axis_renders_its_report_modules_tables() -> None:
    doc = {"cases": [{"axis": "compression", "name": "int8", "model": "m|odel", "sparsity": None,
                      "measured_sparsity": 0.5, "compressed_score": 0.7, "dense_score": 0.8, "retention": 0.875,
                      "params": 2_000_000, "size_mb": 1.5, "latency_ms": None, "dense_from": {"trained": 1}}]}
    axis, tables = CompressionAxis(), compression_report.tables(doc)
    assert axis.terminal_lines(doc) == table.terminal_lines(tables)
    assert axis.markdown_lines(doc) == table.markdown_lines(tables)
    (row,) = _markdown_rows(axis.markdown_lines(doc))[2:]
    assert row == ["int8", "m|odel", "-", "0.500", "0.7000", "0.8000", "0.8750", "2.00M", "1.5", "-"]


NAMES = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), min_size=1, max_size=12) \
    | st.sampled_from(["a|b", "x\ny", "tail\\", "`code`", "**bold**", "_it_", "<b>", "# head", "[l](u)", "\\|"])


@settings(max_examples=60, deadline=None)
@given(task=NAMES, model=NAMES)
def test_no_task_or_model_name_breaks_a_markdown_table(task: str, model: str) -> None:
    case = {"axis": "tasks", "name": task, "model": model, "metric": "accuracy", "score": 0.5, "seed_std": None,
            "seeds": {"0": 0.5}, "status": "passed"}
    lines = report.markdown_parts({"cases": [case], "aggregates": [], "gates": []})["cases"]
    assert len(lines) == 3 and all(line.startswith("|") and line.endswith("|") for line in lines)
    head, _, body = _markdown_rows(lines)
    assert len(body) == len(head)
    assert body[:2] == [f"tasks/{table.visible(task)}".strip(), table.visible(model_label(model)).strip()]
    page = html.markdown_to_html(lines)
    assert page.count("<tr>") == 2 and page.count("<td") == len(head)
