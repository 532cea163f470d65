"""A small in-process fake of the engine's REST endpoints the worker uses.

Hand :meth:`FakeEngine.transport` to :class:`~camunda_relay.EngineClient` (or a
:class:`~camunda_relay.Worker`) as its ``transport``. Meant for error paths the real engine
cannot be made to show on demand (a lost response
after the engine committed, a 503, an instance that reaches the catch event late). Whether
something works with Camunda is tested against the real engine. The fake models the seed
process: task ``messageSending`` → catch event ``wait_for_response`` (``sample_response``).

Faults are queued per route with :meth:`FakeEngine.inject`: ``status`` answers with an error
without doing anything; ``lose`` does the work, then drops the response (a transport error),
as a connection cut after the engine committed; ``hang`` never answers.

State changes a test can make, as the real engine would: :meth:`FakeEngine.expire_lock` (the
lock ran out: anyone may fetch the task, and its old holder may still complete it while no one
has), :meth:`FakeEngine.steal_lock` (another worker fetched it), :meth:`FakeEngine.cancel`
(the instance was cancelled: its task is gone) and :meth:`FakeEngine.complete_elsewhere` (a
worker this test does not see completed the task, so the instance waits with no journal
knowing it). Message subscriptions carry a ``createdDate`` (:attr:`FakeInstance.waiting_since`).

History: the activity instances of each task and each passage of the catch event, with
start and end times from a clock that moves one millisecond per event, so a worker can tell
rounds apart; ``start(rounds=N)`` models a loop (the catch event leads back to a new task
N-1 times); ``history_level`` below ``"full"`` keeps no external-task log and no details;
:attr:`FakeEngine.history_lags` names instances whose history is not written yet. The runtime
query ``POST /process-instance`` (``processInstanceIds``, ``activityIdIn``) lists running
instances.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import re
from collections import defaultdict, deque
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import cache
from typing import Any

import httpx

from camunda_relay.engine_build import engine_project_dir
from camunda_relay.variables import encode_all

__all__ = [
    "CATCH",
    "MESSAGE",
    "TOPIC",
    "FakeEngine",
    "FakeInstance",
    "FakeTask",
    "Fault",
    "seed_bpmn",
]


@cache
def seed_bpmn() -> str:
    """The seed process's BPMN, from the bundled engine's project."""
    path = engine_project_dir() / "src/main/resources/processes/correlation-message.bpmn"
    return path.read_text()


TOPIC = "messageSending"
MESSAGE = "sample_response"
CATCH = "wait_for_response"
_HISTORY_COUNTS = ("/history/detail/count", "/history/variable-instance/count")


@dataclass
class FakeTask:
    id: str
    instance_id: str
    topic: str = TOPIC
    locked_by: str | None = None
    retries: int | None = None
    done: bool = False
    lock_expired: bool = False  # fetchable again; the old holder may still complete it
    lock_until: float | None = None  # the loop's time when the lock runs out by itself
    deleted: bool = False  # its instance was cancelled
    completed_by: str | None = None


@dataclass
class FakeInstance:
    id: str
    business_key: str | None
    state: str = "task"  # task | transit | waiting | completed | error | cancelled
    early_polls: int = 0  # correlations rejected while "in transit" before it waits
    variables: dict[str, Any] = field(default_factory=dict)
    passages: int = 0
    waiting_since: datetime | None = None  # the message subscription's createdDate
    topic: str = TOPIC
    rounds: int = 1  # a looping model: how many times it passes the catch event in all
    history: list[dict[str, Any]] = field(default_factory=list)  # activity instances
    tenant_id: str | None = None

    def wait(self) -> None:
        self.state = "waiting"
        self.waiting_since = datetime.now(UTC)


@dataclass(frozen=True)
class Fault:
    kind: str  # "status", "lose" or "hang" (never answers)
    status: int = 503
    message: str = "injected"
    error_type: str = "RestException"


class FakeEngine:
    """State plus an async handler for :class:`httpx.MockTransport`."""

    def __init__(
        self,
        *,
        transit_polls: int = 0,
        max_long_poll: float = 0.02,
        network_yields: int = 0,
        history_level: str = "full",
        json_variables: bool = True,
    ) -> None:
        """``max_long_poll`` caps a fetch's wait (seconds) for tasks to appear;
        ``network_yields`` lets the event loop run that many times before the engine acts
        and before its answer arrives, as a network would (a worker may stop in between)."""
        self.transit_polls = transit_polls
        self.max_long_poll = max_long_poll
        self.network_yields = network_yields
        self.history_level = history_level
        self.json_variables = json_variables  # False: an engine without Spin's JSON format
        self.json_probes = 0  # the worker's start-up probes (EngineClient.stores_json)
        # Instances whose history is not written yet (a history backend that lags): history
        # queries leave them out.
        self.history_lags: set[str] = set()
        self._ticks = itertools.count(1)
        self.faults_hit: list[tuple[str, str]] = []  # (route, kind) of each fault applied
        self.tasks: dict[str, FakeTask] = {}
        self.instances: dict[str, FakeInstance] = {}
        self.incidents: list[dict[str, Any]] = []
        self.failures: list[dict[str, Any]] = []
        self.calls: list[str] = []
        self._faults: dict[str, deque[Fault]] = defaultdict(deque)
        self._ids = itertools.count(1)

    # -- set-up ---------------------------------------------------------------------------

    def start(
        self,
        business_key: str | None = None,
        *,
        rounds: int = 1,
        topic: str = TOPIC,
        variables: dict[str, object] | None = None,
        tenant_id: str | None = None,
    ) -> str:
        """A new instance at its task; ``variables`` (plain values) are fetched with it; a
        fetch with ``tenantIdIn`` (or ``withoutTenantId``) sees it only in its tenant."""
        instance = FakeInstance(
            id=f"pi-{next(self._ids)}",
            business_key=business_key,
            rounds=rounds,
            topic=topic,
            variables=encode_all(variables or {}),
            tenant_id=tenant_id,
        )
        self.instances[instance.id] = instance
        self._new_task(instance)
        return instance.id

    def _new_task(self, instance: FakeInstance) -> FakeTask:
        task = FakeTask(id=f"task-{next(self._ids)}", instance_id=instance.id, topic=instance.topic)
        self.tasks[task.id] = task
        instance.state = "task"
        self._begin(instance, f"send_message:{task.id}", "send_message")
        return task

    def _now(self) -> str:
        moment = _date(datetime(2030, 1, 1, tzinfo=UTC) + timedelta(milliseconds=next(self._ticks)))
        assert moment is not None
        return moment

    def _begin(self, instance: FakeInstance, activity_instance_id: str, activity_id: str) -> None:
        instance.history.append(
            {
                "id": activity_instance_id,
                "activityId": activity_id,
                "startTime": self._now(),
                "endTime": None,
                "canceled": False,
            }
        )

    def _end(self, instance: FakeInstance, activity_id: str) -> None:
        for entry in reversed(instance.history):
            if entry["activityId"] == activity_id and entry["endTime"] is None:
                entry["endTime"] = self._now()
                return

    def inject(self, route: str, *faults: Fault) -> None:
        """Queue faults for a route such as ``"POST /message"`` or ``"complete"``."""
        self._faults[route].extend(faults)

    def clear_faults(self) -> None:
        self._faults.clear()

    def expire_lock(self, task_id: str) -> None:
        """The task's lock ran out: anyone may fetch it again."""
        self.tasks[task_id].lock_expired = True

    def steal_lock(self, task_id: str, worker_id: str = "other-worker") -> None:
        """Another worker fetched the task (its lock had run out): the old holder gets 400."""
        task = self.tasks[task_id]
        task.locked_by, task.lock_expired = worker_id, False

    def cancel(self, instance_id: str) -> None:
        """Cancel an instance: its open task is gone (404), nobody waits for a message."""
        instance = self.instances[instance_id]
        instance.state = "cancelled"
        for entry in instance.history:
            if entry["endTime"] is None:
                entry["endTime"], entry["canceled"] = self._now(), True
        for task in self.tasks.values():
            if task.instance_id == instance_id and not task.done:
                task.deleted = True

    def complete_elsewhere(
        self, instance_id: str, *, waiting_for: timedelta = timedelta(0)
    ) -> None:
        """Complete the instance's task as an unseen worker would; it waits since
        ``waiting_for`` ago (a job no journal knows: a lost volume)."""
        for task in self.tasks.values():
            if task.instance_id == instance_id and not task.done:
                task.done, task.completed_by = True, "unseen-worker"
        instance = self.instances[instance_id]
        self._end(instance, "send_message")
        self._wait(instance)
        instance.waiting_since = datetime.now(UTC) - waiting_for

    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self.handle)

    # -- the handler ----------------------------------------------------------------------

    async def handle(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path.removeprefix("/engine-rest")
        if (request.method, path) == ("POST", "/message") and b"-json-probe-" in request.content:
            self.json_probes += 1  # outside calls and faults: it changes nothing
            return self._no_json() if not self.json_variables else _no_match()
        route = _route(request.method, path)
        await self._network()
        self.calls.append(route)
        fault = self._faults[route].popleft() if self._faults[route] else None
        if fault is not None:
            self.faults_hit.append(
                (route, fault.kind if fault.kind == "lose" else str(fault.status))
            )
        if fault is not None and fault.kind == "hang":
            await asyncio.Event().wait()
        if fault is not None and fault.kind == "status":
            await self._network()
            return _error(fault.status, fault.message, fault.error_type)
        body = json.loads(request.content) if request.content else {}
        response = await self._dispatch(request.method, path, request.url.params, body)
        await self._network()
        if fault is not None and fault.kind == "lose":
            raise httpx.ReadError("connection reset after the engine committed", request=request)
        return response

    def _no_json(self) -> httpx.Response:
        return _error(400, "Cannot deliver message: Unsupported value type 'Json'")

    async def _network(self) -> None:
        for _ in range(self.network_yields):
            await asyncio.sleep(0)

    async def _dispatch(
        self, method: str, path: str, params: httpx.QueryParams, body: Any
    ) -> httpx.Response:
        if (method, path) == ("POST", "/external-task/fetchAndLock"):
            return await self._fetch(body)
        match = re.fullmatch(
            r"/external-task/([^/]+)/(complete|failure|bpmnError|extendLock|unlock)", path
        )
        if method == "POST" and match:
            return self._task_action(match.group(1), match.group(2), body)
        if (method, path) == ("GET", "/event-subscription"):
            return self._subscriptions(params)
        if (method, path) == ("GET", "/incident"):
            return self._incidents(params)
        if (method, path) == ("GET", "/history/external-task-log"):
            return self._task_log_entries(params)
        if (method, path) == ("POST", "/history/process-instance"):
            return self._historic_query(body)
        if (method, path) == ("POST", "/process-instance"):
            return self._runtime_query(body)
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
        match = re.fullmatch(r"/process-instance/([^/]+)/variables", path)
        if method == "GET" and match:
            if match.group(1) not in self.instances:
                return _error(404, f"process instance {match.group(1)} does not exist")
            return httpx.Response(200, json=self.instances[match.group(1)].variables)
        match = re.fullmatch(r"/history/process-instance/([^/]+)", path)
        if method == "GET" and match:
            return self._historic(match.group(1))
        if method == "GET" and path == "/history/external-task-log/count":
            return self._task_log(params)
        if method == "GET" and path in (
            "/history/detail/count",
            "/history/variable-instance/count",
        ):
            return self._history_count(path)
        if method == "GET" and re.fullmatch(r"/process-definition/[^/]+/xml", path):
            return httpx.Response(200, json={"id": "def", "bpmn20Xml": seed_bpmn()})
        if (method, path) == ("GET", "/process-definition/count"):
            return httpx.Response(200, json={"count": 1})
        return _error(404, f"fake engine has no route {method} {path}")

    async def _fetch(self, body: dict[str, Any]) -> httpx.Response:
        topics = {topic["topicName"]: topic for topic in body["topics"]}
        now = asyncio.get_running_loop().time()
        for task in self.tasks.values():
            if task.lock_until is not None and task.lock_until <= now:
                task.lock_expired = True  # the lock ran out by itself, as in the engine
        free = [
            t
            for t in self.tasks.values()
            if not t.done and not t.deleted and (t.locked_by is None or t.lock_expired)
        ]
        chosen = [t for t in free if t.topic in topics and self._fetches(topics[t.topic], t)]
        chosen = chosen[: body["maxTasks"]]
        if not chosen:
            await asyncio.sleep(min(body.get("asyncResponseTimeout", 0) / 1000, self.max_long_poll))
        for task in chosen:
            task.locked_by, task.lock_expired = body["workerId"], False
            duration = topics[task.topic].get("lockDuration")
            task.lock_until = now + duration / 1000 if duration else None
        return httpx.Response(200, json=[self._wire(task) for task in chosen])

    def _fetches(self, topic: dict[str, Any], task: FakeTask) -> bool:
        """Whether the topic's tenant filter lets the task through (other filters are
        not applied by the fake)."""
        tenant = self.instances[task.instance_id].tenant_id
        if "tenantIdIn" in topic and tenant not in topic["tenantIdIn"]:
            return False
        return not (topic.get("withoutTenantId") and tenant is not None)

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
            "tenantId": instance.tenant_id,
            "lockExpirationTime": "2030-01-01T00:00:00.000+0000",
            "variables": dict(instance.variables),
        }

    def _task_action(self, task_id: str, action: str, body: dict[str, Any]) -> httpx.Response:
        task = self.tasks.get(task_id)
        if task is None or task.done or task.deleted:
            return _error(404, f"External task {task_id} does not exist", "InvalidRequestException")
        if action == "unlock":
            task.locked_by, task.lock_expired = None, False
            return httpx.Response(204)
        if task.locked_by != body.get("workerId"):
            return _error(
                400,
                f"External Task {task_id} cannot be completed by worker '{body.get('workerId')}'. "
                f"It is locked by worker '{task.locked_by}'.",
                "BadUserRequestException",
            )
        instance = self.instances[task.instance_id]
        sent = {**body.get("variables", {}), **body.get("localVariables", {})}
        if not self.json_variables and any(v.get("type") == "Json" for v in sent.values()):
            return _error(400, "Cannot complete external task: Unsupported value type 'Json'")
        if action == "complete":
            task.done, task.completed_by = True, body.get("workerId")
            instance.variables.update(body.get("variables") or {})
            self._end(instance, "send_message")
            if self.transit_polls:
                instance.state = "transit"
            else:
                self._wait(instance)
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
                    self._wait(instance)
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
        instance.passages += 1
        self._end(instance, CATCH)
        if instance.passages < instance.rounds:
            self._new_task(instance)  # the model loops back to the task
        else:
            instance.state = "completed"
        return httpx.Response(204)

    def _wait(self, instance: FakeInstance) -> None:
        instance.wait()
        self._begin(instance, f"{CATCH}:{next(self._ids)}", CATCH)

    def _executions(self, params: httpx.QueryParams) -> httpx.Response:
        found = [
            {"id": i.id, "processInstanceId": i.id}
            for i in self.instances.values()
            if params.get("processInstanceId") in (None, i.id)
            and (params.get("messageEventSubscriptionName") is None or i.state == "waiting")
            and i.state not in ("completed", "error", "cancelled")
        ]
        return httpx.Response(200, json=found)

    def _subscriptions(self, params: httpx.QueryParams) -> httpx.Response:
        if params.get("eventType") not in (None, "message"):
            return httpx.Response(200, json=[])
        found = [
            {
                "id": f"sub-{i.id}",
                "eventType": "message",
                "eventName": MESSAGE,
                "executionId": i.id,
                "processInstanceId": i.id,
                "activityId": CATCH,
                "tenantId": None,
                "createdDate": _date(i.waiting_since),
            }
            for i in self.instances.values()
            if i.state == "waiting"
            and params.get("eventName") in (None, MESSAGE)
            and params.get("processInstanceId") in (None, i.id)
        ]
        if params.get("sortBy") == "created":
            found.sort(key=lambda s: str(s["createdDate"]))
        first = int(params.get("firstResult", 0))
        size = int(params.get("maxResults", len(found)))
        return httpx.Response(200, json=found[first : first + size])

    def _incidents(self, params: httpx.QueryParams) -> httpx.Response:
        found = [
            {**incident, "processInstanceId": incident["executionId"]}
            for incident in self.incidents
            if params.get("incidentType") in (None, incident.get("incidentType"))
            and params.get("processInstanceId") in (None, incident["executionId"])
        ]
        return httpx.Response(200, json=found)

    def _task_log_entries(self, params: httpx.QueryParams) -> httpx.Response:
        found = [
            {
                "externalTaskId": t.id,
                "topicName": t.topic,
                "processInstanceId": t.instance_id,
                "executionId": t.instance_id,
                "activityId": "send_message",
                "processDefinitionKey": "correlation-message",
                "workerId": t.completed_by,
            }
            for t in self.tasks.values()
            if t.done
            and self.history_level == "full"
            and params.get("successLog") in ("true", None)
            and params.get("processInstanceId") in (None, t.instance_id)
        ]
        return httpx.Response(200, json=found)

    def _historic_query(self, body: dict[str, Any]) -> httpx.Response:
        wanted = body.get("processInstanceIds")
        found = [
            self._historic_record(i)
            for i in self.instances.values()
            if (wanted is None or i.id in wanted) and i.id not in self.history_lags
        ]
        return httpx.Response(200, json=found)

    def _runtime_query(self, body: dict[str, Any]) -> httpx.Response:
        """Running instances (``processInstanceIds``); with ``activityIdIn``, those waiting
        in one of those activities (the catch event, or the task)."""
        wanted, activities = body.get("processInstanceIds"), body.get("activityIdIn")
        at = {"waiting": CATCH, "task": "send_message"}
        found = [
            {"id": i.id, "businessKey": i.business_key, "ended": False, "suspended": False}
            for i in self.instances.values()
            if (wanted is None or i.id in wanted)
            and i.state not in ("completed", "error", "cancelled")
            and (activities is None or at.get(i.state) in activities)
        ]
        return httpx.Response(200, json=found)

    def _passages(self, params: httpx.QueryParams) -> httpx.Response:
        instance = self.instances.get(params.get("processInstanceId", ""))
        if instance is None or instance.id in self.history_lags:
            return httpx.Response(200, json=[])
        return httpx.Response(200, json=instance.history)

    def _historic(self, instance_id: str) -> httpx.Response:
        instance = self.instances.get(instance_id)
        if instance is None:
            return _error(404, "not found")
        return httpx.Response(200, json=self._historic_record(instance))

    @staticmethod
    def _historic_record(instance: FakeInstance) -> dict[str, Any]:
        ended = instance.state in ("completed", "error", "cancelled")
        state = "EXTERNALLY_TERMINATED" if instance.state == "cancelled" else "COMPLETED"
        return {
            "id": instance.id,
            "businessKey": instance.business_key,
            "state": state if ended else "ACTIVE",
            "endTime": "2030-01-01T00:00:00.000+0000" if ended else None,
        }

    def _task_log(self, params: httpx.QueryParams) -> httpx.Response:
        if self.history_level != "full":
            return httpx.Response(200, json={"count": 0})
        if "externalTaskId" not in params:
            return httpx.Response(200, json={"count": sum(t.done for t in self.tasks.values())})
        task = self.tasks.get(params.get("externalTaskId", ""))
        done = task is not None and task.done
        return httpx.Response(200, json={"count": 1 if done and params.get("successLog") else 0})

    def _history_count(self, path: str) -> httpx.Response:
        variables = sum(len(i.variables) for i in self.instances.values()) + len(self.instances)
        if path == "/history/detail/count" and self.history_level != "full":
            variables = 0
        return httpx.Response(200, json={"count": variables})


def _date(moment: datetime | None) -> str | None:
    """A date as the engine writes it: ``2026-11-27T21:00:00.000+0000``."""
    if moment is None:
        return None
    return (
        moment.strftime("%Y-%m-%dT%H:%M:%S.")
        + f"{moment.microsecond // 1000:03d}"
        + (moment.strftime("%z") or "+0000")
    )


def _route(method: str, path: str) -> str:
    if re.fullmatch(r"/external-task/[^/]+/complete", path):
        return "complete"
    if re.fullmatch(r"/execution/[^/]+/create-incident", path):
        return "create-incident"
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
