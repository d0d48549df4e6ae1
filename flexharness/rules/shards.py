"""Shard costs as plain numbers: estimates turned into seconds by earlier runs, and how even a plan is.

The estimate (``engine.cost``) counts FLOPs, but a tiny model's step is dominated by overheads that FLOPs
do not see, and an item already in the result cache costs nothing. Earlier runs' records say both: a
model's seconds per estimated FLOP, and which items will not train at all.
"""

from __future__ import annotations

import statistics
from typing import Hashable, Iterable, Mapping, Sequence

CACHED_COST = 1e-9   # an item found in the result cache: read, not trained (still planned, so it merges)


def rate(samples: Iterable[tuple[float, float]]) -> float | None:
    """Seconds per estimated FLOP from (seconds, FLOPs) pairs of one model's records: the median ratio, so
    one run on a busy machine does not decide it; None without a usable pair."""
    ratios = [seconds / flops for seconds, flops in samples if seconds > 0 and flops > 0]
    return statistics.median(ratios) if ratios else None


def calibrated(estimates: Mapping[Hashable, float], models: Mapping[Hashable, str], rates: Mapping[str, float],
               cached: Iterable[Hashable] = ()) -> dict[Hashable, float]:
    """Each item's cost in seconds where its model's rate is known, else at the median rate of the models
    that have one (the estimate's own unit when none has); an item in the result cache costs nothing."""
    fallback = statistics.median(rates.values()) if rates else 1.0
    free = set(cached)
    return {item: CACHED_COST if item in free else estimate * rates.get(models[item], fallback)
            for item, estimate in estimates.items()}


def shares(costs: Mapping[Hashable, float], assignment: Mapping[Hashable, int], count: int) -> list[float]:
    """Each shard's fraction of the run's cost (zero-cost runs count every shard as even)."""
    loads = [0.0] * count
    for group, shard in assignment.items():
        loads[shard] += costs[group]
    total = sum(loads)
    return [load / total if total > 0 else 1.0 / count for load in loads]


def plan_line(index: int, count: int, fractions: Sequence[float], kept: int, total: int, by: str,
              guessed: Sequence[str] = ()) -> str:
    """The one line ``--flex-shard`` prints: this shard's items and share, the largest share and the ideal."""
    note = f"; size guessed for {', '.join(guessed)} (not on this machine)" if guessed else ""
    return (f"flexharness: shard {index}/{count}: {kept} of {total} items, {fractions[index - 1]:.1%} of the "
            f"{'measured' if by == 'measured' else 'estimated'} cost (largest shard {max(fractions):.1%}, "
            f"ideal {1 / count:.1%}){note}")
