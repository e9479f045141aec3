"""Timing shared by the collator benchmarks (imported by name: each benchmark runs with this folder on sys.path)."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def median_ms(call: Callable[[], T], repeats: int) -> tuple[float, T]:
    """Median wall-clock milliseconds per call over `repeats` calls, and the last call's result."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        result = call()
        times.append(1e3 * (time.perf_counter() - start))
    return statistics.median(times), result
