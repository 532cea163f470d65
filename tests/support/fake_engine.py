"""A small in-process fake of the engine's REST endpoints the worker uses.

Only for error paths the real engine cannot be made to show on demand (a lost response
after the engine committed, a 503, an instance that reaches the catch event late). Whether
something works with Camunda is tested against the real engine. The fake models the seed
process: task ``messageSending`` → catch event ``wait_for_response`` (``sample_response``).

Faults are queued per route with :meth:`FakeEngine.inject`: ``status`` answers with an error
without doing anything; ``lose`` does the work, then drops the response (a transport error),
as a connection cut after the engine committed.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import re
from collections import defaultdict, deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

SEED_BPMN = (
    Path(__file__).resolve().parents[2]
    / "engine/src/main/resources/processes/correlation-message.bpmn"
).read_text()

TOPIC = "messageSending"
MESSAGE = "sample_response"
CATCH = "wait_for_response"


@dataclass
class FakeTask:
    id: str
    instance_id: str
    topic: str = TOPIC
    locked_by: str | None = None
    retries: int | None = None
    done: bool = False


@dataclass
class FakeInstance:
    id: str
    business_key: str | None
    state: str = "task"  # task | transit | waiting | completed | error
    early_polls: int = 0  # correlations rejected while "in transit" before it waits
    variables: dict[str, Any] = field(default_factory=dict)
    passages: int = 0


@dataclass(frozen=True)
class Fault:
    kind: str  # "status" or "lose"
    status: int = 503
    message: str = "injected"
    error_type: str = "RestException"


class FakeEngine:
    """State plus an async handler for :class:`httpx.MockTransport`."""

    def __init__(self, *, transit_polls: int = 0) -> None:
        self.transit_polls = transit_polls
        self.tasks: dict[str, FakeTask] = {}
        self.instances: dict[str, FakeInstance] = {}
        self.incidents: list[dict[str, Any]] = []
        self.failures: list[dict[str, Any]] = []
        self.calls: list[str] = []
        self._faults: dict[str, deque[Fault]] = defaultdict(deque)
        self._ids = itertools.count(1)

    # -- set-up ---------------------------------------------------------------------------

    def start(self, business_key: str | None = None) -> str:
        instance = FakeInstance(id=f"pi-{next(self._ids)}", business_key=business_key)
        self.instances[instance.id] = instance
        task = FakeTask(id=f"task-{next(self._ids)}", instance_id=instance.id)
        self.tasks[task.id] = task
        return instance.id

    def inject(self, route: str, *faults: Fault) -> None:
        """Queue faults for a route such as ``"POST /message"`` or ``"complete"``."""
        self._faults[route].extend(faults)

    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self.handle)

    # -- the handler ----------------------------------------------------------------------

    async def handle(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path.removeprefix("/engine-rest")
        route = _route(request.method, path)
        self.calls.append(route)
        fault = self._faults[route].popleft() if self._faults[route] else None
        if fault is not None and fault.kind == "status":
            return _error(fault.status, fault.message, fault.error_type)
        body = json.loads(request.content) if request.content else {}
        response = await self._dispatch(request.method, path, request.url.params, body)
        if fault is not None and fault.kind == "lose":
            raise httpx.ReadError("connection reset after the engine committed", request=request)
        return response

    async def _dispatch(
        self, method: str, path: str, params: httpx.QueryParams, body: Any
    ) -> httpx.Response:
        if (method, path) == ("POST", "/external-task/fetchAndLock"):
            return await self._fetch(body)
        match = re.fullmatch(
            r"/external-task/([^/]+)/(complete|failure|bpmnError|extendLock)", path
        )
        if method == "POST" and match:
            return self._task_action(match.group(1), match.group(2), body)
        if (method, path) == ("POST", "/message"):
            return self._correlate(body)
        if (method, path) == ("GET", "/execution"):
            return self._executions(params)
        match = re.fullmatch(r"/execution/([^/]+)/create-incident", path)
        if method == "POST" and match:
            self.incidents.append({"executionId": match.group(1), **body})
            return httpx.Response(200, json={"id": f"inc-{next(self._ids)}"})
        if (method, path) == ("GET", "/history/activity-instance"):
            return self._passages(params)
        match = re.fullmatch(r"/history/process-instance/([^/]+)", path)
        if method == "GET" and match:
            return self._historic(match.group(1))
        if method == "GET" and path == "/history/external-task-log/count":
            return self._task_log(params)
        if method == "GET" and re.fullmatch(r"/process-definition/[^/]+/xml", path):
            return httpx.Response(200, json={"id": "def", "bpmn20Xml": SEED_BPMN})
        if (method, path) == ("GET", "/process-definition/count"):
            return httpx.Response(200, json={"count": 1})
        return _error(404, f"fake engine has no route {method} {path}")

    async def _fetch(self, body: dict[str, Any]) -> httpx.Response:
        topics = {topic["topicName"] for topic in body["topics"]}
        free = [t for t in self.tasks.values() if not t.done and t.locked_by is None]
        chosen = [t for t in free if t.topic in topics][: body["maxTasks"]]
        if not chosen:
            await asyncio.sleep(min(body.get("asyncResponseTimeout", 0), 20) / 1000)
        for task in chosen:
            task.locked_by = body["workerId"]
        return httpx.Response(200, json=[self._wire(task) for task in chosen])

    def _wire(self, task: FakeTask) -> dict[str, Any]:
        instance = self.instances[task.instance_id]
        return {
            "id": task.id,
            "topicName": task.topic,
            "workerId": task.locked_by,
            "processInstanceId": instance.id,
            "executionId": instance.id,
            "activityId": "send_message",
            "activityInstanceId": f"send_message:{task.id}",
            "processDefinitionId": "correlation-message:1:def",
            "processDefinitionKey": "correlation-message",
            "businessKey": instance.business_key,
            "retries": task.retries,
            "priority": 0,
            "tenantId": None,
            "lockExpirationTime": "2030-01-01T00:00:00.000+0000",
            "variables": {},
        }

    def _task_action(self, task_id: str, action: str, body: dict[str, Any]) -> httpx.Response:
        task = self.tasks.get(task_id)
        if task is None or task.done:
            return _error(404, f"External task {task_id} does not exist", "InvalidRequestException")
        if task.locked_by != body.get("workerId"):
            return _error(
                400,
                f"External Task {task_id} cannot be completed by worker '{body.get('workerId')}'. "
                f"It is locked by worker '{task.locked_by}'.",
                "BadUserRequestException",
            )
        instance = self.instances[task.instance_id]
        if action == "complete":
            task.done = True
            instance.variables.update(body.get("variables") or {})
            instance.state = "transit" if self.transit_polls else "waiting"
            instance.early_polls = self.transit_polls
        elif action == "failure":
            self.failures.append(body)
            task.retries = body["retries"]
            task.locked_by = None
            if body["retries"] == 0:
                self.incidents.append(
                    {"executionId": instance.id, "incidentType": "failedExternalTask"}
                )
        elif action == "bpmnError":
            task.done = True
            instance.state = "error"
        return httpx.Response(204)

    def _correlate(self, body: dict[str, Any]) -> httpx.Response:
        if body.get("messageName") != MESSAGE:
            return _no_match()
        candidates = [
            i
            for i in self.instances.values()
            if (body.get("processInstanceId") in (None, i.id))
            and (body.get("businessKey") in (None, i.business_key))
            and i.state in ("waiting", "transit")
        ]
        waiting = [i for i in candidates if i.state == "waiting"]
        for instance in candidates:
            if instance.state == "transit":  # reaches the catch event a few polls later
                instance.early_polls -= 1
                if instance.early_polls <= 0:
                    instance.state = "waiting"
        if not waiting:
            return _no_match()
        if len(waiting) > 1:
            return _error(
                400,
                f"Cannot correlate a message '{MESSAGE}' to a single execution. "
                f"{len(waiting)} executions match the correlation keys",
            )
        (instance,) = waiting
        instance.variables.update(body.get("processVariables") or {})
        instance.state = "completed"
        instance.passages += 1
        return httpx.Response(204)

    def _executions(self, params: httpx.QueryParams) -> httpx.Response:
        found = [
            {"id": i.id, "processInstanceId": i.id}
            for i in self.instances.values()
            if params.get("processInstanceId") in (None, i.id)
            and (params.get("messageEventSubscriptionName") is None or i.state == "waiting")
            and i.state not in ("completed", "error")
        ]
        return httpx.Response(200, json=found)

    def _passages(self, params: httpx.QueryParams) -> httpx.Response:
        instance = self.instances.get(params.get("processInstanceId", ""))
        passages = (
            []
            if instance is None
            else [
                {"activityId": CATCH, "endTime": "2030-01-01T00:00:00.000+0000", "canceled": False}
            ]
            * instance.passages
        )
        return httpx.Response(200, json=passages)

    def _historic(self, instance_id: str) -> httpx.Response:
        instance = self.instances.get(instance_id)
        if instance is None:
            return _error(404, "not found")
        ended = instance.state in ("completed", "error")
        return httpx.Response(
            200,
            json={
                "id": instance.id,
                "businessKey": instance.business_key,
                "state": "COMPLETED" if ended else "ACTIVE",
                "endTime": "2030-01-01T00:00:00.000+0000" if ended else None,
            },
        )

    def _task_log(self, params: httpx.QueryParams) -> httpx.Response:
        task = self.tasks.get(params.get("externalTaskId", ""))
        done = task is not None and task.done
        return httpx.Response(200, json={"count": 1 if done and params.get("successLog") else 0})


def _route(method: str, path: str) -> str:
    if re.fullmatch(r"/external-task/[^/]+/complete", path):
        return "complete"
    return f"{method} {path}"


def _error(status: int, message: str, error_type: str = "RestException") -> httpx.Response:
    return httpx.Response(status, json={"type": error_type, "message": message})


def _no_match() -> httpx.Response:
    return _error(
        400,
        f"Cannot correlate message '{MESSAGE}': No process definition or execution matches "
        "the parameters",
        "RestException",
    )
