"""Which prices a product sells at, at a moment: its own columns, or its latest price change in effect (调价).

Pure: the caller loads the product's changes (`PriceChange` rows, or cached copies of them) and passes
`now`; the hot sell path (`cloud.products.catalog`) keeps them cached, so a sale reads no price row.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime


@dataclass(frozen=True, slots=True)
class Prices:
    weekday_fen: int
    weekend_fen: int
    holiday_fen: int

    def for_day_type(self, day_type: str) -> int:
        """`day_type` is "weekday", "weekend" or "holiday" (`cloud.products.service.day_type`)."""
        return {"holiday": self.holiday_fen, "weekend": self.weekend_fen, "weekday": self.weekday_fen}[day_type]


@dataclass(frozen=True, slots=True)
class Change:
    """A price change as the pure function needs it (a `PriceChange` row, or its cached copy)."""

    id: int
    effective_at: datetime
    prices: Prices
    withdrawn: bool = False


def effective(base: Prices, changes: Iterable[Change], now: datetime) -> Prices:
    """The prices at `now`: the change with the latest `effective_at` <= now (the later id wins a tie),
    withdrawn ones ignored; `base` (the product's own columns) when none is in effect yet."""
    best: Change | None = None
    for c in changes:
        if c.withdrawn or c.effective_at > now:
            continue
        if best is None or (c.effective_at, c.id) > (best.effective_at, best.id):
            best = c
    return base if best is None else best.prices
