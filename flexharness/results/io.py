"""Reading and writing results files: atomic writes, strict JSON, a clear error for a file that is not one."""

from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any, Callable

from flexharness.errors import FlexError
from flexharness.files import RESULTS_LIMIT, read_text, replace_atomically
from flexharness.rules import documents

RESULTS_VERSION = 1   # the version of the results document; a merge refuses any other


class ResultsFileError(FlexError):
    """A results file given on the command line cannot be read."""


def read_results(path: str) -> dict[str, Any]:
    """A results document (``--flex-json``), or a :class:`ResultsFileError` that says why not."""
    try:
        doc = json.loads(read_text(path, RESULTS_LIMIT), parse_constant=documents.strict_constant)
    except OSError as exc:
        raise ResultsFileError(f"cannot read {path}: {exc.strerror or exc}") from None
    except ValueError as exc:
        raise ResultsFileError(f"{path} is not valid JSON: {exc}") from None
    except RecursionError:
        raise ResultsFileError(f"{path} is not a flexharness results file: it nests too deeply") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("cases"), list) or "aggregates" not in doc:
        raise ResultsFileError(f"{path} is not a flexharness results file (write one with --flex-json)")
    complaint = documents.problem(doc)
    if complaint:
        raise ResultsFileError(f"{path}: {complaint}; it is not a results file flexharness wrote")
    return doc


def write_json(path: str | Path, doc: dict[str, Any]) -> None:
    """Write atomically: a reader never sees half a file, even if the run is killed mid-write."""
    doc = json_safe(doc)
    write_atomic(path, lambda handle: json.dump(doc, handle, indent=2, sort_keys=False, allow_nan=False))


def json_safe(value: Any) -> Any:
    """NaN and infinities become null (no score): strict JSON, and one odd metric never loses the file."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


def unwritable(path: str | Path, folder: bool = False) -> str | None:
    """Why ``path`` (a file, or a folder when ``folder``) could not be written, or None.

    Asked at start-up, so that a typo costs seconds, not the whole run: the nearest
    folder that exists must take a new file (tried for real, which also catches a
    read-only file system), and an existing target must be of the right kind.
    """
    path = Path(path)
    if path.exists() and path.is_dir() != folder:
        return "it is a folder, not a file" if not folder else "it is a file, not a folder"
    if path.exists() and not folder and not os.access(path, os.W_OK):
        return "permission denied"
    parent = path if folder and path.exists() else path.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        return f"{parent} is not a folder"
    try:
        fd, probe = tempfile.mkstemp(dir=parent, prefix=".flexharness-probe-")
    except OSError as exc:
        return f"cannot create files in {parent} ({exc.strerror or exc})"
    os.close(fd)
    os.unlink(probe)
    return None


def write_atomic(path: str | Path, write: Callable[[Any], None]) -> None:
    def to_text(tmp: str) -> None:
        with open(tmp, "w", encoding="utf-8") as handle:
            write(handle)

    replace_atomically(Path(path), to_text)
