"""Reading a file a user names, safely: only a regular file, and only up to a bounded size.

A FIFO blocks its reader forever, ``/dev/zero`` never ends, a directory or a
huge file exhausts memory: every reader of user-named files (suites, results,
baselines) goes through :func:`read_text`, which refuses them before reading.
The refusal is an :class:`OSError` whose ``strerror`` says why, so each
caller's existing "cannot read ..." message carries it unchanged.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

MiB = 1 << 20
SUITE_LIMIT = 1 * MiB        # a suite is a few kB; a larger one is not a suite
RESULTS_LIMIT = 256 * MiB    # results and baseline JSON: tens of thousands of cases fit in a few MiB

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
