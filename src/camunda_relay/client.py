"""The async client of the engine's REST API (``/engine-rest``).

One :class:`EngineClient` holds one HTTP stack (:mod:`camunda_relay.http`: aiohttp, or httpx
on a given transport); every request goes through
:meth:`~camunda_relay.transport.Transport._send` (transport.py), the one place where engine
answers and connection failures become the exceptions of :mod:`camunda_relay.errors`. This
module has the calls a worker makes (fetch, complete, fail, correlate, incidents); queries.py
the read side. Variables are encoded before anything is sent,
so a value the engine cannot take sends nothing. Durations are ``timedelta`` objects up to
the request body, where they become milliseconds.

Log lines (DEBUG, ``camunda_relay.client``) name the method, path, status and duration of
each request; never a body, a variable value or a credential.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import httpx

from camunda_relay import errors
from camunda_relay.filters import TopicFilter
from camunda_relay.http import HttpError, Timeouts
from camunda_relay.nodes import Node
from camunda_relay.queries import Queries
from camunda_relay.settings import Settings
from camunda_relay.task import Task
from camunda_relay.transport import MAX_CONCURRENT_REQUESTS, _ms, _query, _segment
from camunda_relay.variables import decode_all, parse_date, validate_business_key

__all__ = ["MAX_CONCURRENT_REQUESTS", "MAX_LONG_POLL", "EngineClient", "TopicRequest"]

# The engine refuses an asyncResponseTimeout above 30 minutes.
MAX_LONG_POLL = timedelta(milliseconds=1_800_000)


@dataclass(frozen=True)
class TopicRequest:
    """One topic of a fetch-and-lock: its name, the lock to take, the variables to read."""

    topic: str
    lock_duration: timedelta
    variables: Sequence[str] | None = None  # None: all variables
    local_variables: bool = False
    filters: TopicFilter | None = None  # None: every task of the topic
    extension_properties: bool = False  # the activity's camunda:property values too

    def __post_init__(self) -> None:
        if not self.topic:
            raise errors.InvalidInput("a topic name must not be empty")
        if _ms(self.lock_duration) < 1:
            raise errors.InvalidInput(f"topic {self.topic!r}: the lock duration must be positive")
        if isinstance(self.variables, str):
            raise errors.InvalidInput(f"topic {self.topic!r}: variables must be a list of names")

    def body(self) -> dict[str, object]:
        body: dict[str, object] = {
            "topicName": self.topic,
            "lockDuration": _ms(self.lock_duration),
            "localVariables": self.local_variables,
            "deserializeValues": False,
        }
        if self.variables is not None:
            body["variables"] = list(self.variables)
        if self.filters is not None:
            body.update(self.filters.body())
        if self.extension_properties:
            body["includeExtensionProperties"] = True
        return body


class EngineClient(Queries):
    """The REST calls camunda-relay makes, with typed errors and typed values.

    ``transport`` replaces the network (``httpx.MockTransport`` or an in-process fake engine).
    """

    # -- health ---------------------------------------------------------------------------------

    async def ready(self) -> bool:
        """Whether the engine answers its (unauthenticated) readiness probe. Never raises."""
        try:
            await self._send("GET", "/engine", anonymous=True)
        except (
            errors.EngineError,
            HttpError,
            httpx.HTTPError,
            httpx.InvalidURL,
            ValueError,  # aiohttp's InvalidURL
            RuntimeError,  # the client is closed
        ):
            return False
        return True

    async def check_access(self) -> int:
        """Make one authenticated call, so wrong credentials or a wrong URL show at start-up.

        Returns how many process definitions the user may see: with authorizations on, a
        user without ``READ`` on any definition is not refused a fetch, it just never gets a
        task, so 0 is worth a warning (the worker command gives one).
        """
        url = self._settings.shown_url
        try:
            counted = await self._object("GET", "/process-definition/count")
        except errors.TokenRefused:
            raise
        except errors.AuthenticationFailed as error:
            raise errors.AuthenticationFailed(
                _access_problem(self._settings, error.status),
                status=error.status,
                request=error.request,
            ) from None
        except errors.EngineUnavailable as error:
            if error.request and error.request.startswith("token request"):
                raise
            raise errors.EngineUnavailable(
                f"the engine at {url} is not available: {error.message}", request=error.request
            ) from None
        except errors.TlsError as error:
            raise errors.TlsError(f"the engine at {url}: {error.message}") from None
        except errors.NotFound:
            raise errors.ConfigurationError(
                f"{url} does not look like the Camunda REST API "
                "(GET /process-definition/count answered 404): check CAMUNDA_URL"
            ) from None
        count = counted.get("count")
        return count if isinstance(count, int) else 0

    async def stores_json(self) -> bool | None:
        """Whether the engine stores ``Json`` variables; None when it cannot be told now.

        The probe changes nothing: a message of a random name, carrying one Json variable, that
        no execution waits for. An engine without the Json type (no Spin plugin, as the bundled
        Operaton engine) refuses the variable; one with it answers that nobody waits. An engine
        whose Spin plugin lacks the JSON data format passes the probe and refuses a Json value
        only when it stores one (that answer then sets :attr:`json_variables` too)."""
        body = {
            "messageName": f"camunda-relay-json-probe-{uuid.uuid4().hex}",
            "processVariables": {"probe": {"value": "{}", "type": "Json", "valueInfo": {}}},
        }
        try:
            await self._send("POST", "/message", json=body)
        except errors.JsonUnsupported:
            return False
        except errors.NoMatchingExecution:
            self.json_variables = self.json_variables is not False
            return self.json_variables
        except errors.EngineError:
            return None
        return None  # a probe that matched someone's message: nothing can be told

    # -- external tasks ---------------------------------------------------------------------

    async def fetch_and_lock(
        self,
        worker_id: str,
        topics: Sequence[TopicRequest],
        *,
        max_tasks: int,
        long_poll: timedelta,
        node: Node | None = None,
    ) -> list[Task]:
        """Lock up to ``max_tasks`` tasks, waiting up to ``long_poll`` for one to appear;
        ``node``: at that engine node (the worker long-polls each). The order in which the
        engine picks them is the settings' ``use_priority`` (highest priority first), then
        ``fetch_order`` (by create time)."""
        if not worker_id:
            raise errors.InvalidInput("the worker id must not be empty")
        if not topics:
            raise errors.InvalidInput("fetch_and_lock needs at least one topic")
        if max_tasks < 1:
            raise errors.InvalidInput(f"max_tasks must be at least 1, not {max_tasks}")
        wait = min(max(long_poll, timedelta(0)), MAX_LONG_POLL)
        body: dict[str, object] = {
            "workerId": worker_id,
            "maxTasks": max_tasks,
            "usePriority": self._settings.use_priority,
            "asyncResponseTimeout": _ms(wait),
            "topics": [topic.body() for topic in topics],
        }
        sorting = _sorting(self._settings.fetch_order)
        if sorting:  # only then: the field is new in Camunda 7.21
            body["sorting"] = sorting
        margin = self._settings.request_timeout.total_seconds()
        timeouts = Timeouts(connect=margin, read=wait.total_seconds() + margin)
        path = "/external-task/fetchAndLock"
        locked = await self._list(
            "POST", path, json=body, timeouts=timeouts, gated=False, node=node
        )
        tasks = [self.bind_files(_task(raw, worker_id)) for raw in locked]
        if node is not None:  # several nodes: the task's requests go to this one first
            for task in tasks:
                self.remember(task.id, node)
                self.remember(task.process_instance_id, node)
        return tasks

    async def complete(
        self,
        task_id: str,
        worker_id: str,
        variables: Mapping[str, object] | None = None,
        local_variables: Mapping[str, object] | None = None,
    ) -> None:
        """Complete a locked task, setting process (and local) variables."""
        body: dict[str, object] = {"workerId": worker_id}
        if variables:
            body["variables"] = self._encode(variables)
        if local_variables:
            body["localVariables"] = self._encode(local_variables)
        await self._send(
            "POST",
            f"/external-task/{_segment(task_id)}/complete",
            json=body,
            prefer=self.home(task_id),
        )

    async def handle_failure(
        self,
        task_id: str,
        worker_id: str,
        *,
        error_message: str,
        error_details: str | None,
        retries: int,
        retry_timeout: timedelta,
    ) -> None:
        """Report a failure; ``retries`` is the absolute number left (0 raises an incident)."""
        if retries < 0:
            raise errors.InvalidInput(f"retries must not be negative, not {retries}")
        body: dict[str, object] = {
            "workerId": worker_id,
            "errorMessage": error_message,
            "retries": retries,
            "retryTimeout": max(_ms(retry_timeout), 0),
        }
        if error_details is not None:
            body["errorDetails"] = error_details
        await self._send(
            "POST",
            f"/external-task/{_segment(task_id)}/failure",
            json=body,
            prefer=self.home(task_id),
        )

    async def handle_bpmn_error(
        self,
        task_id: str,
        worker_id: str,
        *,
        error_code: str,
        error_message: str | None = None,
        variables: Mapping[str, object] | None = None,
    ) -> None:
        """Throw a BPMN error from a locked task (an error boundary event catches it)."""
        body: dict[str, object] = {"workerId": worker_id, "errorCode": error_code}
        if error_message is not None:
            body["errorMessage"] = error_message
        if variables:
            body["variables"] = self._encode(variables)
        await self._send(
            "POST",
            f"/external-task/{_segment(task_id)}/bpmnError",
            json=body,
            prefer=self.home(task_id),
        )

    async def extend_lock(self, task_id: str, worker_id: str, duration: timedelta) -> None:
        """Set the lock to expire ``duration`` from now (not an increment)."""
        if _ms(duration) < 1:
            raise errors.InvalidInput("the new lock duration must be positive")
        body = {"workerId": worker_id, "newDuration": _ms(duration)}
        await self._send(
            "POST",
            f"/external-task/{_segment(task_id)}/extendLock",
            json=body,
            prefer=self.home(task_id),
        )

    async def unlock(self, task_id: str) -> None:
        """Release the lock at once, so that any worker can fetch the task again."""
        await self._send(
            "POST", f"/external-task/{_segment(task_id)}/unlock", prefer=self.home(task_id)
        )

    # -- messages and incidents ---------------------------------------------------------------

    async def correlate(
        self,
        message_name: str,
        *,
        process_instance_id: str | None = None,
        business_key: str | None = None,
        variables: Mapping[str, object] | None = None,
    ) -> None:
        """Deliver a message to exactly one waiting execution (by instance id, best)."""
        if not message_name:
            raise errors.InvalidInput("the message name must not be empty")
        if process_instance_id is None and business_key is None:
            raise errors.ConfigurationError(
                f"correlating {message_name!r} needs a process instance id or a business key"
            )
        body: dict[str, object] = {"messageName": message_name}
        if process_instance_id is not None:
            body["processInstanceId"] = process_instance_id
        if business_key is not None:
            body["businessKey"] = validate_business_key(business_key)
        if variables:
            body["processVariables"] = self._encode(variables)
        await self._send("POST", "/message", json=body, prefer=self.home(process_instance_id))

    async def create_incident(
        self,
        execution_id: str,
        *,
        incident_type: str,
        message: str,
        configuration: str | None = None,
    ) -> str:
        """Raise an incident on an execution (visible in Cockpit); return its id."""
        body: dict[str, object] = {"incidentType": incident_type, "message": message}
        if configuration is not None:
            body["configuration"] = configuration
        path = f"/execution/{_segment(execution_id)}/create-incident"
        created = await self._object("POST", path, json=body)
        return str(created["id"])

    async def incidents(
        self, *, process_instance_id: str | None = None, incident_type: str | None = None
    ) -> list[dict[str, Any]]:
        params = _query(processInstanceId=process_instance_id, incidentType=incident_type)
        return await self._list("GET", "/incident", params=params)


def _access_problem(settings: Settings, status: int | None) -> str:
    if status == 403:
        who = f"user {settings.user!r}" if settings.user else "this token"
        if settings.oauth_client_id:
            who = f"OAuth2 client {settings.oauth_client_id!r}"
        return f"the engine at {settings.shown_url} refuses {who} access to process definitions"
    if settings.oauth_client_id:
        return (
            f"the engine at {settings.shown_url} refused the token of OAuth2 client "
            f"{settings.oauth_client_id!r} (is the engine set to trust its issuer?)"
        )
    if settings.token:
        return f"the engine at {settings.shown_url} refused the token: check CAMUNDA_TOKEN"
    if settings.user:
        who = f"user {settings.user!r}"
        return f"the engine at {settings.shown_url} refused {who}: {errors.LOGIN_REFUSED}"
    return (
        f"the engine at {settings.shown_url} requires a login: set CAMUNDA_USER and "
        "CAMUNDA_PASSWORD"
    )


def _task(raw: Mapping[str, Any], worker_id: str) -> Task:
    """A fetched task as the frozen record handlers see."""
    expires = raw.get("lockExpirationTime")
    return Task(
        id=raw["id"],
        topic=raw["topicName"],
        worker_id=worker_id,
        process_instance_id=raw["processInstanceId"],
        execution_id=raw.get("executionId"),
        activity_id=raw.get("activityId"),
        activity_instance_id=raw.get("activityInstanceId"),
        process_definition_id=raw.get("processDefinitionId"),
        process_definition_key=raw.get("processDefinitionKey"),
        business_key=raw.get("businessKey"),
        tenant_id=raw.get("tenantId"),
        retries=raw.get("retries"),
        priority=raw.get("priority") or 0,
        lock_expiration=parse_date(expires) if expires else None,
        variables=decode_all(raw.get("variables") or {}),
        extension_properties=_properties(raw.get("extensionProperties")),
    )


def _properties(raw: object) -> dict[str, str]:
    """A fetched task's extension properties (text by the engine's model; others dropped)."""
    if not isinstance(raw, Mapping):
        return {}
    return {str(k): v for k, v in raw.items() if isinstance(v, str)}


def _sorting(fetch_order: str) -> list[dict[str, str]]:
    """fetchAndLock's ``sorting`` for the ``fetch_order`` setting (empty for ``none``)."""
    if fetch_order == "none":
        return []
    order = fetch_order.removeprefix("create-time-")
    return [{"sortBy": "createTime", "sortOrder": order}]
