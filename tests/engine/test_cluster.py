"""Two bundled engines on one PostgreSQL database behind one worker: started at once they
deploy the seed process once and make the worker identity once; killing one node mid-run
loses nothing (the worker goes on with the other, every instance finishes once)."""

from __future__ import annotations

import asyncio
import os
import signal
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path

import httpx
import psycopg
import pytest

from camunda_relay import Settings, Worker, bundled_engine
from camunda_relay.examples.conception import make_router
from tests.support import postgres as pg
from tests.support.engine import (
    PASSWORD,
    PROCESS_KEY,
    USER,
    WORKER_USER,
    Engine,
    assert_finished_once,
    start_engine,
    wait_for,
)
from tests.support.tools import free_port

pytestmark = pytest.mark.postgres


@pytest.fixture(scope="module")
def cluster(
    engine_jar: Path, postgres_server: pg.PostgresServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[list[Engine], str]]:
    name = f"cluster_{uuid.uuid4().hex[:8]}"
    postgres_server.create_database(name)
    database = bundled_engine.Postgres(postgres_server.jdbc_url(name), pg.USER, pg.PASSWORD)
    base = tmp_path_factory.mktemp("cluster")
    (base / "node-1").mkdir()
    (base / "node-2").mkdir()
    # One worker password for both nodes (each would make its own in its state folder).
    for node in ("node-1", "node-2"):
        (base / node / "worker-password").write_text("cluster-worker-secret\n")
    with ThreadPoolExecutor(max_workers=2) as pool:  # both at once: the race under test
        futures = [
            pool.submit(start_engine, engine_jar, base / node, free_port(), database)
            for node in ("node-1", "node-2")
        ]
        started = [future for future in futures if future.exception() is None]
        engines = [future.result() for future in started]
    try:
        for future in futures:
            future.result()  # a node that did not start fails the tests (the others stop)
        yield engines, postgres_server.dsn(name)
    finally:
        for running in engines:
            bundled_engine.stop(running.info.pid)


def test_starting_both_at_once_deploys_once_and_makes_the_worker_identity_once(
    cluster: tuple[list[Engine], str],
) -> None:
    engines, dsn = cluster
    with psycopg.connect(dsn) as conn:
        definitions = conn.execute(
            "SELECT count(*) FROM act_re_procdef WHERE key_ = %s", (PROCESS_KEY,)
        ).fetchone()
        groups = conn.execute(
            "SELECT count(*) FROM act_id_group WHERE id_ = 'relayworkers'"
        ).fetchone()
        grants = conn.execute(
            "SELECT count(*) FROM act_ru_authorization WHERE group_id_ = 'relayworkers' "
            "AND resource_type_ = 6 AND resource_id_ = '*'"  # 6: process definitions
        ).fetchone()
        deployments = conn.execute("SELECT count(*) FROM act_re_deployment").fetchone()
        members = conn.execute(
            "SELECT count(*) FROM act_id_membership WHERE user_id_ = %s", (WORKER_USER,)
        ).fetchone()
    assert definitions == (1,)
    assert deployments == (1,)
    assert groups == (1,)
    assert grants == (1,)
    assert members == (1,)
    for running in engines:
        with running.worker_client() as rest:
            assert rest.get("/process-definition/count").json() == {"count": 1}


def test_killing_one_node_mid_run_loses_nothing(cluster: tuple[list[Engine], str]) -> None:
    engines, _ = cluster
    victim, survivor = engines
    settings = Settings(
        url=",".join(running.rest_url for running in engines),
        user=USER,
        password=PASSWORD,
        journal=":memory:",
        long_poll=timedelta(seconds=5),
        request_timeout=timedelta(seconds=5),
    )
    count = 20

    async def scenario() -> list[str]:
        async with Worker(make_router(1.0), settings) as worker:
            running = asyncio.ensure_future(worker.run())
            ids = []
            for number in range(count):
                target = victim if number % 2 == 0 else survivor
                ids.append(await asyncio.to_thread(_start_on, target, number))
            # Kill node 1 while work runs and replies are owed.
            os.kill(victim.info.pid, signal.SIGKILL)
            with survivor.client() as rest:
                await asyncio.to_thread(
                    wait_for,
                    lambda: all(_finished(rest, instance_id) for instance_id in ids),
                    timeout=300,
                    what="every instance finished",
                )
            worker.stop()
            await running
            return ids

    ids = asyncio.run(asyncio.wait_for(scenario(), timeout=400))
    with survivor.client() as rest:
        for instance_id in ids:
            assert_finished_once(rest, instance_id)


def _start_on(engine: Engine, number: int) -> str:
    with engine.client() as rest:
        answer = rest.post(
            f"/process-definition/key/{PROCESS_KEY}/start",
            json={"businessKey": f"cluster-{number}-{uuid.uuid4().hex[:6]}"},
        )
        answer.raise_for_status()
        return str(answer.json()["id"])


def _finished(rest: httpx.Client, instance_id: str) -> bool:
    return rest.get(f"/history/process-instance/{instance_id}").json().get("state") == "COMPLETED"
