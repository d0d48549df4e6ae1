"""Progress of long items (epoch, step, loss, examples per second) without breaking pytest's output.

On a terminal, one line is rewritten in place with ``\\r`` and stays as the
item's last state; in a CI log, where ``\\r`` would pile up, a plain line is
written every N seconds instead. Items that finish sooner print nothing.
Output is written with capturing suspended, the way pytest's live logging
does it. Under pytest-xdist the workers' output never reaches the terminal,
so progress shows in runs without ``-n``.
"""

from __future__ import annotations

import math
import shutil
import time
from typing import Any, Callable

TTY_REFRESH_S = 0.25   # at most four redraws a second on a terminal
TTY_FIRST_S = 1.0      # a terminal shows an item's line once it has run this long (or the interval, if shorter)


def describe(label: str, event: dict[str, Any]) -> str:
    """One line: ``tasks/x[seed0]  epoch 1/3  step 40/120  loss 0.6931  812 ex/s  5s``."""
    seconds = max(event["seconds"], 1e-9)
    rate = event.get("examples", 0) / seconds
    epochs = f"/{event['epochs']}" if "epochs" in event else ""
    steps = f"/{event['total_steps']}" if "total_steps" in event else ""
    loss = event["loss"]  # read back from the device every few steps only: unknown ('-') before the first read
    shown = f"{loss:.4f}" if isinstance(loss, float) and math.isfinite(loss) else "-"
    return (f"{label}  epoch {event['epoch']}{epochs}  step {event['step']}{steps}  loss {shown}  "
            f"{rate:.0f} ex/s  {event['seconds']:.0f}s")


class Progress:
    """A ``train.fine_tune`` progress callback that writes to pytest's terminal reporter."""

    def __init__(self, reporter: Any, capture: Any, label: str, interval: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.reporter = reporter
        self.capture = capture
        self.label = label
        self.interval = interval
        self.tty = bool(reporter.isatty)
        self.clock = clock
        self.due = clock() + (min(interval, TTY_FIRST_S) if self.tty else interval)
        self.live = False

    def __call__(self, event: dict[str, Any]) -> None:
        now = self.clock()
        last = self.live and event["step"] == event.get("total_steps")  # once shown, the end is shown too
        if now < self.due and not last:
            return
        self.due = now + (TTY_REFRESH_S if self.tty else self.interval)
        with self.capture.global_and_fixture_disabled():
            self._show(describe(self.label, event))
        self.live = True

    def _show(self, text: str) -> None:
        if not self.tty:
            self.reporter.write_line(f"flexharness: {text}")
            return
        if not self.live:
            self.reporter.ensure_newline()
        width = shutil.get_terminal_size().columns
        self.reporter.rewrite(f"    {text}"[: width - 1], erase=True, flush=True)


def for_item(config: Any, label: str, interval: float) -> Progress | None:
    """A progress callback for one item, or None where nothing can be shown (xdist worker, off, no terminal)."""
    if interval <= 0 or hasattr(config, "workerinput"):
        return None
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    capture = config.pluginmanager.get_plugin("capturemanager")
    if reporter is None or capture is None:
        return None
    return Progress(reporter, capture, label, interval)
