"""Small helpers every benchmark uses: time a callable, summarise samples."""

from __future__ import annotations

import statistics
import time
from collections.abc import Awaitable, Callable


def summary(samples_ms: list[float]) -> dict[str, float]:
    """Median and p99 (nearest rank) of samples in milliseconds."""
    ordered = sorted(samples_ms)
    p99 = ordered[min(len(ordered) - 1, max(0, round(0.99 * len(ordered)) - 1))]
    return {"median_ms": round(statistics.median(ordered), 4), "p99_ms": round(p99, 4), "n": len(ordered)}


def time_sync(fn: Callable[[], object], iterations: int, warmup: int = 20) -> dict[str, float]:
    for _ in range(warmup):
        fn()
    samples = []
    for _ in range(iterations):
        t0 = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - t0) * 1000)
    return summary(samples)


async def time_async(fn: Callable[[], Awaitable[object]], iterations: int, warmup: int = 20) -> dict[str, float]:
    for _ in range(warmup):
        await fn()
    samples = []
    for _ in range(iterations):
        t0 = time.perf_counter()
        await fn()
        samples.append((time.perf_counter() - t0) * 1000)
    return summary(samples)
