# ruff: noqa: T201, S310 - a command-line tool that prints; it calls loopback URLs it made
"""``make e2e-tracing``: one trace per instance in a real Jaeger, and a screenshot of one.

Builds Jaeger v1.75.0 from the Go module proxy once (a scratch module in
``build/e2e-tracing/jaeger-tool``: ``go get -tool github.com/jaegertracing/jaeger/cmd/
jaeger@v1.75.0``, then ``go build``; nothing of it is committed), starts it with memory
storage on free loopback ports, starts the bundled engine, deploys a model with a reply
topic and a plain topic after its catch event, and runs ``camunda-relay worker
harness.tracing_worker`` configured by ``OTEL_*`` alone. This process plays a web shop that
starts each instance inside its own span ``start order`` (the context as the process
variable ``traceparent``). Then Jaeger's query API must hold, per instance, one trace with
the starter's span, the worker's receive, complete, handler and correlation, and the
continuation downstream (receive, complete, handler of the next topic under the
correlation); the worker's JSON log lines must carry the same trace ids. Chromium (Debian's
package, driven by playwright) takes a screenshot of one trace in Jaeger's UI:
``build/e2e-tracing/trace.png``. A binary built from the Go module carries no UI assets (they
come from jaeger-ui's own npm build), so the page is then Jaeger's placeholder: said in one
line, not counted as a failure; ``--ui-assets DIR`` serves a jaeger-ui build from DIR. Exit
code 0 when every check holds.

    python -m harness.e2e_tracing [--instances 5] [--ui-assets DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from camunda_relay.bundled_engine import ensure_built
from camunda_relay.testing.engine import PASSWORD, USER, Engine, free_port, start_engine

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "build" / "e2e-tracing"
JAEGER_MODULE = "github.com/jaegertracing/jaeger/cmd/jaeger"
JAEGER_VERSION = "v1.75.0"

MODEL = """<?xml version="1.0" encoding="UTF-8"?>
<bpmn:definitions xmlns:bpmn="http://www.omg.org/spec/BPMN/20100524/MODEL"
  xmlns:camunda="http://camunda.org/schema/1.0/bpmn" id="traced-defs" targetNamespace="e2e">
  <bpmn:message id="traced_msg" name="traced_reply" />
  <bpmn:process id="relay-traced" name="Traced order" isExecutable="true"
    camunda:historyTimeToLive="1">
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

PLACEHOLDER = "This is not the Jaeger UI you are looking for"

CONFIG = """service:
  extensions: [jaeger_storage, jaeger_query, healthcheckv2]
  pipelines:
    traces:
      receivers: [otlp]
      processors: [batch]
      exporters: [jaeger_storage_exporter]
  telemetry:
    metrics:
      level: none
    logs:
      level: warn
extensions:
  jaeger_query:
    storage:
      traces: memstore
{ui}    http:
      endpoint: 127.0.0.1:{query}
    grpc:
      endpoint: 127.0.0.1:{query_grpc}
  jaeger_storage:
    backends:
      memstore:
        memory:
          max_traces: 10000
  healthcheckv2:
    use_v2: true
    http:
      endpoint: 127.0.0.1:{health}
receivers:
  otlp:
    protocols:
      http:
        endpoint: 127.0.0.1:{otlp}
processors:
  batch:
exporters:
  jaeger_storage_exporter:
    trace_storage: memstore
"""

# The spans of one instance: (service, name, name of the parent span or None for the root).
EXPECTED = [
    ("web-shop", "start order", None),
    ("order-worker", "receive traced-send", "start order"),
    ("order-worker", "complete traced-send", "receive traced-send"),
    ("order-worker", "handle traced-send", "receive traced-send"),
    ("order-worker", "correlate traced_reply", "receive traced-send"),
    ("order-worker", "receive traced-next", "correlate traced_reply"),
    ("order-worker", "complete traced-next", "receive traced-next"),
    ("order-worker", "handle traced-next", "receive traced-next"),
]


def jaeger_binary() -> Path:
    """Jaeger's binary, built from the Go module proxy the first time."""
    tool = OUT / "jaeger-tool"
    binary = tool / "jaeger"
    if binary.exists():
        return binary
    go = shutil.which("go")
    if go is None:
        raise SystemExit("make e2e-tracing needs Go (go on the PATH) to build Jaeger")
    tool.mkdir(parents=True, exist_ok=True)
    print(f"building Jaeger {JAEGER_VERSION} from the Go module proxy (once) ...", flush=True)
    if not (tool / "go.mod").exists():
        subprocess.run([go, "mod", "init", "jaeger-tool"], cwd=tool, check=True)
    subprocess.run([go, "get", "-tool", f"{JAEGER_MODULE}@{JAEGER_VERSION}"], cwd=tool, check=True)
    subprocess.run([go, "build", "-o", str(binary), JAEGER_MODULE], cwd=tool, check=True)
    return binary


def wait_until(check: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        try:
            result = check()
        except (OSError, httpx.TransportError):
            result = None
        if result:
            return result
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.2)


class Jaeger:
    def __init__(self, folder: Path, ui_assets: Path | None) -> None:
        self.ports = {name: free_port() for name in ("query", "query_grpc", "health", "otlp")}
        config = folder / "jaeger.yaml"
        ui = f"    ui:\n      assets_path: {ui_assets}\n" if ui_assets else ""
        config.write_text(CONFIG.format(ui=ui, **self.ports))
        self.log = (folder / "jaeger.log").open("w")
        self.process = subprocess.Popen(
            [str(jaeger_binary()), "--config", str(config)],
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        wait_until(lambda: self._get("/api/services") is not None, 60, "Jaeger's query API")

    @property
    def query(self) -> str:
        return f"http://127.0.0.1:{self.ports['query']}"

    @property
    def otlp(self) -> str:
        return f"http://127.0.0.1:{self.ports['otlp']}"

    def _get(self, path: str) -> Any:
        if self.process.poll() is not None:
            raise SystemExit(f"Jaeger ended ({self.process.returncode}); see {self.log.name}")
        with urllib.request.urlopen(self.query + path, timeout=10) as answer:
            return json.load(answer)

    def trace(self, trace_id: str) -> dict[str, Any] | None:
        try:
            data = self._get(f"/api/traces/{trace_id}")["data"]
        except urllib.error.HTTPError:
            return None
        return data[0] if data else None

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=30)
        self.log.close()


def check_trace(trace: dict[str, Any]) -> list[str]:
    """What is wrong with one instance's trace as Jaeger stored it (nothing: [])."""
    services = {key: value["serviceName"] for key, value in trace["processes"].items()}
    by_id = {span["spanID"]: span for span in trace["spans"]}
    problems = []
    for service, name, parent in EXPECTED:
        found = [s for s in trace["spans"] if s["operationName"] == name]
        if len(found) != 1:
            problems.append(f"{name}: {len(found)} spans")
            continue
        span = found[0]
        if services[span["processID"]] != service:
            problems.append(f"{name}: from {services[span['processID']]}, not {service}")
        parents = [r["spanID"] for r in span["references"] if r["refType"] == "CHILD_OF"]
        shown = by_id[parents[0]]["operationName"] if parents and parents[0] in by_id else None
        if shown != parent:
            problems.append(f"{name}: child of {shown}, not {parent}")
    return problems


def screenshot(url: str, path: Path, text: str) -> bool | None:
    """A screenshot of ``url`` in Chromium; whether ``text`` showed on the page (None: the
    page is Jaeger's placeholder for a binary built without the UI's assets)."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout
    from playwright.sync_api import sync_playwright

    chromium = shutil.which("chromium")
    if chromium is None:
        raise SystemExit("no chromium on the PATH (apt-get install -y chromium)")
    args = [
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
    ]
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=args)
        try:
            page = browser.new_page(viewport={"width": 1600, "height": 900})
            page.goto(url, wait_until="networkidle")
            if page.get_by_text(PLACEHOLDER).count():
                shown = None  # a binary without the UI's assets
            else:
                try:
                    page.get_by_text(text).first.wait_for(timeout=30_000)
                    shown = True
                except PlaywrightTimeout:
                    shown = False
            page.wait_for_timeout(1000)  # the timeline's layout settles
            page.screenshot(path=str(path), full_page=True)
            return shown
        finally:
            browser.close()


def worker_process(engine: Engine, jaeger: Jaeger, folder: Path) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CAMUNDA_", "OTEL_"))}
    env.update(
        CAMUNDA_URL=engine.rest_url,
        CAMUNDA_USER=USER,
        CAMUNDA_PASSWORD=PASSWORD,
        CAMUNDA_JOURNAL=str(folder / "journal.sqlite3"),
        CAMUNDA_LONG_POLL="5",
        CAMUNDA_LOG_FORMAT="json",
        OTEL_EXPORTER_OTLP_ENDPOINT=jaeger.otlp,
        OTEL_SERVICE_NAME="order-worker",
        OTEL_BSP_SCHEDULE_DELAY="200",
        PYTHONPATH=str(ROOT),
    )
    command = [sys.executable, "-m", "camunda_relay.cli", "worker", "harness.tracing_worker"]
    return subprocess.Popen(
        command, env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )


def start_orders(engine: Engine, jaeger: Jaeger, count: int) -> dict[str, str]:
    """The web shop: each instance started inside its own span; trace id -> instance id."""
    provider = TracerProvider(resource=Resource.create({"service.name": "web-shop"}))
    exporter = OTLPSpanExporter(endpoint=f"{jaeger.otlp}/v1/traces")
    provider.add_span_processor(BatchSpanProcessor(exporter))
    tracer = provider.get_tracer("web-shop")
    started = {}
    with engine.client() as rest:
        for number in range(count):
            with tracer.start_as_current_span("start order") as span:
                carrier: dict[str, str] = {}
                TraceContextTextMapPropagator().inject(carrier)
                body = {
                    "businessKey": f"order-{number}-{os.getpid()}",
                    "variables": {
                        "traceparent": {"value": carrier["traceparent"], "type": "String"}
                    },
                }
                answer = rest.post("/process-definition/key/relay-traced/start", json=body)
                answer.raise_for_status()
                started[f"{span.get_span_context().trace_id:032x}"] = answer.json()["id"]
    provider.shutdown()
    return started


def run(count: int, ui_assets: Path | None) -> int:
    OUT.mkdir(parents=True, exist_ok=True)
    jaeger_binary()
    if ui_assets is not None and not (ui_assets / "index.html").exists():
        raise SystemExit(f"--ui-assets {ui_assets}: no index.html there (a jaeger-ui build)")
    with tempfile.TemporaryDirectory(prefix="e2e-tracing-") as name:
        folder = Path(name)
        jaeger = Jaeger(folder, ui_assets)
        try:
            started, traces, stderr = through_the_engine(jaeger, folder, count)
            failures = report(started, traces, stderr)
            shown = next(iter(started))
            picture = OUT / "trace.png"
            seen = screenshot(f"{jaeger.query}/trace/{shown}", picture, "correlate traced_reply")
            print(f"screenshot of trace {shown} in Jaeger's UI: {picture}")
            if seen is None:
                print(
                    "Jaeger's UI is not in a binary built from the Go module (its assets come "
                    "from jaeger-ui's own npm build): the screenshot shows its placeholder; the "
                    "traces were checked through the query API"
                )
            elif not seen:
                print("the UI did not show the trace's spans: see the screenshot")
                failures += 1
        finally:
            jaeger.stop()
    print(f"{count - failures} passed, {failures} failed")
    return 1 if failures else 0


def through_the_engine(
    jaeger: Jaeger, folder: Path, count: int
) -> tuple[dict[str, str], dict[str, dict[str, Any]], str]:
    """Start the engine and the worker, start the instances, wait for their traces."""
    engine = start_engine(ensure_built(), folder / "engine", free_port())
    worker = None
    stderr = ""
    try:
        with engine.client() as rest:
            files = {"traced.bpmn": ("traced.bpmn", MODEL.encode(), "text/xml")}
            data = {"deployment-name": "e2e-tracing"}
            rest.post("/deployment/create", data=data, files=files).raise_for_status()
        worker = worker_process(engine, jaeger, folder)
        started = start_orders(engine, jaeger, count)
        print(f"started {count} instances, each in its own trace", flush=True)
        traces = {
            trace_id: wait_until(
                lambda t=trace_id: _complete(jaeger.trace(t)), 180, f"trace {trace_id}"
            )
            for trace_id in started
        }
    finally:
        if worker is not None:
            worker.terminate()
            _, stderr = worker.communicate(timeout=60)
        engine.stop()
    return started, traces, stderr


def report(started: dict[str, str], traces: dict[str, dict[str, Any]], stderr: str) -> int:
    """Print each instance's verdict; the number of instances that failed a check."""
    failed = set()
    for trace_id, trace in traces.items():
        problems = check_trace(trace)
        if problems:
            failed.add(trace_id)
        verdict = "ok" if not problems else "; ".join(problems)
        spans = len(trace["spans"])
        print(f"trace {trace_id} instance {started[trace_id]}: {spans} spans, {verdict}")
    lines = [json.loads(line) for line in stderr.splitlines() if line.startswith("{")]
    logged = {line.get("trace_id") for line in lines}
    named = set(started) & logged
    print(f"the worker's JSON log lines name {len(named)} of {len(started)} traces")
    for trace_id in set(started) - logged:
        print(f"trace {trace_id}: in no log line")
        failed.add(trace_id)
    return len(failed)


def _complete(trace: dict[str, Any] | None) -> dict[str, Any] | None:
    return trace if trace is not None and len(trace["spans"]) >= len(EXPECTED) else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="one trace per instance in a real Jaeger")
    parser.add_argument("--instances", type=int, default=5)
    parser.add_argument(
        "--ui-assets",
        type=Path,
        default=None,
        help="a jaeger-ui build (its packages/jaeger-ui/build folder) for Jaeger to serve",
    )
    args = parser.parse_args(argv)
    return run(args.instances, args.ui_assets)


if __name__ == "__main__":
    raise SystemExit(main())
