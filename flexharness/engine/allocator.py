"""Keep large freed blocks in the process heap during CPU training, instead of handing them back to the OS.

glibc's malloc serves every block above its mmap threshold (at most 32 MB by default) with a fresh
``mmap`` and unmaps it on free. A training step allocates its largest tensors anew every step — the dense
gradient of the word embeddings alone is 47 MB for all-MiniLM-L6-v2 — so each step page-faults that
memory in again and the kernel zeroes it page by page: filling one such tensor took 21 ms instead of 3 ms
on the development machine, about 7 % of a step (docs/speed.md). Raising the mmap and trim thresholds
lets freed blocks be reused, as the jemalloc/tcmalloc preloads that CPU training guides recommend do,
at the price of a heap that keeps up to ``THRESHOLD`` of free memory after the peak.

Left alone where the user chose an allocator: ``LD_PRELOAD`` set, or glibc's malloc tunables in the
environment.
"""

from __future__ import annotations

import ctypes
import functools
import os
import sys

THRESHOLD = 1 << 30          # bytes: blocks up to this come from the heap, and up to this much free heap is kept
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3   # mallopt parameters, from glibc's malloc.h
USER_SETTINGS = ("LD_PRELOAD", "MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_")


def for_device(device: str) -> bool:
    """Before a CPU run trains or predicts: :func:`keep_freed_blocks`; nothing for an accelerator."""
    return device == "cpu" and keep_freed_blocks()


@functools.lru_cache(maxsize=1)
def keep_freed_blocks() -> bool:
    """Raise glibc's mmap and trim thresholds once per process; True when it did (False off glibc, or where
    the environment already chose an allocator or malloc settings)."""
    if not sys.platform.startswith("linux") or any(os.environ.get(name) for name in USER_SETTINGS):
        return False
    if "malloc" in os.environ.get("GLIBC_TUNABLES", ""):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        return bool(libc.mallopt(M_MMAP_THRESHOLD, THRESHOLD)) and bool(libc.mallopt(M_TRIM_THRESHOLD, THRESHOLD))
    except (OSError, AttributeError):   # musl and other C libraries have no mallopt
        return False
