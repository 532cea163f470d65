"""The journal's part of deferred replies, one contract for memory, SQLite and PostgreSQL:
an answer is kept once for the job a token's hash names, a deferred job is claimed only once
answered or past its deadline, an accepted answer outlives every later attempt until its
runner takes it, the same answer is accepted twice, and parking is one write."""

from __future__ import annotations

import dataclasses

import pytest

from camunda_relay.journal.base import Verdict
from camunda_relay.journal.codec import dumps_answer
from camunda_relay.replies.job import Answer, Job, JobState
from camunda_relay.replies.tokens import hash_token, new_token
from tests.support.journals import EVERY_KIND_OF_VARIABLE, EXPIRED, TOPICS, Store, ids, make_job
from tests.unit.test_journal_contract import pg_dsn, store

__all__ = ["pg_dsn", "store"]

FUTURE = 4_000_000_000.0  # a deadline decades away
PAST = 1_000_000_000.0  # one that passed long ago
REPLY = dumps_answer(Answer(variables={"var1": 1, "var2": "answered"}))


def _deferred(number: int, digest: str, deadline: float = FUTURE) -> Job:
    return make_job(
        number, state=JobState.DEFERRED, attempts=1, token_hash=digest, deadline=deadline
    )


def test_a_deferred_job_is_claimed_only_once_answered(store: Store) -> None:
    async def scenario() -> None:
        token, digest = new_token()
        parked = store.journal("worker", lease=EXPIRED)
        await parked.save(_deferred(1, digest))
        await parked.release("task-1")
        heir = store.journal("heir")
        await heir.renew()
        assert await heir.claim(topics=TOPICS) == [], "waiting for its answer"
        assert await store.journal("web").answer(hash_token(token), REPLY) is Verdict.ACCEPTED
        claimed = await heir.claim(topics=TOPICS)
        assert ids(claimed) == ["task-1"]
        assert claimed[0].answer == Answer(variables={"var1": 1, "var2": "answered"})
        stored = await heir.get("task-1")
        assert stored is not None
        assert stored.answer is not None
        assert stored.answer.variables == {"var1": 1, "var2": "answered"}

    store.run(scenario)


def test_a_token_answers_once(store: Store) -> None:
    async def scenario() -> None:
        token, digest = new_token()
        worker = store.journal("worker")
        await worker.save(_deferred(1, digest))
        web = store.journal("web")
        assert await web.answer(digest, REPLY) is Verdict.ACCEPTED
        failure = dumps_answer(Answer(failure="declined"))
        assert await web.answer(digest, failure) is Verdict.USED
        assert await web.answer(hash_token(token + "x"), REPLY) is Verdict.UNKNOWN
        job = await worker.get("task-1")
        assert job is not None
        assert job.answer == Answer(variables={"var1": 1, "var2": "answered"})

    store.run(scenario)


def test_a_token_past_its_deadline_is_expired_and_its_job_claimable(store: Store) -> None:
    async def scenario() -> None:
        _, digest = new_token()
        worker = store.journal("worker", lease=EXPIRED)
        await worker.save(_deferred(1, digest, deadline=PAST))
        assert await store.journal("web").answer(digest, REPLY) is Verdict.EXPIRED
        heir = store.journal("heir")
        await heir.renew()
        claimed = await heir.claim(topics=TOPICS)
        assert ids(claimed) == ["task-1"]
        assert claimed[0].answer is None

    store.run(scenario)


def test_an_answer_while_the_work_runs_outlives_the_deferral(store: Store) -> None:
    async def scenario() -> None:
        _, digest = new_token()
        worker = store.journal("worker")
        running = make_job(1, state=JobState.ACKNOWLEDGED, attempts=1, token_hash=digest)
        await worker.save(running)
        failure = dumps_answer(Answer(failure="card declined"))
        assert await store.journal("web").answer(digest, failure) is Verdict.ACCEPTED
        # The handler deferred after the answer came: refused, the runner takes the answer.
        assert await worker.save(_deferred(1, digest)) is False
        job = await worker.get("task-1")
        assert job is not None
        assert job.answer == Answer(failure="card declined")

    store.run(scenario)


def test_a_new_attempt_cannot_erase_an_answer(store: Store) -> None:
    """An answer that came while an attempt ran outlives it: the next attempt's save is
    refused (False, nothing written) until the runner takes the answer."""

    async def scenario() -> None:
        old_token, old = new_token()
        worker = store.journal("worker")
        await worker.save(make_job(1, state=JobState.ACKNOWLEDGED, attempts=1, token_hash=old))
        assert await store.journal("web").answer(old, REPLY) is Verdict.ACCEPTED
        _, new = new_token()
        retry = make_job(1, state=JobState.ACKNOWLEDGED, attempts=2, token_hash=new)
        assert await worker.save(retry) is False
        handler_done = make_job(1, state=JobState.DONE, attempts=1, token_hash=old, result={})
        assert await worker.save(handler_done) is False, "the answer wins over a result"
        job = await worker.get("task-1")
        assert job is not None
        assert (job.state, job.attempts, job.token_hash) == (JobState.ACKNOWLEDGED, 1, old)
        assert job.answer == Answer(variables={"var1": 1, "var2": "answered"})
        assert await store.journal("web").answer(hash_token(old_token), REPLY) is Verdict.ACCEPTED

    store.run(scenario)


def test_a_runner_that_took_the_answer_goes_on_with_it(store: Store) -> None:
    async def scenario() -> None:
        _, digest = new_token()
        worker = store.journal("worker")
        await worker.save(make_job(1, state=JobState.ACKNOWLEDGED, attempts=1, token_hash=digest))
        assert await store.journal("web").answer(digest, REPLY) is Verdict.ACCEPTED
        taken = await worker.get("task-1")
        assert taken is not None
        answer = taken.answer
        assert answer is not None
        done = taken.advance(JobState.DONE, result=dict(answer.variables or {}))
        assert await worker.save(done) is True
        delivered = done.advance(JobState.DELIVERED)
        assert await worker.save(delivered, synced=False) is True
        job = await worker.get("task-1")
        assert job is not None
        assert job.state is JobState.DELIVERED
        assert job.result == {"var1": 1, "var2": "answered"}

    store.run(scenario)


def test_a_retry_that_knows_the_answer_may_start_afresh(store: Store) -> None:
    """``pending retry`` (the operator's choice) drops a known answer with its token; an
    answer is written by :meth:`answer` alone, never carried in by a save."""

    async def scenario() -> None:
        _, digest = new_token()
        worker = store.journal("worker")
        await worker.save(_deferred(1, digest))
        assert await store.journal("web").answer(digest, REPLY) is Verdict.ACCEPTED
        known = await worker.get("task-1")
        assert known is not None
        assert known.answer is not None
        afresh = known.advance(JobState.ACKNOWLEDGED, attempts=0, token_hash=None)
        assert await worker.save(afresh) is True
        job = await worker.get("task-1")
        assert job is not None
        assert job.answer is None
        assert job.token_hash is None

    store.run(scenario)


def test_the_same_answer_twice_is_accepted_twice(store: Store) -> None:
    """A retry after a lost response is accepted again; a different answer is refused, and
    the same answer is accepted again after the job went on with it."""

    async def scenario() -> None:
        _, digest = new_token()
        worker = store.journal("worker")
        await worker.save(_deferred(1, digest))
        web = store.journal("web")
        assert await web.answer(digest, REPLY) is Verdict.ACCEPTED
        same = dumps_answer(Answer(variables={"var2": "answered", "var1": 1}))
        assert await web.answer(digest, same) is Verdict.ACCEPTED
        other = dumps_answer(Answer(variables={"var1": 2}))
        assert await web.answer(digest, other) is Verdict.USED
        taken = await worker.get("task-1")
        assert taken is not None
        assert await worker.save(taken.advance(JobState.DONE, result={"var1": 1})) is True
        assert await web.answer(digest, REPLY) is Verdict.ACCEPTED
        assert await web.answer(digest, other) is Verdict.USED
        job = await worker.get("task-1")
        assert job is not None
        assert job.answer == Answer(variables={"var1": 1, "var2": "answered"})

    store.run(scenario)


def test_a_token_recorded_with_its_job_takes_answers(store: Store) -> None:
    """The first attempt's token hash is written with the record (synced, before the task
    is completed): a token out in the world is known even if the acknowledgement (not
    waited on to reach the disk) is lost with the machine."""

    async def scenario() -> None:
        _, digest = new_token()
        worker = store.journal("worker")
        await worker.record(make_job(1, token_hash=digest))
        assert await store.journal("web").answer(digest, REPLY) is Verdict.ACCEPTED
        job = await worker.get("task-1")
        assert job is not None
        assert job.answer == Answer(variables={"var1": 1, "var2": "answered"})

    store.run(scenario)


# -- parking: one write ------------------------------------------------------------------------


def test_parking_gives_an_unanswered_job_up_in_one_write(store: Store) -> None:
    async def scenario() -> None:
        token, digest = new_token()
        worker = store.journal("worker")
        await worker.renew()
        await worker.save(make_job(1, state=JobState.ACKNOWLEDGED, attempts=1, token_hash=digest))
        parked = await worker.park(_deferred(1, digest))
        assert parked is not None
        assert parked.answer is None
        assert parked.state is JobState.DEFERRED
        heir = store.journal("heir")
        await heir.renew()
        assert await heir.claim(topics=TOPICS) == [], "waiting for its answer"
        assert await store.journal("web").answer(hash_token(token), REPLY) is Verdict.ACCEPTED
        claimed = await heir.claim(topics=TOPICS)
        assert ids(claimed) == ["task-1"], "held by nobody: its live worker parked it"
        assert claimed[0].answer == Answer(variables={"var1": 1, "var2": "answered"})

    store.run(scenario)


def test_parking_an_answered_job_keeps_it_and_hands_back_the_answer(store: Store) -> None:
    async def scenario() -> None:
        _, digest = new_token()
        worker = store.journal("worker")
        await worker.renew()
        await worker.save(make_job(1, state=JobState.ACKNOWLEDGED, attempts=1, token_hash=digest))
        failure = dumps_answer(Answer(failure="card declined"))
        assert await store.journal("web").answer(digest, failure) is Verdict.ACCEPTED
        parked = await worker.park(_deferred(1, digest))
        assert parked is not None
        assert parked.answer == Answer(failure="card declined")
        assert parked.state is JobState.DEFERRED
        heir = store.journal("heir")
        await heir.renew()
        assert await heir.claim(topics=TOPICS) == [], "still held by its live worker"
        assert await worker.save(parked.advance(JobState.FAILING, error="declined")) is True

    store.run(scenario)


def test_parking_another_owners_job_writes_nothing(store: Store) -> None:
    async def scenario() -> None:
        _, digest = new_token()
        heir = store.journal("heir")
        await heir.renew()
        await heir.save(make_job(1, state=JobState.ACKNOWLEDGED, attempts=2, token_hash=digest))
        late = store.journal("late")
        assert await late.park(_deferred(1, digest)) is None
        job = await heir.get("task-1")
        assert job is not None
        assert (job.state, job.attempts) == (JobState.ACKNOWLEDGED, 2)

    store.run(scenario)


def test_jobs_that_went_on_do_not_take_answers(store: Store) -> None:
    async def scenario() -> None:
        worker = store.journal("worker")
        digests = {}
        for number, state in enumerate((JobState.DONE, JobState.FAILED, JobState.DELIVERED), 1):
            _, digests[state] = new_token()
            await worker.save(make_job(number, state=state, token_hash=digests[state]))
        web = store.journal("web")
        for digest in digests.values():
            assert await web.answer(digest, REPLY) is Verdict.EXPIRED

    store.run(scenario)


def test_an_answer_keeps_every_kind_of_variable(store: Store) -> None:
    async def scenario() -> None:
        _, digest = new_token()
        worker = store.journal("worker")
        await worker.save(_deferred(1, digest))
        rich = dumps_answer(Answer(variables=EVERY_KIND_OF_VARIABLE))
        assert await store.journal("web").answer(digest, rich) is Verdict.ACCEPTED
        job = await worker.get("task-1")
        assert job is not None
        assert job.answer is not None
        assert job.answer.variables == EVERY_KIND_OF_VARIABLE

    store.run(scenario)


def test_a_token_never_starts_like_a_command_line_option(monkeypatch: pytest.MonkeyPatch) -> None:
    from camunda_relay.replies import tokens

    drawn = iter(["-" + "a" * 42, "-" + "b" * 42, "c" * 43])
    monkeypatch.setattr(tokens.secrets, "token_urlsafe", lambda _n: next(drawn))
    token, digest = tokens.new_token()
    assert token == "c" * 43
    assert digest == hash_token(token)


def test_a_cancelled_jobs_token_says_so_answered_before_or_not(store: Store) -> None:
    async def scenario() -> None:
        worker, web = store.journal("worker"), store.journal("web")
        _, fresh = new_token()
        _, answered = new_token()
        await worker.save(_deferred(1, fresh))
        await worker.save(_deferred(2, answered))
        assert await web.answer(answered, REPLY) is Verdict.ACCEPTED
        for number, digest in ((1, fresh), (2, answered)):
            cancelled = make_job(number, state=JobState.CANCELLED, attempts=1, token_hash=digest)
            stored = await worker.get(cancelled.id)
            assert stored is not None
            # The watcher cancels the job it read, its stored answer with it (a save that does
            # not carry the answer is refused: an accepted answer is never gone past unseen).
            cancelled = dataclasses.replace(cancelled, answer=stored.answer)
            assert await worker.save(cancelled) is True
            assert await web.answer(digest, REPLY) is Verdict.CANCELLED

    store.run(scenario)
