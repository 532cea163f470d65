"""Helpers for the journal tests: jobs with a known order, and :class:`Store`, which opens
journals for several owners on one shared store, as several worker processes see it."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta, timezone
from typing import Any, TypeVar

from camunda_relay.journal import Journal
from camunda_relay.replies.job import Job, JobState
from camunda_relay.task import Task
from camunda_relay.variables import Unreadable
from tests.support.postgres import PostgresServer

T = TypeVar("T")

LIVE = timedelta(minutes=10)
EXPIRED = timedelta(seconds=-1)
"""A lease that has run out when it is given: the owner counts as dead at once."""

TOPIC = "messageSending"
TOPICS = [TOPIC]


class Store:
    """Journals for several owners on one shared store; closed when a scenario ends."""

    def __init__(
        self,
        kind: str,
        make: Callable[[str, timedelta], Journal],
        drop_lease: Callable[[str], None] | None = None,
        corrupt: Callable[[str], None] | None = None,
    ) -> None:
        self.kind = kind
        self._make = make
        self._drop_lease = drop_lease
        self._corrupt = corrupt
        self._opened: list[Journal] = []

    def corrupt(self, job_id: str) -> None:
        """Make the job's stored payload one no reader of this version reads (written by a
        later version), behind the journals' backs."""
        assert self._corrupt is not None, f"{self.kind}: no way to damage a row"
        self._corrupt(job_id)

    def drop_lease(self, owner: str) -> None:
        """Delete ``owner``'s lease behind the journals' backs, as if it was never written."""
        assert self._drop_lease is not None, f"{self.kind}: no way to drop a lease"
        self._drop_lease(owner)

    def journal(self, owner: str = "worker-a", lease: timedelta = LIVE) -> Journal:
        journal = self._make(owner, lease)
        assert journal.owner == owner
        self._opened.append(journal)
        return journal

    def run(self, scenario: Callable[[], Awaitable[T]]) -> T:
        async def main() -> T:
            try:
                return await asyncio.wait_for(scenario(), timeout=60)
            finally:
                for journal in self._opened:
                    await journal.close()
                self._opened.clear()

        return asyncio.run(main())


def fresh_database(server: PostgresServer, prefix: str) -> str:
    """The DSN of a new database on ``server`` (one per test module)."""
    name = f"{prefix}_{uuid.uuid4().hex[:8]}"
    server.create_database(name)
    return server.dsn(name)


def unique_table() -> str:
    return f"jobs_{uuid.uuid4().hex[:12]}"


def make_job(
    number: int,
    *,
    state: JobState = JobState.RECORDED,
    variables: dict[str, object] | None = None,
    topic: str = TOPIC,
    **changes: Any,
) -> Job:
    """Job ``number``, created ``number`` seconds after a fixed moment (so order is known)."""
    task = Task(
        id=f"task-{number}",
        topic=topic,
        worker_id="worker-a",
        process_instance_id=f"instance-{number}",
        business_key=f"bk-{number}",
        variables=variables or {},
    )
    moment = 1_760_000_000.0 + number
    return Job(
        task=task,
        message="sample_response",
        state=state,
        created_at=moment,
        updated_at=moment,
        **changes,
    )


def ids(jobs: list[Job]) -> list[str]:
    return [job.id for job in jobs]


EVERY_KIND_OF_VARIABLE: dict[str, object] = {
    "text": "grüße, 世界",
    "nul": "a\x00b",
    "long_text": "x" * 5000,
    "empty": "",
    "integer": 42,
    "long": 2**40,
    "negative": -7,
    "float": 2.5,
    "true": True,
    "false": False,
    "nothing": None,
    "mapping": {"a": [1, 2, {"b": None}], "c": "d"},
    "sequence": [1, "two", 3.0, False, None],
    "moment": datetime(2026, 11, 27, 21, 0, 0, 123000, tzinfo=UTC),
    "elsewhere": datetime(2026, 1, 2, 3, 4, 5, 6000, tzinfo=timezone(timedelta(hours=-5))),
    "blob": bytes(range(256)),
    "java": Unreadable("Object", "application/x-java-serialized-object"),
    "file": Unreadable("File"),
}


def rich_job() -> Job:
    """A job with every field set and every kind of variable."""
    job = make_job(1, variables=EVERY_KIND_OF_VARIABLE)
    task = Task(
        id=job.task.id,
        topic=job.task.topic,
        worker_id="worker-7",
        process_instance_id=job.task.process_instance_id,
        execution_id="execution-1",
        activity_id="send",
        activity_instance_id="send:1",
        process_definition_id="correlation-message:1:abc",
        process_definition_key="correlation-message",
        business_key="bk-1",
        tenant_id="tenant",
        retries=3,
        priority=5,
        lock_expiration=datetime(2026, 11, 27, 21, 5, 0, 123456, tzinfo=UTC),
        variables=EVERY_KIND_OF_VARIABLE,
        job_id="job-1",
    )
    return Job(
        task=task,
        message="sample_response",
        by_business_key=True,
        state=JobState.DONE,
        attempts=2,
        deliveries=1,
        result={
            "var1": 1,
            "var2": "value",
            "when": datetime(2026, 11, 27, 22, 0, 0, 500000, tzinfo=UTC),
            "raw": b"\x00\xff",
            "nested": {"list": [1, 2.5, "three"]},
            "none": None,
        },
        error="correlation refused (NoMatchingExecution)",
        deadline=1_760_000_600.25,
        created_at=1_760_000_000.125,
        updated_at=1_760_000_100.5,
    )
