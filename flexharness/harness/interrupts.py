"""Faults that must not cost the run: SIGTERM, and suite files that fail to collect.

SIGTERM (a CI job cancelled, a pod evicted) stops the run the way Ctrl-C does,
so the summary and the results JSON still cover every finished case; a suite
file that fails to collect does not stop the others.
"""

from __future__ import annotations

import fnmatch
import signal
import threading
from pathlib import Path
from typing import Any, Iterable


def _raise_keyboard_interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt(f"received signal {signal.Signals(signum).name}")


def install_sigterm_handler() -> Any:
    """Make SIGTERM behave like Ctrl-C in the main thread; returns the handler to restore.

    Only a default handler is replaced: an embedding program's own handler wins.
    Returns None when nothing was installed.
    """
    if threading.current_thread() is not threading.main_thread():
        return None
    previous = signal.getsignal(signal.SIGTERM)
    if previous is not signal.SIG_DFL:
        return None
    signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)
    return previous


def restore_sigterm_handler(previous: Any) -> None:
    if previous is not None and signal.getsignal(signal.SIGTERM) is _raise_keyboard_interrupt:
        signal.signal(signal.SIGTERM, previous)


def only_suite_errors(failed_nodeids: Iterable[str], patterns: Iterable[str]) -> bool:
    """True when every collection error is a suite file's: then the other files may still run."""
    names = [Path(nodeid.partition("::")[0]).name for nodeid in failed_nodeids]
    patterns = list(patterns)
    return bool(names) and all(any(fnmatch.fnmatch(name, p) for p in patterns) for name in names)
