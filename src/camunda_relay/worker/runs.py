"""The worker's running jobs: each an asyncio task under a key, at most one per key (a reply
job has one runner, however it was started: fetched, resumed, claimed, adopted)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any

__all__ = ["Runs"]

log = logging.getLogger(__name__)


class Runs:
    def __init__(self) -> None:
        self._tasks: dict[str, asyncio.Task[None]] = {}

    def __contains__(self, key: object) -> bool:
        return key in self._tasks

    def __len__(self) -> int:
        return len(self._tasks)

    def start(self, key: str, coroutine: Coroutine[Any, Any, None]) -> bool:
        """Run ``coroutine`` under ``key``; False (and the coroutine closed unstarted) when
        something already runs under that key. Check and start happen without a pause, so
        two callers can never both start a key."""
        if key in self._tasks:
            coroutine.close()
            return False
        task = asyncio.get_running_loop().create_task(coroutine, name=key)
        self._tasks[key] = task
        task.add_done_callback(self._finished)
        return True

    def _finished(self, task: asyncio.Task[None]) -> None:
        key = task.get_name()
        if self._tasks.get(key) is task:
            del self._tasks[key]
        if not task.cancelled() and task.exception() is not None:
            error = task.exception()
            log.error(
                "%s ended with an unexpected error",
                key,
                exc_info=(type(error), error, error.__traceback__) if error else None,
            )

    def held(self) -> set[str]:
        """The ids of the jobs a runner here holds (``job:<id>``, and ``task:<id>`` while a
        fetched task is recorded and completed): what a claim leaves out of this worker's
        own jobs."""
        return {key.partition(":")[2] for key in self._tasks if key.startswith(("job:", "task:"))}

    def tasks(self) -> set[asyncio.Task[None]]:
        return set(self._tasks.values())

    async def drain(self) -> None:
        """Wait until everything started so far (and what it starts) has finished."""
        while self._tasks:
            await asyncio.wait(self.tasks())

    async def stop(self, grace: float) -> int:
        """Wait up to ``grace`` seconds, then cancel what still runs; how many were cancelled."""
        if not self._tasks:
            return 0
        _, pending = await asyncio.wait(self.tasks(), timeout=grace)
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.wait(pending, timeout=5)
        return len(pending)
