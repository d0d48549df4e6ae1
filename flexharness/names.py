"""Short readable names for model references, shared by ids, tables and plots.

A leaf module: reports and rules name models without importing the engine.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

PKG_SCHEME = "pkg://"


def model_label(ref: str) -> str:
    """The package of a pkg:// ref, else the last path part (a hub id's model name)."""
    if ref.startswith(PKG_SCHEME):
        return ref[len(PKG_SCHEME):].split("/", 1)[0]
    return Path(ref.rstrip("/")).name or ref


def model_labels(refs: Iterable[str]) -> dict[str, str]:
    """A label per model that no other model of ``refs`` shares: the shortest ending of its path that tells it
    apart (``m1/tiny`` and ``m2/tiny``, where alone each would be ``tiny``); the whole ref as a last resort."""
    refs = list(dict.fromkeys(refs))
    depth = {ref: 1 for ref in refs}
    while True:
        labels = {ref: _ending(ref, depth[ref]) for ref in refs}
        shared = [ref for ref in refs if list(labels.values()).count(labels[ref]) > 1 and labels[ref] != ref]
        if not shared:
            return labels
        for ref in shared:
            depth[ref] += 1


def _ending(ref: str, depth: int) -> str:
    """The label of ``ref`` with ``depth`` path parts (1: :func:`model_label`)."""
    if depth == 1:
        return model_label(ref)
    parts = Path(ref[len(PKG_SCHEME):] if ref.startswith(PKG_SCHEME) else ref.rstrip("/")).parts
    return ref if depth > len(parts) else "/".join(parts[-depth:])
