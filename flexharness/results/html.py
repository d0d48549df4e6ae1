"""One self-contained ``index.html`` of a results document: every table and every plot.

The tables are the Markdown report's own (so the two never disagree), turned
into HTML by a small converter for the subset flexharness writes: headings,
pipe tables, bullet lists, paragraphs, ``**bold**``, ``_italic_``/``*italic*``
and ``code``. Every string is escaped, since suite, case and model names are
user input; images are embedded as base64 data URIs and the page loads nothing
from anywhere else, so it can be attached to a CI run and opened offline.
"""

from __future__ import annotations

import base64
import html
import re
from pathlib import Path
from typing import Any, Mapping, Sequence

from flexharness.names import model_label

INLINE = re.compile(r"\\(?P<escaped>[\\`*\[\]<>|])|`(?P<code>[^`]+)`|\*\*(?P<bold>.+?)\*\*"
                    r"|(?<![\w*])\*(?P<star>(?:\\.|[^*\s\\])(?:(?:\\.|[^*\\])*(?:\\.|[^*\s\\]))?)\*(?![\w*])"
                    r"|(?<![\w])_(?P<under>(?:\\.|[^_\s\\])(?:(?:\\.|[^_\\])*(?:\\.|[^_\s\\]))?)_(?![\w])")
BULLET = re.compile(r"^\s*[-*]\s+")
ALIGN = {(True, True): "center", (False, True): "right", (True, False): "left"}

STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2rem auto; max-width: 1400px;
       padding: 0 1rem; color: #1d1d1f; line-height: 1.45; }
h1 { margin-bottom: .3rem; } h2 { border-bottom: 1px solid #ddd; padding-bottom: .2rem; margin-top: 2.2rem; }
h3 { margin-top: 1.6rem; }
table { border-collapse: collapse; margin: .6rem 0 1rem; font-size: .9rem; }
th, td { border: 1px solid #d0d0d0; padding: .25rem .6rem; vertical-align: top; white-space: nowrap; }
td.detail { white-space: normal; } .scroll { overflow-x: auto; }
th { background: #f3f3f3; } tr:nth-child(even) td { background: #fafafa; }
td.right, th.right { text-align: right; font-variant-numeric: tabular-nums; }
td.center, th.center { text-align: center; }
code { background: #f0f0f0; padding: 0 .2rem; border-radius: 3px; }
.verdict { display: inline-block; padding: .4rem .9rem; border-radius: 4px; font-weight: 600; }
.passed { background: #e3f4e6; color: #14532d; } .failed { background: #fde8e8; color: #7f1d1d; }
tr.pass td.verdict-cell { background: #cdebd3; color: #14532d; font-weight: 600; }
tr.fail td { background: #fdf0f0; } tr.fail td.verdict-cell { background: #f6c9c9; color: #7f1d1d; font-weight: 700; }
.figures { display: flex; flex-wrap: wrap; gap: 0 1.5rem; align-items: flex-start; }
figure { margin: 1rem 0 1.6rem; } figure img { max-width: 100%; height: auto; border: 1px solid #eee; }
figcaption { color: #555; font-size: .85rem; } .meta { color: #666; font-size: .85rem; }
"""


def inline(text: str) -> str:
    """Escape ``text`` and turn the inline Markdown it may hold into tags; code spans stay literal."""
    out, last = [], 0
    for match in INLINE.finditer(text):
        out.append(html.escape(text[last:match.start()]))
        kind = match.lastgroup
        body = match.group(kind)
        if kind == "escaped":
            out.append(html.escape(body))
        elif kind == "code":
            out.append(f"<code>{html.escape(body)}</code>")
        else:
            tag = "strong" if kind == "bold" else "em"
            out.append(f"<{tag}>{inline(body)}</{tag}>")
        last = match.end()
    return "".join(out) + html.escape(text[last:])


def _cells(line: str) -> list[str]:
    """The cells of a pipe-table row; an escaped ``\\|`` is part of a cell."""
    inner = re.sub(r"^\|", "", re.sub(r"(?<!\\)\|$", "", line.strip()))
    return [cell.strip() for cell in re.split(r"(?<!\\)\|", inner)]


def _is_rule(line: str) -> bool:
    return bool(re.fullmatch(r"\|?\s*:?-+:?\s*(\|\s*:?-+:?\s*)*\|?", line.strip()))


def _table(lines: Sequence[str]) -> str:
    """A pipe table: header row, alignment row, body rows."""
    aligns = [ALIGN.get((c.startswith(":"), c.endswith(":"))) for c in _cells(lines[1])]

    def row(cells: list[str], tag: str) -> str:
        return "<tr>" + "".join(f"<{tag}{_align(aligns, i)}>{inline(cell)}</{tag}>"
                                for i, cell in enumerate(cells)) + "</tr>"

    body = "\n".join(row(_cells(line), "td") for line in lines[2:])
    return (f'<div class="scroll"><table>\n<thead>{row(_cells(lines[0]), "th")}</thead>\n<tbody>\n{body}\n'
            "</tbody>\n</table></div>")


def _align(aligns: Sequence[str | None], i: int) -> str:
    return f' class="{aligns[i]}"' if i < len(aligns) and aligns[i] else ""


def markdown_to_html(text: str | Sequence[str]) -> str:
    """The Markdown subset flexharness writes, as HTML blocks (anything else is an escaped paragraph)."""
    lines = text.splitlines() if isinstance(text, str) else list(text)
    blocks, i = [], 0
    while i < len(lines):
        line = lines[i].rstrip()
        heading = re.match(r"(#{1,6})\s+(.*)", line)
        if not line.strip():
            i += 1
        elif heading:
            level = len(heading.group(1))
            blocks.append(f"<h{level}>{inline(heading.group(2).strip())}</h{level}>")
            i += 1
        elif line.lstrip().startswith("|") and i + 1 < len(lines) and _is_rule(lines[i + 1]):
            end = _run(lines, i + 2, lambda s: s.lstrip().startswith("|"))
            blocks.append(_table(lines[i:end]))
            i = end
        elif BULLET.match(line):
            end = _run(lines, i, lambda s: bool(BULLET.match(s)))
            items = ("<li>" + inline(BULLET.sub("", s)) + "</li>" for s in lines[i:end])
            blocks.append("<ul>\n" + "\n".join(items) + "\n</ul>")
            i = end
        else:
            end = _run(lines, i, lambda s: bool(s.strip()) and not s.lstrip().startswith(("|", "#", "- ", "* ")))
            end = max(end, i + 1)
            blocks.append("<p>" + "<br>\n".join(inline(s.strip()) for s in lines[i:end]) + "</p>")
            i = end
    return "\n".join(blocks)


def _run(lines: Sequence[str], start: int, keep: Any) -> int:
    """The index after the run of lines from ``start`` that ``keep`` accepts."""
    end = start
    while end < len(lines) and keep(lines[end]):
        end += 1
    return end


def data_uri(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def figure(path: Path, caption: str) -> str:
    return (f'<figure><img src="{data_uri(path)}" alt="{html.escape(caption, quote=True)}">'
            f"<figcaption>{html.escape(caption)}</figcaption></figure>")


def gate_table(doc: Mapping[str, Any]) -> str:
    """The gates, each row coloured by its verdict."""
    if not doc["gates"]:
        return "<p>No gates in these suites.</p>"
    rows = []
    for g in doc["gates"]:
        verdict = "pass" if g["passed"] else "fail"
        cells = [g["name"], g["suite"], model_label(g["model"])]
        rows.append(f'<tr class="{verdict}">' + "".join(f"<td>{html.escape(str(c))}</td>" for c in cells)
                    + f'<td class="verdict-cell">{verdict.upper()}</td>'
                    + f'<td class="detail">{html.escape(g["message"])}</td></tr>')
    head = "".join(f"<th>{h}</th>" for h in ("gate", "suite", "model", "verdict", "detail"))
    return f"<table>\n<thead><tr>{head}</tr></thead>\n<tbody>\n" + "\n".join(rows) + "\n</tbody>\n</table>"


def page(doc: Mapping[str, Any], parts: Mapping[str, Sequence[str]], summary_images: Sequence[Path],
         axis_images: Sequence[Path]) -> str:
    """The whole page. ``parts`` are Markdown lines: ``cases``, ``aggregates``, ``ranking``, ``comparisons``,
    ``sections`` (the axes'), ``notes``; the images are PNG files to embed."""
    passed = all(g["passed"] for g in doc["gates"])
    maps = [p for p in summary_images if p.name != "cases.png"]
    cases_png = [p for p in summary_images if p.name == "cases.png"]
    suites = ", ".join(dict.fromkeys(c["suite"] for c in doc["cases"]))
    body = [f"<h1>flexharness results: {html.escape(suites)}</h1>",
            f'<p class="meta">{html.escape(str(doc.get("created", "")))} · {len(doc["cases"])} cases</p>',
            f'<p class="verdict {"passed" if passed else "failed"}">{"PASSED" if passed else "FAILED"}: '
            f'{sum(g["passed"] for g in doc["gates"])} of {len(doc["gates"])} gates passed</p>',
            "<h2>Gates</h2>", gate_table(doc),
            "<h2>Flexibility per axis</h2>",
            *(figure(p, "P_avg against σ_P per model and axis: up and to the left is more flexible") for p in maps),
            markdown_to_html(parts["aggregates"]), markdown_to_html(parts["ranking"]),
            markdown_to_html(parts["comparisons"]),
            "<h2>Cases</h2>", *(figure(p, "Case scores, models side by side") for p in cases_png),
            markdown_to_html(parts["cases"])]
    if parts["sections"] or axis_images:
        body += ["<h2>Axes</h2>", markdown_to_html(parts["sections"]),
                 '<div class="figures">', *(figure(p, p.name) for p in axis_images), "</div>"]
    body.append(markdown_to_html(parts["notes"]))
    return ("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
            f"<title>flexharness results: {html.escape(suites)}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n"
            + "\n".join(block for block in body if block) + "\n</body>\n</html>\n")
