"""Time, injected: wall-clock time, monotonic time and sleeping, behind one small interface.

Every part of the worker that waits or compares times takes a :class:`Clock`: leases and
deadlines are wall-clock (they are stored, and compared across processes), timeouts and
backoff are monotonic, and every wait goes through :meth:`Clock.sleep`. Tests pass a
:class:`ManualClock` and move time through leases and deadlines instead of sleeping.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time
from typing import Protocol

__all__ = ["SYSTEM", "Clock", "ManualClock", "SystemClock"]


class Clock(Protocol):
    def wall(self) -> float:
        """Seconds since the epoch (leases, deadlines: values that are stored)."""
        ...

    def monotonic(self) -> float:
        """Seconds on a clock that never jumps (timeouts, backoff, ages)."""
        ...

    async def sleep(self, seconds: float) -> None:
        """Wait ``seconds`` (0 or less: yield to the loop once)."""
        ...


class SystemClock:
    """The real clocks: :func:`time.time`, :func:`time.monotonic`, :func:`asyncio.sleep`."""

    def wall(self) -> float:
        return time.time()

    def monotonic(self) -> float:
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(seconds, 0.0))


SYSTEM: Clock = SystemClock()


class ManualClock:
    """A clock that moves only when told (:meth:`advance`); sleepers wake when their time
    comes. Wall and monotonic time move together."""

    def __init__(self, *, wall: float = 1_800_000_000.0, monotonic: float = 1_000.0) -> None:
        self._offset = wall - monotonic
        self._now = monotonic
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._order = itertools.count()

    def wall(self) -> float:
        return self._now + self._offset

    def monotonic(self) -> float:
        return self._now

    async def sleep(self, seconds: float) -> None:
        if seconds <= 0:
            await asyncio.sleep(0)
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, (self._now + seconds, next(self._order), future))
        await future

    @property
    def sleepers(self) -> int:
        """How many sleeps are waiting for time to move."""
        return sum(1 for _, _, future in self._sleepers if not future.done())

    def next_wakeup(self) -> float | None:
        """The monotonic time the earliest sleeper waits for, if any."""
        live = [due for due, _, future in self._sleepers if not future.done()]
        return min(live) if live else None

    def advance(self, seconds: float) -> None:
        """Move time on by ``seconds`` and wake every sleeper whose time has come."""
        if seconds < 0:
            raise ValueError("time only moves forward")
        self._now += seconds
        while self._sleepers and self._sleepers[0][0] <= self._now:
            _, _, future = heapq.heappop(self._sleepers)
            if not future.done():
                future.set_result(None)
