"""Tracing on: the worker's spans with OpenTelemetry (the ``otel`` extra).

:mod:`camunda_relay.tracing` says which spans there are and how their context travels; this
module makes them. :class:`OtelTracing` takes a tracer provider (the global one by default),
so an application that set up OpenTelemetry itself, or a test with its own exporter, gets the
worker's spans there: ``Worker(router, settings, tracing=OtelTracing(provider))``.

An exception in a span sets its status to error and ``error.type`` to the exception's type,
never its text (a handler's exception may quote a variable's value).
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import importlib
from collections.abc import Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from typing import TYPE_CHECKING

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import Link, SpanKind, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

import camunda_relay.tracing as hooks
from camunda_relay._version import __version__
from camunda_relay.errors import ConfigurationError, ReplyTokenError
from camunda_relay.task import BpmnError, DeferReply, Task
from camunda_relay.tracing import Span, Tracing

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SpanExporter

    from camunda_relay.replies.job import Job
    from camunda_relay.settings import Settings

__all__ = ["FLUSH_MS", "OtelTracing", "from_environment"]

FLUSH_MS = 3000
"""How long a worker's shutdown waits for the last spans to be exported (milliseconds)."""

_W3C = TraceContextTextMapPropagator()
_HEADERS = ("traceparent", "tracestate")
_OUTCOMES: tuple[tuple[type[BaseException], str], ...] = (
    (DeferReply, "deferred"),
    (BpmnError, "bpmn_error"),
    (asyncio.CancelledError, "cancelled"),
)


class _OtelSpan(Span):
    __slots__ = ("_span", "_variables")

    def __init__(self, span: trace.Span, variables: tuple[str, str]) -> None:
        self._span = span
        self._variables = variables

    def outcome(self, value: str) -> None:
        self._span.set_attribute("camunda.outcome", value)

    def fetched(self, tasks: Sequence[Task]) -> None:
        self._span.set_attribute("camunda.tasks", len(tasks))
        for task in tasks:
            context = trace.get_current_span(_extract(task, self._variables)).get_span_context()
            if context.is_valid:
                self._span.add_link(context, {"camunda.task_id": task.id})

    def carrying(self, job: Job) -> Job:
        carried = _as_variables(_inject(trace.set_span_in_context(self._span)), self._variables)
        result = {**(job.result or {}), **carried}
        return job.advance(job.state, at=job.updated_at, result=result)


class OtelTracing(Tracing):
    """The worker's spans, recorded with ``provider`` (the global one when None); the trace
    context travels in the process variables ``variable`` and ``state_variable``."""

    enabled = True

    def __init__(
        self,
        provider: TracerProvider | None = None,
        *,
        variable: str = "traceparent",
        state_variable: str = "tracestate",
    ) -> None:
        self._provider = provider
        source = provider if provider is not None else trace.get_tracer_provider()
        self._tracer = source.get_tracer("camunda_relay", __version__)
        self._variables = (variable, state_variable)
        _install(self._tracer)

    # -- the worker's hooks ------------------------------------------------------------------

    def fetch(self) -> AbstractContextManager[Span]:
        return self._span("fetchAndLock", otel_context.Context(), SpanKind.CLIENT, {})

    @contextmanager
    def receive(self, task: Task) -> Iterator[Task]:
        parent = _extract(task, self._variables)
        with self._span(f"receive {task.topic}", parent, SpanKind.CONSUMER, _of_task(task)):
            carried = _as_variables(_inject(), self._variables)
            yield dataclasses.replace(task, variables={**task.variables, **carried})

    @contextmanager
    def within(self, task: Task) -> Iterator[None]:
        token = otel_context.attach(_extract(task, self._variables))
        try:
            yield
        finally:
            otel_context.detach(token)

    @contextmanager
    def handler(self, task: Task, attempt: int) -> Iterator[Span]:
        attributes = {**_of_task(task), "camunda.attempt": attempt}
        parent = _extract(task, self._variables)
        with self._span(f"handle {task.topic}", parent, SpanKind.INTERNAL, attributes) as span:
            yield span
            span.outcome("succeeded")

    def complete(self, task: Task) -> AbstractContextManager[Span]:
        parent = _extract(task, self._variables)
        return self._span(f"complete {task.topic}", parent, SpanKind.CLIENT, _of_task(task))

    def correlate(self, job: Job) -> AbstractContextManager[Span]:
        parent = _extract(job.task, self._variables)
        attributes = {**_of_job(job), "camunda.message": job.message}
        return self._span(f"correlate {job.message}", parent, SpanKind.PRODUCER, attributes)

    def incident(self, job: Job) -> AbstractContextManager[Span]:
        parent = _extract(job.task, self._variables)
        attributes = {**_of_job(job), "camunda.message": job.message}
        return self._span(f"incident {job.message}", parent, SpanKind.CLIENT, attributes)

    def answered(self, job: Job) -> None:
        answer = job.answer
        links = []
        if answer is not None and answer.trace:
            context = trace.get_current_span(_W3C.extract(dict(answer.trace))).get_span_context()
            if context.is_valid:
                links.append(Link(context))
        outcome = "failure" if answer is not None and answer.failure is not None else "reply"
        attributes = {**_of_job(job), "camunda.message": job.message, "camunda.outcome": outcome}
        span = self._tracer.start_span(
            f"answer {job.message}",
            context=_extract(job.task, self._variables),
            kind=SpanKind.CONSUMER,
            attributes=attributes,
            links=links,
        )
        span.end()

    def carried(
        self, task: Task, variables: Mapping[str, object] | None
    ) -> Mapping[str, object] | None:
        carried = {name: task.variables[name] for name in self._variables if name in task.variables}
        return {**carried, **(variables or {})} if carried else variables

    def fetched_variables(self, names: Sequence[str] | None) -> Sequence[str] | None:
        if names is None:
            return None
        return [*names, *(name for name in self._variables if name not in names)]

    def flush(self) -> None:
        """Export what is recorded, waiting :data:`FLUSH_MS` at most (a collector that does
        not answer must not hold up a shutdown)."""
        flush = getattr(self._provider or trace.get_tracer_provider(), "force_flush", None)
        if flush is not None:
            flush(FLUSH_MS)

    # -- spans -------------------------------------------------------------------------------

    @contextmanager
    def _span(
        self,
        name: str,
        parent: otel_context.Context,
        kind: SpanKind,
        attributes: Mapping[str, str | int],
    ) -> Iterator[Span]:
        with self._tracer.start_as_current_span(
            name,
            context=parent,
            kind=kind,
            attributes=attributes,
            record_exception=False,
            set_status_on_exception=False,
        ) as span:
            handle = _OtelSpan(span, self._variables)
            try:
                yield handle
            except BaseException as error:
                _failed(span, error)
                raise


def _failed(span: trace.Span, error: BaseException) -> None:
    """The span of a step that raised: an expected outcome, or an error named by its type."""
    for kind, outcome in _OUTCOMES:
        if isinstance(error, kind):
            span.set_attribute("camunda.outcome", outcome)
            return
    span.set_attribute("camunda.outcome", "failed")
    span.set_attribute("error.type", type(error).__qualname__)
    span.set_status(StatusCode.ERROR)


def _of_task(task: Task) -> dict[str, str | int]:
    """The identifiers of a task as span attributes (never a variable's value)."""
    attributes: dict[str, str | int] = {
        "camunda.topic": task.topic,
        "camunda.process_instance_id": task.process_instance_id,
        "camunda.task_id": task.id,
        "camunda.job_id": task.job_id,
    }
    if task.process_definition_key:
        attributes["camunda.process_definition_key"] = task.process_definition_key
    return attributes


def _of_job(job: Job) -> dict[str, str | int]:
    return {**_of_task(job.task), "camunda.attempt": job.attempts}


def _extract(task: Task, variables: tuple[str, str]) -> otel_context.Context:
    """The trace context a task carries in its variables; an empty one (a new trace) when it
    carries none or one that is not W3C."""
    parent = task.variables.get(variables[0])
    if not isinstance(parent, str) or not parent:
        return _ROOT
    state = task.variables.get(variables[1])
    return _parsed(parent, state if isinstance(state, str) else None)


@functools.lru_cache(maxsize=4096)
def _parsed(traceparent: str, tracestate: str | None) -> otel_context.Context:
    """A job's context is read for each of its spans: parsed once (contexts are immutable)."""
    carrier = {"traceparent": traceparent}
    if tracestate:
        carrier["tracestate"] = tracestate
    return _W3C.extract(carrier, context=otel_context.Context())


_ROOT = otel_context.Context()


def _inject(context: otel_context.Context | None = None) -> dict[str, str]:
    carrier: dict[str, str] = {}
    _W3C.inject(carrier, context=context)
    return carrier


def _as_variables(carrier: Mapping[str, str], variables: tuple[str, str]) -> dict[str, str]:
    return {
        name: carrier[header]
        for header, name in zip(_HEADERS, variables, strict=True)
        if header in carrier
    }


# -- the hooks of camunda_relay.tracing (answering, log ids) ------------------------------------


def _install(tracer: trace.Tracer) -> None:
    @contextmanager
    def answering() -> Iterator[dict[str, str] | None]:
        with tracer.start_as_current_span(
            "answer reply",
            kind=SpanKind.PRODUCER,
            record_exception=False,
            set_status_on_exception=False,
        ) as span:
            try:
                yield _inject()
            except ReplyTokenError as error:
                span.set_attribute("camunda.outcome", error.verdict or "refused")
                raise
            except BaseException as error:
                _failed(span, error)
                raise
            span.set_attribute("camunda.outcome", "accepted")

    hooks._answering = answering
    hooks._remote_parent = _remote_parent
    hooks._log_ids = _log_ids
    hooks._current_traceparent = lambda: _inject().get("traceparent")


@contextmanager
def _remote_parent(source: Mapping[str, str]) -> Iterator[None]:
    carrier = {key.lower(): value for key, value in source.items() if key.lower() in _HEADERS}
    token = otel_context.attach(_W3C.extract(carrier)) if carrier else None
    try:
        yield
    finally:
        if token is not None:
            otel_context.detach(token)


def _log_ids() -> tuple[str, str] | None:
    context = trace.get_current_span().get_span_context()
    if not context.is_valid:
        return None
    return trace.format_trace_id(context.trace_id), trace.format_span_id(context.span_id)


# -- set up from the environment ----------------------------------------------------------------


def from_environment(settings: Settings, environ: Mapping[str, str]) -> OtelTracing:
    """Tracing with the global tracer provider when the application set one, else with one
    made from the ``OTEL_*`` variables (and made the global one, so that a handler's own
    spans land in the same place)."""
    from opentelemetry.sdk.trace import TracerProvider

    provider = trace.get_tracer_provider()
    if not isinstance(provider, TracerProvider):
        provider = _provider(environ)
        trace.set_tracer_provider(provider)
    return OtelTracing(
        provider, variable=settings.trace_variable, state_variable=settings.trace_state_variable
    )


def _provider(environ: Mapping[str, str]) -> TracerProvider:
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    attributes = {}
    named = environ.get("OTEL_SERVICE_NAME") or "service.name=" in environ.get(
        "OTEL_RESOURCE_ATTRIBUTES", ""
    )
    if not named:
        attributes["service.name"] = "camunda-relay"
    provider = TracerProvider(resource=Resource.create(attributes))
    provider.add_span_processor(BatchSpanProcessor(_exporter(environ)))
    return provider


def _exporter(environ: Mapping[str, str]) -> SpanExporter:
    """The exporter ``OTEL_TRACES_EXPORTER`` names: ``otlp`` (the default; over HTTP with
    protobuf, or gRPC when ``OTEL_EXPORTER_OTLP_PROTOCOL=grpc`` and its exporter is
    installed) or ``console``."""
    name = environ.get("OTEL_TRACES_EXPORTER", "").strip().lower() or "otlp"
    if name == "console":
        from opentelemetry.sdk.trace.export import ConsoleSpanExporter

        return ConsoleSpanExporter()
    if name != "otlp":
        raise ConfigurationError(
            f"OTEL_TRACES_EXPORTER={name} is not supported here: use otlp or console"
        )
    protocol = (
        environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
        or environ.get("OTEL_EXPORTER_OTLP_PROTOCOL")
        or "http/protobuf"
    ).strip()
    if protocol == "grpc":
        try:
            grpc = importlib.import_module("opentelemetry.exporter.otlp.proto.grpc.trace_exporter")
        except ImportError:
            raise ConfigurationError(
                "OTEL_EXPORTER_OTLP_PROTOCOL=grpc needs opentelemetry-exporter-otlp-proto-grpc "
                "(pip install it), or use http/protobuf"
            ) from None
        exporter: SpanExporter = grpc.OTLPSpanExporter()
        return exporter
    if protocol != "http/protobuf":
        raise ConfigurationError(f"OTEL_EXPORTER_OTLP_PROTOCOL={protocol}: use http/protobuf")
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    endpoint = environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "").strip()
    if not endpoint and environ.get("OTEL_EXPORTER_OTLP_ENDPOINT", "").strip():
        endpoint = environ["OTEL_EXPORTER_OTLP_ENDPOINT"].strip().rstrip("/") + "/v1/traces"
    return OTLPSpanExporter(endpoint=endpoint or None)
