"""Results documents rendered with every registered axis's own sections and plots."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from flexharness.axes import AXES
from flexharness.results import report


def summary_lines(doc: dict[str, Any]) -> list[str]:
    return report.summary_lines(doc, [axis.terminal_lines for axis in AXES])


def markdown(doc: dict[str, Any]) -> str:
    return report.markdown(doc, [axis.markdown_lines for axis in AXES])


def write_report_dir(directory: str | Path, doc: dict[str, Any]) -> list[Path]:
    return report.write_report_dir(directory, doc, [axis.markdown_lines for axis in AXES],
                                   [axis.plots for axis in AXES])
