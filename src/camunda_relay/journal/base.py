"""The journal's interface: durable memory of reply jobs, leased to the workers that run them.

A job is written to the journal (keyed by the external task id) *before* its task is
completed, so a redelivered task with a known id is not run twice, and after a restart every
unfinished job resumes where it stopped (:mod:`camunda_relay.replies.job` has the states).

Leases let several workers (pods) share one journal. Each journal object acts for one
``owner`` (the worker's id); a job belongs to the owner that recorded or last claimed it.
An owner holds *one* lease for all its jobs, renewed by :meth:`Journal.renew` (one small
write, however many jobs it holds). Only :meth:`Journal.renew` and :meth:`Journal.release`
change a lease: a worker renews when it starts, before its first claim or record, and then
well within the lease. When the lease runs out (the worker died) the owner's jobs may be
claimed by any worker that serves their topics under the same fetch filters (a job keeps the
``filter_key`` of the registration that took it); an owner with no lease at all counts as one
whose lease ran out. An owner's own jobs that none of its runners holds (a restart under the
same worker id) are claimed by it at every round. A clean shutdown releases the lease, so
peers take the jobs over at once. A worker that was paused past its lease (a stopped
container, a long GC, a lost database) cannot overwrite a job its heir now holds:
:meth:`Journal.save` refuses, and the worker leaves the job to the heir. A finished job is
held by nobody, and so is a ``deferred`` one once its runner has parked it
(:meth:`Journal.park`, one write): a claim takes a deferred job only when its token was
answered (:meth:`Journal.answer`) or its deadline passed.

An accepted answer is a promise: no later write erases it. A save of a job that does not
carry the stored answer (``job.answer`` None: its runner has not seen it) is refused, so that
a new attempt, a handler's own result or its deferral cannot go past an answer; the runner
reads the job again and takes the answer (delivers it, or raises its failure as an
incident). Only a save that carries the answer (its runner took it, or ``pending retry``
starts the job afresh) may change the token, and a changed token drops the answer.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass
from datetime import timedelta
from enum import StrEnum
from typing import Protocol

from camunda_relay.errors import ConfigurationError, CorruptJob
from camunda_relay.journal.codec import loads_answer
from camunda_relay.replies.job import Job, JobState

__all__ = [
    "DEFAULT_LEASE",
    "NOBODY",
    "UNREADABLE_LINE",
    "Journal",
    "UnreadableJob",
    "Verdict",
    "check_owner",
    "judge_answer",
    "oldest_first",
    "same_answer",
    "wanted_keys",
]

DEFAULT_LEASE = timedelta(seconds=60)
NOBODY = ""
"""The owner of a job held by nobody: finished, or given up with :meth:`Journal.release`."""


class Journal(Protocol):
    """Durable memory of reply jobs (SQLite by default; memory for tests and one-offs).

    Every implementation passes the one contract suite, tests/unit/test_journal_contract.py.
    Database failures raise :class:`~camunda_relay.errors.JournalError` (retryable
    :class:`~camunda_relay.errors.JournalUnavailable` when the database cannot be reached
    or does not answer in time).
    """

    owner: str
    """The id of the worker this journal object acts for (set at construction)."""

    durable: bool
    """Whether jobs survive the process (False for the memory journal)."""

    async def record(self, job: Job) -> bool:
        """Store a new job, held by :attr:`owner` (by nobody when already finished); False
        (nothing stored) when its id exists."""
        ...

    async def save(self, job: Job, *, synced: bool = True) -> bool:
        """Store the job's new state (insert it if unknown); held by :attr:`owner` after it,
        by nobody once finished.

        A job that made an attempt keeps the task it was recorded with: callers change a
        job's task only with ``attempts`` back at 0 (a task offered again, a job adopted
        afresh), and a journal may write the task only then (SQLite does).

        ``synced`` False: committed and seen by every reader when this returns, and it
        survives the worker being killed, but not waited on to reach the disk: a crash of
        the machine (or of the database server) may lose it, never a write before it, and
        the next synced write of this journal makes it durable too. For a step whose loss
        puts the job back where a crash just before the step's action leaves it.

        Stored when the job is unknown, :attr:`owner`'s or nobody's, or its owner's lease
        ran out; False, and nothing written, when another owner holds it under a live lease
        (this worker lost its lease and the job was taken over), or when an answer is stored
        for it and ``job.answer`` is None (:meth:`get` it, and take the answer). The answer
        itself is never written by a save: it stays as stored while the token hash stays,
        and goes when a save that carries it changes the token hash.
        """
        ...

    async def park(self, job: Job) -> Job | None:
        """Store the ``deferred`` job and give it up, in one write: held by nobody then (a
        claim takes it once answered or past its deadline). When its token was answered
        meanwhile, the job is stored held by :attr:`owner` instead, and returned with the
        answer, for its runner to take at once. The job as stored (``answer`` set or None);
        None, and nothing written, when another owner holds it under a live lease."""
        ...

    async def get(self, job_id: str) -> Job | None: ...

    async def unfinished(self) -> list[Job]:
        """Jobs not yet finished, oldest first (whoever holds them)."""
        ...

    async def unfinished_instances(self) -> set[str]:
        """The process instance ids of the jobs not yet finished (whoever holds them): what
        the reconciler compares with the engine's waiting executions, without reading a
        payload."""
        ...

    async def jobs(self, *, states: Collection[JobState] | None = None) -> list[Job]:
        """Every job in one of ``states`` (all states when None), finished ones too, oldest
        first (whoever holds them): for listings such as ``camunda-relay pending``."""
        ...

    async def claim(
        self,
        *,
        topics: Collection[str],
        limit: int = 100,
        filters: Mapping[str, str] | None = None,
        running: Collection[str] = (),
    ) -> list[Job]:
        """Take over unfinished jobs that this owner will run, oldest first, at most
        ``limit``: jobs of ``topics`` taken under the same fetch filters (``filters``: each
        topic's :attr:`~camunda_relay.router.Registration.filter_key`, ``""`` when absent),
        held by nobody, by another owner whose lease ran out (or who has none), or by this
        owner itself, except those whose ids are in ``running`` (the jobs a runner of this
        process holds). No topics, nothing.

        A ``deferred`` job is taken only once answered or past its deadline; a job whose
        stored row cannot be read is never returned: it is given back (held by nobody),
        marked so that no claim takes it again, named in one log line, and listed by
        :meth:`unreadable`. Taken jobs belong to :attr:`owner`. Two claimers never get the
        same job. The cost does not grow with the jobs other live owners hold or with the
        parked deferred jobs (only with the number of owners, this owner's ``running`` and
        the jobs that may be taken).
        """
        ...

    async def unreadable(self) -> list[UnreadableJob]:
        """The unfinished jobs a claim found unreadable and marked, oldest first (a
        :meth:`save` of the job, by ``pending retry`` or a worker that can read it, clears
        the mark)."""
        ...

    async def filter_keys(self, topics: Collection[str]) -> dict[tuple[str, str], int]:
        """How many unfinished jobs of ``topics`` there are under each ``(topic,
        filter_key)``: a worker names, at start, those taken under other filters than its
        own (no claim of its takes them)."""
        ...

    async def renew(self) -> None:
        """Extend :attr:`owner`'s lease, creating it on the first call (one write, however
        many jobs it holds)."""
        ...

    async def release(self, job_id: str | None = None) -> None:
        """Give up one job of this owner's (it is then held by nobody, and claimable at
        once; another owner's job is left alone), or with None this owner's lease (a clean
        shutdown: others may claim all its jobs at once)."""
        ...

    async def answer(self, token_hash: str, answer: str) -> Verdict:
        """Keep ``answer`` (:func:`~camunda_relay.journal.codec.dumps_answer`) for the job
        whose current reply token hashes to ``token_hash``, at most once, whoever holds the
        job: :attr:`Verdict.ACCEPTED`, or why not (:func:`judge_answer`). The same answer
        given again (a retry after a lost response) is accepted again, and written once.
        Touches nothing else of the job."""
        ...

    async def counts(self) -> dict[JobState, int]:
        """How many jobs are in each state (every state is a key)."""
        ...

    async def delete(self, job_id: str) -> bool:
        """Forget a job (``pending cancel``); False when there was none."""
        ...

    async def prune(self, *, finished_before: float) -> int:
        """Delete the finished jobs last updated before ``finished_before`` (epoch seconds,
        the clock jobs are stamped with); unfinished ones are never touched. How many went.
        The worker calls it with ``CAMUNDA_JOURNAL_RETENTION``."""
        ...

    async def close(self) -> None:
        """Release the connection; safe to call more than once."""
        ...


@dataclass(frozen=True)
class UnreadableJob:
    """A job whose stored row cannot be read (a payload of another version, a damaged or
    hand-edited row): ``reason`` names what failed, never a value."""

    id: str
    topic: str
    state: str
    reason: str


UNREADABLE_LINE = (
    "journal job %s cannot be read (%s): given back and marked, no claim takes it again "
    "(camunda-relay pending lists it; pending cancel lets the reconciler resume its instance)"
)
"""The one log line (job id, reason) of a row a claim could not read."""


def wanted_keys(topics: Collection[str], filters: Mapping[str, str] | None) -> list[list[str]]:
    """The ``[topic, filter_key]`` pairs a claim takes, sorted (every journal's reading of
    ``topics`` and ``filters``)."""
    keys = filters or {}
    return sorted([topic, keys.get(topic, "")] for topic in set(topics))


class Verdict(StrEnum):
    """What became of an answer to a reply token."""

    ACCEPTED = "accepted"
    UNKNOWN = "unknown"  # no job has that token now (never issued, superseded, pruned)
    USED = "used"  # the token was answered before, with another answer
    EXPIRED = "expired"  # the deadline passed, or the job went on without the answer
    CANCELLED = "cancelled"  # the job's instance no longer waits (the job ended cancelled)


_ANSWERABLE = frozenset({JobState.RECORDED, JobState.ACKNOWLEDGED, JobState.DEFERRED})


def judge_answer(
    state: JobState | None,
    stored: str | None,
    deadline: float | None,
    now: float,
    answer: str,
) -> Verdict:
    """Whether the job found for a token (``state`` None: none), whose stored answer is
    ``stored`` (None: none yet), takes ``answer`` now: the answer it has already (accepted
    again, whatever became of the job since), or a first one while its attempt runs (the
    token's holder may answer before the handler returned; ``recorded``: the attempt's
    acknowledgement was lost with a machine) or while it waits deferred, before its
    deadline. A cancelled job's token says so, whatever came before (nobody waits for its
    reply any more). The one rule every journal applies."""
    if state is None:
        return Verdict.UNKNOWN
    if state is JobState.CANCELLED:
        return Verdict.CANCELLED
    if stored is not None:
        return Verdict.ACCEPTED if same_answer(stored, answer) else Verdict.USED
    if state is JobState.DEFERRED and deadline is not None and deadline <= now:
        return Verdict.EXPIRED
    return Verdict.ACCEPTED if state in _ANSWERABLE else Verdict.EXPIRED


def same_answer(stored: str, answer: str) -> bool:
    """Whether two answers (:func:`~camunda_relay.journal.codec.dumps_answer` texts) say
    the same: the same variables with the same values (in any order), or the same failure."""
    if stored == answer:
        return True
    try:
        return loads_answer(stored) == loads_answer(answer)
    except CorruptJob:
        return False


def check_owner(owner: str) -> str:
    """``owner`` if it can name a worker in a journal, else :class:`ConfigurationError`."""
    if not isinstance(owner, str) or not owner.strip():
        raise ConfigurationError("a journal owner (the worker id) must be non-empty text")
    return owner


def oldest_first(jobs: list[Job]) -> list[Job]:
    """``jobs`` in the order every journal lists them: by creation time, then id."""
    return sorted(jobs, key=lambda job: (job.created_at, job.id))
