"""Tracing's rules that need no engine: off unless OTEL_* configure it (and then nothing of
OpenTelemetry is imported), one clear line without the extra, no value in a span, the job's
trace kept across a restart by another worker, the answer's context kept in the journal, and
the ids in JSON log lines. Against the in-process fake engine, spans in memory."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from camunda_relay import ConfigurationError, EngineClient, Router, Settings, Task, Worker
from camunda_relay import tracing as tracing_module
from camunda_relay.cli._logging import JsonFormatter
from camunda_relay.failpoints import Failpoints
from camunda_relay.journal.codec import dumps_answer, loads_answer
from camunda_relay.journal.sqlite import SqliteJournal
from camunda_relay.replies.http import reply_routes
from camunda_relay.replies.job import Answer
from camunda_relay.tracing import OFF, configured, from_environment
from camunda_relay.tracing.otel import OtelTracing
from tests.support.fake_engine import MESSAGE, TOPIC, FakeEngine
from tests.support.otlp import receiver
from tests.support.tools import run_cli
from tests.unit.test_reply_http import AUTH, Server, deferred_file
from tests.unit.test_reply_http import SECRET as REPLY_SECRET

SECRET = "canary-secret-value"


@pytest.fixture
def exported() -> Iterator[tuple[TracerProvider, InMemorySpanExporter]]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    yield provider, exporter
    provider.shutdown()


def settings(**changes: object) -> Settings:
    base: dict[str, object] = {
        "url": "http://fake-engine/engine-rest",
        "retries": 1,
        "retry_timeout": timedelta(milliseconds=10),
        "journal": ":memory:",
    }
    return Settings(**{**base, **changes})  # type: ignore[arg-type]


def worker(
    fake: FakeEngine,
    router: Router,
    tracing: OtelTracing,
    failpoints: Failpoints | None = None,
    **changes: object,
) -> Worker:
    chosen = settings(**changes)
    client = EngineClient(chosen, transport=fake.transport())
    return Worker(router, chosen, client=client, tracing=tracing, failpoints=failpoints)


@pytest.mark.parametrize(
    ("environ", "on"),
    [
        ({}, False),
        ({"OTEL_SERVICE_NAME": "w"}, False),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"}, True),
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://127.0.0.1:4318/v1/traces"}, True),
        ({"OTEL_TRACES_EXPORTER": "console"}, True),
        ({"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://x"}, False),
        ({"OTEL_SDK_DISABLED": "true", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://x"}, False),
    ],
)
def test_tracing_is_on_only_when_otel_variables_ask_for_traces(
    environ: dict[str, str], on: bool
) -> None:
    assert configured(environ) is on


def _python(code: str, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "CAMUNDA_"))}
    return subprocess.run(
        [sys.executable, "-c", code],
        env={**clean, **env},
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )


def test_off_a_reply_job_runs_without_importing_opentelemetry() -> None:
    code = (
        "import asyncio, os, sys\n"
        "from camunda_relay import EngineClient, Router, Settings, Worker, tracing\n"
        "import camunda_relay.cli.worker\n"
        "from tests.support.fake_engine import MESSAGE, TOPIC, FakeEngine\n"
        "router = Router()\n"
        "@router.task(TOPIC, reply=MESSAGE)\n"
        "async def handle(task):\n"
        "    return {'n': 1}\n"
        "s = Settings(url='http://fake-engine/engine-rest', journal=':memory:')\n"
        "fake = FakeEngine()\n"
        "fake.start('bk')\n"
        "async def main():\n"
        "    t = tracing.from_environment(s, os.environ)\n"
        "    assert t is tracing.OFF\n"
        "    client = EngineClient(s, transport=fake.transport())\n"
        "    async with Worker(router, s, client=client, tracing=t) as w:\n"
        "        await w.run_once()\n"
        "        assert w.stats.replies_delivered == 1\n"
        "asyncio.run(main())\n"
        "print(sorted(m for m in sys.modules if m.startswith('opentelemetry')))\n"
    )
    done = _python(code)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_configured_without_the_extra_is_one_clear_line() -> None:
    code = (
        "import os, sys\n"
        "sys.modules['opentelemetry'] = None\n"
        "from camunda_relay import ConfigurationError, Settings, tracing\n"
        "try:\n"
        "    tracing.from_environment(Settings(), os.environ)\n"
        "except ConfigurationError as error:\n"
        "    print(error)\n"
    )
    done = _python(code, OTEL_EXPORTER_OTLP_ENDPOINT="http://127.0.0.1:9")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == (
        "tracing is configured (OTEL_*) but OpenTelemetry is not installed (opentelemetry is "
        "missing): pip install 'camunda-relay[otel]'"
    )


def test_an_exporter_that_is_not_supported_is_one_clear_line() -> None:
    with pytest.raises(ConfigurationError, match="OTEL_TRACES_EXPORTER=zipkin is not supported"):
        from_environment(Settings(), {"OTEL_TRACES_EXPORTER": "zipkin"})


def _spans(exporter: InMemorySpanExporter, name: str) -> list[ReadableSpan]:
    return [span for span in exporter.get_finished_spans() if span.name == name]


def test_a_failing_handler_and_its_incident_name_the_error_type_never_its_text(
    exported: tuple[TracerProvider, InMemorySpanExporter],
) -> None:
    provider, exporter = exported
    router = Router()

    @router.task(TOPIC, reply=MESSAGE)
    async def handle(task: Task) -> dict[str, object]:
        raise ValueError(f"bad order {task.variables['order']}")

    fake = FakeEngine()
    fake.start("bk", variables={"order": SECRET})

    async def main() -> None:
        async with worker(fake, router, OtelTracing(provider)) as running:
            await running.run_once()

    asyncio.run(asyncio.wait_for(main(), 60))
    attempts = _spans(exporter, f"handle {TOPIC}")
    assert [span.attributes["camunda.attempt"] for span in attempts] == [1, 2]  # type: ignore[index]
    for span in attempts:
        assert span.attributes is not None
        assert span.attributes["camunda.outcome"] == "failed"
        assert span.attributes["error.type"] == "ValueError"
        assert span.status.description is None
        assert not span.events
    (incident,) = _spans(exporter, f"incident {MESSAGE}")
    assert incident.attributes is not None
    assert incident.attributes["camunda.outcome"] == "raised"
    everything = [
        json.dumps(dict(span.attributes or {}), default=str) + str(span.status.description)
        for span in exporter.get_finished_spans()
    ]
    assert not [text for text in everything if SECRET in text]
    assert {span.context.trace_id for span in [*attempts, incident]} == {
        attempts[0].context.trace_id
    }


def test_a_job_resumed_by_another_worker_stays_in_its_trace(
    exported: tuple[TracerProvider, InMemorySpanExporter], tmp_path: Path
) -> None:
    """The first worker fails right after completing the task; a worker with another id
    takes the job over from the journal and continues the same trace."""
    provider, exporter = exported
    router = Router()

    @router.task(TOPIC, reply=MESSAGE)
    async def handle(task: Task) -> dict[str, object]:
        return {"n": 1}

    fake = FakeEngine()
    instance_id = fake.start("bk")
    journal = str(tmp_path / "journal.sqlite3")
    tracing = OtelTracing(provider)

    async def main() -> None:
        failing = Failpoints.from_environment(
            {"CAMUNDA_RELAY_FAILPOINTS": "after_complete_before_work=raise"}
        )
        first = worker(fake, router, tracing, failing, journal=journal, worker_id="first")
        async with first:
            await first.run_once()
        async with worker(fake, router, tracing, journal=journal, worker_id="second") as second:
            assert await second.resume() == 1
            await second.drain()

    asyncio.run(asyncio.wait_for(main(), 60))
    assert fake.instances[instance_id].passages == 1
    (receive,) = _spans(exporter, f"receive {TOPIC}")
    (handle_span,) = _spans(exporter, f"handle {TOPIC}")
    (correlate,) = _spans(exporter, f"correlate {MESSAGE}")
    for span in (handle_span, correlate):
        assert span.parent is not None
        assert span.context.trace_id == receive.context.trace_id
        assert span.parent.span_id == receive.context.span_id
    message = fake.instances[instance_id].variables
    assert message["traceparent"]["value"].split("-")[2] == f"{correlate.context.span_id:016x}"


def test_an_answers_trace_context_is_kept_beside_it_in_the_journal() -> None:
    trace = {"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}
    kept = loads_answer(dumps_answer(Answer(variables={"paid": True}, trace=trace)))
    assert kept is not None
    assert kept.trace == trace
    assert kept.variables == {"paid": True}
    failure = loads_answer(dumps_answer(Answer(failure="declined", trace=trace)))
    assert failure is not None
    assert failure.trace == trace
    assert loads_answer(dumps_answer(Answer(failure="declined"))) == Answer(failure="declined")
    assert loads_answer('{"failure": "x", "trace": 5}') == Answer(failure="x")


def test_json_log_lines_carry_the_current_spans_ids(
    exported: tuple[TracerProvider, InMemorySpanExporter],
) -> None:
    provider, _ = exported
    OtelTracing(provider)
    record = logging.LogRecord("camunda_relay.x", logging.INFO, __file__, 1, "hello", None, None)
    assert "trace_id" not in json.loads(JsonFormatter().format(record))
    with provider.get_tracer("t").start_as_current_span("s") as span:
        line = json.loads(JsonFormatter().format(record))
    context = span.get_span_context()
    assert line["trace_id"] == f"{context.trace_id:032x}"
    assert line["span_id"] == f"{context.span_id:016x}"


def test_a_topic_with_a_variable_list_fetches_the_trace_variables_too() -> None:
    tracing = OtelTracing(TracerProvider(), variable="tp", state_variable="ts")
    assert tracing.fetched_variables(["order"]) == ["order", "tp", "ts"]
    assert tracing.fetched_variables(["tp", "order"]) == ["tp", "order", "ts"]
    assert tracing.fetched_variables(None) is None
    assert OFF.fetched_variables(["order"]) == ["order"]
    assert tracing_module.log_ids() is None


def test_post_reply_with_a_traceparent_header_answers_inside_that_trace(
    exported: tuple[TracerProvider, InMemorySpanExporter], tmp_path: Path
) -> None:
    provider, exporter = exported
    OtelTracing(provider)
    path = tmp_path / "journal.sqlite3"
    token = deferred_file(path, deadline=4e9)
    parent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    headers = {**AUTH, "traceparent": parent}
    server = Server(reply_routes(Settings(journal=str(path), reply_secret=REPLY_SECRET)))
    try:
        assert server.post({"token": token, "variables": {"paid": True}}, headers)[0] == 200
        # A refused answer is a span too, with the verdict.
        assert server.post({"token": token, "variables": {}}, AUTH)[0] == 409
    finally:
        server.http.close()
    span = _spans(exporter, "answer reply")[0]
    assert f"{span.context.trace_id:032x}" == "0af7651916cd43dd8448eb211c80319c"
    assert span.parent is not None
    assert f"{span.parent.span_id:016x}" == "b7ad6b7169203331"
    assert span.attributes is not None
    assert span.attributes["camunda.outcome"] == "accepted"

    async def stored() -> Answer | None:
        journal = SqliteJournal(path, owner="reader", lease=timedelta(0))
        try:
            (job,) = await journal.jobs()
            return job.answer
        finally:
            await journal.close()

    answer = asyncio.run(stored())
    assert answer is not None
    assert answer.trace is not None
    assert answer.trace["traceparent"].split("-")[2] == f"{span.context.span_id:016x}"
    assert [s.attributes["camunda.outcome"] for s in _spans(exporter, "answer reply")] == [  # type: ignore[index]
        "accepted",
        "used",
    ]


def test_the_cli_answers_inside_the_trace_its_traceparent_names(tmp_path: Path) -> None:
    path = tmp_path / "journal.sqlite3"
    token = deferred_file(path, deadline=4e9)
    parent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    with receiver() as otlp:
        done = run_cli(
            "reply",
            token,
            "--var",
            "paid=true",
            "--journal",
            str(path),
            env={
                "OTEL_EXPORTER_OTLP_ENDPOINT": otlp.endpoint,
                "OTEL_SERVICE_NAME": "answering-cli",
                "TRACEPARENT": parent,
            },
        )
        assert done.returncode == 0, done.stderr
        otlp.wait_for(lambda: otlp.named("answer reply"), timeout=30, what="the answer's span")
        (span,) = otlp.named("answer reply")
    assert span.trace_id == "4bf92f3577b34da6a3ce929d0e0e4736"
    assert span.parent_id == "00f067aa0ba902b7"
    assert span.service == "answering-cli"
    assert token not in json.dumps(span.attributes)
