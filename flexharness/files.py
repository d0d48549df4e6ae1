"""Reading a file a user names, safely: only a regular file, and only up to a bounded size.

A FIFO blocks its reader forever, ``/dev/zero`` never ends, a directory or a
huge file exhausts memory: every reader of user-named files (suites, results,
baselines) goes through :func:`read_text`, which refuses them before reading.
The refusal is an :class:`OSError` whose ``strerror`` says why, so each
caller's existing "cannot read ..." message carries it unchanged. Files are
fingerprinted by content (:func:`path_fingerprint`) and written whole or not
at all (:func:`replace_atomically`, which never writes through a link already at the path). Every output
file name made from user strings (suite, case, task, model names) comes from :func:`output_name`.
"""

from __future__ import annotations

import functools
import hashlib
import os
import re
import stat
import tempfile
from pathlib import Path
from typing import Callable

MiB = 1 << 20
SUITE_LIMIT = 1 * MiB        # a suite is a few kB; a larger one is not a suite
RESULTS_LIMIT = 256 * MiB    # results and baseline JSON: tens of thousands of cases fit in a few MiB

_CHUNK = 1 << 20

_KINDS = ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO (named pipe)"),
          (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"))


class RefusedFile(OSError):
    """A path that is not a regular file, or is larger than its limit."""


def read_bytes(path: str | Path, limit: int) -> bytes:
    """The bytes of a regular file of at most ``limit`` bytes; :class:`RefusedFile` for anything else.

    The file is opened without blocking (a FIFO with no writer would block the
    ``open`` itself) and checked on the open descriptor, so a path swapped after
    the check cannot slip through; at most ``limit + 1`` bytes are ever read.
    """
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            kind = next((name for test, name in _KINDS if test(info.st_mode)), "not a regular file")
            raise RefusedFile(0, f"{kind}, not a regular file; give the path of a file", str(path))
        if info.st_size > limit:
            raise RefusedFile(0, f"{_size(info.st_size)}, larger than the {_size(limit)} limit", str(path))
        with os.fdopen(fd, "rb", closefd=False) as handle:
            data = handle.read(limit + 1)
    finally:
        os.close(fd)
    if len(data) > limit:  # grew after the check
        raise RefusedFile(0, f"larger than the {_size(limit)} limit", str(path))
    return data


def read_text(path: str | Path, limit: int, encoding: str = "utf-8") -> str:
    """:func:`read_bytes` decoded (a :class:`UnicodeDecodeError` as ``bytes.decode`` raises it)."""
    return read_bytes(path, limit).decode(encoding)


def _size(count: int) -> str:
    return f"{count / MiB:.0f} MiB" if count >= MiB else f"{count} bytes"


def replace_atomically(path: Path, write: Callable[[str], None]) -> None:
    """``write(temporary path)`` beside ``path``, then rename it into place: a run killed at any moment, or
    two processes writing at once, leave one whole file or none."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def path_fingerprint(path: Path) -> str:
    """Content hash of a file or of every file under a folder (names, sizes, bytes).

    Contents rather than modification times: a fresh CI checkout or a copied
    model has new mtimes but the same weights. The stat listing is only the
    memo key of this process, so a file rewritten in place is hashed again.
    """
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file() and not _hidden(p, path))
    listing = tuple((str(p.relative_to(path)) if p != path else p.name, *_stat(p)) for p in files)
    return _content_digest(str(path), listing)


def _stat(file: Path) -> tuple[int, int, int]:
    """Size, mtime and ctime: a rewrite changes the ctime even when size and mtime are put back."""
    info = file.stat()
    return info.st_size, info.st_mtime_ns, info.st_ctime_ns


def _hidden(file: Path, root: Path) -> bool:
    return any(part.startswith(".") or part == "__pycache__" for part in file.relative_to(root).parts)


@functools.lru_cache(maxsize=64)
def _content_digest(root: str, listing: tuple[tuple[str, int, int, int], ...]) -> str:
    total = hashlib.sha256()
    base = Path(root)
    for name, size, _, _ in listing:
        file = base if base.is_file() else base / name
        content = hashlib.sha256()
        with file.open("rb") as handle:
            for block in iter(lambda: handle.read(_CHUNK), b""):
                content.update(block)
        total.update(f"{name}\0{size}\0{content.hexdigest()}\n".encode())
    return total.hexdigest()


NAME_PART = 60   # characters of each part kept in a file name


def output_name(*parts: str, suffix: str = ".png") -> str:
    """The one way to make an output file name from user strings: a single safe path component.

    Anything but letters, digits, ``_`` and ``-`` becomes ``_`` (so ``/`` and ``..`` cannot leave the folder),
    and a name that had to change gets a short hash of the raw parts, so ``a/b`` and ``a_b`` never share a file.
    """
    safe = [re.sub(r"[^A-Za-z0-9_-]+", "_", part)[:NAME_PART] or "_" for part in parts]
    name = "-".join(safe)
    if safe != list(parts):
        name += "-" + hashlib.sha256("\0".join(parts).encode("utf-8", "surrogatepass")).hexdigest()[:8]
    return name + suffix
