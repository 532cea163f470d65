"""EngineClient against httpx.MockTransport: what goes on the wire, and how errors map.

Whether the calls work with Camunda is tested against the real engine in
tests/engine/test_client.py; these tests pin the request shapes and the error paths the real
engine cannot be made to produce on demand (500s, 503s, dropped connections, timeouts).
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import ssl
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest

from camunda_relay import errors
from camunda_relay.client import MAX_CONCURRENT_REQUESTS, EngineClient, TopicRequest
from camunda_relay.settings import Settings
from camunda_relay.variables import Unreadable

T = TypeVar("T")

URL = "http://engine.test/engine-rest"
PASSWORD = "canary-password-81c2"
VALUE = "canary-value-5d0e"
SETTINGS = Settings(url=URL, user="worker", password=PASSWORD)

Handler = Callable[[httpx.Request], httpx.Response]


def run(coroutine: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(asyncio.wait_for(coroutine, timeout=30))


class Wire:
    """A MockTransport that records every request and answers with ``handler``."""

    def __init__(self, handler: Handler | None = None) -> None:
        self.requests: list[httpx.Request] = []
        self.handler = handler or (lambda request: httpx.Response(204))

    def _handle(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        return self.handler(request)

    def client(self, settings: Settings = SETTINGS) -> EngineClient:
        return EngineClient(settings, transport=httpx.MockTransport(self._handle))

    @property
    def last(self) -> httpx.Request:
        return self.requests[-1]

    def body(self, index: int = -1) -> Any:
        return json.loads(self.requests[index].content)


def respond(status: int, body: object = None) -> Handler:
    if body is None:
        return lambda request: httpx.Response(status)
    return lambda request: httpx.Response(status, json=body)


def call(wire: Wire, action: Callable[[EngineClient], Coroutine[Any, Any, T]]) -> T:
    async def go() -> T:
        async with wire.client() as client:
            return await action(client)

    return run(go())


FETCHED = {
    "activityId": "send_message",
    "activityInstanceId": "send_message:1",
    "errorMessage": None,
    "executionId": "ex-1",
    "id": "task-1",
    "lockExpirationTime": "2026-11-27T21:15:40.014+0000",
    "processDefinitionId": "correlation-message:1:abc",
    "processDefinitionKey": "correlation-message",
    "processInstanceId": "pi-1",
    "retries": None,
    "workerId": "w1",
    "topicName": "messageSending",
    "tenantId": None,
    "priority": 5,
    "businessKey": "order-1",
    "variables": {
        "n": {"type": "Integer", "value": 3, "valueInfo": {}},
        "j": {"type": "Json", "value": '{"a":[1]}', "valueInfo": {}},
        "o": {
            "type": "Object",
            "value": "rO0AB",
            "valueInfo": {"serializationDataFormat": "application/x-java-serialized-object"},
        },
    },
}

# -- authentication -------------------------------------------------------------------------


def test_basic_auth_header() -> None:
    wire = Wire(respond(200, {"count": 1}))
    call(wire, lambda c: c.check_access())
    expected = base64.b64encode(f"worker:{PASSWORD}".encode()).decode()
    assert wire.last.headers["Authorization"] == f"Basic {expected}"
    assert wire.last.url == f"{URL}/process-definition/count"


def test_bearer_token_header() -> None:
    wire = Wire(respond(200, {"count": 1}))
    settings = Settings(url=URL, token="tok-123")

    async def go() -> None:
        async with wire.client(settings) as client:
            await client.check_access()

    run(go())
    assert wire.last.headers["Authorization"] == "Bearer tok-123"


def test_no_credentials_no_header() -> None:
    wire = Wire(respond(200, {"count": 1}))

    async def go() -> None:
        async with wire.client(Settings(url=URL)) as client:
            await client.check_access()

    run(go())
    assert "Authorization" not in wire.last.headers


def test_readiness_probe_is_anonymous_and_never_raises() -> None:
    wire = Wire(respond(200, [{"name": "default"}]))
    assert call(wire, lambda c: c.ready()) is True
    assert wire.last.url == f"{URL}/engine"
    assert "Authorization" not in wire.last.headers
    assert call(Wire(respond(503)), lambda c: c.ready()) is False
    assert call(Wire(_raise(httpx.ConnectError("refused"))), lambda c: c.ready()) is False

    async def closed() -> bool:
        client = wire.client()
        await client.aclose()
        return await client.ready()

    assert run(closed()) is False


def test_missing_ca_bundle_is_a_configuration_error(tmp_path: Path) -> None:
    settings = Settings(url="https://engine.test/engine-rest", ca_bundle=tmp_path / "absent.pem")
    with pytest.raises(errors.ConfigurationError, match=r"CAMUNDA_CA_BUNDLE .*absent\.pem"):
        EngineClient(settings)


# -- error mapping --------------------------------------------------------------------------

NO_MATCH = (
    "org.camunda.bpm.engine.MismatchingMessageCorrelationException: Cannot correlate message "
    "'sample_response': No process definition or execution matches the parameters"
)
AMBIGUOUS = (
    "org.camunda.bpm.engine.MismatchingMessageCorrelationException: ENGINE-13031 Cannot "
    "correlate a message with name 'sample_response' to a single execution. 3 executions "
    "match the correlation keys: CorrelationSet [businessKey=dup, processInstanceId=null]"
)
NOT_LOCKED = "External Task task-1 cannot be completed by worker 'w2'. It is locked by worker 'w1'."
NEVER_LOCKED = (
    "External Task task-1 cannot be completed by worker 'w1'. It is locked by worker 'null'."
)


def _raise(error: Exception) -> Handler:
    def handler(request: httpx.Request) -> httpx.Response:
        raise error

    return handler


@pytest.mark.parametrize(
    ("handler", "expected", "retryable", "message"),
    [
        (
            respond(400, {"type": "RestException", "message": NOT_LOCKED, "code": 0}),
            errors.TaskNotLocked,
            False,
            "locked by worker 'w1'",
        ),
        (
            respond(400, {"type": "RestException", "message": NEVER_LOCKED, "code": 0}),
            errors.TaskNotLocked,
            False,
            "locked by worker 'null'",
        ),
        (
            respond(400, {"type": "InvalidRequestException", "message": "bad", "code": None}),
            errors.BadRequest,
            False,
            "bad",
        ),
        (respond(401), errors.AuthenticationFailed, False, "authentication failed"),
        (
            respond(403, {"type": "AuthorizationException", "message": "no UPDATE permission"}),
            errors.PermissionDenied,
            False,
            "no UPDATE permission",
        ),
        (
            respond(404, {"type": "RestException", "message": "External task does not exist"}),
            errors.NotFound,
            False,
            "does not exist",
        ),
        (
            respond(
                500,
                {"type": "OptimisticLockingException", "message": "was updated", "code": 1},
            ),
            errors.ConcurrentModification,
            True,
            "was updated",
        ),
        (
            respond(500, {"type": "ProcessEngineException", "message": "db down", "code": 0}),
            errors.ServerError,
            True,
            "db down",
        ),
        (respond(503), errors.EngineUnavailable, True, "Service Unavailable"),
        (
            lambda request: httpx.Response(502, text="<html>bad gateway</html>"),
            errors.EngineUnavailable,
            True,
            "Bad Gateway",
        ),
        (
            _raise(httpx.ConnectError("[Errno 111] Connection refused")),
            errors.EngineUnavailable,
            True,
            "not reachable",
        ),
        (
            _raise(httpx.ReadTimeout("timed out")),
            errors.EngineUnavailable,
            True,
            "timed out",
        ),
        (
            _raise(httpx.RemoteProtocolError("peer closed connection")),
            errors.EngineUnavailable,
            True,
            "RemoteProtocolError",
        ),
    ],
    ids=[
        "not-locked",
        "never-locked",
        "bad-request",
        "401",
        "403",
        "404",
        "optimistic-locking",
        "500",
        "503",
        "502-html",
        "connect-error",
        "timeout",
        "dropped",
    ],
)
def test_complete_errors_map_to_typed_exceptions(
    handler: Handler, expected: type[errors.EngineError], retryable: bool, message: str
) -> None:
    wire = Wire(handler)
    with pytest.raises(errors.EngineError) as caught:
        call(wire, lambda c: c.complete("task-1", "w2", {"result": VALUE}))
    error = caught.value
    assert type(error) is expected
    assert error.retryable is retryable
    assert error.request == "POST /external-task/task-1/complete"
    assert message in str(error)
    assert VALUE not in str(error)
    assert PASSWORD not in str(error)


@pytest.mark.parametrize(
    ("message", "expected"),
    [(NO_MATCH, errors.NoMatchingExecution), (AMBIGUOUS, errors.AmbiguousCorrelation)],
    ids=["no-match", "ambiguous"],
)
def test_correlation_errors(message: str, expected: type[errors.EngineError]) -> None:
    wire = Wire(respond(400, {"type": "RestException", "message": message, "code": 0}))
    with pytest.raises(expected) as caught:
        call(wire, lambda c: c.correlate("sample_response", business_key="dup"))
    assert caught.value.status == 400
    assert caught.value.request == "POST /message"
    assert not caught.value.retryable


def test_not_found_reads_as_none_for_lookups() -> None:
    wire = Wire(respond(404, {"type": "RestException", "message": "gone"}))
    assert call(wire, lambda c: c.external_task("t")) is None
    assert call(wire, lambda c: c.historic_process_instance("pi")) is None
    assert call(wire, lambda c: c.process_definition("key")) is None
    assert [str(r.url) for r in wire.requests] == [
        f"{URL}/external-task/t",
        f"{URL}/history/process-instance/pi",
        f"{URL}/process-definition/key/key",
    ]


def test_other_errors_of_lookups_still_raise() -> None:
    with pytest.raises(errors.ServerError):
        call(Wire(respond(500, {"message": "x"})), lambda c: c.external_task("t"))


def test_non_json_success_is_an_engine_error() -> None:
    wire = Wire(lambda request: httpx.Response(200, text="<html>proxy login</html>"))
    with pytest.raises(errors.EngineError, match="not JSON"):
        call(wire, lambda c: c.executions(process_instance_id="pi"))


def test_ids_stay_one_path_segment() -> None:
    wire = Wire()
    call(wire, lambda c: c.complete("../deployment/x", "w"))
    assert wire.last.url.raw_path == b"/engine-rest/external-task/..%2Fdeployment%2Fx/complete"
    with pytest.raises(errors.InvalidInput, match="empty"):
        call(wire, lambda c: c.complete("", "w"))


# -- check_access ---------------------------------------------------------------------------


def test_check_access_names_the_user_not_the_password() -> None:
    with pytest.raises(errors.AuthenticationFailed) as caught:
        call(Wire(respond(401)), lambda c: c.check_access())
    message = str(caught.value)
    assert "'worker'" in message
    assert "CAMUNDA_PASSWORD" in message
    assert PASSWORD not in message


def test_a_refused_login_says_it_may_be_the_login_delay() -> None:
    with pytest.raises(errors.AuthenticationFailed) as caught:
        call(Wire(respond(401)), lambda c: c.check_access())
    assert str(caught.value) == (
        "GET /process-definition/count: "
        f"the engine at {URL} refused user 'worker': wrong CAMUNDA_USER or CAMUNDA_PASSWORD, "
        "or that user is held back after failed logins (the engine refuses it for up to 60 s "
        "after each wrong password, then accepts it again) (HTTP 401)"
    )
    with pytest.raises(errors.AuthenticationFailed, match="held back after failed logins"):
        call(Wire(respond(401)), lambda c: c.executions(process_instance_id="x"))


def test_a_missing_permission_is_permission_denied() -> None:
    body = {"type": "AuthorizationException", "message": "no 'CREATE' on 'Deployment'"}
    with pytest.raises(errors.PermissionDenied) as caught:
        call(Wire(respond(403, body)), lambda c: c.deploy("x", {"a.bpmn": b"<x/>"}))
    assert isinstance(caught.value, errors.AuthenticationFailed)  # what callers caught so far
    assert caught.value.status == 403
    assert caught.value.message == "no 'CREATE' on 'Deployment'"


def _tls_failure(cause: Exception) -> httpx.ConnectError:
    """A connection failure as httpx raises it: its cause chain ends in the ssl error."""
    try:
        try:
            raise cause
        except Exception as inner:
            raise httpx.ConnectError(str(inner)) from inner
    except httpx.ConnectError as error:
        return error


def test_an_untrusted_certificate_is_a_tls_error_not_an_unreachable_engine() -> None:
    untrusted = ssl.SSLCertVerificationError(1, "certificate verify failed")
    untrusted.verify_message = "self-signed certificate"  # type: ignore[attr-defined]
    with pytest.raises(errors.TlsError) as caught:
        call(Wire(_raise(_tls_failure(untrusted))), lambda c: c.check_access())
    assert not isinstance(caught.value, errors.EngineUnavailable)
    assert not caught.value.retryable
    assert str(caught.value) == (
        f"the engine at {URL}: the engine's TLS certificate is not trusted (self-signed "
        "certificate): set CAMUNDA_CA_BUNDLE to the PEM file of the CA that signed it"
    )


def test_a_port_without_tls_is_a_tls_error() -> None:
    wrong = ssl.SSLError(1, "[SSL: WRONG_VERSION_NUMBER] wrong version number")
    wrong.reason = "WRONG_VERSION_NUMBER"  # type: ignore[misc]
    with pytest.raises(errors.TlsError, match=r"WRONG_VERSION_NUMBER.*HTTPS port"):
        call(Wire(_raise(_tls_failure(wrong))), lambda c: c.executions(process_instance_id="x"))


def test_check_access_on_a_wrong_url_says_so() -> None:
    with pytest.raises(errors.ConfigurationError, match="check CAMUNDA_URL"):
        call(Wire(respond(404)), lambda c: c.check_access())


def test_check_access_when_the_engine_is_down() -> None:
    wire = Wire(_raise(httpx.ConnectError("refused")))
    with pytest.raises(errors.EngineUnavailable, match=r"engine\.test.*not reachable"):
        call(wire, lambda c: c.check_access())


# -- fetch and lock -------------------------------------------------------------------------


def test_fetch_and_lock_request_and_tasks() -> None:
    wire = Wire(respond(200, [FETCHED]))
    topics = [
        TopicRequest("messageSending", timedelta(seconds=60)),
        TopicRequest("other", timedelta(milliseconds=1500), variables=["a"], local_variables=True),
    ]
    tasks = call(
        wire,
        lambda c: c.fetch_and_lock("w1", topics, max_tasks=7, long_poll=timedelta(seconds=20)),
    )
    assert wire.last.url == f"{URL}/external-task/fetchAndLock"
    assert wire.body() == {
        "workerId": "w1",
        "maxTasks": 7,
        "usePriority": True,
        "asyncResponseTimeout": 20_000,
        "topics": [
            {
                "topicName": "messageSending",
                "lockDuration": 60_000,
                "localVariables": False,
                "deserializeValues": False,
            },
            {
                "topicName": "other",
                "lockDuration": 1500,
                "localVariables": True,
                "deserializeValues": False,
                "variables": ["a"],
            },
        ],
    }
    (task,) = tasks
    assert task.id == "task-1"
    assert task.topic == "messageSending"
    assert task.worker_id == "w1"
    assert task.process_instance_id == "pi-1"
    assert task.execution_id == "ex-1"
    assert task.business_key == "order-1"
    assert task.retries is None
    assert task.priority == 5
    assert task.lock_expiration == datetime(2026, 11, 27, 21, 15, 40, 14000, tzinfo=UTC)
    assert dict(task.variables) == {
        "n": 3,
        "j": {"a": [1]},
        "o": Unreadable("Object", "application/x-java-serialized-object"),
    }


@pytest.mark.parametrize(
    ("use_priority", "fetch_order", "sorting"),
    [
        (False, "none", None),
        (True, "create-time-asc", [{"sortBy": "createTime", "sortOrder": "asc"}]),
        (False, "create-time-desc", [{"sortBy": "createTime", "sortOrder": "desc"}]),
    ],
)
def test_fetch_and_lock_sends_the_worker_wide_order(
    use_priority: bool, fetch_order: str, sorting: list[dict[str, str]] | None
) -> None:
    """``usePriority`` and ``sorting`` come from the settings; without an order no
    ``sorting`` field is sent at all (engines before Camunda 7.21 do not know it)."""
    wire = Wire(respond(200, []))
    settings = Settings.load(
        {"CAMUNDA_USE_PRIORITY": str(use_priority), "CAMUNDA_FETCH_ORDER": fetch_order},
        overrides={"url": URL},
    )
    topics = [TopicRequest("messageSending", timedelta(seconds=60))]

    async def go() -> None:
        async with wire.client(settings) as client:
            await client.fetch_and_lock("w1", topics, max_tasks=1, long_poll=timedelta(0))

    run(go())
    body = wire.body()
    assert body["usePriority"] is use_priority
    assert body.get("sorting") == sorting


def test_fetch_read_timeout_is_the_long_poll_plus_a_margin() -> None:
    wire = Wire(respond(200, []))
    settings = Settings(url=URL, request_timeout=timedelta(seconds=7))
    topics = [TopicRequest("t", timedelta(seconds=60))]

    async def go(long_poll: timedelta) -> None:
        async with wire.client(settings) as client:
            await client.fetch_and_lock("w", topics, max_tasks=1, long_poll=long_poll)
            await client.complete("task", "w")

    run(go(timedelta(seconds=20)))
    fetch, complete = (request.extensions["timeout"] for request in wire.requests)
    assert fetch == {"connect": 7.0, "read": 27.0, "write": 7.0, "pool": 7.0}
    assert complete == {"connect": 7.0, "read": 7.0, "write": 7.0, "pool": 7.0}

    run(go(timedelta(hours=1)))  # capped at the engine's maximum of 30 minutes
    assert wire.body(-2)["asyncResponseTimeout"] == 1_800_000
    assert wire.requests[-2].extensions["timeout"]["read"] == 1807.0


@pytest.mark.parametrize(
    ("kwargs", "problem"),
    [
        ({"worker_id": ""}, "worker id"),
        ({"topics": []}, "at least one topic"),
        ({"max_tasks": 0}, "max_tasks"),
    ],
)
def test_fetch_and_lock_refuses_nonsense_without_sending(
    kwargs: dict[str, Any], problem: str
) -> None:
    arguments: dict[str, Any] = {
        "worker_id": "w",
        "topics": [TopicRequest("t", timedelta(seconds=1))],
        "max_tasks": 1,
        "long_poll": timedelta(0),
    } | kwargs
    wire = Wire()
    with pytest.raises(errors.InvalidInput, match=problem):
        call(
            wire,
            lambda c: c.fetch_and_lock(
                arguments["worker_id"],
                arguments["topics"],
                max_tasks=arguments["max_tasks"],
                long_poll=arguments["long_poll"],
            ),
        )
    assert wire.requests == []


def test_topic_request_checks_its_values() -> None:
    with pytest.raises(errors.InvalidInput, match="lock duration"):
        TopicRequest("t", timedelta(0))
    with pytest.raises(errors.InvalidInput, match="list of names"):
        TopicRequest("t", timedelta(seconds=1), variables="abc")
    with pytest.raises(errors.InvalidInput, match="topic name"):
        TopicRequest("", timedelta(seconds=1))


# -- request bodies -------------------------------------------------------------------------


def test_complete_body() -> None:
    wire = Wire()
    call(wire, lambda c: c.complete("t1", "w1", {"a": 1}, {"b": "x"}))
    assert wire.body() == {
        "workerId": "w1",
        "variables": {"a": {"value": 1, "type": "Integer", "valueInfo": {}}},
        "localVariables": {"b": {"value": "x", "type": "String", "valueInfo": {}}},
    }
    call(wire, lambda c: c.complete("t1", "w1"))
    assert wire.body() == {"workerId": "w1"}


def test_failure_body_in_milliseconds() -> None:
    wire = Wire()
    call(
        wire,
        lambda c: c.handle_failure(
            "t1",
            "w1",
            error_message="boom",
            error_details="trace",
            retries=2,
            retry_timeout=timedelta(seconds=1.5),
        ),
    )
    assert wire.last.url == f"{URL}/external-task/t1/failure"
    assert wire.body() == {
        "workerId": "w1",
        "errorMessage": "boom",
        "errorDetails": "trace",
        "retries": 2,
        "retryTimeout": 1500,
    }
    with pytest.raises(errors.InvalidInput, match="retries"):
        call(
            wire,
            lambda c: c.handle_failure(
                "t1",
                "w1",
                error_message="x",
                error_details=None,
                retries=-1,
                retry_timeout=timedelta(0),
            ),
        )


def test_bpmn_error_and_extend_lock_bodies() -> None:
    wire = Wire()
    call(wire, lambda c: c.handle_bpmn_error("t1", "w1", error_code="E1", variables={"v": True}))
    assert wire.last.url == f"{URL}/external-task/t1/bpmnError"
    assert wire.body() == {
        "workerId": "w1",
        "errorCode": "E1",
        "variables": {"v": {"value": True, "type": "Boolean", "valueInfo": {}}},
    }
    call(wire, lambda c: c.extend_lock("t1", "w1", timedelta(minutes=2)))
    assert wire.last.url == f"{URL}/external-task/t1/extendLock"
    assert wire.body() == {"workerId": "w1", "newDuration": 120_000}


def test_correlate_body() -> None:
    wire = Wire()
    call(
        wire,
        lambda c: c.correlate(
            "sample_response", process_instance_id="pi-1", business_key="bk", variables={"r": 1}
        ),
    )
    assert wire.last.url == f"{URL}/message"
    assert wire.body() == {
        "messageName": "sample_response",
        "processInstanceId": "pi-1",
        "businessKey": "bk",
        "processVariables": {"r": {"value": 1, "type": "Integer", "valueInfo": {}}},
    }


def test_requests_in_flight_are_bounded_and_the_long_poll_is_not_counted() -> None:
    """Thousands of due replies wait in the client, not in httpcore's pool (see _send)."""
    due = MAX_CONCURRENT_REQUESTS * 3

    async def go() -> None:
        release = asyncio.Event()
        in_flight = {"poll": 0, "other": 0}
        most = {"other": 0}

        async def handler(request: httpx.Request) -> httpx.Response:
            kind = "poll" if request.url.path.endswith("fetchAndLock") else "other"
            in_flight[kind] += 1
            most["other"] = max(most["other"], in_flight["other"])
            await release.wait()
            in_flight[kind] -= 1
            return httpx.Response(200, json=[]) if kind == "poll" else httpx.Response(204)

        async with EngineClient(SETTINGS, transport=httpx.MockTransport(handler)) as client:
            topics = [TopicRequest("messageSending", timedelta(seconds=60))]
            poll = asyncio.create_task(
                client.fetch_and_lock("w1", topics, max_tasks=1, long_poll=timedelta(seconds=20))
            )
            replies = [
                asyncio.create_task(
                    client.correlate("sample_response", process_instance_id=f"p{i}")
                )
                for i in range(due)
            ]
            while in_flight["other"] < MAX_CONCURRENT_REQUESTS or not in_flight["poll"]:
                await asyncio.sleep(0)
            for _ in range(20):  # more turns of the loop let nothing else through the gate
                await asyncio.sleep(0)
            assert in_flight == {"poll": 1, "other": MAX_CONCURRENT_REQUESTS}
            release.set()
            await asyncio.gather(poll, *replies)
        assert most["other"] == MAX_CONCURRENT_REQUESTS

    run(go())


def test_correlate_needs_an_id() -> None:
    wire = Wire()
    with pytest.raises(errors.ConfigurationError, match="process instance id or a business key"):
        call(wire, lambda c: c.correlate("sample_response"))
    assert wire.requests == []


def test_create_incident_and_queries() -> None:
    wire = Wire(respond(200, {"id": "inc-1"}))
    incident = call(
        wire,
        lambda c: c.create_incident(
            "ex-1", incident_type="relayFailed", message="lost", configuration="job-1"
        ),
    )
    assert incident == "inc-1"
    assert wire.last.url == f"{URL}/execution/ex-1/create-incident"
    assert wire.body() == {
        "incidentType": "relayFailed",
        "message": "lost",
        "configuration": "job-1",
    }

    wire = Wire(respond(200, []))
    call(wire, lambda c: c.executions(process_instance_id="pi", message_name="m"))
    assert wire.last.url.path == "/engine-rest/execution"
    assert dict(wire.last.url.params) == {
        "processInstanceId": "pi",
        "messageEventSubscriptionName": "m",
    }
    call(wire, lambda c: c.incidents(incident_type="failedExternalTask"))
    assert dict(wire.last.url.params) == {"incidentType": "failedExternalTask"}
    call(wire, lambda c: c.historic_activity_instances(process_instance_id="pi", activity_id="a"))
    assert wire.last.url.path == "/engine-rest/history/activity-instance"
    assert dict(wire.last.url.params) == {"processInstanceId": "pi", "activityId": "a"}


def test_historic_process_instances_query() -> None:
    wire = Wire(respond(200, []))
    call(
        wire,
        lambda c: c.historic_process_instances(
            process_definition_key="k", business_key="bk", finished=False, max_results=5
        ),
    )
    assert wire.last.method == "POST"
    assert wire.last.url.path == "/engine-rest/history/process-instance"
    assert dict(wire.last.url.params) == {"maxResults": "5"}
    # The engine ignores finished=false; "still running" is unfinished=true.
    assert wire.body() == {
        "processDefinitionKey": "k",
        "processInstanceBusinessKey": "bk",
        "unfinished": True,
    }
    call(wire, lambda c: c.historic_process_instances(finished=True, process_instance_ids=["a"]))
    assert wire.body() == {"finished": True, "processInstanceIds": ["a"]}
    sent = len(wire.requests)
    assert call(wire, lambda c: c.historic_process_instances(process_instance_ids=[])) == []
    assert len(wire.requests) == sent


def test_external_task_completed_asks_the_history_log() -> None:
    wire = Wire(respond(200, {"count": 1}))
    assert call(wire, lambda c: c.external_task_completed("t1", "w1")) is True
    assert wire.last.url.path == "/engine-rest/history/external-task-log/count"
    assert dict(wire.last.url.params) == {
        "externalTaskId": "t1",
        "successLog": "true",
        "workerId": "w1",
    }
    assert call(Wire(respond(200, {"count": 0})), lambda c: c.external_task_completed("t")) is False


def test_start_process_body() -> None:
    wire = Wire(respond(200, {"id": "pi-1"}))
    started = call(wire, lambda c: c.start_process("k", business_key="bk", variables={"x": None}))
    assert started == {"id": "pi-1"}
    assert wire.last.url == f"{URL}/process-definition/key/k/start"
    assert wire.body() == {
        "businessKey": "bk",
        "variables": {"x": {"value": None, "type": "Null", "valueInfo": {}}},
    }


@pytest.mark.parametrize("changed_only", [True, False])
def test_deploy_is_multipart(changed_only: bool) -> None:
    wire = Wire(respond(200, {"id": "dep-1"}))
    call(wire, lambda c: c.deploy("relay", {"a.bpmn": b"<xml/>"}, changed_only=changed_only))
    request = wire.last
    assert request.url == f"{URL}/deployment/create"
    assert request.headers["Content-Type"].startswith("multipart/form-data")
    body = request.content
    flag = b"true" if changed_only else b"false"
    assert b'name="deployment-name"\r\n\r\nrelay' in body
    assert b'name="deploy-changed-only"\r\n\r\n' + flag in body
    assert b'name="enable-duplicate-filtering"\r\n\r\n' + flag in body
    assert b'name="a.bpmn"; filename="a.bpmn"' in body
    assert b"<xml/>" in body


# -- nothing is sent when the input is bad --------------------------------------------------


@pytest.mark.parametrize(
    "action",
    [
        lambda c: c.complete("t", "w", {"ok": 1, "bad": {VALUE}}),
        lambda c: c.complete("t", "w", None, {"bad": float("nan")}),
        lambda c: c.handle_bpmn_error("t", "w", error_code="E", variables={"bad": object()}),
        lambda c: c.correlate("m", process_instance_id="pi", variables={"bad": 2**64}),
        lambda c: c.start_process("k", variables={"bad": datetime(2026, 1, 1)}),
        lambda c: c.correlate("m", business_key="x" * 256),
        lambda c: c.correlate("m", business_key=f"{VALUE}\n"),
        lambda c: c.start_process("k", business_key=""),
    ],
    ids=[
        "complete",
        "complete-local",
        "bpmn-error",
        "correlate",
        "start",
        "long-key",
        "control-key",
        "empty-key",
    ],
)
def test_bad_input_sends_nothing(
    action: Callable[[EngineClient], Coroutine[Any, Any, Any]],
) -> None:
    wire = Wire()
    with pytest.raises(errors.InvalidInput) as caught:
        call(wire, action)
    assert wire.requests == []
    assert VALUE not in str(caught.value)


# -- logging --------------------------------------------------------------------------------


def test_logs_name_requests_never_secrets_or_values(caplog: pytest.LogCaptureFixture) -> None:
    def engine(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/fetchAndLock"):
            task = dict(FETCHED)
            task["variables"] = {"secret": {"type": "String", "value": VALUE, "valueInfo": {}}}
            return httpx.Response(200, json=[task])
        if request.url.path.endswith("/message"):
            return httpx.Response(400, json={"type": "RestException", "message": NO_MATCH})
        return httpx.Response(204)

    async def go(client: EngineClient) -> None:
        topics = [TopicRequest("messageSending", timedelta(seconds=10))]
        await client.fetch_and_lock("w1", topics, max_tasks=1, long_poll=timedelta(0))
        await client.complete("task-1", "w1", {"result": VALUE})
        with pytest.raises(errors.NoMatchingExecution):
            await client.correlate("m", process_instance_id="pi", variables={"r": VALUE})

    caplog.set_level(logging.DEBUG)
    call(Wire(engine), go)
    lines = [r for r in caplog.records if r.name == "camunda_relay.transport"]
    assert [r.levelno for r in lines] == [logging.DEBUG] * 3
    assert [r.getMessage().split(" in ")[0] for r in lines] == [
        "POST /external-task/fetchAndLock -> 200",
        "POST /external-task/task-1/complete -> 204",
        "POST /message -> 400",
    ]
    assert all(r.getMessage().endswith(" ms") for r in lines)
    basic = base64.b64encode(f"worker:{PASSWORD}".encode()).decode()
    for secret in (VALUE, PASSWORD, basic, "Authorization"):
        assert secret not in caplog.text


def test_transport_failures_are_logged_by_kind(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="camunda_relay.transport")
    with pytest.raises(errors.EngineUnavailable):
        call(Wire(_raise(httpx.ConnectError("refused"))), lambda c: c.complete("t", "w"))
    (record,) = caplog.records
    assert record.getMessage().startswith("POST /external-task/t/complete failed after")
    assert record.getMessage().endswith("ConnectError")
