"""The SQLite journal's schema (``PRAGMA user_version`` 5), its migrations from versions 1
to 4, and the statements :mod:`camunda_relay.journal.sqlite` runs.

Two tables. ``relay_jobs``: one row per job, what changes with its steps in columns (its
state, attempts, ``result`` and ``error_detail``, ...), what does not in ``payload`` (its task
and message, JSON text from :mod:`camunda_relay.journal.codec`, written when the job is
recorded or starts afresh: :data:`SAVE`; a step writes its columns only, :data:`SAVE_STEP`),
and the ``owner`` that holds it (``''``, :data:`~camunda_relay.journal.base.NOBODY`, for a
finished or released job). ``relay_owners``: one row per owner that renewed, with the end
of its one lease (epoch seconds, from the journal's clock). Renewing a lease writes one small
row however many jobs the owner holds.

Who runs a job (docs/journal.md): a job keeps the ``filter_key`` of the registration that
took it (its fetch filters' name, ``''`` for none), and a claim takes only jobs of its
``(topic, filter_key)`` pairs. A claim first walks the distinct owners of claimable jobs
through the partial index ``relay_jobs_claim`` (one index seek per owner, however many jobs
each holds), keeps those whose jobs are free (nobody, a lease that ran out or no lease row at
all, and this owner itself, whose jobs a runner of its process holds are named in
``:running`` and left out), and then reads only their jobs of the wanted pairs from the same
index. Parked deferred jobs (unanswered) are not in that index: those past their deadline
come from ``relay_jobs_expiry`` (by deadline). Its cost grows with the number of owners, this
owner's running jobs and the jobs it may take, never with the jobs other live owners hold or
with the parked ones. ``INDEXED BY`` makes SQLite use those indexes or fail, never quietly
scan. A row that a claim cannot read is given back and marked (``unreadable``, the reason
without values; :data:`MARK_UNREADABLE`), which leaves it out of both indexes until a save
of the job clears it.

Deferred replies: ``token_hash`` (the SHA-256 of the job's current reply token, unique) and
``answer`` (what the token's holder sent; written by :data:`ANSWER_SET` only). A save
whose job does not carry the stored answer (``:knows`` false) changes no row: no attempt goes
past an answer; one that carries it may change the token, which drops the answer.
:data:`PARK` stores a deferred job held by nobody, or, answered meanwhile, by its runner, in
one statement. A claim takes a ``deferred`` job only once it is answered or past its
deadline.

Version 1, the first layout, kept a ``lease_until`` on every job row. :data:`MIGRATE_FROM_1`
gives each owner of unfinished jobs the latest lease any of its jobs had, hands finished
jobs to nobody, and drops the column. Version 2 had no deferred replies:
:data:`MIGRATE_FROM_2` adds the two columns and rebuilds the claim index (whose unfinished
states now include ``deferred``); a version-1 file gets both. Version 3 kept the whole job
in ``payload``: :data:`MIGRATE_FROM_3` adds the ``result`` and ``error_detail`` columns,
filled from the payload (whose other fields are read from the columns from then on); older
files get it after their own. Version 4 had no ``filter_key`` (:data:`MIGRATE_FROM_4` adds it,
``''`` for every job: taken under no filters, as a worker of that version took them), no
``unreadable`` mark and no expiry index; the claim index is rebuilt without parked jobs.
"""

# The statements are put together from constants only (the state lists of replies.job and
# the fragments below); every value is a bound parameter.
# ruff: noqa: S608

from __future__ import annotations

from camunda_relay.journal import codec
from camunda_relay.replies.job import FINISHED, UNFINISHED, JobState, sql_states

__all__ = [
    "ANSWER_FIND",
    "ANSWER_SET",
    "CLAIM",
    "CREATE",
    "FILTER_KEYS",
    "JOB",
    "MARK_UNREADABLE",
    "MIGRATE_FROM_1",
    "MIGRATE_FROM_2",
    "MIGRATE_FROM_3",
    "MIGRATE_FROM_4",
    "PARK",
    "PRUNE_FINISHED",
    "PRUNE_OWNERS",
    "RECORD",
    "RELEASE_JOB",
    "RELEASE_LEASE",
    "RENEW",
    "SAVE",
    "SAVE_STEP",
    "SCHEMA_VERSION",
    "UNFINISHED_INSTANCES",
    "UNFINISHED_PAYLOADS",
    "UNREADABLE",
    "statements",
]

SCHEMA_VERSION = 5

_UNFINISHED = f"state IN ({sql_states(UNFINISHED)})"
_DEFERRED = f"'{JobState.DEFERRED.value}'"
# The claim index's condition (each term as the index has it, so that SQLite sees the index
# apply): unfinished, not parked (a deferred job waits for its answer or its deadline), read.
_NOT_PARKED = f"(state <> {_DEFERRED} OR answer IS NOT NULL)"
_CLAIMABLE = f"{_UNFINISHED} AND {_NOT_PARKED} AND unreadable IS NULL"
# A parked job, which the expiry index holds by deadline.
_PARKED = f"state = {_DEFERRED} AND answer IS NULL AND unreadable IS NULL"

_OWNERS = """
CREATE TABLE relay_owners (
    owner       TEXT PRIMARY KEY,
    lease_until REAL NOT NULL
) WITHOUT ROWID
"""
_CLAIM_INDEX = f"""
CREATE INDEX relay_jobs_claim ON relay_jobs (owner, topic, filter_key, created_at, id)
WHERE {_CLAIMABLE}
"""
_EXPIRY_INDEX = f"""
CREATE INDEX relay_jobs_expiry ON relay_jobs (deadline) WHERE {_PARKED}
"""

_HASH_INDEX = """
CREATE UNIQUE INDEX relay_jobs_token ON relay_jobs (token_hash) WHERE token_hash IS NOT NULL
"""

CREATE = f"""
CREATE TABLE relay_jobs (
    id                  TEXT PRIMARY KEY,
    topic               TEXT NOT NULL,
    process_instance_id TEXT NOT NULL,
    business_key        TEXT,
    state               TEXT NOT NULL,
    attempts            INTEGER NOT NULL,
    deliveries          INTEGER NOT NULL,
    error               TEXT,
    deadline            REAL,
    created_at          REAL NOT NULL,
    updated_at          REAL NOT NULL,
    owner               TEXT NOT NULL,
    payload             TEXT NOT NULL,
    token_hash          TEXT,
    answer              TEXT,
    error_detail        TEXT,
    result              TEXT,
    filter_key          TEXT NOT NULL DEFAULT '',
    unreadable          TEXT
);
CREATE INDEX relay_jobs_state ON relay_jobs (state);
{_CLAIM_INDEX};
{_EXPIRY_INDEX};
{_HASH_INDEX};
{_OWNERS}
"""

MIGRATE_FROM_1 = f"""
{_OWNERS};
INSERT INTO relay_owners (owner, lease_until)
    SELECT owner, max(lease_until) FROM relay_jobs WHERE {_UNFINISHED} AND owner <> ''
    GROUP BY owner;
UPDATE relay_jobs SET owner = '' WHERE state IN ({sql_states(FINISHED)});
DROP INDEX IF EXISTS relay_jobs_lease_until;
ALTER TABLE relay_jobs DROP COLUMN lease_until
"""

_ADD_ANSWERS = f"""
ALTER TABLE relay_jobs ADD COLUMN token_hash TEXT;
ALTER TABLE relay_jobs ADD COLUMN answer TEXT;
{_HASH_INDEX}
"""

MIGRATE_FROM_2 = _ADD_ANSWERS

MIGRATE_FROM_3 = """
ALTER TABLE relay_jobs ADD COLUMN error_detail TEXT;
ALTER TABLE relay_jobs ADD COLUMN result TEXT;
UPDATE relay_jobs SET error_detail = json_extract(payload, '$.error_detail'),
    result = json_extract(payload, '$.result')
"""

MIGRATE_FROM_4 = f"""
ALTER TABLE relay_jobs ADD COLUMN filter_key TEXT NOT NULL DEFAULT '';
ALTER TABLE relay_jobs ADD COLUMN unreadable TEXT;
DROP INDEX IF EXISTS relay_jobs_claim;
{_CLAIM_INDEX};
{_EXPIRY_INDEX}
"""

MIGRATIONS = {
    1: ";".join((MIGRATE_FROM_1, MIGRATE_FROM_2, MIGRATE_FROM_3, MIGRATE_FROM_4)),
    2: ";".join((MIGRATE_FROM_2, MIGRATE_FROM_3, MIGRATE_FROM_4)),
    3: MIGRATE_FROM_3 + ";" + MIGRATE_FROM_4,
    4: MIGRATE_FROM_4,
}
"""The script that brings a file of each older version to :data:`SCHEMA_VERSION`."""


def statements(script: str) -> list[str]:
    """The statements of a script above (none of them has a ``;`` inside)."""
    return [statement.strip() for statement in script.split(";") if statement.strip()]


# Parameters: :me is this journal's owner; :owner the job row's new owner (:me, or '' for a
# finished job); :now and :lease_until epoch seconds from the journal's clock.

_INSERT = """
INSERT INTO relay_jobs (id, topic, process_instance_id, business_key, state, attempts,
    deliveries, error, deadline, created_at, updated_at, owner, payload, token_hash,
    error_detail, result, filter_key)
VALUES (:id, :topic, :process_instance_id, :business_key, :state, :attempts,
    :deliveries, :error, :deadline, :created_at, :updated_at, :owner, :payload, :token_hash,
    :error_detail, :result, :filter_key)
"""
RECORD = _INSERT + "ON CONFLICT (id) DO NOTHING"

# A job may be written over by :me when it is its own or nobody's, or when its owner has no
# live lease (it ran out, was released, or there is no row at all).
_MAY_WRITE = """(relay_jobs.owner IN (:me, '') OR NOT EXISTS (
    SELECT 1 FROM relay_owners AS lease
    WHERE lease.owner = relay_jobs.owner AND lease.lease_until > :now
))"""

# Nor may it be written over when an answer is stored that the job does not carry (:knows
# false): its runner reads it and takes the answer instead.
_KNOWS_ANSWER = "(:knows OR relay_jobs.answer IS NULL)"

# The whole job, its payload too: a job unknown so far, or one starting afresh.
SAVE = (
    _INSERT
    + f"""ON CONFLICT (id) DO UPDATE SET
    topic = excluded.topic, process_instance_id = excluded.process_instance_id,
    business_key = excluded.business_key, state = excluded.state,
    attempts = excluded.attempts, deliveries = excluded.deliveries, error = excluded.error,
    deadline = excluded.deadline, created_at = excluded.created_at,
    updated_at = excluded.updated_at, owner = excluded.owner, payload = excluded.payload,
    token_hash = excluded.token_hash, error_detail = excluded.error_detail,
    result = excluded.result, filter_key = excluded.filter_key, unreadable = NULL,
    answer = CASE WHEN relay_jobs.token_hash IS excluded.token_hash THEN relay_jobs.answer END
WHERE {_MAY_WRITE} AND {_KNOWS_ANSWER}"""
)

# A step of a known job: the columns that change, not the payload. No row changed: the job
# is unknown (then :data:`SAVE`) or another owner's.
SAVE_STEP = f"""
UPDATE relay_jobs SET state = :state, attempts = :attempts, deliveries = :deliveries,
    error = :error, deadline = :deadline, updated_at = :updated_at, owner = :owner,
    token_hash = :token_hash, error_detail = :error_detail, result = :result,
    filter_key = :filter_key, unreadable = NULL,
    answer = CASE WHEN token_hash IS :token_hash THEN answer END
WHERE id = :id AND {_MAY_WRITE} AND {_KNOWS_ANSWER}
"""

# A deferred job parked: held by nobody, or by :me when its token was answered meanwhile (its
# runner takes the answer at once). No row: unknown, or another owner's.
PARK = f"""
UPDATE relay_jobs SET state = :state, attempts = :attempts, deliveries = :deliveries,
    error = :error, deadline = :deadline, updated_at = :updated_at,
    error_detail = :error_detail, result = :result,
    owner = CASE WHEN answer IS NULL THEN '' ELSE :me END
WHERE id = :id AND {_MAY_WRITE}
RETURNING {", ".join(codec.ROW)}
"""

JOB = ", ".join(codec.ROW)
"""The columns a job is read from (:func:`camunda_relay.journal.codec.from_row`)."""

RENEW = """
INSERT INTO relay_owners (owner, lease_until) VALUES (:me, :lease_until)
ON CONFLICT (owner) DO UPDATE SET lease_until = excluded.lease_until
"""
RELEASE_LEASE = "UPDATE relay_owners SET lease_until = 0 WHERE owner = :me"
RELEASE_JOB = "UPDATE relay_jobs SET owner = '' WHERE id = :id AND owner = :me"

# The owners whose jobs a claim may take: nobody, this owner itself (its jobs in :running
# aside), and those without a live lease.
_FREE_OWNER = """(relay_jobs.owner IN (:me, '') OR NOT EXISTS (
    SELECT 1 FROM relay_owners AS lease
    WHERE lease.owner = relay_jobs.owner AND lease.lease_until > :now
))"""
_WANTED = """(topic, filter_key) IN (
    SELECT json_extract(value, '$[0]'), json_extract(value, '$[1]') FROM json_each(:wanted)
) AND NOT (owner = :me AND id IN (SELECT value FROM json_each(:running)))"""

CLAIM = f"""
WITH RECURSIVE holders(owner) AS (
    SELECT (
        SELECT owner FROM relay_jobs INDEXED BY relay_jobs_claim WHERE {_CLAIMABLE}
        ORDER BY owner LIMIT 1
    )
    UNION ALL
    SELECT (
        SELECT relay_jobs.owner FROM relay_jobs INDEXED BY relay_jobs_claim
        WHERE {_CLAIMABLE} AND relay_jobs.owner > holders.owner
        ORDER BY relay_jobs.owner LIMIT 1
    )
    FROM holders WHERE holders.owner IS NOT NULL
),
free(owner) AS (
    SELECT owner FROM holders
    WHERE owner IS NOT NULL AND (owner IN (:me, '') OR NOT EXISTS (
        SELECT 1 FROM relay_owners AS lease
        WHERE lease.owner = holders.owner AND lease.lease_until > :now
    ))
),
candidates(id, created_at) AS (
    SELECT * FROM (
        SELECT id, created_at FROM relay_jobs INDEXED BY relay_jobs_claim
        WHERE {_CLAIMABLE} AND owner IN (SELECT owner FROM free) AND {_WANTED}
        ORDER BY created_at, id LIMIT :limit
    )
    UNION ALL
    SELECT * FROM (
        SELECT id, created_at FROM relay_jobs INDEXED BY relay_jobs_expiry
        WHERE {_PARKED} AND deadline <= :now AND {_FREE_OWNER} AND {_WANTED}
        ORDER BY deadline LIMIT :limit
    )
)
UPDATE relay_jobs SET owner = :me
WHERE id IN (SELECT id FROM candidates ORDER BY created_at, id LIMIT :limit)
RETURNING id, {JOB}
"""

# A row a claim could not read: given back to nobody and marked, so no claim takes it again.
MARK_UNREADABLE = """
UPDATE relay_jobs SET owner = '', unreadable = :reason WHERE id = :id AND owner = :me
"""
UNREADABLE = f"""
SELECT id, topic, state, unreadable FROM relay_jobs
WHERE {_UNFINISHED} AND unreadable IS NOT NULL ORDER BY created_at, id
"""
FILTER_KEYS = f"""
SELECT topic, filter_key, count(*) FROM relay_jobs
WHERE {_UNFINISHED} AND topic IN (SELECT value FROM json_each(:topics))
GROUP BY topic, filter_key
"""

# Leases that ran out of owners that hold no claimable job: the table stays as small as the
# fleet, however many worker ids have come and gone.
PRUNE_OWNERS = f"""
DELETE FROM relay_owners
WHERE owner <> :me AND lease_until <= :now AND NOT EXISTS (
    SELECT 1 FROM relay_jobs INDEXED BY relay_jobs_claim
    WHERE relay_jobs.owner = relay_owners.owner AND {_CLAIMABLE}
)
"""

# Finished jobs past the retention (CAMUNDA_JOURNAL_RETENTION); :before is epoch seconds.
PRUNE_FINISHED = (
    f"DELETE FROM relay_jobs WHERE state IN ({sql_states(FINISHED)}) AND updated_at < :before"
)

UNFINISHED_PAYLOADS = (
    f"SELECT id, {JOB} FROM relay_jobs WHERE {_UNFINISHED} ORDER BY created_at, id"
)
UNFINISHED_INSTANCES = f"SELECT DISTINCT process_instance_id FROM relay_jobs WHERE {_UNFINISHED}"

# The job a reply token's hash names, and keeping its answer (once).
ANSWER_FIND = "SELECT state, answer, deadline FROM relay_jobs WHERE token_hash = :hash"
ANSWER_SET = "UPDATE relay_jobs SET answer = :answer WHERE token_hash = :hash AND answer IS NULL"
