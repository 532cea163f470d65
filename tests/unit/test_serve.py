"""The worker's HTTP server: metrics (the reconciler's included), the two probes, extra
routes, the probe command; and the heartbeats behind liveness with a manual clock."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator, Mapping
from datetime import timedelta

import httpx
import pytest

from camunda_relay import EngineClient, Router, Settings, Task, Worker
from camunda_relay.backoff import Backoff
from camunda_relay.clock import ManualClock
from camunda_relay.serve import HttpServer, RouteHandler, serve_worker
from camunda_relay.worker.health import LIVE_SLACK, Health, Verdict
from tests.support.fake_engine import MESSAGE, TOPIC, FakeEngine, Fault
from tests.support.tools import free_port, run_cli

SETTINGS = Settings(url="http://fake-engine/engine-rest", journal=":memory:")


def reply_router() -> Router:
    router = Router()

    @router.task(TOPIC, reply=MESSAGE)
    async def handle(task: Task) -> dict[str, object]:
        return {}

    return router


def health(clock: ManualClock, journal_ok: list[bool] | None = None) -> Health:
    flag = journal_ok if journal_ok is not None else [True]
    return Health(clock, engine_window=50.0, journal_ok=lambda: flag[0])


# -- liveness and readiness --------------------------------------------------------------------


def test_a_loop_beating_within_its_allowance_is_live() -> None:
    clock = ManualClock()
    probe = health(clock)
    probe.beat("poll", 20.0)
    clock.advance(20.0 + LIVE_SLACK)
    assert probe.live() == Verdict(True)


def test_a_loop_silent_past_its_allowance_is_not_live() -> None:
    clock = ManualClock()
    probe = health(clock)
    probe.beat("poll", 20.0)
    probe.beat("lease", 10.0)
    clock.advance(10.0 + LIVE_SLACK + 1)
    verdict = probe.live()
    assert not verdict.ok
    assert verdict.problems == (f"the lease loop has been silent for {10 + LIVE_SLACK + 1:.0f} s",)


def test_a_loop_that_ended_is_not_live_unless_the_worker_stops() -> None:
    clock = ManualClock()
    probe = health(clock)
    probe.beat("claim", None)
    probe.ended("claim")
    assert probe.live().problems == ("the claim loop ended",)
    probe.stopping()
    assert probe.live().ok


def test_a_loop_waiting_for_an_event_stays_live_however_long() -> None:
    clock = ManualClock()
    probe = health(clock)
    probe.beat("poll", None)  # every slot taken: waits for one to come free
    clock.advance(86_400)
    assert probe.live().ok


def test_readiness_needs_a_recent_engine_answer_and_a_journal_that_writes() -> None:
    clock = ManualClock()
    journal_ok = [True]
    probe = health(clock, journal_ok)
    assert probe.ready().problems == ("the engine has not answered yet",)
    probe.engine_answered()
    assert probe.ready().ok
    clock.advance(51)
    assert probe.ready().problems == ("the engine last answered 51 s ago",)
    probe.engine_answered()
    journal_ok[0] = False
    assert probe.ready().problems == ("the journal does not take writes",)


def test_an_engine_outage_makes_the_worker_unready_but_leaves_it_live() -> None:
    """The poll loop keeps backing off while the engine is down: no liveness failure (or
    every pod would restart in an engine outage), but no readiness either."""
    fake = FakeEngine()
    fake.inject("POST /external-task/fetchAndLock", *[Fault("status", 503)] * 2000)
    clock = ManualClock()
    settings = Settings(
        url="http://fake-engine/engine-rest",
        journal=":memory:",
        long_poll=timedelta(seconds=1),
        request_timeout=timedelta(seconds=1),
    )

    async def scenario() -> tuple[Verdict, Verdict, int]:
        client = EngineClient(settings, transport=fake.transport())
        backoff = Backoff(base=timedelta(seconds=5), cap=timedelta(seconds=5))
        worker = Worker(reply_router(), settings, client=client, clock=clock, poll_backoff=backoff)
        async with worker:
            running = asyncio.ensure_future(worker.run())
            for _ in range(600):  # an hour of the manual clock; each step ends one backoff
                while (
                    worker.stats.engine_errors == 0 or clock.sleepers < 5
                ):  # the poll, lease, claim, sweep and cancel loops
                    await asyncio.sleep(0.001)
                clock.advance(6)
            verdicts = worker.health.live(), worker.health.ready()
            errors = worker.stats.engine_errors
            worker.stop()
            await running
            return (*verdicts, errors)

    live, ready, errors = asyncio.run(asyncio.wait_for(scenario(), timeout=60))
    assert errors >= 600  # it went on polling the whole hour
    assert live.ok, live.problems
    assert not ready.ok
    assert ready.problems == ("the engine has not answered yet",)


def test_a_running_worker_is_live_and_ready_after_a_fetch() -> None:
    fake = FakeEngine()

    async def scenario() -> tuple[Verdict, Verdict]:
        client = EngineClient(SETTINGS, transport=fake.transport())
        async with Worker(reply_router(), SETTINGS, client=client) as worker:
            running = asyncio.ensure_future(worker.run())
            while worker.stats.last_poll_ok is None:
                await asyncio.sleep(0.01)
            verdicts = worker.health.live(), worker.health.ready()
            worker.stop()
            await running
            return verdicts

    live, ready = asyncio.run(asyncio.wait_for(scenario(), timeout=60))
    assert live.ok, live.problems
    assert ready.ok, ready.problems


# -- the server ------------------------------------------------------------------------------


@pytest.fixture
def worker() -> Iterator[Worker]:
    settings = Settings(url="http://fake-engine/engine-rest", journal=":memory:")
    client = EngineClient(settings, transport=FakeEngine().transport())
    made = Worker(reply_router(), settings, client=client)
    yield made
    asyncio.run(made.shutdown())


def test_metrics_hold_the_worker_and_the_reconciler_in_one_registry(worker: Worker) -> None:
    assert worker.reconciler is not None
    worker.reconciler.orphans_found.inc(3)
    server = serve_worker(worker, "127.0.0.1", 0)
    try:
        answer = httpx.get(f"http://127.0.0.1:{server.port}/metrics", timeout=10)
    finally:
        server.close()
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/plain")
    text = answer.text
    assert f'camunda_relay_tasks_fetched_total{{worker_id="{worker.worker_id}"}} 0.0' in text
    assert "camunda_relay_orphans_found_total 3.0" in text
    assert "camunda_relay_reconcile_errors_total 0.0" in text


def test_the_probes_answer_200_or_503_with_their_problems(worker: Worker) -> None:
    server = serve_worker(worker, "127.0.0.1", 0)
    base = f"http://127.0.0.1:{server.port}"
    try:
        worker.health.beat("poll", None)
        live = httpx.get(f"{base}/healthz", timeout=10)
        ready = httpx.get(f"{base}/readyz", timeout=10)
        worker.health.engine_answered()
        ready_now = httpx.get(f"{base}/readyz", timeout=10)
        posted = httpx.post(f"{base}/readyz", timeout=10)
    finally:
        server.close()
    assert (live.status_code, live.json()) == (200, {"ok": True, "problems": []})
    assert ready.status_code == 503
    assert ready.json() == {"ok": False, "problems": ["the engine has not answered yet"]}
    assert ready_now.status_code == 200
    assert posted.status_code == 405


def _ready_verdict() -> Verdict:
    return Verdict(True)


def serve_routes(routes: Mapping[str, RouteHandler]) -> HttpServer:
    registry_server = HttpServer(
        "127.0.0.1",
        0,
        registry=__import__("prometheus_client").CollectorRegistry(),
        live=_ready_verdict,
        ready=_ready_verdict,
        routes=routes,
    )
    registry_server.start()
    return registry_server


def test_extra_routes_get_method_path_lowercased_headers_and_body() -> None:
    seen: list[tuple[str, str, dict[str, str], bytes]] = []

    def reply(
        method: str, path: str, headers: Mapping[str, str], body: bytes
    ) -> tuple[int, str, bytes]:
        seen.append((method, path, dict(headers), body))
        return 202, "application/json", b'{"accepted": true}'

    def other(
        method: str, path: str, headers: Mapping[str, str], body: bytes
    ) -> tuple[int, str, bytes]:
        return 200, "text/plain", b"other"

    server = serve_routes({"/replies": other, "/replies/in": reply})
    base = f"http://127.0.0.1:{server.port}"
    try:
        answer = httpx.post(
            f"{base}/replies/in/job-1?x=1", content=b"payload", headers={"X-Token": "t"}
        )
        shorter = httpx.get(f"{base}/replies/elsewhere", timeout=10)
        missing = httpx.get(f"{base}/nothing", timeout=10)
    finally:
        server.close()
    assert (answer.status_code, answer.json()) == (202, {"accepted": True})
    assert answer.headers["content-type"] == "application/json"
    method, path, headers, body = seen[0]
    assert (method, path, body) == ("POST", "/replies/in/job-1?x=1", b"payload")
    assert headers["x-token"] == "t"
    assert headers["content-length"] == "7"
    assert (shorter.status_code, shorter.text) == (200, "other")
    assert missing.status_code == 404


def test_a_failing_route_answers_500_and_a_huge_body_413(caplog: pytest.LogCaptureFixture) -> None:
    def broken(
        method: str, path: str, headers: Mapping[str, str], body: bytes
    ) -> tuple[int, str, bytes]:
        raise RuntimeError("secret-value-in-error")

    server = serve_routes({"/in": broken})
    base = f"http://127.0.0.1:{server.port}"
    try:
        failed = httpx.post(f"{base}/in?token=secret-query", content=b"secret-body")
        huge = httpx.post(f"{base}/in", content=b"x" * (1024 * 1024 + 1))
    finally:
        server.close()
    assert failed.status_code == 500
    assert failed.text == "internal error\n"
    assert huge.status_code == 413
    logged = "\n".join(record.getMessage() for record in caplog.records)
    assert "the handler of POST /in failed" in logged
    assert "secret-query" not in logged
    assert "secret-body" not in logged


def test_a_route_prefix_must_be_a_path() -> None:
    with pytest.raises(ValueError, match="must start with '/'"):
        HttpServer(
            "127.0.0.1",
            0,
            registry=__import__("prometheus_client").CollectorRegistry(),
            live=_ready_verdict,
            ready=_ready_verdict,
            routes={"replies": lambda m, p, h, b: (200, "text/plain", b"")},
        )


def test_a_port_in_use_is_one_line(worker: Worker) -> None:
    first = serve_worker(worker, "127.0.0.1", 0)
    try:
        with pytest.raises(Exception, match=r"cannot serve HTTP on 127\.0\.0\.1:") as raised:
            serve_worker(worker, "127.0.0.1", first.port)
    finally:
        first.close()
    assert "\n" not in str(raised.value)


# -- the probe command -------------------------------------------------------------------------


def test_the_check_command_exits_0_when_ready_and_1_with_the_problem(worker: Worker) -> None:
    server = serve_worker(worker, "127.0.0.1", 0)
    env = {"CAMUNDA_HTTP_PORT": str(server.port)}
    try:
        unready = run_cli("worker", "--check", env=env, timeout=60)
        worker.health.engine_answered()
        ready = run_cli("worker", "--check", env=env, timeout=60)
        worker.health.beat("poll", 1.0)
        worker.health.ended("poll")
        dead = run_cli("worker", "--check", "live", env=env, timeout=60)
    finally:
        server.close()
    assert (unready.returncode, unready.stdout) == (
        1,
        "not ready: the engine has not answered yet\n",
    )
    assert (ready.returncode, ready.stdout) == (0, "ready\n")
    assert (dead.returncode, dead.stdout) == (1, "not live: the poll loop ended\n")


def test_the_check_command_without_a_server_or_port_is_one_line() -> None:
    port = free_port()
    nobody = run_cli("worker", "--check", env={"CAMUNDA_HTTP_PORT": str(port)}, timeout=60)
    assert nobody.returncode == 1
    assert nobody.stdout.startswith(f"not ready: no answer from http://127.0.0.1:{port}/readyz")
    unset = run_cli("worker", "--check", "live", env={}, timeout=60)
    assert unset.returncode == 1
    assert "CAMUNDA_HTTP_PORT is not set" in unset.stderr
    assert "Traceback" not in unset.stderr
    bad = run_cli("worker", "--check", env={"CAMUNDA_HTTP_PORT": "99999"}, timeout=60)
    assert bad.returncode == 1
    assert "CAMUNDA_HTTP_PORT" in bad.stderr
    assert "Traceback" not in bad.stderr


def test_the_worker_command_still_needs_a_module_when_not_checking() -> None:
    result = run_cli("worker", env={}, timeout=60)
    assert result.returncode == 2
    assert "Missing argument 'MODULE[:ROUTER]'" in result.stderr


def test_json_answers_are_valid_json(worker: Worker) -> None:
    server = serve_worker(worker, "127.0.0.1", 0)
    try:
        raw = httpx.get(f"http://127.0.0.1:{server.port}/healthz", timeout=10).content
    finally:
        server.close()
    assert json.loads(raw) == {"ok": True, "problems": []}


def test_the_worker_command_serves_the_reply_route_only_with_a_secret(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from camunda_relay.cli.worker import worker_routes
    from camunda_relay.settings import Settings

    assert worker_routes(Settings(http_port=9464)) == {}
    assert set(worker_routes(Settings(http_port=9464, reply_secret="s" * 16))) == {"/reply"}
    with caplog.at_level("WARNING", logger="camunda_relay"):
        assert set(worker_routes(Settings(reply_secret="s" * 16))) == {"/reply"}
    assert "CAMUNDA_HTTP_PORT is not" in caplog.text
    assert "s" * 16 not in caplog.text
