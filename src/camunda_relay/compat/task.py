"""``ExternalTask`` and ``TaskResult`` as camunda-external-task-client-python3 4.5.0 has them.

An :class:`ExternalTask` wraps the frozen :class:`~camunda_relay.task.Task` a handler gets;
its ``complete``, ``failure`` and ``bpmn_error`` return a :class:`TaskResult` that the
worker (:mod:`camunda_relay.compat.worker`) turns into camunda-relay's outcomes: a
:class:`~camunda_relay.task.Complete`, a :class:`~camunda_relay.task.BpmnError`, a
:class:`~camunda_relay.task.RetryLater` with the retries the client would have sent.

Where it differs from the client, on purpose: ``str()`` of a task or a result names ids and
variable names, never values (the client printed whole payloads); a Json variable reads as
its data (the client, with its default ``deserializeValues``, handed out Spin's dump of it);
``get_variable(name, with_meta=True)`` is the typed value as camunda-relay would send it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import timedelta

from camunda_relay.errors import VariableError
from camunda_relay.task import BpmnError, Complete, RetryLater, Task
from camunda_relay.variables import Unreadable, decode, encode

__all__ = ["ExternalTask", "TaskResult", "TaskResultMissing", "plain_variables"]

_TYPED_KEYS = frozenset({"value", "type", "valueInfo"})


class TaskResultMissing(Exception):
    """The handler returned neither ``complete()``, ``failure()`` nor ``bpmn_error()``.

    The client raised a bare ``Exception`` and left the task locked; here it is reported as
    a failure through the retry policy, so the engine shows it."""


def plain_variables(values: Mapping[str, object] | None) -> dict[str, object]:
    """The client's variables as camunda-relay sends them: a plain value as it is, and the
    client's typed form ``{"value": v, "type": "Integer", "valueInfo": {...}}`` as the
    Python value it stands for (a File as a :class:`~camunda_relay.variables.File`). A
    Java-serialised Object in that form cannot be sent."""
    plain: dict[str, object] = {}
    for name, value in (values or {}).items():
        if isinstance(value, Mapping) and "value" in value and set(value) <= _TYPED_KEYS:
            if "type" in value:
                value = decode(name, value)
                if isinstance(value, Unreadable):
                    raise VariableError(name, f"a {value.type} value cannot be sent this way")
            else:
                value = value["value"]
        plain[name] = value
    return plain


class TaskResult:
    """What a handler decided: success, failure or BPMN error (the client's fields)."""

    def __init__(
        self,
        task: ExternalTask,
        success: bool = False,
        global_variables: Mapping[str, object] | None = None,
        local_variables: Mapping[str, object] | None = None,
        bpmn_error_code: str | None = None,
        error_message: str | None = None,
        error_details: object = None,
        retries: int = 0,
        retry_timeout: int = 300000,
    ) -> None:
        self.task = task
        self.success_state = success
        self.global_variables = dict(global_variables or {})
        self.local_variables = dict(local_variables or {})
        self.bpmn_error_code = bpmn_error_code
        self.error_message = error_message
        self.error_details = {} if error_details is None else error_details
        self.retries = retries
        self.retry_timeout = retry_timeout

    @classmethod
    def success(
        cls,
        task: ExternalTask,
        global_variables: Mapping[str, object] | None,
        local_variables: Mapping[str, object] | None = None,
    ) -> TaskResult:
        return cls(task, True, global_variables, local_variables)

    @classmethod
    def failure(
        cls,
        task: ExternalTask,
        error_message: str,
        error_details: object,
        retries: int,
        retry_timeout: int,
    ) -> TaskResult:
        return cls(
            task,
            error_message=error_message,
            error_details=error_details,
            retries=retries,
            retry_timeout=retry_timeout,
        )

    @classmethod
    def bpmn_error(
        cls,
        task: ExternalTask,
        error_code: str,
        error_message: str | None,
        variables: Mapping[str, object] | None = None,
    ) -> TaskResult:
        return cls(
            task,
            bpmn_error_code=error_code,
            error_message=error_message,
            global_variables=variables,
        )

    @classmethod
    def empty_task_result(cls, task: ExternalTask) -> TaskResult:
        return cls(task)

    def is_success(self) -> bool:
        return self.success_state and self.bpmn_error_code is None and self.error_message is None

    def is_failure(self) -> bool:
        return (
            not self.success_state and self.error_message is not None and not self.is_bpmn_error()
        )

    def is_bpmn_error(self) -> bool:
        return not self.success_state and bool(self.bpmn_error_code)

    def get_task(self) -> ExternalTask:
        return self.task

    def outcome(self) -> Complete:
        """camunda-relay's outcome: a :class:`Complete` to return, or the exception for a
        failure (:class:`RetryLater`), a BPMN error or no result at all, raised."""
        if self.is_success():
            return Complete(
                variables=plain_variables(self.global_variables),
                local_variables=plain_variables(self.local_variables),
            )
        if self.is_bpmn_error():
            raise BpmnError(
                str(self.bpmn_error_code),
                self.error_message,
                plain_variables(self.global_variables),
            )
        if self.is_failure():
            raise RetryLater(
                str(self.error_message),
                after=timedelta(milliseconds=max(int(self.retry_timeout), 0)),
                retries=max(int(self.retries), 0),
                details=str(self.error_details) if self.error_details else "",
            )
        raise TaskResultMissing(
            "the handler returned no task.complete(), task.failure() or task.bpmn_error()"
        )

    def __str__(self) -> str:
        task_id = self.task.get_task_id()
        if self.is_success():
            return (
                f"success: task_id={task_id}, global_variables={sorted(self.global_variables)}, "
                f"local_variables={sorted(self.local_variables)}"
            )
        if self.is_failure():
            return (
                f"failure: task_id={task_id}, retries={self.retries}, "
                f"retry_timeout={self.retry_timeout}"
            )
        if self.is_bpmn_error():
            return f"bpmn_error: task_id={task_id}, error_code={self.bpmn_error_code}"
        return "empty_task_result"


class ExternalTask:
    """One fetched task with the client's getters and result makers.

    ``json_as_text=True`` (the client's ``deserializeValues: False``) hands out Json values
    as JSON text, as the client then did."""

    def __init__(self, task: Task, *, json_as_text: bool = False) -> None:
        self.task = task
        self._json_as_text = json_as_text
        self._task_result = TaskResult.empty_task_result(self)

    def get_worker_id(self) -> str:
        return self.task.worker_id

    def get_process_instance_id(self) -> str:
        return self.task.process_instance_id

    def get_variables(self) -> dict[str, object]:
        return {name: self._shown(value) for name, value in self.task.variables.items()}

    def get_extension_properties(self) -> dict[str, str]:
        return dict(self.task.extension_properties)

    def get_task_id(self) -> str:
        return self.task.id

    def get_activity_id(self) -> str | None:
        return self.task.activity_id

    def get_topic_name(self) -> str:
        return self.task.topic

    def get_variable(self, variable_name: str, with_meta: bool = False) -> object:
        """The variable's value (None when the task has no such variable); ``with_meta``:
        ``{"value": ..., "type": ..., "valueInfo": {...}}`` as camunda-relay sends it."""
        if variable_name not in self.task.variables:
            return None
        value = self.task.variables[variable_name]
        if not with_meta:
            return self._shown(value)
        if isinstance(value, Unreadable):
            return {"value": None, "type": value.type, "valueInfo": {}}
        return encode(variable_name, value)

    def get_extension_property(self, property_name: str) -> str | None:
        return self.task.extension_properties.get(property_name)

    def get_tenant_id(self) -> str | None:
        return self.task.tenant_id

    def get_business_key(self) -> str | None:
        return self.task.business_key

    def get_task_result(self) -> TaskResult:
        return self._task_result

    def set_task_result(self, task_result: TaskResult) -> None:
        self._task_result = task_result

    def complete(
        self,
        global_variables: Mapping[str, object] | None = None,
        local_variables: Mapping[str, object] | None = None,
    ) -> TaskResult:
        self._task_result = TaskResult.success(self, global_variables, local_variables)
        return self._task_result

    def failure(
        self,
        error_message: str,
        error_details: object,
        max_retries: int,
        retry_timeout: int,
    ) -> TaskResult:
        """A failure; the retries sent are the task's own minus one, or ``max_retries`` when
        the task has none yet (the client's rule: 0 left raises an incident)."""
        self._task_result = TaskResult.failure(
            self, error_message, error_details, self._retries(max_retries), retry_timeout
        )
        return self._task_result

    def _retries(self, max_retries: int) -> int:
        retries = self.task.retries
        return int(retries - 1) if retries and retries >= 1 else max_retries

    def bpmn_error(
        self,
        error_code: str,
        error_message: str | None = None,
        variables: Mapping[str, object] | None = None,
    ) -> TaskResult:
        self._task_result = TaskResult.bpmn_error(self, error_code, error_message, variables)
        return self._task_result

    def _shown(self, value: object) -> object:
        if self._json_as_text and isinstance(value, dict | list):
            return json.dumps(value, separators=(",", ":"), ensure_ascii=False)
        return value

    def __str__(self) -> str:
        return (
            f"ExternalTask(id={self.task.id}, topic={self.task.topic}, "
            f"process_instance_id={self.task.process_instance_id}, "
            f"variables={sorted(self.task.variables)})"
        )
