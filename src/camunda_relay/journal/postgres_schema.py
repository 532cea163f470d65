"""The PostgreSQL journal's schema (version 4), its migrations from versions 1 to 3, and
the statements :mod:`camunda_relay.journal.postgres` runs.

The same layout as the SQLite journal (:mod:`camunda_relay.journal.sqlite_schema` explains
it): a jobs table (``relay_jobs`` unless configured) with each job's ``owner``, and an owners
table (``<table>_owners``) with one lease per owner, in the database's clock (``now()``).
The schema version is kept in the jobs table's comment (PostgreSQL's ``user_version``); a
table without one is version 1, which kept a ``lease_until`` on every job row. Version 2
had no deferred replies (the ``token_hash`` and ``answer`` columns; the claim index, whose
unfinished states now include ``deferred``, is rebuilt). Version 3 had no ``filter_key``
(added as ``''``: jobs taken under no filters, as its workers took them), no ``unreadable``
mark and no expiry index; its claim index held parked deferred jobs too (rebuilt without).
A save never writes the answer and changes no row when an answer is stored that the job does
not carry (``%(knows)s`` false); ``park`` parks a deferred job in one statement (see the
SQLite schema).

The texts use ``{table}``, ``{owners}``, ``{state_index}``, ``{claim_index}``,
``{expiry_index}``, ``{lease_index}``, ``{token_index}``, ``{unfinished}``, ``{claimable}``
and ``{parked}``, filled in with :func:`psycopg.sql.SQL.format`.
"""

# The statements are put together from constants only (the state lists of replies.job and
# the fragments below); every value is a bound parameter.
# ruff: noqa: S608

from __future__ import annotations

import re

from camunda_relay.replies.job import FINISHED, UNFINISHED, JobState, sql_states

__all__ = [
    "CLAIMABLE_CONDITION",
    "CREATE",
    "MIGRATE_FROM_1",
    "MIGRATIONS",
    "PARKED_CONDITION",
    "QUERIES",
    "SCHEMA_VERSION",
    "UNFINISHED_CONDITION",
    "schema_version",
]

SCHEMA_VERSION = 4
UNFINISHED_CONDITION = f"state IN ({sql_states(UNFINISHED)})"
_DEFERRED = f"'{JobState.DEFERRED.value}'"
# The claim index's condition: unfinished, not parked (a deferred job waits for its answer
# or its deadline: those past it come from the expiry index), readable.
CLAIMABLE_CONDITION = (
    f"{UNFINISHED_CONDITION} AND (state <> {_DEFERRED} OR answer IS NOT NULL) "
    "AND unreadable IS NULL"
)
PARKED_CONDITION = f"state = {_DEFERRED} AND answer IS NULL AND unreadable IS NULL"

_COMMENT = f"COMMENT ON TABLE {{table}} IS 'camunda-relay journal, schema version {SCHEMA_VERSION}'"
_COMMENT_VERSION = re.compile(r"camunda-relay journal, schema version (\d+)")
_OWNERS = """CREATE TABLE {owners} (
    owner       text PRIMARY KEY,
    lease_until timestamptz NOT NULL
)"""
_CLAIM_INDEX = """CREATE INDEX {claim_index} ON {table} (owner, topic, filter_key, created_at, id)
WHERE {claimable}"""
_EXPIRY_INDEX = "CREATE INDEX {expiry_index} ON {table} (deadline) WHERE {parked}"
_TO_4 = (
    "ALTER TABLE {table} ADD COLUMN filter_key text NOT NULL DEFAULT ''",
    "ALTER TABLE {table} ADD COLUMN unreadable text",
    "DROP INDEX IF EXISTS {claim_index}",
    _CLAIM_INDEX,
    _EXPIRY_INDEX,
)

_HASH_INDEX = (
    "CREATE UNIQUE INDEX {token_index} ON {table} (token_hash) WHERE token_hash IS NOT NULL"
)
_ADD_ANSWERS = (
    "ALTER TABLE {table} ADD COLUMN token_hash text",
    "ALTER TABLE {table} ADD COLUMN answer json",
    _HASH_INDEX,
)

CREATE = (
    """CREATE TABLE {table} (
    id                  text PRIMARY KEY,
    topic               text NOT NULL,
    process_instance_id text NOT NULL,
    business_key        text,
    state               text NOT NULL,
    attempts            integer NOT NULL,
    deliveries          integer NOT NULL,
    error               text,
    deadline            timestamptz,
    created_at          timestamptz NOT NULL,
    updated_at          timestamptz NOT NULL,
    owner               text NOT NULL,
    payload             json NOT NULL,
    token_hash          text,
    answer              json,
    filter_key          text NOT NULL DEFAULT '',
    unreadable          text
)""",
    "CREATE INDEX {state_index} ON {table} (state)",
    _CLAIM_INDEX,
    _EXPIRY_INDEX,
    _HASH_INDEX,
    _OWNERS,
    _COMMENT,
)

MIGRATE_FROM_1 = (
    _OWNERS,
    """INSERT INTO {owners} (owner, lease_until)
SELECT owner, max(lease_until) FROM {table} WHERE {unfinished} AND owner <> '' GROUP BY owner""",
    f"UPDATE {{table}} SET owner = '' WHERE state IN ({sql_states(FINISHED)}) AND owner <> ''",
    "DROP INDEX IF EXISTS {lease_index}",
    "ALTER TABLE {table} DROP COLUMN lease_until",
    *_ADD_ANSWERS,
    *_TO_4,
    _COMMENT,
)

MIGRATE_FROM_2 = (*_ADD_ANSWERS, *_TO_4, _COMMENT)
MIGRATE_FROM_3 = (*_TO_4, _COMMENT)

MIGRATIONS = {1: MIGRATE_FROM_1, 2: MIGRATE_FROM_2, 3: MIGRATE_FROM_3}
"""The statements that bring a table of each older version to :data:`SCHEMA_VERSION`."""


def schema_version(exists: bool, comment: str | None) -> int:
    """The version of a jobs table: 0 when missing, 1 when it carries no version comment."""
    if not exists:
        return 0
    found = _COMMENT_VERSION.search(comment or "")
    return int(found.group(1)) if found else 1


# Parameters: %(me)s is this journal's owner, %(owner)s the job row's new owner (me, or ''
# for a finished job), %(lease)s the lease as an interval.

_INSERT = """
INSERT INTO {table} (id, topic, process_instance_id, business_key, state, attempts,
    deliveries, error, deadline, created_at, updated_at, owner, payload, token_hash,
    filter_key)
VALUES (%(id)s, %(topic)s, %(process_instance_id)s, %(business_key)s, %(state)s,
    %(attempts)s, %(deliveries)s, %(error)s, to_timestamp(%(deadline)s),
    to_timestamp(%(created_at)s), to_timestamp(%(updated_at)s), %(owner)s, %(payload)s::json,
    %(token_hash)s, %(filter_key)s)
"""
# A save whose commit does not wait for the WAL's flush (``synchronous_commit`` off for its
# transaction alone, set by the one row the insert reads): a crash of the server may lose
# it, never a commit before it, and the next synchronous commit flushes it too.
_INSERT_UNSYNCED = (
    "WITH commit_mode AS (SELECT set_config('synchronous_commit', 'off', true))"
    + _INSERT.replace("VALUES (", "SELECT ").rstrip().removesuffix(")")
    + "\nFROM commit_mode\n"
)
_SAVE_CONFLICT = """ON CONFLICT (id) DO UPDATE SET
    topic = excluded.topic, process_instance_id = excluded.process_instance_id,
    business_key = excluded.business_key, state = excluded.state,
    attempts = excluded.attempts, deliveries = excluded.deliveries, error = excluded.error,
    deadline = excluded.deadline, created_at = excluded.created_at,
    updated_at = excluded.updated_at, owner = excluded.owner, payload = excluded.payload,
    token_hash = excluded.token_hash, filter_key = excluded.filter_key, unreadable = NULL,
    answer = CASE WHEN {table}.token_hash IS NOT DISTINCT FROM excluded.token_hash
        THEN {table}.answer END
WHERE ({table}.owner IN (%(me)s, '') OR NOT EXISTS (
    SELECT 1 FROM {owners} AS lease
    WHERE lease.owner = {table}.owner AND lease.lease_until > now()
)) AND (%(knows)s OR {table}.answer IS NULL)"""
# A deferred job parked: held by nobody, or by %(me)s when its token was answered meanwhile
# (its runner takes the answer at once). No row: unknown, or another owner's.
_PARK = """UPDATE {table} SET state = %(state)s, attempts = %(attempts)s,
    deliveries = %(deliveries)s, error = %(error)s, deadline = to_timestamp(%(deadline)s),
    updated_at = to_timestamp(%(updated_at)s), payload = %(payload)s::json,
    owner = CASE WHEN answer IS NULL THEN '' ELSE %(me)s END
WHERE id = %(id)s AND (owner IN (%(me)s, '') OR NOT EXISTS (
    SELECT 1 FROM {owners} AS lease
    WHERE lease.owner = {table}.owner AND lease.lease_until > now()
))
RETURNING payload, answer"""
QUERIES = {
    "record": _INSERT + "ON CONFLICT (id) DO NOTHING",
    # Written over only when the job is this owner's or nobody's, or its owner has no live
    # lease (it ran out, was released, or there is no row at all).
    "save": _INSERT + _SAVE_CONFLICT,
    "save_unsynced": _INSERT_UNSYNCED + _SAVE_CONFLICT,
    "park": _PARK,
    "get": "SELECT payload, answer FROM {table} WHERE id = %(id)s",
    "unfinished": """SELECT id, payload, answer FROM {table} WHERE {unfinished}
ORDER BY created_at, id""",
    "unfinished_instances": "SELECT DISTINCT process_instance_id FROM {table} WHERE {unfinished}",
    "jobs": "SELECT id, payload, answer FROM {table} ORDER BY created_at, id",
    "jobs_in": """SELECT id, payload, answer FROM {table} WHERE state = ANY(%(states)s)
ORDER BY created_at, id""",
    # The distinct owners of claimable jobs, one index probe each (a "loose index scan");
    # those whose jobs are free (nobody, this owner: its running jobs aside, no live lease);
    # for each of them and each wanted (topic, filter key), its oldest jobs straight from
    # the claim index (in its order, so LIMIT stops the scan: the planner takes this path
    # whatever its estimates), and the parked jobs past their deadline from the expiry
    # index, locked with SKIP LOCKED so concurrent claimers pass each other by; of those,
    # the oldest. MATERIALIZED: the locking runs exactly once.
    "claim": """
WITH RECURSIVE holders AS (
    (SELECT owner FROM {table} WHERE {claimable} ORDER BY owner LIMIT 1)
    UNION ALL
    SELECT (
        SELECT job.owner FROM {table} AS job
        WHERE {claimable} AND job.owner > holders.owner ORDER BY job.owner LIMIT 1
    )
    FROM holders WHERE holders.owner IS NOT NULL
),
free AS (
    SELECT owner FROM holders
    WHERE owner IS NOT NULL AND (owner IN (%(me)s, '') OR NOT EXISTS (
        SELECT 1 FROM {owners} AS lease
        WHERE lease.owner = holders.owner AND lease.lease_until > now()
    ))
),
wanted AS (
    SELECT * FROM unnest(%(topics)s::text[], %(keys)s::text[]) AS wanted(topic, filter_key)
),
locked AS MATERIALIZED (
    SELECT job.id, job.created_at
    FROM free CROSS JOIN wanted
    CROSS JOIN LATERAL (
        SELECT id, created_at FROM {table}
        WHERE owner = free.owner AND topic = wanted.topic AND filter_key = wanted.filter_key
            AND {claimable} AND NOT (owner = %(me)s AND id = ANY(%(running)s::text[]))
        ORDER BY created_at, id
        LIMIT %(limit)s
        FOR UPDATE SKIP LOCKED
    ) AS job
),
expired AS MATERIALIZED (
    SELECT id, created_at FROM {table} AS job
    WHERE {parked} AND deadline <= now()
        AND (topic, filter_key) IN (SELECT topic, filter_key FROM wanted)
        AND NOT (owner = %(me)s AND id = ANY(%(running)s::text[]))
        AND (owner IN (%(me)s, '') OR NOT EXISTS (
            SELECT 1 FROM {owners} AS lease
            WHERE lease.owner = job.owner AND lease.lease_until > now()
        ))
    ORDER BY deadline
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
),
picked AS (
    SELECT id FROM (SELECT * FROM locked UNION ALL SELECT * FROM expired) AS both_kinds
    ORDER BY created_at, id LIMIT %(limit)s
)
UPDATE {table} AS job SET owner = %(me)s
FROM picked WHERE job.id = picked.id
RETURNING job.id, job.payload, job.answer""",
    # A row a claim could not read: given back to nobody and marked (no claim takes it again).
    "mark_unreadable": """UPDATE {table} SET owner = '', unreadable = %(reason)s
WHERE id = %(id)s AND owner = %(me)s""",
    "unreadable": """SELECT id, topic, state, unreadable FROM {table}
WHERE {unfinished} AND unreadable IS NOT NULL ORDER BY created_at, id""",
    "filter_keys": """SELECT topic, filter_key, count(*) FROM {table}
WHERE {unfinished} AND topic = ANY(%(topics)s::text[]) GROUP BY topic, filter_key""",
    # The job a reply token's hash names (locked), and keeping its answer (once).
    "answer_find": """SELECT state, answer::text, extract(epoch FROM deadline)::float8
FROM {table} WHERE token_hash = %(hash)s FOR UPDATE""",
    "answer_set": """UPDATE {table} SET answer = %(answer)s::json
WHERE token_hash = %(hash)s AND answer IS NULL""",
    # Leases that ran out of owners holding no claimable job: the table stays as small as
    # the fleet, however many worker ids have come and gone.
    "prune_owners": """DELETE FROM {owners} AS lease
WHERE lease.owner <> %(me)s AND lease.lease_until <= now() AND NOT EXISTS (
    SELECT 1 FROM {table} WHERE {table}.owner = lease.owner AND {claimable}
)""",
    "renew": """INSERT INTO {owners} (owner, lease_until) VALUES (%(me)s, now() + %(lease)s)
ON CONFLICT (owner) DO UPDATE SET lease_until = excluded.lease_until""",
    "release_lease": """UPDATE {owners} SET lease_until = timestamptz 'epoch'
WHERE owner = %(me)s""",
    "release_job": "UPDATE {table} SET owner = '' WHERE id = %(id)s AND owner = %(me)s",
    "counts": "SELECT state, count(*) FROM {table} GROUP BY state",
    "delete": "DELETE FROM {table} WHERE id = %(id)s",
    # Finished jobs past the retention (CAMUNDA_JOURNAL_RETENTION); %(before)s: epoch seconds.
    "prune_finished": f"""DELETE FROM {{table}}
WHERE state IN ({sql_states(FINISHED)}) AND updated_at < to_timestamp(%(before)s)""",
    "version": """SELECT to_regclass(%(table)s::text) IS NOT NULL,
    obj_description(to_regclass(%(table)s::text), 'pg_class')""",
}
