"""The seed flow with the engine on PostgreSQL."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from camunda_relay import bundled_engine
from tests.support import postgres as pg
from tests.support.engine import Engine, assert_finished_once, run_seed_flow, start_engine
from tests.support.tools import free_port


@pytest.fixture(scope="module")
def pg_engine(
    engine_jar: Path, postgres_server: pg.PostgresServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Engine]:
    postgres_server.create_database("camunda_seed")
    running = start_engine(
        engine_jar,
        tmp_path_factory.mktemp("pg-engine"),
        free_port(),
        postgres=bundled_engine.Postgres(
            jdbc_url=postgres_server.jdbc_url("camunda_seed"), user=pg.USER, password=pg.PASSWORD
        ),
    )
    yield running
    bundled_engine.stop(running.info.pid)


def test_seed_flow_on_postgres(pg_engine: Engine, postgres_server: pg.PostgresServer) -> None:
    assert pg_engine.info.database == "postgresql"
    with pg_engine.client() as rest:
        instance_id = run_seed_flow(rest, f"pg-{uuid.uuid4()}")
        assert_finished_once(rest, instance_id)
    import psycopg

    with psycopg.connect(postgres_server.dsn("camunda_seed")) as conn:
        row = conn.execute(
            "SELECT count(*) FROM act_hi_procinst WHERE id_ = %s AND end_time_ IS NOT NULL",
            (instance_id,),
        ).fetchone()
    assert row == (1,), "the finished instance must be stored in PostgreSQL"
