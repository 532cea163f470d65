"""What the worker's parts share: settings, the engine client, the journal, the clock, the
slots and runs, the stop signal, the journal's health and the figures a person can read.

Each part (poller, plain, replies, recovery) gets this one object instead of a reference to
the whole worker, so no part reaches into another's state.
"""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from camunda_relay.backoff import Backoff
from camunda_relay.client import EngineClient
from camunda_relay.clock import Clock
from camunda_relay.errors import JournalError
from camunda_relay.failpoints import Failpoints
from camunda_relay.journal import Journal
from camunda_relay.router import Router
from camunda_relay.settings import Settings
from camunda_relay.tracing import OFF, Tracing
from camunda_relay.worker.health import READY_SLACK, Health
from camunda_relay.worker.runs import Runs
from camunda_relay.worker.slots import Slots

__all__ = ["POLL_BACKOFF", "Context", "JournalHealth", "Stop", "WorkerStats"]

log = logging.getLogger(__name__)

POLL_BACKOFF = Backoff(base=timedelta(milliseconds=500), cap=timedelta(seconds=30))


@dataclass
class WorkerStats:
    """Figures a person (or the demo, or a health check) can read while the worker runs."""

    slots: Slots | None = field(default=None, repr=False)
    fetched: int = 0
    completed: int = 0
    failures_reported: int = 0
    bpmn_errors: int = 0
    replies_delivered: int = 0
    replies_failed: int = 0
    replies_deferred: int = 0  # handlers that handed out a reply token instead of a result
    dropped: int = 0
    replies_cancelled: int = 0  # reply jobs ended because their instance no longer waits
    tasks_cancelled: int = 0  # plain tasks whose handler was cancelled (the task is gone)
    taken_over: int = 0  # jobs another worker holds now (this one lost its lease)
    last_poll_ok: float | None = None  # the clock's monotonic time of the last good fetch
    engine_errors: int = 0
    journal_errors: int = 0

    @property
    def locked(self) -> int:
        """Tasks this worker holds a lock on now."""
        return self.slots.locks.used if self.slots is not None else 0

    @property
    def pending_replies(self) -> int:
        """Reply jobs whose work or delivery is pending in this worker now."""
        return self.slots.replies.used if self.slots is not None else 0


class Stop:
    """The stop signal; every wait of the worker goes through :meth:`wait` and answers a
    stop at once."""

    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._event = asyncio.Event()

    def set(self) -> None:
        self._event.set()

    @property
    def stopping(self) -> bool:
        return self._event.is_set()

    async def until(self) -> None:
        await self._event.wait()

    async def wait(self, seconds: float | None) -> bool:
        """Wait ``seconds`` (None: until the stop); False when the worker stops first."""
        if self.stopping:
            return False
        stopper = asyncio.ensure_future(self._event.wait())
        sleeper = asyncio.ensure_future(
            self._clock.sleep(seconds) if seconds is not None else asyncio.Event().wait()
        )
        try:
            await asyncio.wait({stopper, sleeper}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopper.cancel()
            sleeper.cancel()
        return not self.stopping

    async def race(self, future: asyncio.Future[Any]) -> bool:
        """Wait for ``future`` or the stop; True when the future is done."""
        stopper = asyncio.ensure_future(self._event.wait())
        try:
            await asyncio.wait({stopper, future}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopper.cancel()
        return future.done()


class JournalHealth:
    """Whether the journal took the last write: while it does not, no reply task is fetched
    (it could not be recorded). The lease renewal, which writes every few seconds, is the
    probe that brings it back."""

    def __init__(self) -> None:
        self._ok = True
        self._back = asyncio.Event()
        self._back.set()

    @property
    def ok(self) -> bool:
        return self._ok

    def failed(self, error: JournalError, doing: str) -> None:
        if self._ok:
            log.error(
                "the journal failed while it %s (%s): no reply task is fetched until it "
                "answers again",
                doing,
                error,
            )
        self._ok = False
        self._back.clear()

    def answered(self) -> None:
        if not self._ok:
            log.warning("the journal answers again; fetching reply tasks again")
        self._ok = True
        self._back.set()

    async def until_ok(self) -> None:
        await self._back.wait()


@dataclass
class Context:
    worker_id: str
    settings: Settings
    router: Router
    client: EngineClient
    journal: Journal
    clock: Clock
    failpoints: Failpoints
    executor: ThreadPoolExecutor
    poll_backoff: Backoff
    slots: Slots
    stats: WorkerStats
    runs: Runs = field(default_factory=Runs)
    stop: Stop = field(init=False)
    journal_health: JournalHealth = field(default_factory=JournalHealth)
    history_full: bool | None = None  # does the engine keep the history the worker relies on?
    tracing: Tracing = OFF
    health: Health = field(init=False)

    def __post_init__(self) -> None:
        self.stop = Stop(self.clock)
        settings = self.settings
        window = (settings.long_poll + settings.request_timeout).total_seconds() + READY_SLACK
        journal_health = self.journal_health
        self.health = Health(self.clock, engine_window=window, journal_ok=lambda: journal_health.ok)

    @property
    def reply_topics(self) -> tuple[str, ...]:
        return tuple(r.topic for r in self.router if r.reply is not None)

    @property
    def filter_keys(self) -> dict[str, str]:
        """Each reply topic's fetch filters' key: the jobs this worker may take over."""
        return {r.topic: r.filter_key for r in self.router if r.reply is not None}
