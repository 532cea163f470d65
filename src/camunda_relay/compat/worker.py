"""``ExternalTaskWorker`` as camunda-external-task-client-python3 4.5.0 has it, running a
camunda-relay :class:`~camunda_relay.worker.Worker`.

``subscribe()`` blocks as the client's does, but it can be stopped: SIGTERM or Ctrl-C (in
the main thread) or :meth:`ExternalTaskWorker.stop` (any thread) stop fetching and let
running handlers finish within ``CAMUNDA_SHUTDOWN_GRACE``. Unlike the client it never
swallows an error into a five-minute sleep: an engine outage is retried with backoff (up to
``sleepSeconds``), an empty topic is simply polled again, and a handler that raises is
reported to the engine as a failure with decreasing retries. ``reply="message"`` makes the
topic a reply topic: the task is completed at once, the handler runs after, and the
variables of its ``task.complete(...)`` are sent with the message to that very instance.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import os
import signal
import sys
import threading
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import TypeAlias, cast

from camunda_relay.compat.config import CompatConfig, compat_config
from camunda_relay.compat.task import ExternalTask, TaskResult
from camunda_relay.errors import ConfigurationError, RelayError
from camunda_relay.router import Handler, Reply, Router
from camunda_relay.settings import Settings
from camunda_relay.task import Task
from camunda_relay.worker import Worker

__all__ = ["ENGINE_LOCAL_BASE_URL", "Action", "ExternalTaskWorker"]

log = logging.getLogger(__name__)

ENGINE_LOCAL_BASE_URL = "http://localhost:8080/engine-rest"
"""The client's default engine URL; here ``CAMUNDA_URL`` (same default) when not given."""

Action: TypeAlias = (
    Callable[[ExternalTask], TaskResult | None]
    | Callable[[ExternalTask], Awaitable[TaskResult | None]]
)


def _result(external: ExternalTask, returned: TaskResult | None) -> TaskResult:
    """The handler's result: what it returned, else what it set on the task."""
    return returned if isinstance(returned, TaskResult) else external.get_task_result()


def _reply_variables(result: TaskResult) -> dict[str, object]:
    """A reply topic's result: the completion's process variables become the message's."""
    outcome = result.outcome()
    if outcome.local_variables:
        raise ConfigurationError(
            "a reply topic's task is completed before its handler runs: complete() cannot "
            "set local variables there (Reply(complete_local_variables=...) can)"
        )
    return dict(outcome.variables)


def adapt(action: Action, *, json_as_text: bool, reply: bool) -> Callable[[Task], object]:
    """A camunda-relay handler calling the client-style ``action`` with an ExternalTask."""

    def finish(external: ExternalTask, returned: TaskResult | None) -> object:
        result = _result(external, returned)
        return _reply_variables(result) if reply else result.outcome()

    if inspect.iscoroutinefunction(action):

        async def handle_async(task: Task) -> object:
            external = ExternalTask(task, json_as_text=json_as_text)
            return finish(external, await action(external))

        handle_async.__qualname__ = getattr(action, "__qualname__", "action")
        return handle_async

    def handle(task: Task) -> object:
        external = ExternalTask(task, json_as_text=json_as_text)
        return finish(external, action(external))  # type: ignore[arg-type]

    handle.__qualname__ = getattr(action, "__qualname__", "action")
    return handle


class ExternalTaskWorker:
    """The client's worker: ``ExternalTaskWorker(worker_id, base_url, config).subscribe(
    topic_names, action)``. ``config`` keys: :mod:`camunda_relay.compat.config`."""

    def __init__(
        self,
        worker_id: object = None,
        base_url: str | None = None,
        config: Mapping[str, object] | None = None,
        *,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        self.worker_id = None if worker_id is None else str(worker_id)
        self.config = dict(config or {})
        self._compat: CompatConfig = compat_config(
            self.config,
            os.environ if environ is None else environ,
            base_url=base_url,
            worker_id=self.worker_id,
        )
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._worker: Worker | None = None
        self._stopped = False
        if self._compat.debug:
            logging.getLogger("camunda_relay").setLevel(logging.DEBUG)

    @property
    def settings(self) -> Settings:
        """The camunda-relay settings the ``config`` came to."""
        return self._compat.settings

    def router(
        self,
        topic_names: str | Sequence[str],
        action: Action,
        process_variables: Mapping[str, object] | None = None,
        variables: Sequence[str] | None = None,
        business_key: str | None = None,
        *,
        reply: str | Reply | None = None,
    ) -> Router:
        """The :class:`Router` that :meth:`subscribe` runs: ``action`` on every topic."""
        topics = [topic_names] if isinstance(topic_names, str) else list(topic_names)
        if not topics:
            raise ConfigurationError("subscribe needs at least one topic name")
        router = Router()
        handler = adapt(action, json_as_text=self._compat.json_as_text, reply=reply is not None)
        for topic in topics:
            router.task(
                topic,
                reply=reply,
                variables=variables,
                business_key=business_key,
                process_variables=process_variables or None,
                extension_properties=self._compat.extension_properties,
            )(cast(Handler, handler))
        return router

    def subscribe(
        self,
        topic_names: str | Sequence[str],
        action: Action,
        process_variables: Mapping[str, object] | None = None,
        variables: Sequence[str] | None = None,
        business_key: str | None = None,
        *,
        reply: str | Reply | None = None,
    ) -> None:
        """Fetch and run tasks of ``topic_names`` until stopped (blocks, as the client's).

        In the main thread, an error that stops the worker at start (wrong credentials, an
        engine that is not there, a bad setting) is one line on stderr and exit status 1."""
        router = self.router(
            topic_names, action, process_variables, variables, business_key, reply=reply
        )
        try:
            asyncio.run(self._serve(router))
        except RelayError as error:
            if threading.current_thread() is not threading.main_thread():
                raise
            print(f"Error: {error}", file=sys.stderr)  # noqa: T201 - the script's one line
            raise SystemExit(1) from None

    def fetch_and_execute(
        self,
        topic_names: str | Sequence[str],
        action: Action,
        process_variables: Mapping[str, object] | None = None,
        variables: Sequence[str] | None = None,
    ) -> int:
        """One fetch (waiting up to ``asyncResponseTimeout``), every task run to its end;
        returns how many tasks were fetched (the client raised when none were)."""
        router = self.router(topic_names, action, process_variables, variables)
        return asyncio.run(self._once(router))

    def stop(self) -> None:
        """Stop :meth:`subscribe` from any thread: no new fetch; running work finishes."""
        with self._lock:
            self._stopped = True
            loop, worker = self._loop, self._worker
        if loop is not None and worker is not None:
            loop.call_soon_threadsafe(worker.stop)

    def _worker_for(self, router: Router) -> Worker:
        compat = self._compat
        return Worker(
            router, compat.settings, worker_id=self.worker_id, poll_backoff=compat.poll_backoff
        )

    async def _once(self, router: Router) -> int:
        async with self._worker_for(router) as worker:
            return await worker.run_once(long_poll=self._compat.settings.long_poll)

    async def _serve(self, router: Router) -> None:
        worker = self._worker_for(router)
        loop = asyncio.get_running_loop()
        with self._lock:
            self._loop, self._worker = loop, worker
            if self._stopped:
                worker.stop()
        main = threading.current_thread() is threading.main_thread()
        if main:
            for signum in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(signum, worker.stop)
        try:
            await worker.client.check_access()
            await worker.run()
        finally:
            if main:
                for signum in (signal.SIGTERM, signal.SIGINT):
                    loop.remove_signal_handler(signum)
            await worker.shutdown()
            with self._lock:
                self._loop = self._worker = None
