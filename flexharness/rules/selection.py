"""Greedy ensemble selection (Caruana et al. 2004): which runs of a library, combined, score best on rows held out.

Pure: the caller says how a multiset of runs scores (its output ensemble's score on the rows chosen on, never
the evaluation split); this module only decides which runs to take, so hypothesis can check its promises.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Callable, Sequence

MAX_STEPS = 50   # additions after the first run: a bound, so that a score that keeps creeping up still stops


@dataclass(frozen=True)
class Selection:
    """The library positions chosen, in the order they were added (a run may come back: its weight grows)."""

    chosen: tuple[int, ...]
    scores: tuple[float, ...]   # the score after each addition; the first is the best single run's
    stopped: str                # "no improvement" or "step limit"

    @property
    def weights(self) -> dict[int, int]:
        """Library position -> how many times it was chosen, in the order first chosen."""
        return dict(Counter(self.chosen))


def greedy_selection(size: int, score: Callable[[Sequence[int]], float], higher_is_better: bool = True,
                     max_steps: int = MAX_STEPS) -> Selection:
    """Start from the best single run; then add, with replacement, the run whose addition scores best, as long as
    that strictly improves the score, at most ``max_steps`` times. Ties go to the earlier run of the library.

    ``score(positions)`` scores the ensemble of the runs at ``positions`` (repeats count as weight).
    """
    if size < 1:
        raise ValueError("greedy ensemble selection needs a library of at least one run")

    def best(candidates: list[tuple[float, int]]) -> tuple[float, int]:
        return (max if higher_is_better else min)(candidates, key=lambda found: found[0])

    value, first = best([(score([i]), i) for i in range(size)])
    chosen, scores = [first], [value]
    for _ in range(max_steps):
        value, added = best([(score([*chosen, i]), i) for i in range(size)])
        if not (value > scores[-1] if higher_is_better else value < scores[-1]):
            return Selection(tuple(chosen), tuple(scores), "no improvement")
        chosen.append(added)
        scores.append(value)
    return Selection(tuple(chosen), tuple(scores), "step limit")
