"""The worker under test: ``camunda-relay worker harness.fault_worker``.

Topic ``messageSending`` (or ``FAULT_TOPIC``), reply ``sample_response`` (the seed process).
The handler records every start of the work in the ledger (:mod:`harness.ledger`), works for
a while, then applies its effect once per ``task.job_id`` (the idempotency key) and replies
with the effect's id, the instance it was meant for, and the payload it was given (a canary
the logs must never show).

Environment:

- ``FAULT_LEDGER``: the ledger file (required);
- ``FAULT_WORK_SECONDS``: work time, ``2`` or a range ``0.5-3`` (drawn per job from its key);
- ``FAULT_WORKER_NAME``: the name written to the ledger (default ``pid-<pid>``);
- ``FAULT_REPLY_MESSAGE``: the reply message (default ``sample_response``);
- ``FAULT_BY_BUSINESS_KEY``: ``1`` to correlate by business key as well;
- ``FAULT_TOPIC``: the topic served (default ``messageSending``);
- ``FAULT_PARK_FILE``: the work of an instance whose variable ``park`` is set waits, after its
  work time, until this file exists (S19: a pod holding many long jobs);
- ``FAULT_HOSTS_FILE``: a hosts-style file (``address name`` per line, read at every lookup)
  whose names resolve to its addresses in this process only, every other name as usual
  (S27: a name whose addresses change, as a Kubernetes headless Service's do);
- ``FAULT_TENANTS``: comma-separated tenant ids the topic's fetch is limited to (S24: tenant
  pods on one journal);
- ``FAULT_DEFER``: the reply is deferred (S23, S25): the work applies its effect, then hands
  its reply token out as ``<instance>.token`` in ``FAULT_TOKEN_DIR`` (JSON: the token and the
  effect id) for the harness to answer. ``defer``: it raises ``DeferReply`` at once;
  ``raise``: it waits until the harness has answered (``<instance>.answered`` appears), then
  raises (the retry policy runs again); ``hang``: it waits for the answer, then for ever
  (the worker is killed meanwhile). A later attempt of the same instance hands its new
  token to nobody and defers (the token's holder answered the first one).

The process variable ``mode`` picks a bad result for the input tests (S13): ``long_string``,
``huge``, ``deep_json``, ``big_int``, ``bytes``, ``object``, ``raise``.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
from datetime import timedelta
from pathlib import Path

from camunda_relay import DeferReply, Reply, Router, Task
from harness import hosts
from harness.ledger import Ledger

TOPIC = "messageSending"


class _Park:
    """Parked work waits here until the park file exists (one watcher for all the jobs)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._released: asyncio.Event | None = None
        self._watcher: asyncio.Task[None] | None = None

    async def wait(self) -> None:
        if self._released is None:
            self._released = asyncio.Event()
            self._watcher = asyncio.ensure_future(self._watch(self._released))
        await self._released.wait()

    async def _watch(self, released: asyncio.Event) -> None:
        # One stat call every half second for all the parked jobs together.
        while not await asyncio.to_thread(os.path.exists, self.path):  # noqa: ASYNC110
            await asyncio.sleep(0.5)
        released.set()


def _work_seconds(job_key: str) -> float:
    spec = os.environ.get("FAULT_WORK_SECONDS", "1")
    low, _, high = spec.partition("-")
    if not high:
        return float(low)
    return random.Random(job_key).uniform(float(low), float(high))


def _bad_result(mode: str) -> dict[str, object] | None:
    if mode == "long_string":
        return {"long_text": "x" * 5000}
    if mode == "huge":
        return {"huge": "y" * (10 * 1024 * 1024)}
    if mode == "deep_json":
        nested: list[object] = []
        for _ in range(10_000):
            nested = [nested]
        return {"deep": nested}
    if mode == "big_int":
        return {"big": 2**70}
    if mode == "bytes":
        return {"raw": b"\xff\xfe\x00not-utf-8"}
    if mode == "object":
        return {"thing": object()}
    if mode == "raise":
        raise RuntimeError("the work failed on purpose")
    return None


class _Deferral:
    """The deferred-reply modes of ``FAULT_DEFER`` (see the module docstring)."""

    def __init__(self, mode: str, folder: str) -> None:
        self.mode = mode
        self.folder = Path(folder)

    async def hand_out(self, task: Task, effect_id: str) -> None:
        instance = task.process_instance_id
        token_file = self.folder / f"{instance}.token"
        if token_file.exists():  # a later attempt: its holder answered the first token
            raise DeferReply
        partial = token_file.with_suffix(".partial")
        text = json.dumps({"token": task.reply_token, "effect_id": effect_id})
        await asyncio.to_thread(partial.write_text, text)
        await asyncio.to_thread(partial.replace, token_file)
        if self.mode == "defer":
            raise DeferReply
        answered = self.folder / f"{instance}.answered"
        while not await asyncio.to_thread(answered.exists):  # noqa: ASYNC110
            await asyncio.sleep(0.2)
        if self.mode == "raise":
            raise RuntimeError("the attempt fails after its token was answered")
        await asyncio.Event().wait()  # "hang": the worker is killed meanwhile


if os.environ.get("FAULT_HOSTS_FILE"):  # a worker process's own name service, not the library's
    hosts.install(os.environ["FAULT_HOSTS_FILE"])


def make_router() -> Router:
    router = Router()
    message = os.environ.get("FAULT_REPLY_MESSAGE", "sample_response")
    by_business_key = os.environ.get("FAULT_BY_BUSINESS_KEY", "") == "1"
    ledger = Ledger(os.environ["FAULT_LEDGER"])
    name = os.environ.get("FAULT_WORKER_NAME") or f"pid-{os.getpid()}"
    park = _Park(os.environ["FAULT_PARK_FILE"]) if os.environ.get("FAULT_PARK_FILE") else None
    defer_mode = os.environ.get("FAULT_DEFER", "")
    deferral = _Deferral(defer_mode, os.environ["FAULT_TOKEN_DIR"]) if defer_mode else None
    tenants = [t for t in os.environ.get("FAULT_TENANTS", "").split(",") if t] or None

    @router.task(
        os.environ.get("FAULT_TOPIC") or TOPIC,
        reply=Reply(message, by_business_key=by_business_key),
        retry_timeout=timedelta(milliseconds=200),
        tenant_ids=tenants,
    )
    async def send_message(task: Task) -> dict[str, object]:
        key, instance = task.job_id, task.process_instance_id
        attempt = await asyncio.to_thread(ledger.attempt, key, instance, name)
        await asyncio.sleep(_work_seconds(key))
        if park is not None and task.variables.get("park"):
            await park.wait()
        mode = str(task.variables.get("mode") or "normal")
        bad = _bad_result(mode)
        effect_id, _ = await asyncio.to_thread(ledger.apply, key, instance, attempt, name)
        if deferral is not None:
            await deferral.hand_out(task, effect_id)
        result: dict[str, object] = {
            "effect_id": effect_id,
            "processed_for": instance,
            "echo": task.variables.get("payload"),
        }
        result.update(bad or {})
        return result

    return router


router = make_router()
