"""Failpoints: named places in the worker where a test can make it crash, stall or fail.

Off unless ``CAMUNDA_RELAY_FAILPOINTS`` is set (read once, when a worker starts), e.g.::

    CAMUNDA_RELAY_FAILPOINTS="after_complete_before_work=kill,before_correlate=sleep:2:0.5"

Each entry is ``name=action[:argument][:probability][:xTIMES]`` with the actions ``kill`` (SIGKILL
this process), ``stop`` (SIGSTOP it), ``raise`` (raise :class:`FailpointError`),
``sleep:SECONDS`` and, at the journal's points only, ``fail`` (the journal call raises
:class:`~camunda_relay.errors.JournalUnavailable`, as a database that does not answer). The
probability (0..1, default 1) is drawn from a random generator seeded by
``CAMUNDA_RELAY_FAILPOINTS_SEED`` when given, so a run can be repeated; ``xTIMES`` fires it
that many times at most (``journal_park=fail:1:x1``: the first parking fails, no other).

The names, in the order a reply job meets them: ``after_fetch``, ``after_record``,
``after_complete_before_work``, ``mid_work``, ``after_work_before_correlate``,
``after_correlate_before_journal``.

And one pair per journal write (:data:`JOURNAL_NAMES`, hit by
:class:`~camunda_relay.journal.failing.FailpointJournal`): ``journal_<write>`` before the
write (a ``fail`` there writes nothing) and ``journal_<write>_lost`` after it committed (a
``fail`` there is a response lost after the commit). The writes: ``record``,
``save_<state>`` for each state a job is saved in (``save_acknowledged``, ``save_done``,
``save_deferred``, ``save_delivered``, ...), ``park`` (a deferred job given up), ``claim``,
``release`` (one job given back), ``release_lease``, ``renew``, ``prune`` and ``delete``.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
from collections.abc import Mapping
from dataclasses import dataclass

from camunda_relay.errors import ConfigurationError, JournalUnavailable
from camunda_relay.replies.job import JobState

__all__ = ["JOURNAL_NAMES", "JOURNAL_WRITES", "NAMES", "FailpointError", "Failpoints"]

NAMES = frozenset(
    {
        "after_fetch",
        "after_record",
        "after_complete_before_work",
        "mid_work",
        "after_work_before_correlate",
        "after_correlate_before_journal",
    }
)
JOURNAL_WRITES = (
    "record",
    *(f"save_{state.value}" for state in JobState),
    "park",
    "claim",
    "release",
    "release_lease",
    "renew",
    "prune",
    "delete",
)
"""The journal's writes that have failpoints, ``journal_<write>`` and ``journal_<write>_lost``."""

JOURNAL_NAMES = frozenset(
    f"journal_{write}{after}" for write in JOURNAL_WRITES for after in ("", "_lost")
)
_ACTIONS = frozenset({"kill", "stop", "raise", "sleep", "fail"})


class FailpointError(RuntimeError):
    """Raised by a ``raise`` failpoint."""


@dataclass(frozen=True)
class _Rule:
    action: str
    seconds: float
    probability: float
    times: int | None = None  # fired at most this often (None: no limit)


class Failpoints:
    """The failpoints of one worker; :meth:`hit` is a no-op for names without a rule."""

    def __init__(
        self,
        rules: Mapping[str, _Rule] | None = None,
        seed: int | None = None,
        *,
        journal: bool = False,
    ) -> None:
        """``journal``: watch the journal's points even with no rule for them yet (a test
        arms them later with :meth:`once`)."""
        self._rules = dict(rules or {})
        self._journal = journal
        self._random = random.Random(seed)
        self._once: dict[str, str] = {}  # name -> action, fired at the next hit only
        self.fired: list[str] = []  # the names whose rule fired, in order

    def once(self, name: str, action: str = "fail") -> None:
        """Fire ``action`` at the next hit of ``name`` only (for tests that fail one write
        in turn)."""
        _check(name, action)
        self._once[name] = action

    @property
    def journal_active(self) -> bool:
        """Whether any rule names a journal point (the worker then wraps its journal)."""
        return self._journal or any(name in JOURNAL_NAMES for name in self._rules)

    @classmethod
    def from_environment(cls, environ: Mapping[str, str]) -> Failpoints:
        spec = environ.get("CAMUNDA_RELAY_FAILPOINTS", "").strip()
        seed_text = environ.get("CAMUNDA_RELAY_FAILPOINTS_SEED")
        seed = int(seed_text) if seed_text else None
        return cls(_parse(spec), seed) if spec else cls(seed=seed)

    @property
    def active(self) -> bool:
        return bool(self._rules)

    async def hit(self, name: str) -> None:
        once = self._once.pop(name, None)
        rule = _Rule(once, 0.0, 1.0) if once is not None else self._rules.get(name)
        if rule is None or (once is None and self._random.random() >= rule.probability):
            return
        if rule.times is not None and self.fired.count(name) >= rule.times:
            return
        self.fired.append(name)
        if rule.action == "fail":
            raise JournalUnavailable(f"journal write failed at failpoint {name}")
        if rule.action == "kill":
            os.kill(os.getpid(), signal.SIGKILL)
        elif rule.action == "stop":
            os.kill(os.getpid(), signal.SIGSTOP)
        elif rule.action == "raise":
            raise FailpointError(f"failpoint {name}")
        elif rule.action == "sleep":
            await asyncio.sleep(rule.seconds)


def _parse(spec: str) -> dict[str, _Rule]:
    rules: dict[str, _Rule] = {}
    for entry in filter(None, (part.strip() for part in spec.split(","))):
        name, _, action_text = entry.partition("=")
        parts = action_text.split(":")
        times = None
        if len(parts) > 1 and parts[-1].startswith("x"):
            try:
                times = int(parts.pop()[1:])
            except ValueError:
                raise ConfigurationError(f"failpoint {name}: cannot read {action_text!r}") from None
        action = parts[0]
        _check(name, action)
        try:
            if action == "sleep":
                seconds = float(parts[1])
                probability = float(parts[2]) if len(parts) > 2 else 1.0
            else:
                seconds = 0.0
                probability = float(parts[1]) if len(parts) > 1 else 1.0
        except (IndexError, ValueError):
            raise ConfigurationError(f"failpoint {name}: cannot read {action_text!r}") from None
        if not 0.0 <= probability <= 1.0:
            raise ConfigurationError(f"failpoint {name}: probability must be within 0..1")
        rules[name] = _Rule(action, seconds, probability, times)
    return rules


def _check(name: str, action: str) -> None:
    if name not in NAMES and name not in JOURNAL_NAMES:
        raise ConfigurationError(
            f"unknown failpoint {name!r} (known: {sorted(NAMES)}, and journal_<write> / "
            f"journal_<write>_lost for the writes {', '.join(JOURNAL_WRITES)})"
        )
    if action not in _ACTIONS:
        raise ConfigurationError(f"failpoint {name}: unknown action {action!r}")
    if action == "fail" and name not in JOURNAL_NAMES:
        raise ConfigurationError(f"failpoint {name}: 'fail' is for the journal's points only")
