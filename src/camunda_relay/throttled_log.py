"""Log lines that anyone on the network can cause, at a bounded rate.

A refused request (a wrong secret, a server at its limits) is worth one WARNING, not one per
request: whoever reaches the port could otherwise fill the log. :class:`ThrottledLog` writes
the first line of a kind at once, counts the ones that follow within :data:`EVERY` seconds,
and names that count in the next line of the kind it writes::

    refusals = ThrottledLog(log)
    refusals.note("secret", "reply endpoint: a request without the right secret was refused")
    # ... 999 more within the minute: nothing, then, a minute later, on the next one:
    # "reply endpoint: a request without the right secret was refused (999 more in 60 s)"

Times come from the injected clock; a lock makes it safe from several threads.
"""

from __future__ import annotations

import logging
import threading

from camunda_relay.clock import SYSTEM, Clock

__all__ = ["EVERY", "ThrottledLog"]

EVERY = 60.0
"""Seconds between two lines of one kind (at most)."""


class ThrottledLog:
    """At most one line per kind every ``every`` seconds, with the count of those held back."""

    def __init__(
        self,
        logger: logging.Logger,
        *,
        level: int = logging.WARNING,
        every: float = EVERY,
        clock: Clock = SYSTEM,
    ) -> None:
        self._logger = logger
        self._level = level
        self._every = every
        self._clock = clock
        self._lock = threading.Lock()
        self._kinds: dict[str, tuple[float, int]] = {}  # kind -> (last line at, held back)

    def note(self, kind: str, text: str) -> None:
        """One more event of ``kind``; ``text`` (no value of the request in it) is logged
        when the kind's last line is older than ``every`` seconds."""
        now = self._clock.monotonic()
        with self._lock:
            last = self._kinds.get(kind)
            if last is not None and now - last[0] < self._every:
                self._kinds[kind] = (last[0], last[1] + 1)
                return
            held, since = (last[1], now - last[0]) if last is not None else (0, 0.0)
            self._kinds[kind] = (now, 0)
        if held:
            self._logger.log(self._level, "%s (%d more in %.0f s)", text, held, since)
        else:
            self._logger.log(self._level, "%s", text)
