"""camunda_relay.compat's ExternalTask and TaskResult beside the client's own (4.5.0), method
by method, on the same fetched task; then what each result becomes in camunda-relay."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from camunda.external_task import external_task as client

import camunda_relay.compat as compat
from camunda_relay import BpmnError, Complete, RetryLater, VariableError
from camunda_relay.client import _task
from camunda_relay.compat import ExternalTask, TaskResult, TaskResultMissing
from camunda_relay.variables import File


def wire(retries: int | None = None, **changes: Any) -> dict[str, Any]:
    """A task as fetchAndLock answers (simple variables: read alike with either setting
    of deserializeValues)."""
    raw: dict[str, Any] = {
        "id": "task-1",
        "workerId": "worker-1",
        "topicName": "topicName",
        "processInstanceId": "pi-1",
        "executionId": "ex-1",
        "activityId": "validate",
        "activityInstanceId": "validate:1",
        "processDefinitionId": "def:1",
        "processDefinitionKey": "def",
        "businessKey": "bk-7",
        "tenantId": "tenant-a",
        "retries": retries,
        "priority": 0,
        "variables": {
            "score": {"type": "Integer", "value": 120, "valueInfo": {}},
            "name": {"type": "String", "value": "img.jpg", "valueInfo": {}},
            "flag": {"type": "Boolean", "value": False, "valueInfo": {}},
        },
        "extensionProperties": {"owner": "team-a"},
    }
    raw.update(changes)
    return raw


def both(retries: int | None = None, **changes: Any) -> tuple[client.ExternalTask, ExternalTask]:
    raw = wire(retries, **changes)
    return client.ExternalTask(raw), ExternalTask(_task(raw, raw["workerId"]))


GETTERS = [
    "get_worker_id",
    "get_process_instance_id",
    "get_variables",
    "get_extension_properties",
    "get_task_id",
    "get_activity_id",
    "get_topic_name",
    "get_tenant_id",
    "get_business_key",
]


@pytest.mark.parametrize("getter", GETTERS)
def test_each_getter_answers_as_the_clients(getter: str) -> None:
    theirs, ours = both()
    assert getattr(ours, getter)() == getattr(theirs, getter)()


def test_a_task_without_tenant_business_key_or_properties_answers_as_the_clients() -> None:
    raw = wire()
    for key in ("tenantId", "businessKey", "extensionProperties"):
        del raw[key]
    theirs, ours = client.ExternalTask(raw), ExternalTask(_task(raw, "worker-1"))
    assert ours.get_tenant_id() is theirs.get_tenant_id() is None
    assert ours.get_business_key() is theirs.get_business_key() is None
    assert ours.get_extension_properties() == theirs.get_extension_properties() == {}


@pytest.mark.parametrize("name", ["score", "name", "flag", "missing"])
def test_get_variable_answers_as_the_clients(name: str) -> None:
    theirs, ours = both()
    assert ours.get_variable(name) == theirs.get_variable(name)


def test_get_variable_with_meta_is_the_typed_value() -> None:
    theirs, ours = both()
    assert ours.get_variable("score", with_meta=True) == theirs.get_variable(
        "score", with_meta=True
    )
    assert ours.get_variable("missing", with_meta=True) is None


@pytest.mark.parametrize("name", ["owner", "missing"])
def test_get_extension_property_answers_as_the_clients(name: str) -> None:
    theirs, ours = both()
    assert ours.get_extension_property(name) == theirs.get_extension_property(name)


def fields(result: client.TaskResult | TaskResult) -> dict[str, object]:
    return {
        "success": result.is_success(),
        "failure": result.is_failure(),
        "bpmn_error": bool(result.is_bpmn_error()),
        "global": result.global_variables,
        "local": result.local_variables,
        "code": result.bpmn_error_code,
        "message": result.error_message,
        "details": result.error_details,
        "retries": result.retries,
        "retry_timeout": result.retry_timeout,
    }


@pytest.mark.parametrize(
    ("retries", "call"),
    [
        (None, lambda t: t.complete({"var1": 1, "var2": "value"})),
        (None, lambda t: t.complete({"a": 1}, {"b": 2})),
        (None, lambda t: t.complete()),
        (None, lambda t: t.bpmn_error("BPMN_ERROR_CODE", "BPMN Error occurred", {"var1": "v"})),
        (None, lambda t: t.bpmn_error(error_code="CODE", error_message="message")),
        # failure: max_retries when the task has no retries yet, else one less than it has.
        (None, lambda t: t.failure("task failed", "failed task details", 3, 5000)),
        (3, lambda t: t.failure("task failed", "failed task details", 3, 5000)),
        (1, lambda t: t.failure("task failed", "details", 5, 10)),
        (None, lambda t: t.failure("task failed", "details", 0, 10)),
    ],
)
def test_each_result_maker_gives_the_clients_result(retries: int | None, call: Any) -> None:
    theirs, ours = both(retries)
    their_result, our_result = call(theirs), call(ours)
    assert fields(our_result) == fields(their_result)
    assert ours.get_task_result() is our_result
    assert our_result.get_task() is ours


def test_an_untouched_task_has_the_empty_result() -> None:
    theirs, ours = both()
    assert fields(ours.get_task_result()) == fields(theirs.get_task_result())
    assert str(ours.get_task_result()) == "empty_task_result"
    replaced = TaskResult.success(ours, {"x": 1})
    ours.set_task_result(replaced)
    assert ours.get_task_result() is replaced


def test_complete_becomes_a_completion_with_process_and_local_variables() -> None:
    _, ours = both()
    outcome = ours.complete({"var1": 1}, {"note": "local"}).outcome()
    assert outcome == Complete(variables={"var1": 1}, local_variables={"note": "local"})


def test_the_clients_typed_form_is_read_as_the_value_it_stands_for() -> None:
    _, ours = both()
    outcome = ours.complete(
        {"n": {"value": 5, "type": "Long"}, "s": {"value": "x"}, "d": {"day": "mon"}}
    ).outcome()
    assert outcome.variables == {"n": 5, "s": "x", "d": {"day": "mon"}}


def test_a_java_object_in_the_clients_typed_form_is_refused_naming_the_variable() -> None:
    _, ours = both()
    java = {"serializationDataFormat": "application/x-java-serialized-object"}
    result = ours.complete({"obj": {"value": "rO0=", "type": "Object", "valueInfo": java}})
    with pytest.raises(VariableError, match="'obj'"):
        result.outcome()


def test_a_file_in_the_clients_typed_form_is_sent_as_a_file() -> None:
    _, ours = both()
    info = {"filename": "a.txt", "mimeType": "text/plain"}
    result = ours.complete({"doc": {"value": "aGk=", "type": "File", "valueInfo": info}})
    (doc,) = result.outcome().variables.values()
    assert isinstance(doc, File)
    assert (doc.name, doc.data, doc.mime_type) == ("a.txt", b"hi", "text/plain")


def test_bpmn_error_becomes_camunda_relays_bpmn_error() -> None:
    _, ours = both()
    with pytest.raises(BpmnError) as raised:
        ours.bpmn_error("CODE", "why", {"reason": "bad"}).outcome()
    assert (raised.value.code, raised.value.message) == ("CODE", "why")
    assert raised.value.variables == {"reason": "bad"}


def test_failure_becomes_a_retry_with_the_clients_retries_timeout_and_details() -> None:
    _, ours = both(retries=3)
    with pytest.raises(RetryLater) as raised:
        ours.failure("task failed", "failed task details", 5, 5000).outcome()
    assert str(raised.value) == "task failed"
    assert raised.value.retries == 2
    assert raised.value.after == timedelta(seconds=5)
    assert raised.value.details == "failed task details"


def test_no_result_is_a_failure_not_a_silent_lock() -> None:
    _, ours = both()
    with pytest.raises(TaskResultMissing):
        ours.get_task_result().outcome()


def test_text_of_a_task_and_a_result_names_no_value() -> None:
    _, ours = both()
    shown = [str(ours), str(ours.complete({"secret": "s3cr3t-value"}))]
    shown.append(str(ours.failure("m", "details-s3cr3t", 1, 1)))
    assert not any("s3cr3t" in text or "img.jpg" in text for text in shown)
    assert "secret" in shown[1]


def test_json_as_text_hands_out_json_variables_as_text() -> None:
    raw = wire(variables={"order": {"type": "Json", "value": '{"id": 7}', "valueInfo": {}}})
    assert ExternalTask(_task(raw, "w")).get_variable("order") == {"id": 7}
    as_text = ExternalTask(_task(raw, "w"), json_as_text=True)
    assert as_text.get_variable("order") == '{"id":7}'
    assert as_text.get_variables() == {"order": '{"id":7}'}


def test_the_public_names_are_pinned() -> None:
    assert set(compat.__all__) == {
        "CONFIG_KEYS",
        "ENGINE_LOCAL_BASE_URL",
        "ExternalTask",
        "ExternalTaskWorker",
        "TaskResult",
        "TaskResultMissing",
    }
