"""Latency histograms that load-client processes fill and the benchmarks merge.

Buckets are logarithmic, 1% wide, over microseconds (bucket ``i`` holds latencies whose natural
log times 100 is ``i``), so a percentile is exact to 1% whatever the range, recording costs one
``log`` and merging two histograms is adding two lists.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Final

SCALE: Final = 100.0  # buckets per unit of natural log: 1% wide
BUCKETS: Final = 1900  # e^19 µs ~ 50 minutes: anything slower lands in the last bucket


def new_histogram() -> list[int]:
    return [0] * BUCKETS


def bucket(latency_us: int) -> int:
    if latency_us <= 1:
        return 0
    return min(int(math.log(latency_us) * SCALE), BUCKETS - 1)


def merge(histograms: Iterable[list[int]]) -> list[int]:
    total = new_histogram()
    for histogram in histograms:
        for index, count in enumerate(histogram):
            total[index] += count
    return total


def percentile_ms(histogram: list[int], fraction: float) -> float | None:
    """The latency (ms, bucket midpoint) below which ``fraction`` of the samples lie; None if empty."""
    count = sum(histogram)
    if count == 0:
        return None
    rank = max(1, math.ceil(fraction * count))
    seen = 0
    for index, n in enumerate(histogram):
        seen += n
        if seen >= rank:
            return math.exp((index + 0.5) / SCALE) / 1000.0
    raise AssertionError("unreachable: rank <= count")
