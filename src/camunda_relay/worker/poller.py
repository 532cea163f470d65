"""The poll loop: fetch and lock at most as many tasks as there are free slots, hand each to
its runner, and back off (capped, jittered) while the engine cannot be reached. "No tasks
right now" (an empty long poll) is not an error.

While the journal cannot record jobs, reply topics are left out of the fetch (plain topics
go on). A stop during a long poll leaves the request pending in the engine, which would lock
tasks that arrive for this (soon gone) worker until their locks expire: the request is
settled at shutdown and whatever it brings is given back.

The fetched tasks take their slots inside the fetch, before its reservation is released
(:mod:`camunda_relay.worker.slots`). An engine node that leaves (its address no longer
resolves: a scale-down) ends its loop with :meth:`Poller.leave`: a long poll in flight is
not abandoned (the engine would still lock what arrives, for a worker that never looks),
it finishes and what it brings runs like any other fetch.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from datetime import timedelta
from functools import partial

from camunda_relay.client import TopicRequest
from camunda_relay.errors import AuthenticationFailed, EngineError
from camunda_relay.nodes import Node
from camunda_relay.task import Task
from camunda_relay.worker.context import Context
from camunda_relay.worker.outcomes import Outcomes
from camunda_relay.worker.slots import Held

__all__ = ["Poller"]

log = logging.getLogger(__name__)

Spawn = Callable[[Task, Held], None]
Fetched = list[tuple[Task, Held]]  # the tasks of one fetch, each with its slots


class Poller:
    """The poll loop of one engine node (``node``; None: the client's nodes, failing over)."""

    def __init__(
        self, ctx: Context, outcomes: Outcomes, spawn: Spawn, node: Node | None = None
    ) -> None:
        self._ctx = ctx
        self._outcomes = outcomes
        self._spawn = spawn
        self._node = node
        self.name = "poll" if node is None else f"poll {node.label}"
        self._pending: asyncio.Task[Fetched] | None = None
        self._leaving = asyncio.Event()

    def leave(self) -> None:
        """The node left: end the loop, but only after a fetch in flight was handled (what
        it brings runs); a wait for slots or a back-off ends at once."""
        self._leaving.set()

    @property
    def left(self) -> bool:
        return self._leaving.is_set()

    def _topics(self) -> list[TopicRequest]:
        """The topics to fetch now: reply topics only while the journal answers and a reply
        slot is free."""
        ctx = self._ctx
        replies = ctx.journal_health.ok and ctx.slots.replies.free > 0
        return [
            TopicRequest(
                topic=registration.topic,
                lock_duration=registration.lock_duration or ctx.settings.lock_duration,
                variables=ctx.tracing.fetched_variables(registration.variables),
                local_variables=registration.local_variables,
                filters=registration.filters,
                extension_properties=registration.extension_properties,
            )
            for registration in ctx.router
            if registration.reply is None or replies
        ]

    def _capacity(self, topics: list[TopicRequest]) -> int:
        """Tasks to ask for: the free slots less what other nodes' polls asked for, at most
        an even share of the slots per node (one node's poll leaves room for the others)."""
        slots = self._ctx.slots
        free = slots.locks.free
        if any(self._ctx.router[t.topic].reply is not None for t in topics):
            free = min(free, slots.replies.free)
        share = -(-slots.locks.size // max(slots.pollers, 1))
        return max(min(free - slots.reserved, share), 0)

    async def run(self) -> None:
        ctx = self._ctx
        attempt = 0
        health = ctx.health
        # Liveness: a beat before every wait, with how long the wait may take (None: until
        # an event, such as a slot coming free, however long the handlers run).
        # A fetch may wait for a connection, connect and read: the request timeout each.
        poll = (ctx.settings.long_poll + 3 * ctx.settings.request_timeout).total_seconds()
        while not ctx.stop.stopping and not self.left:
            generation = ctx.slots.generation
            topics = self._topics()
            if not topics and not ctx.journal_health.ok:
                health.beat(self.name, None)
                await self._until(ctx.journal_health.until_ok)  # only reply topics here
                continue
            capacity = self._capacity(topics) if topics else 0
            if capacity <= 0:
                health.beat(self.name, None)
                await self._until(partial(ctx.slots.released_since, generation))
                continue
            health.beat(self.name, poll)
            fetch = self._start(topics, capacity, ctx.settings.long_poll)
            if not await ctx.stop.race(fetch):
                self._pending = fetch
                break
            try:
                fetched = self._fetched(fetch)
            except Exception as error:  # noqa: BLE001 - a bug must not end the loop silently
                delay = ctx.poll_backoff.delay(attempt)
                attempt += 1
                self._failed(error, delay, attempt)
                if not self.left:
                    health.beat(self.name, delay)
                    await self._until(partial(ctx.clock.sleep, delay))
                continue
            attempt = 0
            if ctx.stop.stopping:
                await self.give_back(fetched)
                break
            for task, held in fetched:
                self._spawn(task, held)

    def _failed(self, error: Exception, delay: float, attempt: int) -> None:
        if isinstance(error, EngineError):
            self._ctx.stats.engine_errors += 1
            _log_poll_error(error, delay, attempt)
        else:
            log.exception("unexpected error in the poll loop", exc_info=error)

    async def once(self, long_poll: timedelta) -> Fetched:
        """One fetch (at least one task asked for), for run-once mode."""
        topics = self._topics()
        fetch = self._start(topics, max(self._capacity(topics), 1), long_poll)
        await asyncio.wait({fetch})
        return self._fetched(fetch)

    async def _until(self, condition: Callable[[], Awaitable[None]]) -> None:
        """Wait for ``condition``, the stop, or the node's leaving."""
        waiters = {
            asyncio.ensure_future(condition()),
            asyncio.ensure_future(self._leaving.wait()),
            asyncio.ensure_future(self._ctx.stop.until()),
        }
        try:
            await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waiters:
                waiter.cancel()

    def _start(
        self, topics: list[TopicRequest], capacity: int, long_poll: timedelta
    ) -> asyncio.Task[Fetched]:
        ctx = self._ctx
        ctx.slots.reserve(capacity)

        async def fetch() -> Fetched:
            try:
                with ctx.tracing.fetch() as span:
                    tasks = await ctx.client.fetch_and_lock(
                        ctx.worker_id,
                        topics,
                        max_tasks=capacity,
                        long_poll=long_poll,
                        node=self._node,
                    )
                    span.fetched(tasks)
                # The slots, before the reservation goes (no await in between).
                return [(task, self._hold(task)) for task in tasks]
            finally:
                ctx.slots.unreserve(capacity)

        return asyncio.ensure_future(fetch())

    def _hold(self, task: Task) -> Held:
        router = self._ctx.router
        return self._ctx.slots.hold(
            reply=task.topic in router and router[task.topic].reply is not None
        )

    def _fetched(self, fetch: asyncio.Task[Fetched]) -> Fetched:
        fetched = fetch.result()
        self._ctx.stats.last_poll_ok = self._ctx.clock.monotonic()
        self._ctx.health.engine_answered()
        self._ctx.stats.fetched += len(fetched)
        return fetched

    async def give_back(self, fetched: Fetched) -> None:
        """Unlock fetched tasks at once (fetched while stopping: nobody will run them)."""
        for task, held in fetched:
            try:
                await self._outcomes.give_back(task)
            finally:
                held.release()
        if fetched:
            log.info("gave back %d tasks fetched while stopping", len(fetched))

    async def settle(self, seconds: float) -> None:
        """Wait for a long poll left pending by the stop, and give back what it brings."""
        fetch, self._pending = self._pending, None
        if fetch is None:
            return
        await asyncio.wait({fetch}, timeout=seconds)
        if not fetch.done():
            fetch.cancel()
            await asyncio.wait({fetch})
            return
        if not fetch.cancelled() and fetch.exception() is None:
            await self.give_back(fetch.result())


def _log_poll_error(error: EngineError, delay: float, attempt: int) -> None:
    level = logging.WARNING if attempt <= 3 or attempt % 10 == 0 else logging.DEBUG
    if isinstance(error, AuthenticationFailed):
        level = logging.ERROR
    log.log(level, "fetch failed: %s; next try in %.1f s", error, delay)
