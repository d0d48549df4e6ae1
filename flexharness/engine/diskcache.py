"""Arrays computed once and kept on disk: token ids (``runner``) and frozen features (``features``).

Tokenizing a large dataset, or running a model over it, can cost more than a
short fine-tuning run, and every pytest-xdist worker and every later run needs
the same result. Each result is one uncompressed ``.npz`` file named by a key
that hashes everything deciding it (the data's contents, the tokenizer's
definition, ``max_length``; for features also the model's files and the
device), so a changed input misses and nothing stale is reused.

One process computes, the others wait: the file is looked up and made under a
lock of its own (``filelock``), so two workers asking at once tokenize once.
It is written to a temporary name and renamed, so a killed run leaves the whole
file or none. It is read with ``allow_pickle=False`` (numbers only, no code);
a file that is damaged or does not have the shape asked for is recomputed with
an :class:`ArrayCacheWarning`.

The pytest side says where the files go (:func:`using`, around each item: beside the result cache,
``.pytest_cache/d/flexharness-arrays``); with no folder set (``--flex-no-cache``,
or the engine used on its own) everything is computed in memory only.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import time
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

import numpy as np

from flexharness.files import replace_atomically

LOG = logging.getLogger("flexharness")
COMPUTED, DISK, MEMORY = "computed", "disk", "memory"   # where a result came from
Arrays = dict[str, np.ndarray]
Check = Callable[[Mapping[str, np.ndarray]], "str | None"]   # what is wrong with loaded arrays, or None

_directory: Path | None = None


class ArrayCacheWarning(UserWarning):
    """A cached array file was damaged or of the wrong shape, and was recomputed."""


@contextlib.contextmanager
def using(directory: Path | None) -> Iterator[None]:
    """Keep arrays under ``directory`` inside the block (one item's run); None keeps them in memory only."""
    global _directory
    previous, _directory = _directory, directory
    try:
        yield
    finally:
        _directory = previous


def key_of(parts: Any) -> str:
    """sha256 of the canonical JSON of ``parts``: the name of the file that holds their result."""
    text = json.dumps(parts, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class Fetched:
    arrays: Arrays
    source: str      # COMPUTED or DISK
    seconds: float   # computing, or loading


def fetch(kind: str, key: str | None, compute: Callable[[], Arrays], check: Check, what: str) -> Fetched:
    """The arrays stored under ``kind/key``, else ``compute()``'s, stored before returning; a None key (an
    input not known yet) computes without storing.

    ``what`` names the result in the log line that says which it was, and in a warning about a damaged file.
    """
    from filelock import FileLock

    start = time.perf_counter()
    if _directory is None or key is None:
        return _logged(Fetched(compute(), COMPUTED, time.perf_counter() - start), kind, what)
    path = _directory / kind / f"{key}.npz"
    path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(f"{path}.lock"):
        found = _load(path, key, check, what)
        if found is not None:
            return _logged(Fetched(found, DISK, time.perf_counter() - start), kind, what)
        arrays = compute()
        _save(path, key, arrays)
    return _logged(Fetched(arrays, COMPUTED, time.perf_counter() - start), kind, what)


def _logged(fetched: Fetched, kind: str, what: str) -> Fetched:
    LOG.info("%s: %s %s in %.2f s", kind, fetched.source, what, fetched.seconds)
    return fetched


def _load(path: Path, key: str, check: Check, what: str) -> Arrays | None:
    """The arrays of ``path``; None when it is absent, or damaged (then one warning)."""
    if not path.exists():
        return None
    try:
        with np.load(path, allow_pickle=False) as stored:
            arrays = {name: stored[name] for name in stored.files}
        problem = "stored under another key" if str(arrays.pop("key", "")) != key else check(arrays)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        problem = f"unreadable ({type(exc).__name__})"
    if problem is None:
        return arrays
    warnings.warn(ArrayCacheWarning(f"array cache: ignored {path.parent.name}/{path.name} ({what}): {problem}; "
                                    "recomputing it"), stacklevel=3)
    return None


def _save(path: Path, key: str, arrays: Arrays) -> None:
    def write(tmp: str) -> None:
        with open(tmp, "wb") as handle:
            np.savez(handle, key=np.asarray(key), **arrays)

    replace_atomically(path, write)
