"""Results documents rendered with the axes' own sections and plots (the axes are handed in: results sit
below the axes and never import them)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable, Mapping, Protocol

from flexharness.results import report


class Rendering(Protocol):
    """What an axis adds to the terminal summary, the Markdown report and the plots."""

    def terminal_lines(self, doc: Mapping[str, Any]) -> list[str]: ...

    def markdown_lines(self, doc: Mapping[str, Any]) -> list[str]: ...

    def plots(self, doc: Mapping[str, Any], directory: Path) -> list[Path]: ...


def summary_lines(doc: dict[str, Any], axes: Iterable[Rendering]) -> list[str]:
    return report.summary_lines(doc, [axis.terminal_lines for axis in axes])


def markdown(doc: dict[str, Any], axes: Iterable[Rendering]) -> str:
    return report.markdown(doc, [axis.markdown_lines for axis in axes])


def write_report_dir(directory: str | Path, doc: dict[str, Any], axes: Iterable[Rendering]) -> list[Path]:
    axes = list(axes)
    return report.write_report_dir(directory, doc, [axis.markdown_lines for axis in axes],
                                   [axis.plots for axis in axes])
