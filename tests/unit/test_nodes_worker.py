"""The worker on several engine nodes: never more tasks locked than ``max_in_flight``, however
many nodes it polls; a node that leaves the name while its long poll is in flight gives what
the poll brings to the worker (it runs), not to its lock's end."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Awaitable, Callable
from datetime import timedelta
from functools import partial

import httpx

from camunda_relay import EngineClient, Router, Settings, Task, Worker
from camunda_relay.clock import ManualClock
from camunda_relay.nodes import RESOLVE_EVERY, Nodes
from tests.support.fake_engine import TOPIC, FakeEngine

WORKER = "w-nodes"


def _locked(fake: FakeEngine) -> int:
    """Tasks the worker holds a lock on in the engine now."""
    return sum(
        1
        for task in fake.tasks.values()
        if task.locked_by == WORKER and not task.done and not task.lock_expired
    )


async def _until(condition: Callable[[], bool], what: str, seconds: float = 30) -> None:
    async def wait() -> None:
        while not condition():
            await asyncio.sleep(0.005)

    try:
        await asyncio.wait_for(wait(), timeout=seconds)
    except TimeoutError:
        raise AssertionError(f"not within {seconds:g} s: {what}") from None


def _refilled(fake: FakeEngine, locked: int) -> bool:
    return _locked(fake) >= locked


def _finished(fake: FakeEngine, count: int) -> bool:
    return sum(task.done for task in fake.tasks.values()) >= count


class Gates:
    """A transport over one fake engine for every host; a host's fetches wait while its gate
    is closed, and each fetch answer notes how many tasks the worker holds locked."""

    def __init__(self, fake: FakeEngine) -> None:
        self.fake = fake
        self.open: dict[str, asyncio.Event] = defaultdict(asyncio.Event)
        self.waiting: dict[str, int] = defaultdict(int)
        self.most_locked = 0

    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self.handle)

    async def handle(self, request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/fetchAndLock"):
            host = request.url.host
            self.waiting[host] += 1
            try:
                await self.open[host].wait()
            finally:
                self.waiting[host] -= 1
            response = await self.fake.handle(request)
            self.most_locked = max(self.most_locked, _locked(self.fake))
            return response
        return await self.fake.handle(request)


def _router(handler: Callable[[Task], Awaitable[dict[str, object]]]) -> Router:
    router = Router()
    router.task(TOPIC)(handler)
    return router


def test_pollers_of_several_nodes_never_lock_more_than_max_in_flight() -> None:
    """Three nodes, six slots, handlers that finish one at a time: at no fetch answer does
    the worker hold more than six locks."""
    fake = FakeEngine()
    ids = [fake.start(f"bk-{n}") for n in range(60)]
    gates = Gates(fake)
    hosts = ("node-1", "node-2", "node-3")
    for host in hosts:
        gates.open[host].set()
    settings = Settings(
        url=",".join(f"http://{host}/engine-rest" for host in hosts),
        journal=":memory:",
        max_in_flight=6,
    )
    release = asyncio.Semaphore(0)

    async def handle(task: Task) -> dict[str, object]:
        await release.acquire()
        return {}

    async def scenario() -> None:
        client = EngineClient(settings, transport=gates.transport())
        async with Worker(_router(handle), settings, client=client, worker_id=WORKER) as worker:
            running = asyncio.ensure_future(worker.run())
            for done in range(len(ids)):
                await _until(partial(_refilled, fake, min(6, len(ids) - done)), "slots refilled")
                release.release()
                await _until(partial(_finished, fake, done + 1), "one more task done")
            worker.stop()
            await running

    asyncio.run(asyncio.wait_for(scenario(), timeout=120))
    assert all(fake.instances[i].state != "task" for i in ids)
    assert gates.most_locked <= 6, f"{gates.most_locked} tasks locked with max_in_flight=6"


class Leaving:
    """Two resolved nodes, each fetch held at its gate; :meth:`leave` drops node 1 from the
    name while its long poll waits, node 2's poll waiting too (it locks nothing meanwhile)."""

    def __init__(self) -> None:
        self.fake = FakeEngine()
        self.gates = Gates(self.fake)
        self.gates.open[NODE_2].set()
        self.addresses = [NODE_1, NODE_2]
        self.resolved = 0
        self.clock = ManualClock()
        self.settings = Settings(
            url="http://engine.svc:8080/engine-rest",
            url_resolve="all",
            journal=":memory:",
            lock_duration=timedelta(minutes=10),  # a task left to its lock stays locked here
        )

    async def _resolve(self, host: str, port: int) -> list[str]:
        self.resolved += 1
        return list(self.addresses)

    def worker(self) -> Worker:
        async def handle(task: Task) -> dict[str, object]:
            return {}

        client = EngineClient(self.settings, transport=self.gates.transport())
        client.nodes = Nodes(self.settings.urls, resolve=True, resolver=self._resolve)
        return Worker(
            _router(handle), self.settings, client=client, worker_id=WORKER, clock=self.clock
        )

    async def leave(self, worker: Worker) -> None:
        gates = self.gates
        await _until(lambda: gates.waiting[NODE_1] == 1, "node 1 long-polls")
        gates.open[NODE_2].clear()
        await _until(lambda: gates.waiting[NODE_2] == 1, "node 2 waits")
        self.addresses = [NODE_2]
        resolved = self.resolved
        while self.resolved == resolved:  # the resolve loop's wait may not have begun yet
            self.clock.advance(RESOLVE_EVERY)
            await asyncio.sleep(0.005)
        slots = worker.stats.slots
        assert slots is not None
        await _until(lambda: slots.pollers == 1, "node 1's loop ends")


NODE_1, NODE_2 = "10.0.0.1", "10.0.0.2"


def test_a_node_that_leaves_the_name_mid_poll_hands_over_what_its_poll_brings() -> None:
    """Node 1 drops out of the name while its long poll waits; the poll then locks three
    tasks: they run at once instead of waiting for their locks to run out."""
    nodes = Leaving()
    fake = nodes.fake

    async def scenario() -> None:
        async with nodes.worker() as worker:
            running = asyncio.ensure_future(worker.run())
            await nodes.leave(worker)
            ids = [fake.start(f"bk-{n}") for n in range(3)]
            nodes.gates.open[NODE_1].set()  # its poll locks the three tasks
            await _until(
                lambda: all(fake.instances[i].state != "task" for i in ids),
                "the tasks node 1's poll locked are done",
            )
            assert worker.health.live().ok, worker.health.live().line("live")
            nodes.gates.open[NODE_2].set()
            worker.stop()
            await running

    asyncio.run(asyncio.wait_for(scenario(), timeout=120))


def test_a_left_nodes_poll_that_answers_after_the_stop_is_given_back() -> None:
    """The worker stops while the poll of a node that left still waits; what it then locks
    is unlocked at once (as a stop does with every node's poll), not left to its lock."""
    nodes = Leaving()
    fake = nodes.fake

    async def scenario() -> None:
        async with nodes.worker() as worker:
            running = asyncio.ensure_future(worker.run())
            await nodes.leave(worker)
            worker.stop()
            await running
            ids = [fake.start(f"bk-{n}") for n in range(3)]
            nodes.gates.open[NODE_1].set()
            nodes.gates.open[NODE_2].set()
            await worker.shutdown()
            assert all(fake.instances[i].state == "task" for i in ids)
            assert all(task.locked_by is None for task in fake.tasks.values())
            assert worker.stats.locked == 0

    asyncio.run(asyncio.wait_for(scenario(), timeout=120))
