"""Failpoints: named places in the worker where a test can make it crash, stall or fail.

Off unless ``CAMUNDA_RELAY_FAILPOINTS`` is set (read once, when a worker starts), e.g.::

    CAMUNDA_RELAY_FAILPOINTS="after_complete_before_work=kill,before_correlate=sleep:2:0.5"

Each entry is ``name=action[:argument][:probability]`` with the actions ``kill`` (SIGKILL
this process), ``stop`` (SIGSTOP it), ``raise`` (raise :class:`FailpointError`) and
``sleep:SECONDS``. The probability (0..1, default 1) is drawn from a random generator seeded
by ``CAMUNDA_RELAY_FAILPOINTS_SEED`` when given, so a run can be repeated.

The names, in the order a reply job meets them: ``after_fetch``, ``after_record``,
``after_complete_before_work``, ``mid_work``, ``after_work_before_correlate``,
``after_correlate_before_journal``.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
from collections.abc import Mapping
from dataclasses import dataclass

from camunda_relay.errors import ConfigurationError

__all__ = ["NAMES", "FailpointError", "Failpoints"]

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
_ACTIONS = frozenset({"kill", "stop", "raise", "sleep"})


class FailpointError(RuntimeError):
    """Raised by a ``raise`` failpoint."""


@dataclass(frozen=True)
class _Rule:
    action: str
    seconds: float
    probability: float


class Failpoints:
    """The failpoints of one worker; :meth:`hit` is a no-op for names without a rule."""

    def __init__(self, rules: Mapping[str, _Rule] | None = None, seed: int | None = None) -> None:
        self._rules = dict(rules or {})
        self._random = random.Random(seed)

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
        rule = self._rules.get(name)
        if rule is None or self._random.random() >= rule.probability:
            return
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
        if name not in NAMES:
            raise ConfigurationError(f"unknown failpoint {name!r} (known: {sorted(NAMES)})")
        parts = action_text.split(":")
        action = parts[0]
        if action not in _ACTIONS:
            raise ConfigurationError(f"failpoint {name}: unknown action {action!r}")
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
        rules[name] = _Rule(action, seconds, probability)
    return rules
