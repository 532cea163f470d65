"""Workers written for camunda-external-task-client-python3, moved over by their import
lines (compat_scripts/), run against the real engine until their instances finish: the
client README's examples (in this process, stopped with ``stop()``) and the conception's
worker, before and after ``reply=`` (as scripts, stopped with SIGTERM)."""

from __future__ import annotations

import itertools
import os
import signal
import subprocess
import sys
import threading
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from camunda_relay.compat import ExternalTask, ExternalTaskWorker, TaskResult
from tests.support.engine import (
    PASSWORD,
    USER,
    Engine,
    assert_finished_once,
    start_instance,
    wait_for,
)

SCRIPTS = Path(__file__).parent / "compat_scripts"
TOPIC = "topicName"  # the client README's topic


def model(key: str, error_code: str) -> bytes:
    """A process with the README's task (topic ``topicName``) and an error boundary event
    for ``error_code`` that ends at ``caught``; otherwise at ``done``."""
    return f"""<?xml version="1.0" encoding="UTF-8"?>
<bpmn:definitions xmlns:bpmn="http://www.omg.org/spec/BPMN/20100524/MODEL"
                  xmlns:camunda="http://camunda.org/schema/1.0/bpmn"
                  id="compat" targetNamespace="http://camunda-relay/tests">
  <bpmn:error id="err" errorCode="{error_code}" />
  <bpmn:process id="{key}" isExecutable="true" camunda:historyTimeToLive="1">
    <bpmn:startEvent id="s" /><bpmn:sequenceFlow id="f1" sourceRef="s" targetRef="work" />
    <bpmn:serviceTask id="work" camunda:type="external" camunda:topic="{TOPIC}">
      <bpmn:extensionElements><camunda:properties>
        <camunda:property name="owner" value="team-a" />
      </camunda:properties></bpmn:extensionElements>
    </bpmn:serviceTask>
    <bpmn:boundaryEvent id="failed" attachedToRef="work">
      <bpmn:errorEventDefinition id="failed_def" errorRef="err" />
    </bpmn:boundaryEvent>
    <bpmn:sequenceFlow id="f2" sourceRef="work" targetRef="done" />
    <bpmn:sequenceFlow id="f3" sourceRef="failed" targetRef="caught" />
    <bpmn:endEvent id="done" /><bpmn:endEvent id="caught" />
  </bpmn:process>
</bpmn:definitions>
""".encode()


@pytest.fixture
def environment(engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    """The engine through the environment, as a worker started by hand would have it."""
    for name in [n for n in os.environ if n.startswith("CAMUNDA_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("CAMUNDA_URL", engine.rest_url)
    monkeypatch.setenv("CAMUNDA_USER", USER)
    monkeypatch.setenv("CAMUNDA_PASSWORD", PASSWORD)
    monkeypatch.setenv("CAMUNDA_JOURNAL", ":memory:")
    # A stopped worker's long poll stays pending at the engine until it times out, and may
    # lock a task of the next test meanwhile (the client's default is 30 s): 1 s here.
    monkeypatch.setenv("CAMUNDA_LONG_POLL", "1")


def deploy(rest: httpx.Client, error_code: str) -> str:
    key = f"compat-{uuid.uuid4().hex[:8]}"
    files = {f"{key}.bpmn": (f"{key}.bpmn", model(key, error_code), "application/xml")}
    response = rest.post("/deployment/create", data={"deployment-name": key}, files=files)
    assert response.status_code == 200, response.text
    return key


def start(rest: httpx.Client, key: str, variables: dict[str, Any] | None = None) -> str:
    body = {"businessKey": f"bk-{uuid.uuid4().hex[:6]}", "variables": variables or {}}
    response = rest.post(f"/process-definition/key/{key}/start", json=body)
    assert response.status_code == 200, response.text
    return str(response.json()["id"])


def ended_at(rest: httpx.Client, instance: str) -> str | None:
    """The end event an instance finished at; None while it runs."""
    response = rest.get(
        "/history/activity-instance",
        params={"processInstanceId": instance, "activityType": "noneEndEvent"},
    )
    assert response.status_code == 200, response.text
    ended = [a["activityId"] for a in response.json() if a["endTime"]]
    return ended[0] if ended else None


def variables_of(rest: httpx.Client, instance: str) -> dict[str, object]:
    response = rest.get("/history/variable-instance", params={"processInstanceId": instance})
    assert response.status_code == 200, response.text
    return {v["name"]: v["value"] for v in response.json()}


def failures(rest: httpx.Client, instance: str) -> list[dict[str, Any]]:
    response = rest.get(
        "/history/external-task-log",
        params={"processInstanceId": instance, "failureLog": "true", "sortBy": "timestamp"}
        | {"sortOrder": "asc"},
    )
    assert response.status_code == 200, response.text
    return list(response.json())


class Running:
    """A README example run in this process: its module executed but for the line that
    subscribes, which runs on a thread with an ExternalTaskWorker that the test can stop."""

    def __init__(self, script: str, replace: Callable[[dict[str, Any]], None] = lambda _: None):
        lines = (SCRIPTS / script).read_text().splitlines()
        (index,) = [i for i, line in enumerate(lines) if ".subscribe(" in line]
        namespace: dict[str, Any] = {"__name__": f"compat_{script.removesuffix('.py')}"}
        indent = lines[index][: len(lines[index]) - len(lines[index].lstrip())]
        module = [*lines[:index], f"{indent}pass", *lines[index + 1 :]]
        exec(compile("\n".join(module), script, "exec"), namespace)  # noqa: S102
        replace(namespace)
        self.workers: list[ExternalTaskWorker] = []
        self.errors: list[BaseException] = []
        started = self.workers

        class Recorded(ExternalTaskWorker):
            def __init__(self, *args: Any, **kwargs: Any) -> None:
                super().__init__(*args, **kwargs)
                started.append(self)

        namespace["ExternalTaskWorker"] = Recorded
        line = compile(lines[index].strip(), script, "exec")
        self.thread = threading.Thread(target=self._run, args=(line, namespace), daemon=True)
        self.thread.start()
        wait_for(lambda: self.workers or self.errors, timeout=30, what="the worker")

    def _run(self, line: Any, namespace: dict[str, Any]) -> None:
        try:
            exec(line, namespace)  # noqa: S102
        except BaseException as error:  # noqa: BLE001 - reported by stop()
            self.errors.append(error)

    def stop(self) -> None:
        for worker in self.workers:
            worker.stop()
        self.thread.join(timeout=60)
        assert not self.thread.is_alive(), "subscribe() did not return after stop()"
        assert self.errors == []


def scripted(*outcomes: bool) -> Callable[[dict[str, Any]], None]:
    """Replace the README's ``random_true`` (the clock's parity) by a fixed sequence, then
    False: every path of its handler is taken, in a known order."""

    def replace(namespace: dict[str, Any]) -> None:
        answers = itertools.chain(outcomes, itertools.repeat(False))
        namespace["random_true"] = lambda: next(answers)

    return replace


def test_the_readme_usage_example_finishes_every_path(
    environment: None, rest: httpx.Client
) -> None:
    key = deploy(rest, "BPMN_ERROR_CODE")
    instances = [start(rest, key) for _ in range(3)]
    # maxTasks 1: one task at a time. The first call fails, the second throws the BPMN
    # error, the rest complete (the failed task too, 5 s later: retry_timeout=5000).
    running = Running("readme_usage.py", scripted(True, False, False, True))
    try:
        wait_for(lambda: all(ended_at(rest, i) for i in instances), timeout=90, what="3 instances")
    finally:
        running.stop()
    ends = sorted(str(ended_at(rest, i)) for i in instances)
    assert ends == ["caught", "done", "done"]
    failed = [entry for i in instances for entry in failures(rest, i)]
    assert [f["errorMessage"] for f in failed] == ["RetryLater: task failed"]
    caught = next(i for i in instances if ended_at(rest, i) == "caught")
    assert variables_of(rest, caught) == {"var1": "value1", "success": False}
    done = next(i for i in instances if ended_at(rest, i) == "done")
    assert variables_of(rest, done) == {"var1": 1, "var2": "value"}


def test_the_readme_complete_example(environment: None, rest: httpx.Client) -> None:
    key = deploy(rest, "BPMN_ERROR")
    instance = start(rest, key, {"score": {"value": 120, "type": "Integer"}})
    running = Running("readme_complete.py")
    try:
        wait_for(lambda: ended_at(rest, instance), timeout=60, what="the instance")
    finally:
        running.stop()
    assert ended_at(rest, instance) == "done"
    assert variables_of(rest, instance) == {"score": 120, "var1": 1, "var2": "value"}


def test_the_readme_bpmn_error_example(environment: None, rest: httpx.Client) -> None:
    key = deploy(rest, "BPMN_ERROR")
    instance = start(rest, key)
    running = Running("readme_bpmn_error.py")
    try:
        wait_for(lambda: ended_at(rest, instance), timeout=60, what="the instance")
    finally:
        running.stop()
    assert ended_at(rest, instance) == "caught"


def test_the_readme_failure_example_counts_retries_down_from_max_retries(
    environment: None, rest: httpx.Client
) -> None:
    key = deploy(rest, "BPMN_ERROR")
    instance = start(rest, key)
    running = Running("readme_failure.py")
    seen: list[int | None] = []

    def retries() -> list[int | None]:
        (task,) = rest.get("/external-task", params={"processInstanceId": instance}).json()
        if task["retries"] not in seen:
            seen.append(task["retries"])
        return seen

    try:
        wait_for(lambda: 2 in retries(), timeout=60, what="two failures")
    finally:
        running.stop()
    # max_retries when the task had none, then one less than it has (retry_timeout 5 s).
    assert [n for n in seen if n is not None][:2] == [3, 2]
    reported = failures(rest, instance)
    assert reported[0]["errorMessage"] == "RetryLater: task failed"
    details = rest.get(f"/history/external-task-log/{reported[0]['id']}/error-details")
    assert details.text == "failed task details"
    rest.delete(f"/process-instance/{instance}")


def test_the_readme_auth_basic_example_with_this_engines_credentials(
    environment: None, rest: httpx.Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CAMUNDA_USER")
    monkeypatch.delenv("CAMUNDA_PASSWORD")
    key = deploy(rest, "BPMN_ERROR")
    instance = start(rest, key)

    def credentials(namespace: dict[str, Any]) -> None:  # the README's demo/demo is not ours
        namespace["config"] = {"auth_basic": {"username": USER, "password": PASSWORD}}

    running = Running("readme_auth_basic.py", credentials)
    try:
        wait_for(lambda: ended_at(rest, instance), timeout=60, what="the instance")
    finally:
        running.stop()
    assert ended_at(rest, instance) == "done"


def test_wrong_auth_basic_is_one_line_and_exit_status_1(
    environment: None, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CAMUNDA_USER")
    monkeypatch.delenv("CAMUNDA_PASSWORD")
    # A user the engine does not know: a wrong password of a real one would throttle it.
    login = {"username": "compatnobody", "password": "wrong-s3cr3t"}
    worker = ExternalTaskWorker("1", config={"auth_basic": login})
    with pytest.raises(SystemExit) as exited:
        worker.subscribe(TOPIC, lambda task: task.complete())
    assert exited.value.code == 1
    error = capsys.readouterr().err
    assert error.startswith("Error: ")
    assert error.count("\n") == 1
    assert "compatnobody" in error
    assert "s3cr3t" not in error


def test_extension_properties_and_variables_reach_the_handler(
    environment: None, rest: httpx.Client
) -> None:
    key = deploy(rest, "BPMN_ERROR")
    instance = start(rest, key, {"score": {"value": 120, "type": "Integer"}})
    seen: list[tuple[object, ...]] = []

    def handle(task: ExternalTask) -> TaskResult:
        seen.append(
            (
                task.get_extension_property("owner"),
                task.get_variable("score"),
                task.get_process_instance_id(),
                task.get_topic_name(),
                task.get_activity_id(),
                task.get_worker_id(),
            )
        )
        return task.complete({"seen": True}, {"note": "local"})

    worker = ExternalTaskWorker("compat-props")
    assert worker.fetch_and_execute(TOPIC, handle, process_variables={"score": 120}) == 1
    assert seen == [("team-a", 120, instance, TOPIC, "work", "compat-props")]
    assert ended_at(rest, instance) == "done"


def script_env(engine: Engine, tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CAMUNDA_")}
    env.update(
        CAMUNDA_URL=engine.rest_url,
        CAMUNDA_USER=USER,
        CAMUNDA_PASSWORD=PASSWORD,
        CAMUNDA_JOURNAL=str(tmp_path / "journal.sqlite3"),
        PYTHONUNBUFFERED="1",
    )
    return env


def run_script(
    engine: Engine, tmp_path: Path, source: str, business_keys: list[str], rest: httpx.Client
) -> tuple[list[str], str]:
    """Run a worker script until the instances of ``business_keys`` finish, then SIGTERM;
    return the instance ids and what the script printed."""
    script = tmp_path / "worker.py"
    script.write_text(source)
    output = tmp_path / "output.txt"
    with output.open("w") as sink:
        process = subprocess.Popen(
            [sys.executable, str(script)],
            cwd=tmp_path,
            env=script_env(engine, tmp_path),
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
        try:
            instances = [start_instance(rest, key) for key in business_keys]
            for instance in instances:
                wait_for(lambda i=instance: finished(rest, i), timeout=90, what="the instance")
        finally:
            process.send_signal(signal.SIGTERM)
            code = process.wait(timeout=60)
    text = output.read_text()
    assert code == 0, text
    return instances, text


def finished(rest: httpx.Client, instance: str) -> bool:
    response = rest.get(f"/history/process-instance/{instance}")
    return response.status_code == 200 and response.json()["state"] == "COMPLETED"


def test_the_conceptions_worker_as_written_finishes_its_instances(
    engine: Engine, rest: httpx.Client, tmp_path: Path
) -> None:
    # Its message goes to a URL written into the worker: this engine's, with the login in it.
    port = engine.rest_url.split(":")[-1].split("/")[0]
    url = f"http://{USER}:{PASSWORD}@127.0.0.1:{port}/engine-rest/message"
    source = (SCRIPTS / "conception_before.py").read_text()
    source = source.replace("http://localhost:8080/engine-rest/message", url)
    keys = [f"conception-{uuid.uuid4().hex[:8]}" for _ in range(3)]
    instances, output = run_script(engine, tmp_path, source, keys, rest)
    for instance in instances:
        assert_finished_once(rest, instance)
        assert variables_of(rest, instance) == {"var1": 1, "var2": "value"}
    assert output.count("Request successful") == 3


def test_the_conceptions_worker_with_reply_finishes_its_instances_even_on_one_key(
    engine: Engine, rest: httpx.Client, tmp_path: Path
) -> None:
    source = (SCRIPTS / "conception_after.py").read_text()
    shared = f"conception-{uuid.uuid4().hex[:8]}"  # two instances, one business key
    keys = [shared, shared, f"conception-{uuid.uuid4().hex[:8]}"]
    instances, output = run_script(engine, tmp_path, source, keys, rest)
    for instance in instances:
        assert_finished_once(rest, instance)
        assert variables_of(rest, instance) == {"var1": 1, "var2": "value"}
    assert output.count("business key from task event") >= 3
