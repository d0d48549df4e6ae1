"""CoNLL files → a ``datasets.DatasetDict`` of sentences with ``tokens`` and ``tags`` list columns.

The format people have: one token per line (``TOKEN ... TAG``, separated by tabs or spaces), a blank
line between sentences, ``-DOCSTART-`` lines skipped. Which column holds the tag is the dataset's
``conll_tag_column`` (0-based; negative counts from the end, ``-1`` is the last). Files are read with
``files.read_text`` (regular files, a size limit), and errors give line numbers and counts, never the
file's text.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from flexharness.errors import DataError
from flexharness.files import RefusedFile, read_text
from flexharness.resources import resolve_path
from flexharness.spec import DatasetSpec

CONLL_LIMIT = 2 * 1024 ** 3   # bytes of one CoNLL file
DOCSTART = "-DOCSTART-"
TOKENS, TAGS = "tokens", "tags"


def sentences(text: str, tag_column: int) -> tuple[list[list[str]], list[list[str]], int | None]:
    """(tokens per sentence, tags per sentence, the first line without that column or None)."""
    words: list[list[str]] = []
    tags: list[list[str]] = []
    current: tuple[list[str], list[str]] = ([], [])
    for number, line in enumerate(text.splitlines(), start=1):
        fields = line.split()
        if not fields or fields[0] == DOCSTART:
            if current[0]:
                words.append(current[0])
                tags.append(current[1])
            current = ([], [])
            continue
        if len(fields) < 2 or not -len(fields) <= tag_column < len(fields) or tag_column in (0, -len(fields)):
            return words, tags, number
        current[0].append(fields[0])
        current[1].append(fields[tag_column])
    if current[0]:
        words.append(current[0])
        tags.append(current[1])
    return words, tags, None


def load(spec: DatasetSpec, tag_column: int) -> Any:
    """The dataset's CoNLL files, one split each."""
    import datasets

    splits = {}
    for split, ref in spec.files:
        path = resolve_path(ref, Path(spec.base_dir))
        try:
            text = read_text(path, CONLL_LIMIT, spec.encoding or "utf-8")
        except UnicodeDecodeError as exc:
            raise DataError(f"cannot decode CoNLL file of split '{split}' as {spec.encoding or 'utf-8'} "
                            f"({exc.reason}); set 'encoding'", *spec.locate("files")) from None
        except (RefusedFile, OSError) as exc:
            raise DataError(f"cannot read CoNLL file of split '{split}': {exc.strerror or exc}",
                            *spec.locate("files")) from None
        words, tags, bad = sentences(text, tag_column)
        if bad is not None:
            raise DataError(f"CoNLL file of split '{split}', line {bad}: no token and tag column "
                            f"{tag_column} (a line is TOKEN ... TAG); set 'conll_tag_column'",
                            *spec.locate("conll_tag_column" if dict(spec.lines).get("conll_tag_column")
                                         else "files"))
        splits[split] = datasets.Dataset.from_dict({TOKENS: words, TAGS: tags})
    return datasets.DatasetDict(splits)
