"""The async client of the engine's REST API (``/engine-rest``), on httpx.

One :class:`EngineClient` holds one ``httpx.AsyncClient``. Every request goes through
:meth:`EngineClient._send`, the one place where engine answers and connection failures become
the exceptions of :mod:`camunda_relay.errors`. Variables are encoded before anything is sent,
so a value the engine cannot take sends nothing. Durations are ``timedelta`` objects up to
the request body, where they become milliseconds.

Log lines (DEBUG, ``camunda_relay.client``) name the method, path, status and duration of
each request; never a body, a variable value or a credential.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from collections.abc import Generator, Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from types import TracebackType
from typing import Any
from urllib.parse import quote

import httpx

from camunda_relay import errors
from camunda_relay._version import __version__
from camunda_relay.settings import Settings
from camunda_relay.task import Task
from camunda_relay.variables import decode_all, encode_all, parse_date, validate_business_key

__all__ = ["MAX_LONG_POLL", "EngineClient", "TopicRequest"]

_log = logging.getLogger(__name__)

# Requests in flight per client, long polls not counted. More would queue inside httpcore's
# connection pool, whose request assignment scans the whole queue for every request: with
# thousands of replies due at once, the cost grows with the square of the queue, requests
# reach the pool timeout and retry, and the worker livelocks (measured: 10,000 due replies,
# 99 delivered in two minutes; with this gate, all 10,000 in 60 s).
MAX_CONCURRENT_REQUESTS = 32
_LONG_POLL_CONNECTIONS = 4  # long polls bypass the gate; a worker runs one at a time

# The engine refuses an asyncResponseTimeout above 30 minutes.
MAX_LONG_POLL = timedelta(milliseconds=1_800_000)

_Params = Mapping[str, str | int]


@dataclass(frozen=True)
class TopicRequest:
    """One topic of a fetch-and-lock: its name, the lock to take, the variables to read."""

    topic: str
    lock_duration: timedelta
    variables: Sequence[str] | None = None  # None: all variables
    local_variables: bool = False

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
        return body


def _ms(duration: timedelta) -> int:
    return int(duration / timedelta(milliseconds=1))


def _segment(value: str) -> str:
    """An id as one URL path segment (a ``/`` in it cannot reach another resource)."""
    if not value:
        raise errors.InvalidInput("an id in a request path must not be empty")
    return quote(value, safe="")


def _flag(value: bool) -> str:
    return "true" if value else "false"


def _query(**params: str | int | bool | None) -> dict[str, str | int]:
    """Query parameters in the engine's spelling, leaving out the unset ones."""
    return {
        key: _flag(value) if isinstance(value, bool) else value
        for key, value in params.items()
        if value is not None
    }


class _BearerAuth(httpx.Auth):
    def __init__(self, token: str) -> None:
        self._header = f"Bearer {token}"

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        request.headers["Authorization"] = self._header
        yield request


def _auth(settings: Settings) -> httpx.Auth | None:
    if settings.token:
        return _BearerAuth(settings.token)
    if settings.user:
        return httpx.BasicAuth(settings.user, settings.password or "")
    return None


def _verify(settings: Settings) -> ssl.SSLContext | bool:
    if not settings.tls_verify:
        return False
    if settings.ca_bundle is None:
        return True
    try:
        return ssl.create_default_context(cafile=str(settings.ca_bundle))
    except (OSError, ssl.SSLError) as error:
        raise errors.ConfigurationError(
            f"cannot use CAMUNDA_CA_BUNDLE {settings.ca_bundle}: {error}"
        ) from None


class EngineClient:
    """The REST calls camunda-relay makes, with typed errors and typed values.

    ``transport`` replaces the network (``httpx.MockTransport`` or an in-process fake engine).
    """

    def __init__(
        self, settings: Settings, *, transport: httpx.AsyncBaseTransport | None = None
    ) -> None:
        self._settings = settings
        self._timeout = httpx.Timeout(settings.request_timeout.total_seconds())
        self._gate = asyncio.Semaphore(MAX_CONCURRENT_REQUESTS)
        self._http = httpx.AsyncClient(
            base_url=settings.url,
            auth=_auth(settings),
            verify=_verify(settings),
            timeout=self._timeout,
            transport=transport,
            headers={"Accept": "application/json", "User-Agent": f"camunda-relay/{__version__}"},
            # Every gated request and a few long polls keep their connection between requests
            # (httpx keeps 20 by default: with 32 in flight, connections were closed and
            # opened again all the time).
            limits=httpx.Limits(
                max_connections=MAX_CONCURRENT_REQUESTS + _LONG_POLL_CONNECTIONS,
                max_keepalive_connections=MAX_CONCURRENT_REQUESTS + _LONG_POLL_CONNECTIONS,
            ),
        )

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> EngineClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.aclose()

    # -- the one place that talks to the engine ------------------------------------------------

    async def _send(
        self,
        method: str,
        path: str,
        *,
        json: object = None,
        params: _Params | None = None,
        data: Mapping[str, str] | None = None,
        files: Mapping[str, tuple[str, bytes, str]] | None = None,
        timeouts: httpx.Timeout | None = None,
        anonymous: bool = False,
        gated: bool = True,
    ) -> httpx.Response:
        """Send one request; return a 2xx response or raise the mapped :class:`EngineError`.

        At most :data:`MAX_CONCURRENT_REQUESTS` requests are in flight; the others wait here,
        in order. ``gated=False`` (the long poll) bypasses the gate: a poll waiting for tasks
        must not hold a slot that a completion or a reply needs.
        """
        if not gated:
            return await self._request(method, path, json, params, data, files, timeouts, anonymous)
        async with self._gate:
            return await self._request(method, path, json, params, data, files, timeouts, anonymous)

    async def _request(
        self,
        method: str,
        path: str,
        json: object,
        params: _Params | None,
        data: Mapping[str, str] | None,
        files: Mapping[str, tuple[str, bytes, str]] | None,
        timeouts: httpx.Timeout | None,
        anonymous: bool,
    ) -> httpx.Response:
        label = f"{method} {path}"
        started = time.monotonic()
        try:
            response = await self._http.request(
                method,
                path,
                json=json,
                params=params,
                data=data,
                files=files,
                timeout=timeouts or self._timeout,
                auth=None if anonymous else httpx.USE_CLIENT_DEFAULT,
            )
        except httpx.TransportError as error:
            _log.debug(
                "%s failed after %.0f ms: %s", label, _elapsed_ms(started), type(error).__name__
            )
            raise errors.from_transport_error(error, label) from error
        _log.debug("%s -> %d in %.0f ms", label, response.status_code, _elapsed_ms(started))
        if response.is_success:
            return response
        raise errors.from_response(response, label)

    async def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        response = await self._send(method, path, **kwargs)
        try:
            return response.json()
        except ValueError:
            raise errors.EngineError(
                "the engine's answer is not JSON (is CAMUNDA_URL the REST API?)",
                status=response.status_code,
                request=f"{method} {path}",
            ) from None

    async def _list(self, method: str, path: str, **kwargs: Any) -> list[dict[str, Any]]:
        result = await self._json(method, path, **kwargs)
        if not isinstance(result, list):
            raise errors.EngineError("expected a list from the engine", request=f"{method} {path}")
        return result

    async def _object(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        result = await self._json(method, path, **kwargs)
        if not isinstance(result, dict):
            raise errors.EngineError(
                "expected an object from the engine", request=f"{method} {path}"
            )
        return result

    async def _optional(self, path: str) -> dict[str, Any] | None:
        """GET one resource; None when the engine says it does not exist (404)."""
        try:
            return await self._object("GET", path)
        except errors.NotFound:
            return None

    # -- health ---------------------------------------------------------------------------------

    async def ready(self) -> bool:
        """Whether the engine answers its (unauthenticated) readiness probe. Never raises."""
        try:
            await self._send("GET", "/engine", anonymous=True)
        except (errors.EngineError, httpx.HTTPError, httpx.InvalidURL, RuntimeError):
            return False  # RuntimeError: the client is closed
        return True

    async def check_access(self) -> None:
        """Make one authenticated call, so wrong credentials or a wrong URL show at start-up."""
        url = self._settings.url
        try:
            await self._send("GET", "/process-definition/count")
        except errors.AuthenticationFailed as error:
            raise errors.AuthenticationFailed(
                _access_problem(self._settings, error.status),
                status=error.status,
                request=error.request,
            ) from None
        except errors.EngineUnavailable as error:
            raise errors.EngineUnavailable(
                f"the engine at {url} is not available: {error.message}", request=error.request
            ) from None
        except errors.NotFound:
            raise errors.ConfigurationError(
                f"{url} does not look like the Camunda REST API "
                "(GET /process-definition/count answered 404): check CAMUNDA_URL"
            ) from None

    # -- external tasks ---------------------------------------------------------------------

    async def fetch_and_lock(
        self,
        worker_id: str,
        topics: Sequence[TopicRequest],
        *,
        max_tasks: int,
        long_poll: timedelta,
    ) -> list[Task]:
        """Lock up to ``max_tasks`` tasks, waiting up to ``long_poll`` for one to appear."""
        if not worker_id:
            raise errors.InvalidInput("the worker id must not be empty")
        if not topics:
            raise errors.InvalidInput("fetch_and_lock needs at least one topic")
        if max_tasks < 1:
            raise errors.InvalidInput(f"max_tasks must be at least 1, not {max_tasks}")
        wait = min(max(long_poll, timedelta(0)), MAX_LONG_POLL)
        body = {
            "workerId": worker_id,
            "maxTasks": max_tasks,
            "usePriority": True,
            "asyncResponseTimeout": _ms(wait),
            "topics": [topic.body() for topic in topics],
        }
        margin = self._settings.request_timeout.total_seconds()
        timeouts = httpx.Timeout(margin, read=wait.total_seconds() + margin)
        path = "/external-task/fetchAndLock"
        locked = await self._list("POST", path, json=body, timeouts=timeouts, gated=False)
        return [_task(raw, worker_id) for raw in locked]

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
            body["variables"] = encode_all(variables)
        if local_variables:
            body["localVariables"] = encode_all(local_variables)
        await self._send("POST", f"/external-task/{_segment(task_id)}/complete", json=body)

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
        await self._send("POST", f"/external-task/{_segment(task_id)}/failure", json=body)

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
            body["variables"] = encode_all(variables)
        await self._send("POST", f"/external-task/{_segment(task_id)}/bpmnError", json=body)

    async def extend_lock(self, task_id: str, worker_id: str, duration: timedelta) -> None:
        """Set the lock to expire ``duration`` from now (not an increment)."""
        if _ms(duration) < 1:
            raise errors.InvalidInput("the new lock duration must be positive")
        body = {"workerId": worker_id, "newDuration": _ms(duration)}
        await self._send("POST", f"/external-task/{_segment(task_id)}/extendLock", json=body)

    async def unlock(self, task_id: str) -> None:
        """Release the lock at once, so that any worker can fetch the task again."""
        await self._send("POST", f"/external-task/{_segment(task_id)}/unlock")

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
            body["processVariables"] = encode_all(variables)
        await self._send("POST", "/message", json=body)

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
            body["variables"] = encode_all(variables)
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


def _elapsed_ms(started: float) -> float:
    return (time.monotonic() - started) * 1000


def _access_problem(settings: Settings, status: int | None) -> str:
    if status == 403:
        who = f"user {settings.user!r}" if settings.user else "this token"
        return f"the engine at {settings.url} refuses {who} access to process definitions"
    if settings.token:
        return f"the engine at {settings.url} refused the token: check CAMUNDA_TOKEN"
    if settings.user:
        return (
            f"the engine at {settings.url} refused user {settings.user!r}: check CAMUNDA_USER "
            "and CAMUNDA_PASSWORD (after a failed login the engine refuses that user for a "
            "few seconds)"
        )
    return f"the engine at {settings.url} requires a login: set CAMUNDA_USER and CAMUNDA_PASSWORD"


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
    )
