"""The worker's memory while a large File variable goes through it.

``python -m bench.file_rss --size-mb 50`` starts the bundled engine, a worker process whose
reply handler reads the started instance's File variable and replies with a File of the same
bytes, starts one instance with a file of that size, and samples the worker's RSS
(``/proc/PID/status``) from before the instance until it finished; the reply's file is then
downloaded and compared. Prints the idle and the peak RSS and their difference.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx

from camunda_relay import Router, Settings, Task, Worker
from camunda_relay.bundled_engine import ensure_built
from camunda_relay.testing.engine import PASSWORD, USER, free_port, start_engine
from camunda_relay.variables import File

TOPIC, MESSAGE = "fileRss", "fileRssDone"
KEY = "file-rss"
MODEL = f"""<?xml version="1.0" encoding="UTF-8"?>
<bpmn:definitions xmlns:bpmn="http://www.omg.org/spec/BPMN/20100524/MODEL"
                  xmlns:camunda="http://camunda.org/schema/1.0/bpmn"
                  id="rss" targetNamespace="http://camunda-relay/bench">
  <bpmn:message id="m" name="{MESSAGE}" />
  <bpmn:process id="{KEY}" isExecutable="true" camunda:historyTimeToLive="1">
    <bpmn:startEvent id="s" /><bpmn:sequenceFlow id="f1" sourceRef="s" targetRef="work" />
    <bpmn:serviceTask id="work" camunda:type="external" camunda:topic="{TOPIC}" />
    <bpmn:sequenceFlow id="f2" sourceRef="work" targetRef="wait" />
    <bpmn:intermediateCatchEvent id="wait">
      <bpmn:messageEventDefinition id="md" messageRef="m" />
    </bpmn:intermediateCatchEvent>
    <bpmn:sequenceFlow id="f3" sourceRef="wait" targetRef="e" /><bpmn:endEvent id="e" />
  </bpmn:process>
</bpmn:definitions>
"""


def worker_main(url: str) -> None:
    """The measured worker: read the File, reply with one of the same bytes."""
    router = Router()

    @router.task(TOPIC, reply=MESSAGE)
    async def handle(task: Task) -> dict[str, object]:
        doc = task.variables["doc"]
        assert isinstance(doc, File)
        data = await doc.read()
        return {"answer": File("answer.bin", data, "application/octet-stream")}

    async def run() -> None:
        settings = Settings(url=url, user=USER, password=PASSWORD, journal=":memory:")
        async with Worker(router, settings) as worker:
            print("ready", flush=True)  # noqa: T201
            await worker.run()

    asyncio.run(run())


def rss_kib(pid: int) -> tuple[int, int]:
    """VmRSS and VmHWM (the peak) of ``pid``, in KiB."""
    fields = dict(
        line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
    )
    return int(fields["VmRSS"].split()[0]), int(fields["VmHWM"].split()[0])


def measure(sizes: list[int]) -> None:
    jar = ensure_built(progress=lambda line: None)
    with tempfile.TemporaryDirectory(prefix="file-rss-") as state:
        engine = start_engine(jar, Path(state), free_port())
        try:
            for size_mb in sizes:
                run_once(engine.rest_url, size_mb)
        finally:
            engine.stop()


def run_once(url: str, size_mb: int) -> None:
    rest = httpx.Client(base_url=url, auth=(USER, PASSWORD), timeout=300)
    files = {f"{KEY}.bpmn": (f"{KEY}.bpmn", MODEL.encode(), "application/xml")}
    rest.post("/deployment/create", data={"deployment-name": KEY}, files=files).raise_for_status()
    # The file goes in as the API's multipart upload (a JSON body of its base64 would be over
    # the engine's JSON string limit), before the worker starts: it then fetches the task.
    started = rest.post(
        f"/process-definition/key/{KEY}/start", json={"businessKey": uuid.uuid4().hex}
    )
    started.raise_for_status()
    instance = started.json()["id"]
    content = os.urandom(size_mb * 1024 * 1024)
    uploaded = rest.post(
        f"/process-instance/{instance}/variables/doc/data",
        files={"data": ("input.bin", content, "application/octet-stream")},
        data={"valueType": "File"},
    )
    if uploaded.status_code != 204:
        raise SystemExit(f"upload refused: {uploaded.status_code} {uploaded.text[:300]}")
    worker = subprocess.Popen(
        [sys.executable, "-m", "bench.file_rss", "--worker", url], stdout=subprocess.PIPE
    )
    assert worker.stdout is not None
    worker.stdout.readline()  # "ready": settings read, before the first fetch
    idle, _ = rss_kib(worker.pid)
    peak = idle
    began = time.monotonic()
    while rest.get(f"/history/process-instance/{instance}").json()["state"] != "COMPLETED":
        peak = max(peak, rss_kib(worker.pid)[0])
        incidents = rest.get("/incident", params={"processInstanceId": instance}).json()
        if incidents:
            _, hwm = rss_kib(worker.pid)
            worker.terminate()
            worker.wait(60)
            print(  # noqa: T201
                f"file {size_mb} MiB: worker RSS idle {idle / 1024:.0f} MiB, peak "
                f"{max(peak, hwm) / 1024:.0f} MiB; the reply failed: "
                f"{incidents[0]['incidentMessage'][:300]}"
            )
            return
        if time.monotonic() - began > 600:
            raise SystemExit("the instance did not finish within 10 minutes")
        time.sleep(0.05)
    took = time.monotonic() - began
    _, hwm = rss_kib(worker.pid)
    worker.terminate()
    worker.wait(60)
    params = {"processInstanceId": instance, "variableName": "answer"}
    (answer,) = rest.get("/history/variable-instance", params=params).json()
    data = rest.get(f"/history/variable-instance/{answer['id']}/data").content
    intact = hashlib.sha256(data).digest() == hashlib.sha256(content).digest()
    top = max(peak, hwm)
    print(  # noqa: T201
        f"file {size_mb} MiB: worker RSS idle {idle / 1024:.0f} MiB, peak {top / 1024:.0f} MiB "
        f"(+{(top - idle) / 1024:.0f} MiB, {(top - idle) / 1024 / size_mb:.1f}x the file); "
        f"through in {took:.1f} s; reply downloaded {'intact' if intact else 'DIFFERENT'}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mb", type=int, action="append", help="repeatable; 50 by default")
    parser.add_argument("--worker", metavar="URL", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker_main(args.worker)
    else:
        measure(args.size_mb or [50])


if __name__ == "__main__":
    main()
