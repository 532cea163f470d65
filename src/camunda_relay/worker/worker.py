"""The worker: fetch and lock, run handlers, complete, and for reply topics correlate later.

This facade composes the parts and owns the lifecycle; each part fits in one sitting:

- :mod:`~camunda_relay.worker.poller`: the poll loop (fetch at most what the slots allow);
- :mod:`~camunda_relay.worker.slots`: lock slots and reply slots, released by structure;
- :mod:`~camunda_relay.worker.plain`: plain topics (run, keep the lock, complete or fail);
- :mod:`~camunda_relay.worker.intake`: a fetched reply task (record, complete);
- :mod:`~camunda_relay.worker.replies`: a reply job's runner (work, deliver, incident);
- :mod:`~camunda_relay.worker.recovery`: the journal lease, taking jobs over, the
  reconciler's sweep, orphans, the history check;
- :mod:`~camunda_relay.worker.outcomes`: completing and failing tasks in the engine;
- :mod:`~camunda_relay.worker.cancellation`: cancelling work whose instance no longer waits.

Each task runs as its own asyncio task, so one task's error never touches another; sync
handlers run on a thread pool, async ones on the loop. :meth:`Worker.shutdown` stops
fetching at once, lets in-flight work finish within the grace period, and never reports a
failure because of the shutdown: unfinished reply jobs stay in the journal and resume at the
next start, or at a peer at once (the lease is released).
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import uuid
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

from camunda_relay.backoff import Backoff
from camunda_relay.client import EngineClient
from camunda_relay.clock import SYSTEM, Clock
from camunda_relay.errors import ConfigurationError, JournalError
from camunda_relay.failpoints import Failpoints
from camunda_relay.journal import Journal, open_journal
from camunda_relay.journal.failing import FailpointJournal
from camunda_relay.nodes import RESOLVE_EVERY, Node
from camunda_relay.replies.cancellation import InstanceCheck
from camunda_relay.replies.correlator import Correlator
from camunda_relay.replies.incidents import Incidents
from camunda_relay.replies.reconciler import Reconciler
from camunda_relay.router import Router
from camunda_relay.settings import MAX_WORKER_ID, Settings
from camunda_relay.task import Task
from camunda_relay.tracing import OFF, Tracing
from camunda_relay.worker.cancellation import Watcher
from camunda_relay.worker.context import POLL_BACKOFF, Context, WorkerStats
from camunda_relay.worker.health import Health
from camunda_relay.worker.intake import Intake
from camunda_relay.worker.outcomes import Outcomes
from camunda_relay.worker.plain import Plain
from camunda_relay.worker.poller import Poller
from camunda_relay.worker.recovery import Recovery
from camunda_relay.worker.replies import Replies
from camunda_relay.worker.slots import Held, Slots

__all__ = ["JOURNAL_START_WAIT", "Worker", "default_worker_id"]

log = logging.getLogger(__name__)

JOURNAL_START_WAIT = timedelta(seconds=15)
"""How long a worker waits at start for a journal that does not answer (at most)."""


def default_worker_id() -> str:
    """Unique per process: host, pid and a random part (workers must not share ids)."""
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"


class Worker:
    """Runs the handlers of one or more routers against the engine."""

    def __init__(
        self,
        router: Router,
        settings: Settings,
        *,
        client: EngineClient | None = None,
        journal: Journal | None = None,
        worker_id: str | None = None,
        poll_backoff: Backoff = POLL_BACKOFF,
        failpoints: Failpoints | None = None,
        clock: Clock = SYSTEM,
        tracing: Tracing = OFF,
    ) -> None:
        if len(router) == 0:
            raise ValueError("the router has no handlers")
        self.router = router
        self.settings = settings
        self.worker_id = worker_id or settings.worker_id or default_worker_id()
        if len(self.worker_id) > MAX_WORKER_ID:
            raise ConfigurationError(
                f"the worker id has {len(self.worker_id)} characters; the engine keeps at "
                f"most {MAX_WORKER_ID}"
            )
        self._owns_client = client is None
        self.client = client or EngineClient(settings)
        # Durable by default (settings.journal, a SQLite file unless configured otherwise),
        # owned by this worker: its lease marks the jobs this process is working on.
        self.journal: Journal = journal or open_journal(
            settings.journal, owner=self.worker_id, lease=settings.journal_lease
        )
        slots = Slots(
            max_in_flight=settings.max_in_flight, max_pending_replies=settings.max_pending_replies
        )
        self.stats = WorkerStats(slots=slots)
        failpoints = failpoints or Failpoints()
        self._ctx = ctx = Context(
            worker_id=self.worker_id,
            settings=settings,
            router=router,
            client=self.client,
            # Its writes pass the journal's failpoints, when a test or the harness set one.
            journal=(
                FailpointJournal(self.journal, failpoints)
                if failpoints.journal_active
                else self.journal
            ),
            clock=clock,
            failpoints=failpoints,
            executor=ThreadPoolExecutor(
                max_workers=settings.max_in_flight, thread_name_prefix="relay-handler"
            ),
            poll_backoff=poll_backoff,
            slots=slots,
            stats=self.stats,
            tracing=tracing,
        )
        outcomes = Outcomes(ctx)
        self.correlator = Correlator(self.client, clock=clock, unavailable=poll_backoff)
        self._plain = Plain(ctx, outcomes)
        self._watcher = Watcher(ctx, InstanceCheck(self.client, self.correlator.catch_activities))
        self._replies = Replies(
            ctx, outcomes, self.correlator, Incidents(self.client), self._watcher
        )
        self._intake = Intake(ctx, outcomes, self._replies)
        self._outcomes = outcomes
        self._poller = Poller(ctx, outcomes, self._spawn)
        self._node_pollers: list[Poller] = []  # one per engine node, with several nodes
        self._recovery = recovery = Recovery(ctx, self._replies, None)
        # Instances waiting for one of our replies that no journal knows (a lost volume, a
        # job deleted by hand) are reported, given an incident, or resumed, as configured.
        messages = sorted({r.reply.message for r in router if r.reply is not None})
        if messages and settings.reconcile != "off":
            recovery.reconciler = Reconciler(
                self.client,
                self.journal,
                messages,
                action=settings.reconcile,
                min_age=settings.reconcile_min_age,
                resume=recovery.adopt,
            )
        self._started = False
        self._closed = False
        self._journal_refused = False  # the journal cannot be used at all: nothing to release

    @property
    def reconciler(self) -> Reconciler | None:
        return self._recovery.reconciler

    @property
    def clock(self) -> Clock:
        return self._ctx.clock

    @property
    def history_full(self) -> bool | None:
        """Whether the engine keeps full history (None: not told yet)."""
        return self._ctx.history_full

    # -- lifecycle -------------------------------------------------------------------------

    async def __aenter__(self) -> Worker:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.shutdown()

    def stop(self) -> None:
        """Stop fetching at once: no new fetch starts, every wait ends. Safe to repeat."""
        self._ctx.health.stopping()
        self._ctx.stop.set()

    @property
    def health(self) -> Health:
        """The worker's liveness and readiness, as a probe reads them (any thread)."""
        return self._ctx.health

    @property
    def stopping(self) -> bool:
        return self._ctx.stop.stopping

    async def shutdown(self, grace: timedelta | None = None) -> None:
        """Stop, let in-flight work finish within ``grace``, then release everything.

        Work still running after the grace period is cancelled without reporting a failure:
        plain tasks are offered again when their lock expires, reply jobs stay in the journal
        and the lease is released, so a peer takes them over at once.
        """
        self.stop()
        if self._closed:
            return
        self._closed = True
        seconds = (grace if grace is not None else self.settings.shutdown_grace).total_seconds()
        settle = asyncio.ensure_future(
            asyncio.gather(*(p.settle(seconds) for p in (self._poller, *self._node_pollers)))
        )
        cancelled = await self._ctx.runs.stop(seconds)
        if cancelled:
            log.warning("cancelled %d unfinished jobs at shutdown", cancelled)
        await asyncio.wait({settle}, timeout=seconds + 5)
        self._ctx.executor.shutdown(wait=False, cancel_futures=True)
        if self._owns_client:
            await self.client.aclose()
        try:
            if self._started and not self._journal_refused:  # else it holds no lease
                await self._ctx.journal.release()  # unfinished jobs: another worker takes them now
        except Exception as error:  # noqa: BLE001 - the lease then runs out by itself
            log.warning("could not release the journal lease at shutdown (%s)", error)
        finally:
            await self.journal.close()
            self._ctx.tracing.flush()

    async def _start(self) -> None:
        """Announce this worker in the journal, check the history, resume own jobs."""
        if self._started:
            return
        self._started = True
        if not await self._open_journal():
            return  # stopped while waiting for it
        await self._recovery.renew()
        await self._recovery.check_history()
        await self._check_json()
        await self._recovery.check_filters()
        await self._recovery.resume()

    async def _check_json(self) -> None:
        """Say once, at start, that the engine stores no Json variables (no Spin JSON data
        format, as the bundled Operaton engine): a result that needs one then fails its task,
        naming the cause, before anything is sent."""
        try:
            stores = await self.client.stores_json()
        except Exception as error:  # noqa: BLE001 - a probe only; the worker starts anyway
            log.debug("Json support not checked (%s)", type(error).__name__)
            return
        if stores is False:
            log.warning(
                "the engine at %s stores no Json variables (no Spin JSON data format, as the "
                "bundled Operaton engine): a result or reply variable that is a dict, a list or "
                "a str over 4,000 characters fails its task, saying so",
                self.settings.shown_url,
            )

    async def _open_journal(self) -> bool:
        """The first journal call; False when the worker was stopped meanwhile.

        A journal that cannot be used at all (damaged, not a journal, a folder, no place to
        create it) stops the worker with its one-line error; so does one that does not answer
        within ``CAMUNDA_JOURNAL_LEASE`` (15 s at most) at start: a wrong DSN, a database that
        is not there. Once running, an outage only pauses the reply topics. An empty journal
        (new, or lost) is swept for orphans at once."""
        ctx = self._ctx
        wait = min(self.settings.journal_lease, JOURNAL_START_WAIT).total_seconds()
        give_up = ctx.clock.monotonic() + wait
        attempt = 0
        while True:
            try:
                counts = await self.journal.counts()
                break
            except JournalError as error:
                if error.retryable and ctx.clock.monotonic() < give_up:
                    if attempt == 0:
                        log.debug("the journal does not answer (%s); trying again", error)
                    if not await ctx.stop.wait(ctx.poll_backoff.delay(attempt)):
                        return False
                    attempt += 1
                    continue
                self._journal_refused = True
                if error.retryable:
                    raise type(error)(f"{error}; no answer within {wait:g} s at start") from None
                raise
        if self.journal.durable and not any(counts.values()):
            self._recovery.sweep_now = True
        return True

    # -- running ---------------------------------------------------------------------------

    async def run(self) -> None:
        """Resume unfinished journal jobs, then fetch and run tasks until :meth:`stop`."""
        await self._start()
        log.info(
            "worker %s polling %s at %s (at most %d tasks in flight)",
            self.worker_id,
            ", ".join(self.router.topics),
            self.settings.shown_url,
            self.settings.max_in_flight,
        )
        recovery = self._recovery
        loops = [
            asyncio.ensure_future(self._watched(name, loop))
            for name, loop in (
                ("lease", recovery.keep_lease),
                ("claim", recovery.keep_claiming),
                ("reconcile", recovery.keep_sweeping),
                ("cancel", self._watcher.keep_watching),
            )
        ]
        try:
            await self._poll()
        finally:
            self.stop()
            await asyncio.wait(loops)

    async def _poll(self) -> None:
        """The poll loop; with several engine nodes (a list of URLs, or a name resolved to
        every address) one per node, started and ended as the nodes come and go."""
        ctx = self._ctx
        nodes = self.client.nodes
        await nodes.refresh()
        if not nodes.resolving and len(nodes.current) == 1:
            await self._watched(self._poller.name, self._poller.run)
            return
        running: dict[Node, tuple[Poller, asyncio.Future[None]]] = {}
        leaving: dict[Poller, asyncio.Future[None]] = {}
        try:
            while True:
                for node in [node for node in running if node not in nodes.current]:
                    # Its long poll in flight finishes; what it brings runs (Poller.leave).
                    poller, loop = running.pop(node)
                    poller.leave()
                    ctx.health.forget(poller.name)
                    leaving[poller] = loop
                leaving = {poller: loop for poller, loop in leaving.items() if not loop.done()}
                for node in nodes.current:
                    if node not in running:
                        poller = Poller(ctx, self._outcomes, self._spawn, node)
                        loop = asyncio.ensure_future(self._node_loop(poller))
                        running[node] = (poller, loop)
                ctx.slots.pollers = len(running)
                self._node_pollers = [poller for poller, _ in running.values()]
                self._node_pollers.extend(leaving)
                if not await ctx.stop.wait(RESOLVE_EVERY if nodes.resolving else None):
                    break
                await nodes.refresh()
        finally:
            loops = {loop for _, loop in running.values()} | set(leaving.values())
            if loops:
                await asyncio.wait(loops)

    async def _node_loop(self, poller: Poller) -> None:
        """One engine node's poll loop; its end is a liveness failure unless the node left
        or the worker stops."""
        try:
            await poller.run()
        finally:
            if not poller.left:
                self._ctx.health.ended(poller.name)

    async def _watched(self, name: str, loop: Callable[[], Awaitable[None]]) -> None:
        """Run one of the worker's loops; its end is a liveness failure unless stopping."""
        try:
            await loop()
        finally:
            self._ctx.health.ended(name)

    async def run_once(self, *, long_poll: timedelta = timedelta(0)) -> int:
        """Fetch once, run everything fetched to the end (replies delivered); return the
        number of tasks fetched. For tests and scripts: deterministic, no background."""
        await self._start()
        fetched = await self._poller.once(long_poll)
        for task, held in fetched:
            self._spawn(task, held)
        await self.drain()
        return len(fetched)

    async def resume(self) -> int:
        """One claim round now: start the unfinished journal jobs this worker will run that
        nobody runs (this worker id's own that no runner here holds too); returns how many
        started."""
        await self._recovery.renew()
        if self._ctx.history_full is None:
            await self._recovery.check_history()
        return await self._recovery.resume()

    async def check_cancelled(self) -> int:
        """One cancellation round now (the worker runs one every
        ``CAMUNDA_CANCEL_CHECK_INTERVAL``): cancel the reply jobs whose instances no longer
        wait for their replies; returns how many."""
        return await self._watcher.round()

    async def drain(self) -> None:
        """Wait until every job started so far has finished."""
        await self._ctx.runs.drain()

    def _spawn(self, task: Task, held: Held) -> None:
        """Run a fetched task with the slots its fetch took for it."""
        ctx = self._ctx
        registration = self.router[task.topic]
        if held.reply is not None:
            coroutine = self._intake.fetched(task, registration, held.lock, held.reply)
        else:
            coroutine = self._plain.run(task, registration, held.lock)
        if not ctx.runs.start(f"task:{task.id}", coroutine):
            held.release()
