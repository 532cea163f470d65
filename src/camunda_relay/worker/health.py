"""Whether a running worker is alive and whether it is ready, as a probe asks it.

*Liveness* (``/healthz``): the worker's loops are alive. Each loop (the poll loop, the lease
renewal, the claim round that resumes reply jobs, the reconciler's sweep) beats before it
waits, saying how long it may stay silent; a loop that ended while the worker was not
stopping, or stayed silent past its allowance, is dead. An unreachable engine or journal is
*not* a liveness failure: the loops go on backing off, and restarting the process would not
bring the engine back (in Kubernetes every pod would restart in an engine outage).

*Readiness* (``/readyz``): the engine answered a fetch recently (within the long poll plus
the request timeout plus :data:`READY_SLACK`), and the journal took the last write.

Beats and answers come from the event loop; probes are read from the HTTP server's thread,
so the state sits behind a lock. Times come from the injected clock.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from camunda_relay.clock import Clock

__all__ = ["LIVE_SLACK", "READY_SLACK", "Health", "Verdict"]

LIVE_SLACK = 60.0
"""Seconds a loop may overrun the silence it announced (a busy machine, a slow database)."""
READY_SLACK = 30.0
"""Seconds past the long poll and the request timeout before the engine counts as lost."""


@dataclass(frozen=True)
class Verdict:
    """A probe's answer: ok, or the problems found (ids and ages only, never values)."""

    ok: bool
    problems: tuple[str, ...] = field(default=())

    def line(self, what: str) -> str:
        """One line for a person: ``live`` or ``not live: ...``."""
        return what if self.ok else f"not {what}: {'; '.join(self.problems)}"


class Health:
    """Heartbeats of the worker's loops and its last contact with the engine."""

    def __init__(
        self, clock: Clock, *, engine_window: float, journal_ok: Callable[[], bool]
    ) -> None:
        self._clock = clock
        self._engine_window = engine_window
        self._journal_ok = journal_ok  # reads one flag the event loop sets
        self._lock = threading.Lock()
        self._beats: dict[str, tuple[float, float | None]] = {}
        self._ended: set[str] = set()
        self._engine_ok: float | None = None
        self._stopping = False

    # -- written from the event loop ---------------------------------------------------------

    def beat(self, loop: str, within: float | None) -> None:
        """``loop`` is alive now and beats again within ``within`` seconds (plus
        :data:`LIVE_SLACK`); None: it waits for an event that may take any time (free
        slots), which is alive by itself."""
        with self._lock:
            self._beats[loop] = (self._clock.monotonic(), within)
            self._ended.discard(loop)

    def ended(self, loop: str) -> None:
        """``loop`` returned (or raised): dead unless the worker is stopping."""
        with self._lock:
            self._ended.add(loop)

    def forget(self, loop: str) -> None:
        """``loop`` is gone on purpose (the poll loop of an engine node that went away)."""
        with self._lock:
            self._beats.pop(loop, None)
            self._ended.discard(loop)

    def stopping(self) -> None:
        with self._lock:
            self._stopping = True

    def engine_answered(self) -> None:
        """The engine answered a fetch (or the start-up access check)."""
        with self._lock:
            self._engine_ok = self._clock.monotonic()

    # -- read from the probe's thread --------------------------------------------------------

    def live(self) -> Verdict:
        now = self._clock.monotonic()
        with self._lock:
            if self._stopping:
                return Verdict(True)
            problems = [f"the {loop} loop ended" for loop in sorted(self._ended)]
            for loop, (at, within) in sorted(self._beats.items()):
                if loop in self._ended or within is None:
                    continue
                silent = now - at
                if silent > within + LIVE_SLACK:
                    problems.append(f"the {loop} loop has been silent for {silent:.0f} s")
        return Verdict(not problems, tuple(problems))

    def ready(self) -> Verdict:
        now = self._clock.monotonic()
        problems = []
        with self._lock:
            if self._stopping:
                problems.append("the worker is stopping")
            if self._engine_ok is None:
                problems.append("the engine has not answered yet")
            elif now - self._engine_ok > self._engine_window:
                problems.append(f"the engine last answered {now - self._engine_ok:.0f} s ago")
            if not self._journal_ok():
                problems.append("the journal does not take writes")
        return Verdict(not problems, tuple(problems))
