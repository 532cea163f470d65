"""The poll loop: fetch and lock at most as many tasks as there are free slots, hand each to
its runner, and back off (capped, jittered) while the engine cannot be reached. "No tasks
right now" (an empty long poll) is not an error.

While the journal cannot record jobs, reply topics are left out of the fetch (plain topics
go on). A stop during a long poll leaves the request pending in the engine, which would lock
tasks that arrive for this (soon gone) worker until their locks expire: the request is
settled at shutdown and whatever it brings is given back.
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

__all__ = ["Poller"]

log = logging.getLogger(__name__)

Spawn = Callable[[Task], None]


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
        self._pending: asyncio.Task[list[Task]] | None = None

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
        while not ctx.stop.stopping:
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
                tasks = self._fetched(fetch)
            except EngineError as error:
                ctx.stats.engine_errors += 1
                delay = ctx.poll_backoff.delay(attempt)
                attempt += 1
                _log_poll_error(error, delay, attempt)
                health.beat(self.name, delay)
                await ctx.stop.wait(delay)
                continue
            except Exception:
                # A bug must not end the loop silently: report it and go on after a pause.
                log.exception("unexpected error in the poll loop")
                delay = ctx.poll_backoff.delay(attempt)
                health.beat(self.name, delay)
                await ctx.stop.wait(delay)
                attempt += 1
                continue
            attempt = 0
            if ctx.stop.stopping:
                await self.give_back(tasks)
                break
            for task in tasks:
                self._spawn(task)

    async def once(self, long_poll: timedelta) -> list[Task]:
        """One fetch (at least one task asked for), for run-once mode."""
        topics = self._topics()
        fetch = self._start(topics, max(self._capacity(topics), 1), long_poll)
        await asyncio.wait({fetch})
        return self._fetched(fetch)

    async def _until(self, condition: Callable[[], Awaitable[None]]) -> None:
        waiter = asyncio.ensure_future(condition())
        try:
            await self._ctx.stop.race(waiter)
        finally:
            waiter.cancel()

    def _start(
        self, topics: list[TopicRequest], capacity: int, long_poll: timedelta
    ) -> asyncio.Task[list[Task]]:
        ctx = self._ctx
        ctx.slots.reserve(capacity)

        async def fetch() -> list[Task]:
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
                return tasks
            finally:
                ctx.slots.unreserve(capacity)

        return asyncio.ensure_future(fetch())

    def _fetched(self, fetch: asyncio.Task[list[Task]]) -> list[Task]:
        tasks = fetch.result()
        self._ctx.stats.last_poll_ok = self._ctx.clock.monotonic()
        self._ctx.health.engine_answered()
        self._ctx.stats.fetched += len(tasks)
        return tasks

    async def give_back(self, tasks: list[Task]) -> None:
        """Unlock fetched tasks at once (fetched while stopping: nobody will run them)."""
        for task in tasks:
            await self._outcomes.give_back(task)
        if tasks:
            log.info("gave back %d tasks fetched while stopping", len(tasks))

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
