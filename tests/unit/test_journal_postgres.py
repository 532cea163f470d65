"""What only the PostgreSQL journal promises: a lost connection is replaced, a database that
does not answer (blackholed, or a statement stuck on a lock) costs a call its deadline and no
more, a version-1 table is migrated, errors arrive as journal errors that never show the
password, and table names are never quoted into SQL."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable
from datetime import timedelta

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from camunda_relay.errors import ConfigurationError, JournalError, JournalUnavailable
from camunda_relay.journal import codec as journal_codec
from camunda_relay.journal.base import Verdict
from camunda_relay.journal.codec import dumps_answer
from camunda_relay.journal.postgres import APPLICATION_NAME, PostgresJournal, journal_error
from camunda_relay.journal.postgres_schema import SCHEMA_VERSION
from camunda_relay.replies.job import Answer, JobState
from camunda_relay.replies.tokens import new_token
from tests.support.journals import TOPICS, fresh_database, ids, make_job, unique_table
from tests.support.postgres import PostgresServer
from tests.support.tcp_proxy import TcpProxy
from tests.support.tools import free_port

pytestmark = pytest.mark.postgres


@pytest.fixture(scope="module")
def pg_dsn(postgres_server: PostgresServer) -> str:
    return fresh_database(postgres_server, "journal_postgres")


def test_reconnects_after_the_connection_is_lost(pg_dsn: str) -> None:
    async def scenario() -> None:
        journal = PostgresJournal(pg_dsn, owner="a", table=unique_table())
        try:
            await journal.record(make_job(1))
            with psycopg.connect(pg_dsn, autocommit=True) as admin:
                killed = admin.execute(
                    "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid, 10000)) "
                    "FROM pg_stat_activity WHERE application_name = %s "
                    "AND datname = current_database() AND pid <> pg_backend_pid()",
                    (APPLICATION_NAME,),
                ).fetchone()
            assert killed == (1,)
            assert await journal.get("task-1") == make_job(1)
        finally:
            await journal.close()

    asyncio.run(scenario())


# -- deadlines -------------------------------------------------------------------------------


def test_a_blackholed_database_costs_a_call_its_deadline_and_no_more(
    postgres_server: PostgresServer, pg_dsn: str
) -> None:
    deadline = 1.0

    async def timed(call: Awaitable[object]) -> float:
        started = time.monotonic()
        with pytest.raises(JournalUnavailable, match="no answer within"):
            await call
        return time.monotonic() - started

    with TcpProxy(postgres_server.port) as proxy:
        proxied = make_conninfo(pg_dsn, port=proxy.port)

        async def scenario() -> None:
            journal = PostgresJournal(
                proxied,
                owner="a",
                table=unique_table(),
                call_timeout=timedelta(seconds=deadline),
                connect_timeout=timedelta(seconds=30),
                statement_timeout=timedelta(seconds=30),
            )
            try:
                await journal.record(make_job(1))
                proxy.blackhole = True
                # A statement on the open connection, then a new connection: neither answers.
                for call in (journal.get("task-1"), journal.save(make_job(1))):
                    took = await timed(call)
                    assert deadline * 0.9 <= took < deadline + 4, took
                proxy.blackhole = False
                assert await journal.get("task-1") == make_job(1), "a fresh connection works"
                assert await journal.save(make_job(1, state=JobState.ACKNOWLEDGED)) is True
            finally:
                await journal.close()

        asyncio.run(scenario())


def test_a_statement_stuck_on_a_lock_is_cancelled_by_the_server(pg_dsn: str) -> None:
    table = unique_table()

    async def scenario() -> None:
        journal = PostgresJournal(
            pg_dsn,
            owner="a",
            table=table,
            statement_timeout=timedelta(seconds=1),
            call_timeout=timedelta(seconds=30),
        )
        try:
            await journal.record(make_job(1))
            with psycopg.connect(pg_dsn) as locker:
                locker.execute(
                    sql.SQL("SELECT 1 FROM {} WHERE id = 'task-1' FOR UPDATE").format(
                        sql.Identifier(table)
                    )
                )
                with pytest.raises(JournalUnavailable, match="QueryCanceled"):
                    await journal.save(make_job(1, state=JobState.ACKNOWLEDGED))
                locker.rollback()
            assert await journal.save(make_job(1, state=JobState.ACKNOWLEDGED)) is True
        finally:
            await journal.close()

    asyncio.run(scenario())


def test_the_timeouts_and_keepalives_reach_the_connection(pg_dsn: str) -> None:
    journal = PostgresJournal(pg_dsn, owner="a", connect_timeout=timedelta(seconds=7))
    options = conninfo_to_dict(journal._dsn)
    assert options["connect_timeout"] == "7"
    assert options["keepalives"] == "1"
    assert options["tcp_user_timeout"] == "15000"
    own = PostgresJournal(pg_dsn + " connect_timeout=20 keepalives_idle=99", owner="a")
    options = conninfo_to_dict(own._dsn)
    assert (options["connect_timeout"], options["keepalives_idle"]) == ("20", "99"), "DSN wins"

    async def scenario() -> None:
        timed = PostgresJournal(
            pg_dsn, owner="a", table=unique_table(), statement_timeout=timedelta(seconds=3)
        )
        try:

            async def show(conn: psycopg.AsyncConnection[tuple[object, ...]]) -> object:
                row = await (await conn.execute("SHOW statement_timeout")).fetchone()
                return row[0] if row else None

            assert await timed._run("show", show) == "3s"
        finally:
            await timed.close()

    asyncio.run(scenario())


def test_an_unsynced_save_commits_without_waiting_for_the_wal_flush(pg_dsn: str) -> None:
    async def scenario() -> None:
        journal = PostgresJournal(pg_dsn, owner="a", table=unique_table())
        try:
            job = make_job(1)
            await journal.record(job)
            acknowledged = job.advance(JobState.ACKNOWLEDGED, attempts=1)

            async def save_and_show(conn: psycopg.AsyncConnection[tuple[object, ...]]) -> object:
                async with conn.transaction():
                    await conn.execute(journal._sql["save_unsynced"], journal._row(acknowledged))
                    row = await (await conn.execute("SHOW synchronous_commit")).fetchone()
                return row[0] if row else None

            assert await journal._run("save", save_and_show) == "off"

            async def show(conn: psycopg.AsyncConnection[tuple[object, ...]]) -> object:
                row = await (await conn.execute("SHOW synchronous_commit")).fetchone()
                return row[0] if row else None

            assert await journal._run("show", show) == "on", "for that transaction alone"
            assert await journal.get(job.id) == acknowledged
            assert await journal.save(acknowledged.advance(JobState.DONE), synced=False)
            stored = await journal.get(job.id)
            assert stored is not None
            assert stored.state is JobState.DONE
        finally:
            await journal.close()

    asyncio.run(scenario())


def test_the_claim_reads_jobs_through_indexes_however_many_live_jobs_there_are(
    pg_dsn: str,
) -> None:
    """With statistics that show one live owner holding half the jobs and the other half
    parked (deferred, unanswered), the planner still reads the jobs table through its
    indexes only, the parked jobs by deadline (a seq scan, or one over the deferred state,
    would grow with those jobs)."""
    table = unique_table()
    live_jobs = 20_000

    async def scenario() -> list[str]:
        busy = PostgresJournal(pg_dsn, owner="busy", table=table)
        dead = PostgresJournal(pg_dsn, owner="dead", table=table, lease=-HOUR)
        heir = PostgresJournal(pg_dsn, owner="heir", table=table)
        try:
            await busy.renew()
            await dead.record(make_job(live_jobs + 1))
            payload = journal_codec.dumps(make_job(0))
            columns = "id, topic, process_instance_id, state, attempts, deliveries, "
            columns += "created_at, updated_at, owner, payload, deadline"
            copy = sql.SQL(f"COPY {{}} ({columns}) FROM STDIN").format(sql.Identifier(table))
            with psycopg.connect(pg_dsn, autocommit=True) as admin:
                with admin.cursor().copy(copy) as rows:
                    for number in range(live_jobs):
                        row = (f"busy-{number}", TOPICS[0], "p", "recorded", 0, 0)
                        rows.write_row((*row, "2025-01-01", "2025-01-01", "busy", payload, None))
                    for number in range(live_jobs):  # parked: deferred, unanswered, nobody's
                        row = (f"parked-{number}", TOPICS[0], "p", "deferred", 1, 0)
                        times = ("2025-01-01", "2025-01-01")
                        rows.write_row((*row, *times, "", payload, "2100-01-01"))
                admin.execute(sql.SQL("ANALYZE {}").format(sql.Identifier(table)))
            parameters = heir._mine(topics=TOPICS, keys=[""], running=["x"], limit=100)

            async def explain(conn: psycopg.AsyncConnection[tuple[object, ...]]) -> list[str]:
                query = sql.SQL("EXPLAIN ") + heir._sql["claim"]
                return [
                    str(row[0]) for row in await (await conn.execute(query, parameters)).fetchall()
                ]

            plan = await heir._run("explain", explain)
            assert ids(await heir.claim(topics=TOPICS, limit=10)) == [f"task-{live_jobs + 1}"]
            return plan
        finally:
            for journal in (busy, dead, heir):
                await journal.close()

    plan = asyncio.run(scenario())
    assert not [line for line in plan if f"Seq Scan on {table} " in line + " "], "\n".join(plan)
    assert any(f"{table}_claim_idx" in line for line in plan)
    assert any(f"{table}_expiry_idx" in line for line in plan), "\n".join(plan)


# -- errors ----------------------------------------------------------------------------------


def test_an_unreachable_database_is_unavailable_and_the_password_stays_hidden() -> None:
    dsn = f"host=127.0.0.1 port={free_port()} user=relay password=s3cret dbname=nowhere"

    async def scenario() -> None:
        journal = PostgresJournal(dsn, owner="a")
        try:
            with pytest.raises(JournalUnavailable, match="connecting") as raised:
                await journal.get("x")
            assert raised.value.retryable
            assert "s3cret" not in str(raised.value)
            assert raised.value.__cause__ is None
        finally:
            await journal.close()

    asyncio.run(scenario())


def test_errors_name_their_kind_never_the_servers_message() -> None:
    refused = journal_error(psycopg.errors.UniqueViolation("Key (id)=(secret-value)"), "record")
    assert type(refused) is JournalError
    assert "secret-value" not in str(refused)
    assert "UniqueViolation" in str(refused)
    lost = journal_error(psycopg.OperationalError("password=s3cret"), "claim")
    assert isinstance(lost, JournalUnavailable)
    assert "s3cret" not in str(lost)
    assert isinstance(journal_error(psycopg.InterfaceError("closed"), "get"), JournalUnavailable)


@pytest.mark.parametrize("table", ["", "Jobs", "1jobs", "jobs; drop table x", "a" * 49])
def test_a_table_name_it_would_have_to_quote_is_refused(table: str) -> None:
    with pytest.raises(ConfigurationError, match="table name"):
        PostgresJournal("postgresql://u:p@localhost/db", owner="a", table=table)


def test_the_password_is_never_shown() -> None:
    journal = PostgresJournal("postgresql://u:s3cret@localhost/db", owner="a")
    assert "s3cret" not in repr(journal)
    with pytest.raises(ConfigurationError) as raised:
        PostgresJournal("postgresql://u:s3cret@localhost/db?bogus=1", owner="a")
    assert "s3cret" not in str(raised.value)


# -- migration -------------------------------------------------------------------------------

# The layout of schema version 1, as the first camunda-relay wrote it.
_VERSION_1 = (
    """CREATE TABLE {table} (
    id text PRIMARY KEY, topic text NOT NULL, process_instance_id text NOT NULL,
    business_key text, state text NOT NULL, attempts integer NOT NULL,
    deliveries integer NOT NULL, error text, deadline timestamptz,
    created_at timestamptz NOT NULL, updated_at timestamptz NOT NULL, owner text NOT NULL,
    lease_until timestamptz NOT NULL, payload json NOT NULL
)""",
    "CREATE INDEX {state_index} ON {table} (state)",
    "CREATE INDEX {lease_index} ON {table} (lease_until)",
)
# From the current layout back to version 3's (no filter key, no unreadable mark, no expiry
# index, parked jobs in the claim index).
_BACK_TO_3 = (
    "DROP INDEX {expiry}",
    "DROP INDEX {claim}",
    "ALTER TABLE {table} DROP COLUMN filter_key",
    "ALTER TABLE {table} DROP COLUMN unreadable",
    "CREATE INDEX {claim} ON {table} (owner, topic, created_at, id)"
    " WHERE state IN ('acknowledged', 'deferred', 'done', 'failing', 'recorded')",
)
_INSERT_1 = """INSERT INTO {table} (id, topic, process_instance_id, business_key, state,
    attempts, deliveries, error, deadline, created_at, updated_at, owner, lease_until, payload)
VALUES (%(id)s, %(topic)s, %(process_instance_id)s, %(business_key)s, %(state)s,
    %(attempts)s, %(deliveries)s, %(error)s, to_timestamp(%(deadline)s),
    to_timestamp(%(created_at)s), to_timestamp(%(updated_at)s), %(owner)s,
    now() + %(lease)s, %(payload)s::json)"""
HOUR = timedelta(hours=1)


def test_a_version_1_table_is_migrated(pg_dsn: str) -> None:
    table = unique_table()
    names = {
        "table": sql.Identifier(table),
        "state_index": sql.Identifier(f"{table}_state_idx"),
        "lease_index": sql.Identifier(f"{table}_lease_until_idx"),
    }
    rows = [
        (1, JobState.ACKNOWLEDGED, "alive", HOUR),
        (2, JobState.DONE, "alive", -HOUR),  # saved earlier: the latest lease counts
        (3, JobState.RECORDED, "dead", -HOUR),
        (4, JobState.DELIVERED, "alive", -100 * HOUR),
        (5, JobState.DONE, "released", -100 * HOUR),
    ]
    with psycopg.connect(pg_dsn, autocommit=True) as admin:
        for statement in _VERSION_1:
            admin.execute(sql.SQL(statement).format(**names))
        for number, state, owner, lease in rows:
            job = make_job(number, state=state)
            row = {
                **journal_codec.columns(job),
                "owner": owner,
                "lease": lease,
                "payload": journal_codec.dumps(job),
            }
            del row["token_hash"], row["filter_key"]  # version 1 had neither
            admin.execute(sql.SQL(_INSERT_1).format(**names), row)

    async def scenario() -> None:
        heir = PostgresJournal(pg_dsn, owner="heir", table=table)
        alive = PostgresJournal(pg_dsn, owner="alive", table=table)
        try:
            await heir.renew()
            assert ids(await heir.jobs()) == [f"task-{n}" for n in range(1, 6)]
            assert await heir.get("task-2") == make_job(2, state=JobState.DONE)
            assert ids(await heir.claim(topics=TOPICS)) == ["task-3", "task-5"]
            assert ids(await alive.claim(topics=TOPICS)) == ["task-1", "task-2"]
            assert await alive.save(make_job(4, state=JobState.DONE)) is True, "nobody's now"
        finally:
            await heir.close()
            await alive.close()

    asyncio.run(scenario())
    with psycopg.connect(pg_dsn, autocommit=True) as admin:
        comment = admin.execute("SELECT obj_description(%s::regclass)", (table,)).fetchone()
        assert comment == (f"camunda-relay journal, schema version {SCHEMA_VERSION}",)
        columns = admin.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_name = %s", (table,)
        ).fetchall()
        assert ("lease_until",) not in columns
        assert admin.execute(
            "SELECT to_regclass(%s)", (f"{table}_lease_until_idx",)
        ).fetchone() == (None,)


def test_a_table_of_a_newer_schema_is_refused(pg_dsn: str) -> None:
    table = unique_table()
    with psycopg.connect(pg_dsn, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE TABLE {} (id text)").format(sql.Identifier(table)))
        admin.execute(
            sql.SQL("COMMENT ON TABLE {} IS 'camunda-relay journal, schema version 5'").format(
                sql.Identifier(table)
            )
        )

    async def scenario() -> None:
        journal = PostgresJournal(pg_dsn, owner="a", table=table)
        try:
            with pytest.raises(ConfigurationError, match="newer version"):
                await journal.get("x")
        finally:
            await journal.close()

    asyncio.run(scenario())


def test_a_version_2_table_is_migrated(pg_dsn: str) -> None:
    table = unique_table()

    async def create() -> None:
        journal = PostgresJournal(pg_dsn, owner="old", table=table)
        try:
            await journal.save(make_job(1, state=JobState.DONE))
            await journal.release("task-1")
        finally:
            await journal.close()

    asyncio.run(create())
    names = {
        "table": sql.Identifier(table),
        "claim": sql.Identifier(f"{table}_claim_idx"),
        "expiry": sql.Identifier(f"{table}_expiry_idx"),
    }
    with psycopg.connect(pg_dsn, autocommit=True) as admin:  # back to the version-2 layout
        for statement in (
            *_BACK_TO_3,
            "DROP INDEX {claim}",
            "ALTER TABLE {table} DROP COLUMN token_hash",
            "ALTER TABLE {table} DROP COLUMN answer",
            "CREATE INDEX {claim} ON {table} (owner, topic, created_at, id)"
            " WHERE state IN ('acknowledged', 'done', 'failing', 'recorded')",
            "COMMENT ON TABLE {table} IS 'camunda-relay journal, schema version 2'",
        ):
            admin.execute(sql.SQL(statement).format(**names))

    async def scenario() -> None:
        journal = PostgresJournal(pg_dsn, owner="heir", table=table)
        try:
            await journal.renew()
            assert ids(await journal.claim(topics=TOPICS)) == ["task-1"]
            _, digest = new_token()
            deferred = make_job(2, state=JobState.DEFERRED, token_hash=digest, deadline=4e9)
            assert await journal.save(deferred) is True
            answer = dumps_answer(Answer(failure="declined"))
            assert await journal.answer(digest, answer) is Verdict.ACCEPTED
            await journal.release("task-2")
            claimed = await journal.claim(topics=TOPICS, running=["task-1"])
            assert ids(claimed) == ["task-2"]
            assert claimed[0].answer == Answer(failure="declined")
        finally:
            await journal.close()

    asyncio.run(scenario())
    with psycopg.connect(pg_dsn, autocommit=True) as admin:
        comment = admin.execute("SELECT obj_description(%s::regclass)", (table,)).fetchone()
        assert comment == (f"camunda-relay journal, schema version {SCHEMA_VERSION}",)
        definition = admin.execute(
            "SELECT indexdef FROM pg_indexes WHERE indexname = %s", (f"{table}_claim_idx",)
        ).fetchone()
        assert definition is not None
        assert "deferred" in definition[0]


def test_a_version_3_table_is_migrated(pg_dsn: str) -> None:
    """Its jobs were taken under no fetch filters (key ''); the claim index is rebuilt
    without parked jobs and the expiry index made."""
    table = unique_table()

    async def create() -> None:
        journal = PostgresJournal(pg_dsn, owner="old", table=table)
        try:
            await journal.save(make_job(1, state=JobState.DONE))
            await journal.save(make_job(2, state=JobState.DEFERRED, token_hash="h", deadline=1.0))
            await journal.release("task-1")
            await journal.release("task-2")
        finally:
            await journal.close()

    asyncio.run(create())
    names = {
        "table": sql.Identifier(table),
        "claim": sql.Identifier(f"{table}_claim_idx"),
        "expiry": sql.Identifier(f"{table}_expiry_idx"),
    }
    with psycopg.connect(pg_dsn, autocommit=True) as admin:
        for statement in (
            *_BACK_TO_3,
            "COMMENT ON TABLE {table} IS 'camunda-relay journal, schema version 3'",
        ):
            admin.execute(sql.SQL(statement).format(**names))

    async def scenario() -> None:
        journal = PostgresJournal(pg_dsn, owner="heir", table=table)
        try:
            await journal.renew()
            assert await journal.claim(topics=TOPICS, filters={TOPICS[0]: "k"}) == []
            claimed = await journal.claim(topics=TOPICS)
            assert ids(claimed) == ["task-1", "task-2"], "the deferred one is past its deadline"
            assert {job.filter_key for job in claimed} == {""}
        finally:
            await journal.close()

    asyncio.run(scenario())
    with psycopg.connect(pg_dsn, autocommit=True) as admin:
        comment = admin.execute("SELECT obj_description(%s::regclass)", (table,)).fetchone()
        assert comment == (f"camunda-relay journal, schema version {SCHEMA_VERSION}",)
        for index in (f"{table}_claim_idx", f"{table}_expiry_idx"):
            found = admin.execute("SELECT indexdef FROM pg_indexes WHERE indexname = %s", (index,))
            assert "unreadable IS NULL" in str(found.fetchone())
