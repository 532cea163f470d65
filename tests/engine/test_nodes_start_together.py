"""Two engine nodes started at once on one new PostgreSQL database (a Deployment's replicas).

Without the engine's start lock (StartupLock) one of them failed: both created the schema,
and the second stopped on tables that had appeared meanwhile. Now both come up, the seed
process is deployed once, the worker user works on either node, and an instance started on
one node is seen and finished through the other.
"""

from __future__ import annotations

import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from camunda_relay import bundled_engine
from tests.support import postgres as pg
from tests.support.engine import (
    PROCESS_KEY,
    WORKER_USER,
    Engine,
    assert_finished_once,
    run_seed_flow,
    start_engine,
)
from tests.support.tools import free_port


def test_two_nodes_start_at_once_on_one_new_database(
    engine_jar: Path, postgres_server: pg.PostgresServer, tmp_path: Path
) -> None:
    database = f"nodes_{uuid.uuid4().hex[:8]}"
    postgres_server.create_database(database)
    postgres = bundled_engine.Postgres(
        jdbc_url=postgres_server.jdbc_url(database), user=pg.USER, password=pg.PASSWORD
    )

    worker_password = f"nodes-{uuid.uuid4().hex}"  # the same on every node, as in a Secret

    def node(name: str) -> Engine:
        return start_engine(
            engine_jar,
            tmp_path / name,
            free_port(),
            postgres=postgres,
            worker_password=worker_password,
        )

    with ThreadPoolExecutor(max_workers=2) as pool:
        futures = [pool.submit(node, name) for name in ("node-1", "node-2")]
        errors = [f.exception() for f in futures]
        nodes = [f.result() for f in futures if f.exception() is None]
    try:
        assert errors == [None, None], f"a node failed to start: {errors}"
        first, second = nodes
        with first.client() as rest:
            definitions = rest.get("/process-definition", params={"key": PROCESS_KEY}).json()
            assert [d["version"] for d in definitions] == [1], "the seed process deployed twice"
            deployments = rest.get("/deployment").json()
            assert len(deployments) == 1, deployments
        for running in nodes:
            with running.client(auth=(WORKER_USER, worker_password)) as as_worker:
                response = as_worker.get("/process-definition/count")
                assert response.status_code == 200, response.text
                assert response.json()["count"] == 1
        with first.client() as rest_1, second.client() as rest_2:
            instance_id = run_seed_flow(rest_1, f"nodes-{uuid.uuid4()}")
            assert_finished_once(rest_2, instance_id)
    finally:
        for running in nodes:
            bundled_engine.stop(running.info.pid)
