"""Faults that must cost one item, never the run: out of memory, SIGTERM, broken suite files.

A case that runs out of memory fails with a hint and leaves its memory free
for the next case; SIGTERM (a CI job cancelled, a pod evicted) stops the run
the way Ctrl-C does, so the summary and the results JSON still cover every
finished case; a suite file that fails to collect does not stop the others.
"""

from __future__ import annotations

import fnmatch
import signal
import threading
import traceback
from pathlib import Path
from typing import Any, Iterable

from flexharness.errors import TrainingError, first_line
from flexharness.suite import TrainConfig


class OutOfMemoryAsFailure:
    """Turn an out-of-memory error into a :class:`TrainingError` that says what to lower.

    The error's traceback holds every frame of the failed step (model, activations,
    optimizer state, and closures over the model), and pytest keeps the last failure
    alive in ``sys.last_value``. Dropping that traceback, rather than chaining it, is
    what lets the memory go before the next case.
    """

    def __init__(self, config: TrainConfig) -> None:
        self.config = config

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: Any, exc: BaseException | None, tb: Any) -> bool:
        import torch

        if not isinstance(exc, torch.OutOfMemoryError):
            return False
        reason = first_line(exc, "out of memory")
        traceback.clear_frames(tb)
        exc.__traceback__ = None
        del exc, tb
        config = self.config
        raise TrainingError(
            f"out of memory ({reason[:200]}) at batch_size {config.batch_size}, "
            f"eval_batch_size {config.eval_batch_size}, max_length {config.max_length}; "
            "lower 'batch_size' (or 'eval_batch_size') or 'max_length' under 'train:', or run on a larger device"
        ) from None


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
