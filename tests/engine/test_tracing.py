"""Tracing on the real engine, into an OTLP/HTTP receiver in the test process: one trace from
the starter's span through the worker's receive, complete, handler and correlation to the
next worker downstream; a deferred reply's answer in the same trace; and the CLI worker set
up by the OTEL_* variables alone, with the ids in its JSON log lines."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from camunda_relay import DeferReply, EngineClient, Router, Task, Worker, send_reply
from camunda_relay.journal import open_journal
from camunda_relay.tracing import current_traceparent, remote_parent
from camunda_relay.tracing.otel import OtelTracing
from tests.engine.test_worker import eventually, finished, run, settings_for
from tests.support.engine import PASSWORD, PROCESS_KEY, USER, Engine, wait_for
from tests.support.otlp import ReceivedSpan, Receiver, receiver

SECRET = "canary-value-never-in-a-span"

TRACED_BPMN = """<?xml version="1.0" encoding="UTF-8"?>
<bpmn:definitions xmlns:bpmn="http://www.omg.org/spec/BPMN/20100524/MODEL"
  xmlns:camunda="http://camunda.org/schema/1.0/bpmn" id="traced-defs" targetNamespace="test">
  <bpmn:message id="traced_msg" name="traced_reply" />
  <bpmn:process id="relay-traced" isExecutable="true" camunda:historyTimeToLive="1">
    <bpmn:startEvent id="start" />
    <bpmn:sequenceFlow id="f1" sourceRef="start" targetRef="send" />
    <bpmn:serviceTask id="send" camunda:type="external" camunda:topic="traced-send" />
    <bpmn:sequenceFlow id="f2" sourceRef="send" targetRef="wait" />
    <bpmn:intermediateCatchEvent id="wait">
      <bpmn:messageEventDefinition id="wait_def" messageRef="traced_msg" />
    </bpmn:intermediateCatchEvent>
    <bpmn:sequenceFlow id="f3" sourceRef="wait" targetRef="downstream" />
    <bpmn:serviceTask id="downstream" camunda:type="external" camunda:topic="traced-next" />
    <bpmn:sequenceFlow id="f4" sourceRef="downstream" targetRef="end" />
    <bpmn:endEvent id="end" />
  </bpmn:process>
</bpmn:definitions>
"""


@pytest.fixture(scope="module")
def traced_model(engine: Engine) -> None:
    async def deploy() -> None:
        async with EngineClient(settings_for(engine)) as client:
            await client.deploy("tracing-tests", {"traced.bpmn": TRACED_BPMN.encode()})

    run(deploy())


@pytest.fixture
def otlp() -> Iterator[Receiver]:
    with receiver() as received:
        yield received


def provider(otlp: Receiver, service: str) -> TracerProvider:
    made = TracerProvider(resource=Resource.create({"service.name": service}))
    exporter = OTLPSpanExporter(endpoint=f"{otlp.endpoint}/v1/traces")
    made.add_span_processor(BatchSpanProcessor(exporter, schedule_delay_millis=100))
    return made


def started_in_trace(starter: TracerProvider) -> tuple[str, dict[str, object]]:
    """The web application's span around starting a process: its id and the variables that
    carry its context."""
    with starter.get_tracer("web-app").start_as_current_span("start order") as span:
        carrier: dict[str, str] = {}
        TraceContextTextMapPropagator().inject(carrier)
        return format(span.get_span_context().span_id, "016x"), {
            "traceparent": carrier["traceparent"],
            "order": SECRET,
        }


def one(spans: list[ReceivedSpan], name: str) -> ReceivedSpan:
    found = [span for span in spans if span.name == name]
    assert len(found) == 1, (name, [span.name for span in spans])
    return found[0]


def assert_no_values(spans: list[ReceivedSpan]) -> None:
    for span in spans:
        assert SECRET not in json.dumps(span.attributes, default=str)


def test_one_trace_from_the_starter_through_correlation_to_the_next_worker(
    engine: Engine, traced_model: None, otlp: Receiver, rest: httpx.Client
) -> None:
    router = Router()

    @router.task("traced-send", reply="traced_reply")
    async def send(task: Task) -> dict[str, object]:
        return {"answer": f"for {task.variables['order']}"}

    @router.task("traced-next")
    def next_step(task: Task) -> dict[str, object]:  # sync: runs on the thread pool
        return {"done": True}

    starter = provider(otlp, "web-app")
    worker_provider = provider(otlp, "worker")
    start_id, variables = started_in_trace(starter)

    async def scenario() -> str:
        tracing = OtelTracing(worker_provider)
        async with Worker(router, settings_for(engine), tracing=tracing) as worker:
            runner = asyncio.ensure_future(worker.run())
            try:
                started = await worker.client.start_process("relay-traced", variables=variables)
                instance_id = str(started["id"])
                await eventually(
                    lambda: finished(worker.client, [instance_id]), timeout=120, what="the end"
                )
                return instance_id
            finally:
                worker.stop()
                await runner

    instance_id = run(scenario())
    starter.force_flush()
    worker_provider.force_flush()
    start = one(otlp.named("start order"), "start order")
    otlp.wait_for(lambda: len(otlp.trace(start.trace_id)) >= 8, what="the instance's spans")
    spans = [span for span in otlp.trace(start.trace_id) if span.service == "worker"]
    receive = one(spans, "receive traced-send")
    assert receive.parent_id == start_id
    for name in ("complete traced-send", "handle traced-send", "correlate traced_reply"):
        assert one(spans, name).parent_id == receive.span_id, name
    correlate = one(spans, "correlate traced_reply")
    assert correlate.attributes["camunda.outcome"] == "delivered"
    assert correlate.attributes["camunda.process_instance_id"] == instance_id
    handle = one(spans, "handle traced-send")
    assert handle.attributes["camunda.attempt"] == 1
    assert handle.attributes["camunda.outcome"] == "succeeded"
    assert handle.attributes["camunda.process_definition_key"] == "relay-traced"
    # The next worker downstream continues from the correlation.
    downstream = one(spans, "receive traced-next")
    assert downstream.parent_id == correlate.span_id
    for name in ("complete traced-next", "handle traced-next"):
        assert one(spans, name).parent_id == downstream.span_id, name
    assert_no_values(spans)
    # The fetch that brought the task is a trace of its own, linked to the task's.
    fetches = [s for s in otlp.named("fetchAndLock") if (start.trace_id, start_id) in s.links]
    assert len(fetches) == 1
    assert fetches[0].trace_id != start.trace_id
    history = rest.get(
        "/history/variable-instance",
        params={"processInstanceId": instance_id, "variableName": "traceparent"},
    ).json()
    (variable,) = history
    assert variable["value"].split("-")[1] == start.trace_id


def test_a_deferred_answer_joins_the_trace_of_its_job(
    engine: Engine, traced_model: None, otlp: Receiver, tmp_path: Path
) -> None:
    handed_out: dict[str, tuple[str, str | None]] = {}
    router = Router()

    @router.task("traced-send", reply="traced_reply")
    async def send(task: Task) -> None:
        assert task.reply_token is not None
        handed_out[task.process_instance_id] = (task.reply_token, current_traceparent())
        raise DeferReply

    @router.task("traced-next")
    async def next_step(task: Task) -> None:
        return None

    journal = str(tmp_path / "journal.sqlite3")
    worker_provider = provider(otlp, "worker")

    async def scenario() -> None:
        tracing = OtelTracing(worker_provider)
        settings = settings_for(engine, journal=journal, journal_lease=timedelta(seconds=1.5))
        async with Worker(router, settings, tracing=tracing) as worker:
            runner = asyncio.ensure_future(worker.run())
            try:
                started = await worker.client.start_process("relay-traced")
                instance_id = str(started["id"])
                await eventually(
                    lambda: asyncio.sleep(0, instance_id in handed_out), timeout=60, what="token"
                )
                token, traceparent = handed_out[instance_id]
                assert traceparent is not None
                # The webhook that answers got the traceparent with the token.
                answerer = open_journal(journal, owner="webhook")
                try:
                    with remote_parent({"traceparent": traceparent}):
                        await send_reply(answerer, token, {"paid": True})
                finally:
                    await answerer.close()
                await eventually(
                    lambda: finished(worker.client, [instance_id]), timeout=120, what="the end"
                )
            finally:
                worker.stop()
                await runner

    run(scenario())
    worker_provider.force_flush()
    otlp.wait_for(lambda: otlp.named("answer traced_reply"), what="the answer's span")
    taken = one(otlp.named("answer traced_reply"), "answer traced_reply")
    spans = otlp.trace(taken.trace_id)
    receive = one(spans, "receive traced-send")
    assert receive.parent_id == ""  # the process was started outside any trace
    handle = one(spans, "handle traced-send")
    assert handle.attributes["camunda.outcome"] == "deferred"
    answer = one(spans, "answer reply")
    assert answer.parent_id == handle.span_id
    assert answer.attributes["camunda.outcome"] == "accepted"
    assert taken.parent_id == receive.span_id
    assert (answer.trace_id, answer.span_id) in taken.links
    correlate = one(spans, "correlate traced_reply")
    assert one(spans, "receive traced-next").parent_id == correlate.span_id


def test_the_cli_worker_traces_the_seed_flow_from_otel_variables_alone(
    engine: Engine, otlp: Receiver, rest: httpx.Client, tmp_path: Path
) -> None:
    starter = provider(otlp, "web-app")
    start_id, variables = started_in_trace(starter)
    starter.force_flush()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("CAMUNDA_", "OTEL_"))},
        "CAMUNDA_URL": engine.rest_url,
        "CAMUNDA_USER": USER,
        "CAMUNDA_PASSWORD": PASSWORD,
        "CAMUNDA_JOURNAL": str(tmp_path / "journal.sqlite3"),
        "CAMUNDA_LONG_POLL": "2",
        "CAMUNDA_LOG_FORMAT": "json",
        "SAMPLE_WORK_SECONDS": "0",
        "OTEL_EXPORTER_OTLP_ENDPOINT": otlp.endpoint,
        "OTEL_SERVICE_NAME": "seed-worker",
        "OTEL_BSP_SCHEDULE_DELAY": "100",
    }
    worker = subprocess.Popen(
        [sys.executable, "-m", "camunda_relay.cli", "worker", "camunda_relay.examples.conception"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        body = {
            "businessKey": f"traced-{uuid.uuid4().hex[:8]}",
            "variables": {k: {"value": v, "type": "String"} for k, v in variables.items()},
        }
        started = rest.post(f"/process-definition/key/{PROCESS_KEY}/start", json=body)
        instance_id = started.json()["id"]
        start = one(otlp.named("start order"), "start order")
        otlp.wait_for(
            lambda: any(s.name == "correlate sample_response" for s in otlp.trace(start.trace_id)),
            timeout=120,
            what="the correlation's span",
        )
        wait_for(
            lambda: (
                rest.get(
                    "/history/process-instance", params={"processInstanceId": instance_id}
                ).json()[0]["state"]
                == "COMPLETED"
            ),
            timeout=60,
            what="the instance's end",
        )
    finally:
        worker.send_signal(signal.SIGTERM)
        _, stderr = worker.communicate(timeout=60)
    assert worker.returncode == 0, stderr
    spans = otlp.trace(start.trace_id)
    assert {s.service for s in spans} == {"web-app", "seed-worker"}
    receive = one(spans, "receive messageSending")
    assert receive.parent_id == start_id
    for name in ("complete messageSending", "handle messageSending", "correlate sample_response"):
        assert one(spans, name).parent_id == receive.span_id, name
    assert_no_values(spans)
    lines = [json.loads(line) for line in stderr.splitlines() if line.startswith("{")]
    delivered = [line for line in lines if line.get("process_instance_id") == instance_id]
    assert delivered, stderr
    assert all(line["trace_id"] == start.trace_id for line in delivered)
    assert {line["span_id"] for line in delivered} <= {s.span_id for s in spans}
    assert SECRET not in stderr
