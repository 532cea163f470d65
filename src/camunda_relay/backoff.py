"""Retry timing as data: one pure function, capped exponential backoff with full jitter."""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import timedelta

__all__ = ["Backoff"]


@dataclass(frozen=True)
class Backoff:
    """``delay(n)`` is uniform in ``[0, min(cap, base * 2**n)]`` (full jitter).

    Full jitter spreads the retries of many jobs (or many workers) so that they do not hit a
    recovering engine in lock step.
    """

    base: timedelta = timedelta(milliseconds=200)
    cap: timedelta = timedelta(seconds=30)

    def ceiling(self, attempt: int) -> float:
        """The largest delay, in seconds, for the ``attempt``-th retry (0-based)."""
        exponent = min(max(attempt, 0), 62)
        return min(self.cap.total_seconds(), self.base.total_seconds() * 2.0**exponent)

    def delay(self, attempt: int, rng: random.Random | None = None) -> float:
        """Seconds to wait before retry number ``attempt`` (0-based)."""
        source: random.Random = rng or _shared
        return source.uniform(0.0, self.ceiling(attempt))


_shared = random.Random()
