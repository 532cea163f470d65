"""The chaos driver: signals to the worker and the engine JVM, and PostgreSQL stops.

Every action targets one process by its id (a process this harness started), never by name.
:class:`WorkerKiller` is the "kill -9 the worker every 3-8 s" loop of S1 (seeded), and
:class:`Supervisor` restarts a dead worker after 1 s, as Kubernetes would. The engine's
restart and PostgreSQL's immediate stop are :class:`harness.lab.Lab` methods, since the lab
holds their settings.
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import threading
from collections.abc import Callable
from typing import Protocol

__all__ = ["Supervisor", "WorkerKiller", "cpu_seconds", "kill9", "resume", "suspend"]


def kill9(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


def suspend(pid: int) -> None:
    """SIGSTOP: the process keeps its sockets open and answers nothing (a hung JVM)."""
    os.kill(pid, signal.SIGSTOP)


def resume(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGCONT)


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time the process has used so far (from /proc)."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            fields = handle.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks


class _Restartable(Protocol):
    def alive(self) -> bool: ...
    def start(self) -> object: ...
    def kill9(self) -> None: ...
    def wait(self, timeout: float) -> int | None: ...


class Supervisor:
    """What Kubernetes does for a pod: restart the worker ``downtime`` s after it died
    (killed by a failpoint or by :class:`WorkerKiller`); ``before_restart`` runs in between
    (S2B and S2C delete the journal there)."""

    def __init__(
        self,
        worker: _Restartable,
        *,
        downtime: float = 1.0,
        before_restart: Callable[[], None] | None = None,
    ) -> None:
        self.worker = worker
        self.downtime = downtime
        self.before_restart = before_restart
        self.restarts = 0
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._loop, daemon=True, name="supervisor")
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.wait(0.2):
            with self._lock:
                if self.worker.alive():
                    continue
                self.worker.wait(5)
            if self._stop.wait(self.downtime):  # the fault's own duration
                return
            with self._lock:
                if self._stop.is_set():
                    return
                if self.before_restart is not None:
                    self.before_restart()
                self.worker.start()
                self.restarts += 1

    def kill(self) -> None:
        """kill -9 the worker now (the supervisor restarts it)."""
        with self._lock:
            self.worker.kill9()

    def stop(self) -> None:
        """Stop restarting; make sure the worker runs (it is left running)."""
        self._stop.set()
        self._thread.join(timeout=30)
        with self._lock:
            if not self.worker.alive():
                self.worker.wait(5)
                if self.before_restart is not None:
                    self.before_restart()
                self.worker.start()


class WorkerKiller:
    """kill -9 the worker at a uniform random time every ``low``-``high`` s (seeded)."""

    def __init__(
        self, kill: Callable[[], None], *, seed: int, low: float = 3.0, high: float = 8.0
    ) -> None:
        self.kill = kill
        self.kills = 0
        self._random = random.Random(seed)
        self._low, self._high = low, high
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True, name="worker-killer")
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.wait(self._random.uniform(self._low, self._high)):
            self.kill()
            self.kills += 1

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)
