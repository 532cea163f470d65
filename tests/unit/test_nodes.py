"""Several engine nodes: a URL list or one name resolved to every address; each node
long-polled; other requests fail over to a node that can be connected to."""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import timedelta

import httpx
import pytest

from camunda_relay import EngineClient, Router, Settings, SettingsError, Task, Worker
from camunda_relay.client import TopicRequest
from camunda_relay.errors import ConcurrentModification, EngineUnavailable
from camunda_relay.nodes import Node, Nodes
from tests.support.fake_engine import MESSAGE, TOPIC, FakeEngine, Fault


def test_the_url_may_list_the_nodes() -> None:
    settings = Settings.load(
        {"CAMUNDA_URL": " http://a:8080/engine-rest/ , http://b:8080/engine-rest"}
    )
    assert settings.urls == ("http://a:8080/engine-rest", "http://b:8080/engine-rest")
    assert Settings.load({}).urls == ("http://localhost:8080/engine-rest",)


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"CAMUNDA_URL": "http://a/engine-rest,b:8080"}, "must start with http"),
        ({"CAMUNDA_URL": "http://a/engine-rest,http://b:99999/x"}, "not a valid URL"),
        (
            {
                "CAMUNDA_URL": "http://a/engine-rest,http://b/engine-rest",
                "CAMUNDA_URL_RESOLVE": "all",
            },
            "give one URL",
        ),
        ({"CAMUNDA_URL_RESOLVE": "some"}, "CAMUNDA_URL_RESOLVE.*off, all"),
    ],
)
def test_bad_node_settings_name_the_problem(env: dict[str, str], message: str) -> None:
    with pytest.raises(SettingsError, match=message):
        Settings.load(env)


def test_a_name_resolves_to_a_node_per_address_keeping_the_name_for_host_and_tls() -> None:
    answers = [["10.0.0.2", "10.0.0.1"], ["10.0.0.1", "10.0.0.2"], ["10.0.0.3"]]

    async def resolver(host: str, port: int) -> list[str]:
        assert (host, port) == ("engine.ns.svc", 8443)
        return sorted(answers.pop(0))

    nodes = Nodes(["https://engine.ns.svc:8443/engine-rest"], resolve=True, resolver=resolver)

    async def scenario() -> list[bool]:
        return [await nodes.refresh(), await nodes.refresh(), await nodes.refresh()]

    changed = asyncio.run(scenario())
    assert changed == [True, False, True]
    assert nodes.current == (
        Node(
            "https://10.0.0.3:8443/engine-rest",
            host="engine.ns.svc:8443",
            server_name="engine.ns.svc",
        ),
    )


def test_a_name_that_does_not_resolve_keeps_the_nodes_known() -> None:
    async def resolver(host: str, port: int) -> list[str]:
        raise OSError("no such host")

    nodes = Nodes(["http://engine/engine-rest"], resolve=True, resolver=resolver)
    assert asyncio.run(nodes.refresh()) is False
    assert nodes.current == (Node("http://engine/engine-rest"),)


def _routed(
    fake: FakeEngine, down: set[str], seen: list[tuple[str, str, str]]
) -> httpx.MockTransport:
    """Hosts in ``down`` refuse connections; the others are ``fake``."""

    async def handle(request: httpx.Request) -> httpx.Response:
        seen.append((request.url.host, request.url.path, request.headers["host"]))
        if request.url.host in down:
            raise httpx.ConnectError("refused", request=request)
        return await fake.handle(request)

    return httpx.MockTransport(handle)


def test_requests_fail_over_to_a_node_that_can_be_connected_to_and_stay_there() -> None:
    fake = FakeEngine()
    seen: list[tuple[str, str, str]] = []
    settings = Settings(url="http://down/engine-rest,http://up/engine-rest", journal=":memory:")

    async def scenario() -> None:
        async with EngineClient(settings, transport=_routed(fake, {"down"}, seen)) as client:
            await client.check_access()
            await client.check_access()

    asyncio.run(scenario())
    assert [host for host, _, _ in seen] == ["down", "up", "up"]


def _reply_router() -> Router:
    router = Router()

    @router.task(TOPIC, reply=MESSAGE)
    async def handle(task: Task) -> dict[str, object]:
        return {}

    return router


def test_the_worker_long_polls_every_node_and_works_on_when_one_is_down() -> None:
    fake = FakeEngine()
    ids = [fake.start(f"bk-{n}") for n in range(3)]
    seen: list[tuple[str, str, str]] = []
    settings = Settings(
        url="http://node-1/engine-rest,http://node-2/engine-rest", journal=":memory:"
    )

    async def scenario() -> None:
        client = EngineClient(settings, transport=_routed(fake, {"node-1"}, seen))
        async with Worker(_reply_router(), settings, client=client) as worker:
            running = asyncio.ensure_future(worker.run())
            while any(fake.instances[i].state != "completed" for i in ids):
                await asyncio.sleep(0.01)
            while not {"node-1", "node-2"} <= _polled(seen):
                await asyncio.sleep(0.01)
            assert worker.health.live().ok
            worker.stop()
            await running

    asyncio.run(asyncio.wait_for(scenario(), timeout=60))
    assert _polled(seen) == {"node-1", "node-2"}
    fetches = Counter(host for host, path, _ in seen if path.endswith("/fetchAndLock"))
    assert fetches["node-2"] >= 1


def _polled(seen: list[tuple[str, str, str]]) -> set[str]:
    return {host for host, path, _ in seen if path.endswith("/fetchAndLock")}


def test_a_resolved_node_is_sent_its_name_as_host() -> None:
    fake = FakeEngine()
    seen: list[tuple[str, str, str]] = []

    async def resolver(host: str, port: int) -> list[str]:
        return ["127.0.0.9"]

    settings = Settings(url="http://engine.svc:8080/engine-rest", url_resolve="all")

    async def scenario() -> None:
        async with EngineClient(settings, transport=_routed(fake, set(), seen)) as client:
            client.nodes = Nodes(settings.urls, resolve=True, resolver=resolver)
            await client.nodes.refresh()
            await client.check_access()

    asyncio.run(scenario())
    assert seen == [("127.0.0.9", "/engine-rest/process-definition/count", "engine.svc:8080")]


def test_a_tasks_requests_go_to_the_node_that_locked_it_first() -> None:
    """Node 1 answered last, but the task was locked at node 2: its completion, and the
    message to its instance, go to node 2."""
    fake = FakeEngine()
    instance = fake.start("bk")
    seen: list[tuple[str, str, str]] = []
    settings = Settings(url="http://node-1/engine-rest,http://node-2/engine-rest")

    async def scenario() -> None:
        async with EngineClient(settings, transport=_routed(fake, set(), seen)) as client:
            node_2 = client.nodes.current[1]
            request = TopicRequest(TOPIC, lock_duration=timedelta(seconds=60))
            (task,) = await client.fetch_and_lock(
                "w", [request], max_tasks=1, long_poll=timedelta(0), node=node_2
            )
            await client.check_access()  # answered by node 1: the preferred node now
            await client.complete(task.id, "w")
            await client.correlate(MESSAGE, process_instance_id=instance)
            await client.check_access()

    asyncio.run(scenario())
    assert [(host, path.rsplit("/", 1)[-1]) for host, path, _ in seen] == [
        ("node-2", "fetchAndLock"),
        ("node-1", "count"),
        ("node-2", "complete"),
        ("node-2", "message"),
        ("node-2", "count"),  # node 2 answered last
    ]


def _sick(
    fake: FakeEngine, sick: dict[str, Fault], seen: list[tuple[str, str, str]]
) -> httpx.MockTransport:
    """Hosts in ``sick`` answer with their fault's status; the others are ``fake``."""

    async def handle(request: httpx.Request) -> httpx.Response:
        seen.append((request.url.host, request.url.path, request.headers["host"]))
        fault = sick.get(request.url.host)
        if fault is not None:
            body = {"type": fault.error_type, "message": fault.message}
            return httpx.Response(fault.status, json=body)
        return await fake.handle(request)

    return httpx.MockTransport(handle)


@pytest.mark.parametrize("status", [500, 502, 503, 504])
def test_a_node_answering_5xx_is_failed_over_and_not_preferred(status: int) -> None:
    """Node 1 answers, then fails with a 5xx: the request goes on to node 2, which answers,
    and node 2 is asked first from then on."""
    fake = FakeEngine()
    seen: list[tuple[str, str, str]] = []
    sick: dict[str, Fault] = {}
    settings = Settings(url="http://node-1/engine-rest,http://node-2/engine-rest")

    async def scenario() -> None:
        async with EngineClient(settings, transport=_sick(fake, sick, seen)) as client:
            await client.check_access()
            sick["node-1"] = Fault("status", status=status, message="database gone")
            await client.check_access()
            await client.check_access()

    asyncio.run(scenario())
    assert [host for host, _, _ in seen] == ["node-1", "node-1", "node-2", "node-2"]


def test_a_5xx_from_every_node_is_raised_and_the_first_stays_first() -> None:
    fake = FakeEngine()
    seen: list[tuple[str, str, str]] = []
    sick = {host: Fault("status", status=503) for host in ("node-1", "node-2")}
    settings = Settings(url="http://node-1/engine-rest,http://node-2/engine-rest")

    async def scenario() -> None:
        async with EngineClient(settings, transport=_sick(fake, sick, seen)) as client:
            for _ in range(2):
                with pytest.raises(EngineUnavailable):
                    await client.check_access()

    asyncio.run(scenario())
    assert [host for host, _, _ in seen] == ["node-1", "node-2", "node-1", "node-2"]


def test_a_concurrent_modification_is_an_answer_not_a_sick_node() -> None:
    """An optimistic locking failure (500) is the engine's verdict on the request, raised as
    such (the caller checks what happened); the node stays the preferred one."""
    fake = FakeEngine()
    instance = fake.start("bk")
    seen: list[tuple[str, str, str]] = []
    conflict = Fault("status", status=500, error_type="OptimisticLockingException")
    sick = {"node-1": conflict}
    settings = Settings(url="http://node-1/engine-rest,http://node-2/engine-rest")

    async def scenario() -> None:
        async with EngineClient(settings, transport=_sick(fake, sick, seen)) as client:
            with pytest.raises(ConcurrentModification):
                await client.correlate(MESSAGE, process_instance_id=instance)
            sick.clear()
            await client.check_access()

    asyncio.run(scenario())
    assert [host for host, _, _ in seen] == ["node-1", "node-1"]


def test_a_tasks_request_fails_over_from_its_home_node_answering_503() -> None:
    fake = FakeEngine()
    fake.start("bk")
    seen: list[tuple[str, str, str]] = []
    sick: dict[str, Fault] = {}
    settings = Settings(url="http://node-1/engine-rest,http://node-2/engine-rest")

    async def scenario() -> None:
        async with EngineClient(settings, transport=_sick(fake, sick, seen)) as client:
            node_2 = client.nodes.current[1]
            request = TopicRequest(TOPIC, lock_duration=timedelta(seconds=60))
            (task,) = await client.fetch_and_lock(
                "w", [request], max_tasks=1, long_poll=timedelta(0), node=node_2
            )
            sick["node-2"] = Fault("status", status=503)
            await client.complete(task.id, "w")

    asyncio.run(scenario())
    assert [(host, path.rsplit("/", 1)[-1]) for host, path, _ in seen] == [
        ("node-2", "fetchAndLock"),
        ("node-2", "complete"),
        ("node-1", "complete"),
    ]
    assert all(task.done for task in fake.tasks.values())
