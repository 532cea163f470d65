"""The engine client's read side: external-task history, runtime and history queries,
process definitions, deployments and process starts (for the reconciler, ``pending``, the
CLI and the tests), and the bytes of a fetched task's File variables. Answers are the
engine's JSON objects; values are decoded."""

from __future__ import annotations

import asyncio
import dataclasses
import functools
from collections.abc import Mapping, Sequence
from typing import Any

from camunda_relay import errors
from camunda_relay.file_values import MAX_FILE_BYTES, File, too_large
from camunda_relay.http import Answer
from camunda_relay.task import Task
from camunda_relay.transport import Transport, _flag, _query, _segment
from camunda_relay.variables import decode_all, validate_business_key

__all__ = ["Queries"]


class Queries(Transport):
    """Queries and repository calls, on :class:`~camunda_relay.transport.Transport`."""

    def bind_files(self, task: Task) -> Task:
        """The task, its File variables bound to load their bytes from this engine (a fetched
        task's, and a reply job's read back from the journal)."""
        files = {
            name: value
            for name, value in task.variables.items()
            if isinstance(value, File) and not value.loaded
        }
        if not files:
            return task
        loop = asyncio.get_running_loop()
        bound = {
            name: value.bound(functools.partial(self.file_data, task, name), loop)
            for name, value in files.items()
        }
        return dataclasses.replace(task, variables={**task.variables, **bound})

    async def file_data(self, task: Task, name: str) -> bytes:
        """The bytes of the task's File variable ``name``: its own scope's (local variables,
        input mappings) first, then the process instance's, then, for a scope that has ended
        (a reply topic's task is completed before its handler runs), the history's."""
        runtime = [f"/process-instance/{_segment(task.process_instance_id)}/variables"]
        if task.execution_id:
            runtime.insert(0, f"/execution/{_segment(task.execution_id)}/localVariables")
        for path in runtime:
            try:
                return _within_limit(name, await self._send("GET", f"{path}/{_segment(name)}/data"))
            except (errors.NotFound, errors.BadRequest, errors.ServerError):
                continue  # not in this scope, or the scope is gone
        found = await self._list(
            "GET",
            "/history/variable-instance",
            params=_query(
                processInstanceId=task.process_instance_id,
                variableName=name,
                deserializeValues=False,
            ),
        )
        scopes = (task.activity_instance_id, task.process_instance_id)
        for scope in scopes:
            for variable in found:
                if variable.get("activityInstanceId") == scope and variable.get("id"):
                    path = f"/history/variable-instance/{_segment(str(variable['id']))}/data"
                    return _within_limit(name, await self._send("GET", path))
        raise errors.NotFound(
            f"File variable {name!r} is in neither the task's scope nor the process instance's"
        )

    async def external_task(self, task_id: str) -> dict[str, Any] | None:
        """The external task as the engine has it now; None when it no longer exists."""
        return await self._optional(f"/external-task/{_segment(task_id)}")

    async def external_task_completed(self, task_id: str, worker_id: str | None = None) -> bool:
        """Whether the task was completed (by ``worker_id``, if given), from the history log.

        After a complete whose answer was lost, a 404 on the retry means either "our first
        call went through" or "the task was cancelled"; this tells the two apart.
        """
        params = _query(externalTaskId=task_id, successLog=True, workerId=worker_id)
        counted = await self._object("GET", "/history/external-task-log/count", params=params)
        return bool(counted.get("count"))

    async def keeps_full_history(self) -> bool | None:
        """Whether the engine records history at level ``full`` (the external-task log and
        variable details that confirm a lost answer), told from what its history holds: True
        when it holds full-level records, False when it holds variables but not their
        full-level details, None when it cannot be told yet (nothing has run)."""
        for path in ("/history/detail/count", "/history/external-task-log/count"):
            counted = await self._object("GET", path)
            if counted.get("count"):
                return True
        variables = await self._object("GET", "/history/variable-instance/count")
        return False if variables.get("count") else None

    async def external_task_log(
        self, *, process_instance_id: str, success_only: bool = False
    ) -> list[dict[str, Any]]:
        """The history log of the instance's external tasks, oldest first (history level
        ``full``); with ``success_only``, only the completions."""
        params = _query(
            processInstanceId=process_instance_id,
            successLog=True if success_only else None,
            sortBy="timestamp",
            sortOrder="asc",
        )
        return await self._list("GET", "/history/external-task-log", params=params)

    # -- runtime and history queries ----------------------------------------------------------

    async def executions(
        self,
        *,
        process_instance_id: str | None = None,
        message_name: str | None = None,
        activity_id: str | None = None,
        business_key: str | None = None,
    ) -> list[dict[str, Any]]:
        """Executions now; with ``message_name``, those waiting for that message."""
        params = _query(
            processInstanceId=process_instance_id,
            messageEventSubscriptionName=message_name,
            activityId=activity_id,
            businessKey=business_key,
        )
        return await self._list("GET", "/execution", params=params)

    async def message_subscriptions(
        self, message_name: str, *, first: int = 0, max_results: int = 500
    ) -> list[dict[str, Any]]:
        """Event subscriptions to ``message_name`` (one page, oldest first)."""
        params = _query(
            eventType="message",
            eventName=message_name,
            sortBy="created",
            sortOrder="asc",
            firstResult=first,
            maxResults=max_results,
        )
        return await self._list("GET", "/event-subscription", params=params)

    async def process_variables(self, process_instance_id: str) -> dict[str, Any]:
        """The instance's variables now, decoded (Java-serialised values stay unread)."""
        path = f"/process-instance/{_segment(process_instance_id)}/variables"
        raw = await self._object("GET", path, params={"deserializeValues": "false"})
        return decode_all(raw)

    async def process_instances(
        self, process_instance_ids: Sequence[str], *, activity_ids: Sequence[str] | None = None
    ) -> list[dict[str, Any]]:
        """The running instances among ``process_instance_ids`` (one POST query, one page of
        them all); with ``activity_ids``, only those waiting in one of those activities now
        (the engine's ``activityIdIn``: a leaf activity instance with one of the ids)."""
        if not process_instance_ids:
            return []  # the engine refuses an empty id list
        query: dict[str, object] = {"processInstanceIds": list(process_instance_ids)}
        if activity_ids is not None:
            query["activityIdIn"] = list(activity_ids)
        params = _query(maxResults=len(process_instance_ids))
        return await self._list("POST", "/process-instance", json=query, params=params)

    async def historic_activity_instances(
        self, *, process_instance_id: str, activity_id: str | None = None
    ) -> list[dict[str, Any]]:
        params = _query(processInstanceId=process_instance_id, activityId=activity_id)
        return await self._list("GET", "/history/activity-instance", params=params)

    async def historic_process_instance(self, instance_id: str) -> dict[str, Any] | None:
        return await self._optional(f"/history/process-instance/{_segment(instance_id)}")

    async def historic_process_instances(
        self,
        *,
        process_definition_key: str | None = None,
        business_key: str | None = None,
        finished: bool | None = None,
        max_results: int | None = None,
        process_instance_ids: Sequence[str] | None = None,
        with_incidents: bool = False,
    ) -> list[dict[str, Any]]:
        """Process instances, running and ended; ``finished=False`` means still running."""
        if process_instance_ids is not None and not process_instance_ids:
            return []  # the engine refuses an empty id list with a 500
        # A POST query, so a long list of instance ids does not overflow the URL. The engine
        # ignores finished=false: "still running" is its own flag, unfinished.
        query: dict[str, object] = {}
        if process_definition_key is not None:
            query["processDefinitionKey"] = process_definition_key
        if business_key is not None:
            query["processInstanceBusinessKey"] = business_key
        if finished is not None:
            query["finished" if finished else "unfinished"] = True
        if process_instance_ids is not None:
            query["processInstanceIds"] = list(process_instance_ids)
        if with_incidents:
            query["withIncidents"] = True
        params = _query(maxResults=max_results)
        return await self._list("POST", "/history/process-instance", json=query, params=params)

    # -- process definitions and deployments ---------------------------------------------------

    async def start_process(
        self,
        key: str,
        *,
        business_key: str | None = None,
        variables: Mapping[str, object] | None = None,
    ) -> dict[str, Any]:
        """Start the latest version of a process definition; return the new instance."""
        body: dict[str, object] = {}
        if business_key is not None:
            body["businessKey"] = validate_business_key(business_key)
        if variables:
            body["variables"] = self._encode(variables)
        path = f"/process-definition/key/{_segment(key)}/start"
        return await self._object("POST", path, json=body)

    async def process_definition(self, key: str) -> dict[str, Any] | None:
        """The latest version of a process definition; None when there is none."""
        return await self._optional(f"/process-definition/key/{_segment(key)}")

    async def process_definition_xml(self, definition_id: str) -> str:
        """The BPMN XML of a process definition, by its id."""
        path = f"/process-definition/{_segment(definition_id)}/xml"
        xml = (await self._object("GET", path)).get("bpmn20Xml")
        if not isinstance(xml, str):
            raise errors.EngineError("the engine sent no BPMN XML", request=f"GET {path}")
        return xml

    async def deploy(
        self, name: str, files: Mapping[str, bytes], *, changed_only: bool = True
    ) -> dict[str, Any]:
        """Deploy resources (BPMN, DMN, ...); with ``changed_only``, unchanged ones are kept."""
        if not files:
            raise errors.InvalidInput("a deployment needs at least one file")
        data = {
            "deployment-name": name,
            "deploy-changed-only": _flag(changed_only),
            "enable-duplicate-filtering": _flag(changed_only),
        }
        parts = {
            filename: (filename, content, "application/octet-stream")
            for filename, content in files.items()
        }
        return await self._object("POST", "/deployment/create", data=data, files=parts)


def _within_limit(name: str, answer: Answer) -> bytes:
    if len(answer.body) > MAX_FILE_BYTES:
        raise too_large(name, len(answer.body))
    return answer.body
