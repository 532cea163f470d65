"""Backpressure by structure: a task holds a :class:`Slot` from the fetch that brought it
until its part is done, and releasing is part of the structure (``with slot:``), never a
counter decremented by hand.

Two pools: *lock* slots (``max_in_flight``: tasks holding an engine lock, from the fetch
until completed, failed or given back) and *reply* slots (``max_pending_replies``: reply
jobs whose work or delivery is pending in this worker). The poll loop fetches at most as
many tasks as both pools have free; a reply task takes one of each. A slot is released once,
however often :meth:`Slot.release` is called.

With several engine nodes, one poll loop per node: a fetch in flight reserves what it asked
for (:meth:`Slots.reserve`), and the tasks it brings take their slots (:meth:`Slots.hold`)
before the reservation is given back, with no wait in between: another node's loop never
sees room that a fetched task is about to fill, so together they never lock more than
``max_in_flight``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["Held", "Pool", "Slot", "Slots"]


class Slot:
    """One unit of a :class:`Pool`, held until released (``with slot:`` releases on exit)."""

    __slots__ = ("_held", "_pool")

    def __init__(self, pool: Pool) -> None:
        self._pool = pool
        self._held = True

    @property
    def held(self) -> bool:
        return self._held

    def release(self) -> None:
        if self._held:
            self._held = False
            self._pool._give_back()

    def __enter__(self) -> Slot:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.release()


class Pool:
    """``size`` slots; :meth:`take` hands one out (past the size too: a job claimed from the
    journal must run; the poll loop asks :attr:`free` before it fetches)."""

    def __init__(self, name: str, size: int, on_release: Callable[[], None]) -> None:
        if size < 1:
            raise ValueError(f"{name} needs at least one slot, not {size}")
        self.name = name
        self.size = size
        self.used = 0
        self._on_release = on_release

    @property
    def free(self) -> int:
        return max(self.size - self.used, 0)

    def take(self) -> Slot:
        self.used += 1
        return Slot(self)

    def _give_back(self) -> None:
        self.used -= 1
        self._on_release()


@dataclass(frozen=True)
class Held:
    """The slots a fetched task holds from its fetch on: a lock slot, and a reply slot for a
    reply task."""

    lock: Slot
    reply: Slot | None = None

    def release(self) -> None:
        self.lock.release()
        if self.reply is not None:
            self.reply.release()


class Slots:
    """The worker's two pools, and a generation counter that moves on every release so the
    poll loop can wait for "a slot came free since I looked" without missing one."""

    def __init__(self, *, max_in_flight: int, max_pending_replies: int) -> None:
        self.generation = 0
        self._released = asyncio.Event()
        self.locks = Pool("max_in_flight", max_in_flight, self._bump)
        self.replies = Pool("max_pending_replies", max_pending_replies, self._bump)
        # With several engine nodes, one poll loop per node: each fetch in flight reserves
        # the tasks it asked for, so that together they never lock more than the slots.
        self.reserved = 0
        self.pollers = 1

    def reserve(self, count: int) -> None:
        self.reserved += count

    def hold(self, *, reply: bool) -> Held:
        """The slots of a task a fetch brought (taken before the fetch unreserves)."""
        return Held(self.locks.take(), self.replies.take() if reply else None)

    def unreserve(self, count: int) -> None:
        """A fetch ended: what it asked for but did not get is free again (wakes waiters)."""
        self.reserved -= count
        self._bump()

    def _bump(self) -> None:
        self.generation += 1
        self._released.set()

    async def released_since(self, generation: int) -> None:
        """Return once a slot of either pool was given back after ``generation`` was read."""
        while self.generation == generation:
            self._released.clear()
            await self._released.wait()
