"""Deferred replies' answers under random interleavings: an accepted answer is a promise.

A hypothesis state machine, beside the worker's own (test_worker_stateful.py, whose virtual
clock it uses), drives real :class:`Worker` objects against the in-process fake engine with
a reply topic whose handler hands its reply token out at the start of every attempt, works
a while, then defers, raises (the retry policy runs it again) or returns a result of its
own, as each instance's plan says. The token's holder answers at any point of the attempt:
before the handler has done anything with it, while it works, after it deferred, raised or
returned; twice with the same answer (a retry after a lost response), or with another one;
with a reply or a failure. Any journal write may fail once, before it reaches the journal
or after it committed (the journal's failpoints), and workers crash (every task cancelled,
as at ``kill -9``) or stop, and restart under the same worker id or a new one.

A machine of its own: its handler, its holder and its invariants are the deferred ones, and
the workers' own machine stays as small as it is. Checked after every step:

- **an accepted answer is what gets delivered**: an instance whose token's holder was told
  "accepted" passes its catch event with that answer's variables (never the handler's own
  result, never another answer), or, a failure, never passes and gets its incident;
- **answering is idempotent**: the same answer again is accepted again; another answer
  after an accepted one is refused;
- at most one passage and at most one incident per instance, never both, and no incident
  without an accepted failure (the reply deadline is far off).

At the end, with the faults gone, the holder answers every token it holds that has no
accepted answer yet: every instance ends delivered once or with one incident, as promised.
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from collections.abc import Coroutine
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, TypeVar

import pytest
from hypothesis import HealthCheck, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from camunda_relay import EngineClient, MemoryJournal, Router, Settings, Task, Worker
from camunda_relay import backoff as backoff_module
from camunda_relay.backoff import Backoff
from camunda_relay.errors import ReplyTokenError
from camunda_relay.failpoints import Failpoints
from camunda_relay.replies.tokens import fail_reply, send_reply
from camunda_relay.task import DeferReply
from tests.support.fake_engine import MESSAGE, TOPIC, FakeEngine
from tests.unit.test_worker_stateful import (
    LoopClock,
    VirtualTimeLoop,
    _at_once,
    _quiet_about_the_dead,
    _Unexpected,
)

T = TypeVar("T")

SETTINGS = Settings(
    url="http://fake-engine/engine-rest",
    journal=":memory:",
    max_in_flight=3,
    long_poll=timedelta(milliseconds=200),
    retries=10_000,  # a plan to raise holds until the end: never failed for good
    retry_timeout=timedelta(milliseconds=200),
    journal_lease=timedelta(seconds=3),
    shutdown_grace=timedelta(seconds=1),
    reply_deadline=timedelta(hours=1),
)
POLL_BACKOFF = Backoff(base=timedelta(milliseconds=50), cap=timedelta(seconds=1))
WORK = 0.5
MAX_INSTANCES = 5
SETTLE_SECONDS = 120
# Every journal write a reply job meets, failing before it or after it committed. A claim
# whose answer is lost is left out: the rows stay held by their live worker until it
# restarts (test_journal_failpoints.py pins it, as a known gap of the periodic claim).
WRITES = [
    *(
        f"journal_{write}{after}"
        for write in (
            "record",
            "save_recorded",
            "save_acknowledged",
            "save_done",
            "save_failing",
            "save_failed",
            "save_delivered",
            "park",
            "release",
            "renew",
            "release_lease",
        )
        for after in ("", "_lost")
    ),
    "journal_claim",
]
OUTCOMES = ["defer", "raise", "return"]


@dataclass
class Promise:
    """What the holder was told it had answered, for one instance."""

    variables: dict[str, object] | None
    failure: str | None


class Holder:
    """The tokens' holder: every token a handler handed out, and the accepted answers."""

    def __init__(self, journal: MemoryJournal) -> None:
        self.journal = journal
        self.tokens: dict[str, list[str]] = defaultdict(list)  # instance -> tokens handed out
        self.promised: dict[str, Promise] = {}  # instance -> the first accepted answer
        self.accepted_token: dict[str, str] = {}  # instance -> the token that took it
        self.verdicts: list[str] = []

    def answer(self, instance: str, token: str, promise: Promise) -> str:
        """Answer ``token``; the verdict (``accepted``, ``used``, ...)."""
        try:
            if promise.failure is not None:
                _at_once(fail_reply(self.journal, token, promise.failure))
            else:
                _at_once(send_reply(self.journal, token, promise.variables))
        except ReplyTokenError as error:
            verdict = error.verdict or "refused"
        else:
            verdict = "accepted"
        self.verdicts.append(verdict)
        earlier = self.promised.get(instance)
        if verdict == "accepted":
            assert earlier is None or earlier == promise, f"{instance}: two answers accepted"
            self.promised[instance] = promise
            self.accepted_token[instance] = token
        elif earlier == promise and self.accepted_token[instance] == token:
            raise AssertionError(f"{instance}: the same answer again was refused ({verdict})")
        return verdict


class AnswersMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        backoff_module._shared.seed(0)
        self.loop = VirtualTimeLoop()
        self.loop.set_exception_handler(_quiet_about_the_dead)
        self.fake = FakeEngine(max_long_poll=0.2, network_yields=1)
        self.clock = LoopClock(self.loop)
        self.journal = MemoryJournal(
            owner="observer", lease=SETTINGS.journal_lease, clock=self.clock
        )
        self.holder = Holder(self.journal.share(owner="holder"))
        self.plans: dict[str, str] = {}  # instance -> what its attempts do from now on
        self.router = Router()
        self.router.task(TOPIC, reply=MESSAGE)(self._handle)
        self.clients: list[EngineClient] = []
        self.worker: Worker | None = None
        self.runner: asyncio.Task[None] | None = None
        self.failpoints = Failpoints(journal=True)
        self.generation = 0
        self.unexpected = _Unexpected()
        logging.getLogger("camunda_relay").addHandler(self.unexpected)

    async def _handle(self, task: Task) -> dict[str, object]:
        assert task.reply_token is not None
        instance = task.process_instance_id
        self.holder.tokens[instance].append(task.reply_token)
        await asyncio.sleep(WORK)
        plan = self.plans.get(instance, "defer")
        if plan == "raise":
            raise RuntimeError("the attempt fails")
        if plan == "return":
            return {"answer": "the handler's own"}
        raise DeferReply

    # -- plumbing ------------------------------------------------------------------------------

    def _run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        return self.loop.run_until_complete(coroutine)

    def _ensure_worker(self, *, same_id: bool = False) -> Worker:
        if self.worker is None:
            if not same_id or not self.generation:
                self.generation += 1
            worker_id = f"worker-{self.generation}"
            client = EngineClient(SETTINGS, transport=self.fake.transport())
            self.clients.append(client)
            self.failpoints = Failpoints(journal=True)
            self.worker = Worker(
                self.router,
                SETTINGS,
                client=client,
                journal=self.journal.share(owner=worker_id),
                worker_id=worker_id,
                poll_backoff=POLL_BACKOFF,
                failpoints=self.failpoints,
                clock=self.clock,
            )
            self.runner = self.loop.create_task(self.worker.run())
        return self.worker

    # -- the instances, the plans, the holder --------------------------------------------------

    @initialize(count=st.integers(1, 3))
    def first_instances(self, count: int) -> None:
        self.start_instances(count)
        self._ensure_worker()

    @precondition(lambda self: len(self.fake.instances) < MAX_INSTANCES)
    @rule(count=st.integers(1, 2))
    def start_instances(self, count: int) -> None:
        for _ in range(min(count, MAX_INSTANCES - len(self.fake.instances))):
            self.fake.start(f"bk-{len(self.fake.instances)}")

    @rule(data=st.data(), outcome=st.sampled_from(OUTCOMES))
    def plan(self, data: st.DataObject, outcome: str) -> None:
        """What the instance's attempts do from now on: defer, raise, or return a result."""
        instances = sorted(self.fake.instances)
        self.plans[data.draw(st.sampled_from(instances), label="instance")] = outcome

    @precondition(lambda self: bool(self.holder.tokens))
    @rule(
        data=st.data(),
        latest=st.booleans(),
        failure=st.sampled_from([False, False, False, True]),
        same_twice=st.booleans(),
    )
    def answer(self, data: st.DataObject, latest: bool, failure: bool, same_twice: bool) -> None:
        """The holder answers a token it holds (its latest or an older one), at whatever
        point the attempt stands; maybe the same answer twice at once."""
        instance = data.draw(st.sampled_from(sorted(self.holder.tokens)), label="instance")
        tokens = self.holder.tokens[instance]
        token = tokens[-1] if latest else data.draw(st.sampled_from(tokens), label="token")
        promise = (
            Promise(None, f"declined for {instance}")
            if failure
            else Promise({"answer": f"{instance}/{len(self.holder.verdicts)}"}, None)
        )
        event(f"answer: {self.holder.answer(instance, token, promise)}")
        if same_twice:  # the holder's check: accepted again when it was accepted once
            self.holder.answer(instance, token, promise)

    @precondition(lambda self: bool(self.holder.promised))
    @rule(data=st.data())
    def answer_again(self, data: st.DataObject) -> None:
        """The holder repeats an accepted answer (a retry after a lost response), whatever
        became of the job since: accepted again."""
        instance = data.draw(st.sampled_from(sorted(self.holder.promised)), label="instance")
        token = self.holder.accepted_token[instance]
        verdict = self.holder.answer(instance, token, self.holder.promised[instance])
        assert verdict == "accepted", f"{instance}: its accepted answer refused again ({verdict})"

    # -- faults and the workers ----------------------------------------------------------------

    @rule(name=st.sampled_from(WRITES))
    def journal_write_fails(self, name: str) -> None:
        """The next journal write of this kind fails (the worker's failpoint)."""
        self._ensure_worker()
        self.failpoints.once(name)

    @rule(ticks=st.integers(1, 40))
    def run_a_little(self, ticks: int) -> None:
        self._ensure_worker()

        async def ticks_pass() -> None:
            for _ in range(ticks):
                await asyncio.sleep(0)

        self._run(ticks_pass())

    @rule(seconds=st.sampled_from([0.01, 0.1, 0.3, 1.0, 3.0]))
    def time_passes(self, seconds: float) -> None:
        self._ensure_worker()
        self._run(asyncio.sleep(seconds))

    @precondition(lambda self: self.worker is not None)
    @rule(same_id=st.booleans())
    def crash(self, same_id: bool) -> None:
        """kill -9: every task of the worker is cancelled where it stands (its loops too, so
        none of them starts a runner while it dies); nothing released; it comes back under
        the same id (a container restart) or a new one."""
        assert self.worker is not None
        self.worker = self.runner = None
        while doomed := asyncio.all_tasks(self.loop):  # one worker at a time: all its own
            for task in doomed:
                task.cancel()
            self._run(asyncio.wait(doomed))
        self._ensure_worker(same_id=same_id)

    @precondition(lambda self: self.worker is not None)
    @rule(grace=st.sampled_from([0.0, 1.0]), same_id=st.booleans())
    def sigterm(self, grace: float, same_id: bool) -> None:
        self._stop(grace)
        self._ensure_worker(same_id=same_id)

    def _stop(self, grace: float) -> None:
        worker, runner = self.worker, self.runner
        assert worker is not None
        assert runner is not None
        self.worker = self.runner = None

        async def stop() -> None:
            worker.stop()
            await runner
            await worker.shutdown(timedelta(seconds=grace))

        self._run(stop())

    # -- invariants ----------------------------------------------------------------------------

    def _incidents(self) -> dict[str, int]:
        counts: dict[str, int] = defaultdict(int)
        for incident in self.fake.incidents:
            counts[incident["executionId"]] += 1
        return counts

    @invariant()
    def an_accepted_answer_is_what_gets_delivered(self) -> None:
        incidents = self._incidents()
        for instance_id, instance in self.fake.instances.items():
            promise = self.holder.promised.get(instance_id)
            assert instance.passages <= 1, f"{instance_id} passed its catch event twice"
            assert incidents.get(instance_id, 0) <= 1, f"{instance_id}: two incidents"
            assert not (instance.passages and incidents.get(instance_id)), instance_id
            if incidents.get(instance_id):
                assert promise is not None, f"{instance_id}: an incident, no failure answered"
                assert promise.failure is not None, f"{instance_id}: answered, yet an incident"
            if instance.passages and promise is not None:
                assert promise.variables is not None, f"{instance_id}: its failure not raised"
                got = {k: v["value"] for k, v in instance.variables.items() if k == "answer"}
                assert got == promise.variables, f"{instance_id}: {got} delivered, not its answer"
        assert self.unexpected.records == []

    # -- the end -------------------------------------------------------------------------------

    def teardown(self) -> None:
        try:
            self._settle()
            self._check_the_end()
        finally:
            self._close()

    def _settle(self) -> None:
        """No more faults; every attempt from now on defers, and the holder answers every
        token it holds whose instance has no accepted answer: all must now finish."""
        self.plans = dict.fromkeys(self.fake.instances, "defer")
        if self.worker is None:
            self._ensure_worker()
        self._stop(1.0)  # the next worker's failpoints have nothing armed
        self._ensure_worker()
        for _ in range(SETTLE_SECONDS):
            for instance, tokens in self.holder.tokens.items():
                if instance not in self.holder.promised:
                    reply = Promise({"answer": f"{instance}/end"}, None)
                    self.holder.answer(instance, tokens[-1], reply)
            if self._settled():
                break
            self._run(asyncio.sleep(1.0))
        self._stop(1.0)

    def _settled(self) -> bool:
        incidents = self._incidents()
        return all(
            instance.passages or incidents.get(instance_id)
            for instance_id, instance in self.fake.instances.items()
        ) and all(job.state.finished for job in _at_once(self.journal.all()))

    def _check_the_end(self) -> None:
        verdicts = set(self.holder.verdicts)
        for verdict in sorted(verdicts):
            event(f"verdict seen: {verdict}")
        event(f"workers: {min(self.generation, 4)}{'+' if self.generation > 4 else ''}")
        self.an_accepted_answer_is_what_gets_delivered()
        incidents = self._incidents()
        for instance_id, instance in self.fake.instances.items():
            ended = instance.passages + incidents.get(instance_id, 0)
            assert ended == 1, f"{instance_id} ended {ended} times ({instance.state})"
        unfinished = [job.id for job in _at_once(self.journal.all()) if not job.state.finished]
        assert unfinished == [], f"jobs never finished: {unfinished}"

    def _close(self) -> None:
        logging.getLogger("camunda_relay").removeHandler(self.unexpected)
        leftovers = asyncio.all_tasks(self.loop)
        for task in leftovers:
            task.cancel()
        if leftovers:
            self._run(asyncio.wait(leftovers))
        for client in self.clients:
            self._run(client.aclose())
        self.loop.run_until_complete(self.loop.shutdown_asyncgens())
        self.loop.close()


TestAnswersMachine = AnswersMachine.TestCase
TestAnswersMachine.settings = settings(
    max_examples=200,
    stateful_step_count=40,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow],
)
TestAnswersMachine = pytest.mark.timeout(1200)(TestAnswersMachine)
