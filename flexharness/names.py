"""Short readable names for model references, shared by ids, tables and plots.

A leaf module: reports and rules name models without importing the engine.
"""

from __future__ import annotations

from pathlib import Path

PKG_SCHEME = "pkg://"


def model_label(ref: str) -> str:
    """The package of a pkg:// ref, else the last path part (a hub id's model name)."""
    if ref.startswith(PKG_SCHEME):
        return ref[len(PKG_SCHEME):].split("/", 1)[0]
    return Path(ref.rstrip("/")).name or ref
