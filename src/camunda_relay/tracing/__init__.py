"""Tracing with OpenTelemetry: one trace from the process's start to its correlation.

Off unless the standard ``OTEL_*`` variables configure an exporter (:func:`configured`), and
then only with the ``otel`` extra installed (``pip install 'camunda-relay[otel]'``). Off, no
module of ``opentelemetry`` is imported and every hook is a call that does nothing
(:data:`OFF`).

On (:mod:`camunda_relay.tracing.otel`), the worker makes these spans, each with attributes
that name the topic, the process definition key, the process instance, the task, the job,
the attempt and the outcome, never a variable's value:

- ``fetchAndLock`` for every poll (a trace of its own, linked to the traces of the tasks it
  brought);
- ``receive <topic>`` for a fetched task, in the trace the task carries: the W3C
  ``traceparent`` (and ``tracestate``) read from the process variable
  ``CAMUNDA_TRACE_VARIABLE`` (default ``traceparent``; ``CAMUNDA_TRACE_STATE_VARIABLE``,
  default ``tracestate``), or a new trace when the task carries none. Its context is the
  job's from then on: written into the task's variables (the job in the journal keeps it,
  so a restart or another worker continues the same trace) and with the completion;
- under it: ``complete <topic>``, ``handle <topic>`` (one per attempt), ``correlate
  <message>`` (the message carries the correlation's own context in the same variables, so
  the next worker downstream continues the trace), ``incident <message>``, and ``answer
  <message>`` when a deferred reply's answer is taken, linked to the answerer's span;
- ``answer reply`` where a deferred reply is answered (:func:`~camunda_relay.replies.tokens.
  send_reply`, ``camunda-relay reply`` with ``TRACEPARENT`` in its environment, ``POST
  /reply`` with a ``traceparent`` header), as a child of the answerer's context.

The JSON log lines carry ``trace_id`` and ``span_id`` while a span is current.
"""

from __future__ import annotations

import contextlib
import importlib
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING

from camunda_relay.errors import ConfigurationError

if TYPE_CHECKING:
    from camunda_relay.replies.job import Job
    from camunda_relay.settings import Settings
    from camunda_relay.task import Task

__all__ = [
    "OFF",
    "Span",
    "Tracing",
    "answering",
    "configured",
    "current_traceparent",
    "from_environment",
    "log_ids",
    "remote_parent",
]


class Span:
    """A span the worker's code may tell more about; this one (tracing off) ignores it."""

    __slots__ = ()

    def outcome(self, value: str) -> None:
        """What became of the step (``completed``, ``delivered``, ``deferred``, ...)."""

    def fetched(self, tasks: Sequence[Task]) -> None:
        """The tasks a poll brought (their number, and links to their traces)."""

    def carrying(self, job: Job) -> Job:
        """``job`` with this span's context in its result's trace variables."""
        return job


_NO_SPAN = Span()


class _NoSpan(contextlib.AbstractContextManager[Span]):
    """A reusable context manager yielding the span that ignores everything."""

    __slots__ = ()

    def __enter__(self) -> Span:
        return _NO_SPAN

    def __exit__(self, *exc_info: object) -> None:
        return None


_NOTHING = _NoSpan()


class Tracing:
    """The worker's hooks. This class is tracing off: every hook does nothing, at the cost
    of a call; :class:`camunda_relay.tracing.otel.OtelTracing` records spans."""

    enabled = False

    def fetch(self) -> contextlib.AbstractContextManager[Span]:
        """One fetch-and-lock."""
        return _NOTHING

    def receive(self, task: Task) -> contextlib.AbstractContextManager[Task]:
        """A fetched task: yields it with the job's trace context in its variables."""
        return contextlib.nullcontext(task)

    def within(self, task: Task) -> contextlib.AbstractContextManager[None]:
        """The job's trace context as the current one (its log lines carry its ids)."""
        return contextlib.nullcontext()

    def handler(self, task: Task, attempt: int) -> contextlib.AbstractContextManager[Span]:
        """One attempt of the task's handler."""
        return _NOTHING

    def complete(self, task: Task) -> contextlib.AbstractContextManager[Span]:
        """Completing the task."""
        return _NOTHING

    def correlate(self, job: Job) -> contextlib.AbstractContextManager[Span]:
        """Delivering the reply message."""
        return _NOTHING

    def incident(self, job: Job) -> contextlib.AbstractContextManager[Span]:
        """Raising the job's incident."""
        return _NOTHING

    def answered(self, job: Job) -> None:
        """A deferred job's answer was taken."""

    def carried(
        self, task: Task, variables: Mapping[str, object] | None
    ) -> Mapping[str, object] | None:
        """The completion's ``variables`` with the job's trace variables added."""
        return variables

    def fetched_variables(self, names: Sequence[str] | None) -> Sequence[str] | None:
        """A topic's variable names to fetch, with the trace variables when names are given."""
        return names

    def flush(self) -> None:
        """Export what is recorded (at the worker's shutdown)."""


OFF = Tracing()
"""Tracing off."""

# Set by camunda_relay.tracing.otel when a tracer is made: the current span's ids, and the
# answerer's hooks. None while tracing is off: then nothing of OpenTelemetry is imported.
_log_ids: Callable[[], tuple[str, str] | None] | None = None
_answering: Callable[[], contextlib.AbstractContextManager[dict[str, str] | None]] | None = None
_remote_parent: Callable[[Mapping[str, str]], contextlib.AbstractContextManager[None]] | None = None
_current_traceparent: Callable[[], str | None] | None = None

_EXPORTERS = ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")


def configured(environ: Mapping[str, str]) -> bool:
    """Whether the ``OTEL_*`` variables ask for traces: an OTLP endpoint, or
    ``OTEL_TRACES_EXPORTER`` set to an exporter; never with ``OTEL_SDK_DISABLED=true`` or
    ``OTEL_TRACES_EXPORTER=none``."""
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    exporter = environ.get("OTEL_TRACES_EXPORTER", "").strip().lower()
    if exporter == "none":
        return False
    return bool(exporter) or any(environ.get(name, "").strip() for name in _EXPORTERS)


def from_environment(settings: Settings, environ: Mapping[str, str]) -> Tracing:
    """:data:`OFF` unless :func:`configured`; else the worker's tracing, with the global
    tracer provider when the application set one, or one made from the ``OTEL_*``
    variables. :class:`~camunda_relay.errors.ConfigurationError` (one line) without the
    ``otel`` extra, or for an exporter that is not supported."""
    if not configured(environ):
        return OFF
    try:
        otel = importlib.import_module("camunda_relay.tracing.otel")
    except ImportError as error:
        raise ConfigurationError(
            f"tracing is configured (OTEL_*) but OpenTelemetry is not installed ({error.name} "
            "is missing): pip install 'camunda-relay[otel]'"
        ) from None
    tracing: Tracing = otel.from_environment(settings, environ)
    return tracing


def log_ids() -> tuple[str, str] | None:
    """The current span's trace id and span id (hex), for a log line; None without one."""
    ids = _log_ids
    return ids() if ids is not None else None


def current_traceparent() -> str | None:
    """The W3C ``traceparent`` of the current span (a handler hands it out with its reply
    token, so the answer joins the trace); None while tracing is off."""
    current = _current_traceparent
    return current() if current is not None else None


def answering() -> contextlib.AbstractContextManager[dict[str, str] | None]:
    """An ``answer reply`` span around answering a deferred reply; yields the context to
    keep with the answer (None while tracing is off)."""
    hook = _answering
    return hook() if hook is not None else contextlib.nullcontext(None)


def remote_parent(carrier: Mapping[str, str]) -> contextlib.AbstractContextManager[None]:
    """The W3C context in ``carrier`` (``traceparent``, ``tracestate``: headers, or the
    environment's ``TRACEPARENT``) as the current one within the block."""
    hook = _remote_parent
    return hook(carrier) if hook is not None else contextlib.nullcontext()
