"""``camunda-relay deploy|start|correlate`` as a user runs them, against the real engine.

Every bad input ends in exactly one ``Error:`` line on stderr, a non-zero exit code, no
traceback, and nothing half-done in the engine.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.engine import (
    MESSAGE,
    PASSWORD,
    PROCESS_KEY,
    USER,
    Engine,
    assert_finished_once,
    fetch_and_lock,
    wait_for,
    waiting_for_message,
)
from tests.support.tools import free_port

# Wrong passwords are tried on a user of their own: a failed login throttles that user for a
# few seconds, and the other tests must not be slowed down by it.
DECOY_USER = "clidecoy"
DECOY_PASSWORD = "cli-decoy-password"

_STARTED = re.compile(r"started process instance (\S+)")

# A worker stopped by an earlier test can leave a long poll pending in the engine, which locks
# the next seed task for the gone worker for one lock duration (60 s by default).
TASK_TIMEOUT = 90.0


def _bpmn(key: str, *, name: str = "CLI test process") -> str:
    """A one-user-task process: it waits at the task, so started instances stay queryable."""
    return f"""<?xml version="1.0" encoding="UTF-8"?>
<bpmn:definitions xmlns:bpmn="http://www.omg.org/spec/BPMN/20100524/MODEL"
                  xmlns:camunda="http://camunda.org/schema/1.0/bpmn"
                  id="{key}-definitions" targetNamespace="http://camunda-relay/tests">
  <bpmn:process id="{key}" name="{name}" isExecutable="true" camunda:historyTimeToLive="1">
    <bpmn:startEvent id="start"><bpmn:outgoing>to_review</bpmn:outgoing></bpmn:startEvent>
    <bpmn:userTask id="review" name="Review">
      <bpmn:incoming>to_review</bpmn:incoming><bpmn:outgoing>to_end</bpmn:outgoing>
    </bpmn:userTask>
    <bpmn:endEvent id="end"><bpmn:incoming>to_end</bpmn:incoming></bpmn:endEvent>
    <bpmn:sequenceFlow id="to_review" sourceRef="start" targetRef="review" />
    <bpmn:sequenceFlow id="to_end" sourceRef="review" targetRef="end" />
  </bpmn:process>
</bpmn:definitions>
"""


def _environment(url: str, user: str = USER, password: str = PASSWORD) -> dict[str, str]:
    """The caller's environment without its own CAMUNDA_* settings, plus the given ones."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CAMUNDA_")}
    env.update(CAMUNDA_URL=url, CAMUNDA_USER=user, CAMUNDA_PASSWORD=password)
    return env


def _cli(
    *args: str, env: dict[str, str], cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "camunda_relay.cli", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        cwd=cwd,
        check=False,
    )


def _assert_one_error_line(result: subprocess.CompletedProcess[str], *fragments: str) -> str:
    """Non-zero exit, exactly one ``Error:`` line on stderr naming the problem, no traceback."""
    assert result.returncode != 0, result.stdout
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    (line,) = lines
    assert line.startswith("Error: "), line
    for fragment in fragments:
        assert fragment in line, line
    return line


def _started_id(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, result.stderr
    match = _STARTED.search(result.stdout)
    assert match, result.stdout
    return match.group(1)


def _definitions(rest: httpx.Client, key: str) -> list[tuple[str, int]]:
    response = rest.get(
        "/process-definition", params={"key": key, "sortBy": "version", "sortOrder": "asc"}
    )
    assert response.status_code == 200, response.text
    return [(d["key"], d["version"]) for d in response.json()]


def _instances(rest: httpx.Client, **params: str) -> list[dict[str, Any]]:
    response = rest.get("/history/process-instance", params=params)
    assert response.status_code == 200, response.text
    result: list[dict[str, Any]] = response.json()
    return result


def _deployment_count(rest: httpx.Client) -> int:
    response = rest.get("/deployment/count")
    assert response.status_code == 200, response.text
    return int(response.json()["count"])


@pytest.fixture(scope="module")
def env(engine: Engine) -> dict[str, str]:
    return _environment(engine.rest_url)


@pytest.fixture(scope="module")
def process_key(
    engine: Engine, env: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> str:
    """A user-task process of this module's own, deployed once with the CLI."""
    key = f"cli-test-{uuid.uuid4().hex[:8]}"
    model = tmp_path_factory.mktemp("models") / f"{key}.bpmn"
    model.write_text(_bpmn(key))
    result = _cli("deploy", str(model), env=env)
    assert result.returncode == 0, result.stderr
    return key


@pytest.fixture(scope="module")
def decoy_env(engine: Engine) -> dict[str, str]:
    with engine.client() as rest:
        response = rest.post(
            "/user/create",
            json={
                "profile": {
                    "id": DECOY_USER,
                    "firstName": "C",
                    "lastName": "D",
                    "email": "cli-decoy@x.test",
                },
                "credentials": {"password": DECOY_PASSWORD},
            },
        )
    assert response.status_code == 204, response.text
    return _environment(engine.rest_url, DECOY_USER, "wrong-password")


# --- deploy -------------------------------------------------------------------------------------


def test_deploy_prints_the_deployment_and_only_changed_files_become_versions(
    rest: httpx.Client, env: dict[str, str], tmp_path: Path
) -> None:
    key = f"cli-deploy-{uuid.uuid4().hex[:8]}"
    model = tmp_path / f"{key}.bpmn"
    model.write_text(_bpmn(key))

    first = _cli("deploy", str(model), env=env)
    assert first.returncode == 0, first.stderr
    deployment_id = re.search(r"deployment (\S+)", first.stdout)
    assert deployment_id, first.stdout
    assert rest.get(f"/deployment/{deployment_id.group(1)}").status_code == 200
    assert f"process {key} version 1 (new)" in first.stdout
    assert _definitions(rest, key) == [(key, 1)]

    again = _cli("deploy", str(model), env=env)
    assert again.returncode == 0, again.stderr
    assert f"process {key} version 1 (unchanged)" in again.stdout
    assert _definitions(rest, key) == [(key, 1)]

    model.write_text(_bpmn(key, name="CLI test process, renamed"))
    changed = _cli("deploy", str(model), env=env)
    assert changed.returncode == 0, changed.stderr
    assert f"process {key} version 2 (new)" in changed.stdout
    assert _definitions(rest, key) == [(key, 1), (key, 2)]


def test_deploy_of_a_malformed_file_is_refused_before_anything_is_sent(
    rest: httpx.Client, env: dict[str, str], tmp_path: Path
) -> None:
    good = tmp_path / "good.bpmn"
    key = f"cli-never-{uuid.uuid4().hex[:8]}"
    good.write_text(_bpmn(key))
    broken = tmp_path / "broken.bpmn"
    broken.write_text("<bpmn:definitions")
    before = _deployment_count(rest)
    result = _cli("deploy", str(good), str(broken), env=env)
    _assert_one_error_line(result, "broken.bpmn", "not well-formed XML")
    assert _deployment_count(rest) == before
    assert _definitions(rest, key) == []


def test_deploy_of_an_invalid_model_names_the_engines_objection(
    rest: httpx.Client, env: dict[str, str], tmp_path: Path
) -> None:
    key = f"cli-invalid-{uuid.uuid4().hex[:8]}"
    model = tmp_path / f"{key}.bpmn"
    model.write_text(_bpmn(key).replace('targetRef="end"', 'targetRef="nowhere"'))
    before = _deployment_count(rest)
    result = _cli("deploy", str(model), env=env)
    _assert_one_error_line(result, "the engine refused the deployment")
    assert _deployment_count(rest) == before
    assert _definitions(rest, key) == []


# --- start ----------------------------------------------------------------------------------


@pytest.mark.json
def test_start_sends_typed_variables(
    rest: httpx.Client, env: dict[str, str], process_key: str
) -> None:
    business_key = f"typed-{uuid.uuid4()}"
    result = _cli(
        "start",
        process_key,
        "--business-key",
        business_key,
        "--var",
        "amount=42",
        "--var",
        "ratio=0.5",
        "--var",
        "approved=true",
        "--var",
        "note=null",
        "--var",
        "city=Berlin",
        "--var",
        'code="007"',
        "--var",
        "equation=a=b",
        "--var",
        'order={"id": 7, "items": ["a", "b"]}',
        "--var",
        "tags=[1, 2]",
        "--var",
        "empty=",
        env=env,
    )
    instance_id = _started_id(result)
    assert business_key in result.stdout

    instance = rest.get(f"/process-instance/{instance_id}").json()
    assert instance["businessKey"] == business_key
    assert instance["definitionId"].startswith(f"{process_key}:")
    variables = rest.get(
        f"/process-instance/{instance_id}/variables", params={"deserializeValues": "false"}
    ).json()
    typed = {name: (v["type"], v["value"]) for name, v in variables.items()}
    assert typed == {
        "amount": ("Integer", 42),
        "ratio": ("Double", 0.5),
        "approved": ("Boolean", True),
        "note": ("Null", None),
        "city": ("String", "Berlin"),
        "code": ("String", "007"),
        "equation": ("String", "a=b"),
        "order": ("Json", '{"id":7,"items":["a","b"]}'),
        "tags": ("Json", "[1,2]"),
        "empty": ("String", ""),
    }


def test_start_correlate_finishes_the_seed_instance(
    rest: httpx.Client, env: dict[str, str]
) -> None:
    business_key = f"cli-seed-{uuid.uuid4()}"
    instance_id = _started_id(_cli("start", PROCESS_KEY, "--business-key", business_key, env=env))
    tasks = wait_for(
        lambda: [
            t for t in fetch_and_lock(rest, "cli-test") if t["processInstanceId"] == instance_id
        ],
        timeout=TASK_TIMEOUT,
        what="the messageSending task",
    )
    for task in tasks:
        done = rest.post(f"/external-task/{task['id']}/complete", json={"workerId": "cli-test"})
        assert done.status_code == 204, done.text
    assert waiting_for_message(rest, instance_id)

    result = _cli(
        "correlate", MESSAGE, "--process-instance", instance_id, "--var", "result=42", env=env
    )
    assert result.returncode == 0, result.stderr
    assert MESSAGE in result.stdout
    assert_finished_once(rest, instance_id)
    history = rest.get(
        "/history/variable-instance",
        params={"processInstanceId": instance_id, "variableName": "result"},
    ).json()
    assert [(v["type"], v["value"]) for v in history] == [("Integer", 42)]


def test_correlate_by_a_business_key_two_instances_share_asks_for_the_instance(
    rest: httpx.Client, env: dict[str, str]
) -> None:
    business_key = f"cli-twice-{uuid.uuid4()}"
    ids = [
        _started_id(_cli("start", PROCESS_KEY, "--business-key", business_key, env=env))
        for _ in range(2)
    ]

    def locked() -> list[dict[str, Any]]:
        return [t for t in fetch_and_lock(rest, "cli-test") if t["processInstanceId"] in ids]

    completed: set[str] = set()

    def all_completed() -> bool:
        for task in locked():
            done = rest.post(f"/external-task/{task['id']}/complete", json={"workerId": "cli-test"})
            assert done.status_code == 204, done.text
            completed.add(task["processInstanceId"])
        return completed == set(ids)

    wait_for(all_completed, timeout=TASK_TIMEOUT, what="both messageSending tasks")
    result = _cli("correlate", MESSAGE, "--business-key", business_key, env=env)
    _assert_one_error_line(result, "2 executions", MESSAGE, business_key, "--process-instance")
    assert all(waiting_for_message(rest, i) for i in ids), "a message was delivered anyway"


# --- bad input --------------------------------------------------------------------------------


def test_unknown_message_names_message_and_business_key(
    env: dict[str, str], process_key: str
) -> None:
    business_key = f"cli-msg-{uuid.uuid4()}"
    _started_id(_cli("start", process_key, "--business-key", business_key, env=env))
    result = _cli("correlate", "no_such_message", "--business-key", business_key, env=env)
    _assert_one_error_line(
        result, "no process instance", "waiting for message 'no_such_message'", business_key
    )


def test_unknown_process_key_starts_nothing(rest: httpx.Client, env: dict[str, str]) -> None:
    key = f"no-such-process-{uuid.uuid4().hex[:8]}"
    business_key = f"cli-unknown-{uuid.uuid4()}"
    result = _cli("start", key, "--business-key", business_key, env=env)
    _assert_one_error_line(result, f"no process definition with key '{key}' is deployed")
    assert _instances(rest, processInstanceBusinessKey=business_key) == []


def test_business_key_over_255_characters_starts_nothing(
    rest: httpx.Client, env: dict[str, str], process_key: str
) -> None:
    before = _instances(rest, processDefinitionKey=process_key)
    result = _cli("start", process_key, "--business-key", "k" * 256, env=env)
    _assert_one_error_line(result, "--business-key", "256", "255")
    assert _instances(rest, processDefinitionKey=process_key) == before


@pytest.mark.parametrize(
    ("bad", "expected"),
    [
        ("novalue", "--var 'novalue': expected NAME=VALUE"),
        ("=42", "--var '=42': expected NAME=VALUE"),
        ("big=123456789012345678901234567890", "--var 'big': an int beyond 64 bits"),
    ],
    ids=["no-equals-sign", "no-name", "unsendable-value"],
)
def test_bad_var_is_a_usage_error_and_starts_nothing(
    rest: httpx.Client, env: dict[str, str], process_key: str, bad: str, expected: str
) -> None:
    business_key = f"cli-var-{uuid.uuid4()}"
    result = _cli(
        "start", process_key, "--business-key", business_key, "--var", "ok=1", "--var", bad, env=env
    )
    _assert_one_error_line(result, expected)
    assert result.returncode == 2
    assert _instances(rest, processInstanceBusinessKey=business_key) == []


def test_wrong_credentials_name_the_settings_and_never_the_password(
    rest: httpx.Client, decoy_env: dict[str, str], process_key: str
) -> None:
    business_key = f"cli-auth-{uuid.uuid4()}"
    result = _cli("start", process_key, "--business-key", business_key, env=decoy_env)
    _assert_one_error_line(result, DECOY_USER, "CAMUNDA_USER", "CAMUNDA_PASSWORD")
    assert "wrong-password" not in result.stdout + result.stderr
    assert _instances(rest, processInstanceBusinessKey=business_key) == []


def test_url_that_is_not_the_rest_api_says_so(engine: Engine) -> None:
    url = engine.info.base_url  # without /engine-rest
    result = _cli("start", PROCESS_KEY, "--business-key", "nobody", env=_environment(url))
    _assert_one_error_line(result, url, "CAMUNDA_URL")


def test_engine_not_reachable_names_the_url(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}/engine-rest"
    result = _cli("start", PROCESS_KEY, "--business-key", "nobody", env=_environment(url))
    _assert_one_error_line(result, "not reachable", url)
    model = tmp_path / "m.bpmn"
    model.write_text(_bpmn("never-deployed"))
    _assert_one_error_line(_cli("deploy", str(model), env=_environment(url)), url)
    _assert_one_error_line(
        _cli("correlate", MESSAGE, "--business-key", "x", env=_environment(url)), url
    )
