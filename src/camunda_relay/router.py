"""Registering handlers: plain functions (sync or async) for a topic, on a :class:`Router`.

Registration does no I/O and touches no global state; a duplicate topic or an unusable
option is rejected at once, at import time of the user's module, not when the first task
arrives.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import TypeAlias, TypeVar, cast

from camunda_relay.errors import ConfigurationError
from camunda_relay.filters import TopicFilter, filter_key
from camunda_relay.settings import MAX_LOCK_DURATION
from camunda_relay.task import Task
from camunda_relay.typed import typed_handler

__all__ = ["Handler", "Registration", "Reply", "Router"]

Result: TypeAlias = Mapping[str, object] | None
Handler: TypeAlias = Callable[[Task], Result] | Callable[[Task], Awaitable[Result]]
H = TypeVar("H", bound=Handler)

CompleteVariables: TypeAlias = Mapping[str, object] | Callable[[Task], Mapping[str, object]]


@dataclass(frozen=True)
class Reply:
    """Complete the task at once, run the handler in the background, then correlate.

    ``message`` is the name of the message the process waits for; the handler's result is
    sent with it as process variables. The message goes to the process instance the task
    came from; ``by_business_key`` adds the business key to the correlation (it must then
    match as well). ``deadline`` bounds how long delivery is retried (None: the worker's
    ``reply_deadline`` setting); past it, or when the work fails for good, the waiting
    execution gets an incident. ``complete_variables`` are sent with the completion itself
    (a mapping, or a function of the task) as process variables, ``complete_local_variables``
    likewise set in the task's own scope (the Java and JS clients' ``complete(task, vars,
    localVars)``): the completion comes before the handler runs, so neither comes from the
    handler.
    """

    message: str
    by_business_key: bool = False
    deadline: timedelta | None = None
    complete_variables: CompleteVariables | None = None
    complete_local_variables: CompleteVariables | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.message, str) or not self.message.strip():
            raise ConfigurationError("reply message name must be a non-empty string")
        if self.deadline is not None and self.deadline <= timedelta(0):
            raise ConfigurationError(f"reply deadline must be positive, got {self.deadline}")
        for name in ("complete_variables", "complete_local_variables"):
            given = getattr(self, name)
            if given is not None and not (callable(given) or isinstance(given, Mapping)):
                raise ConfigurationError(
                    f"reply {name} must be a mapping or a function of the task, "
                    f"got {type(given).__name__}"
                )


@dataclass(frozen=True)
class Registration:
    """One topic's handler and its options."""

    topic: str
    handler: Handler
    is_async: bool
    reply: Reply | None = None
    lock_duration: timedelta | None = None
    variables: tuple[str, ...] | None = None
    retries: int | None = None
    retry_timeout: timedelta | None = None
    local_variables: bool = False
    filters: TopicFilter | None = None
    extension_properties: bool = False

    @property
    def filter_key(self) -> str:
        """The name of this registration's fetch filters that its jobs carry in the journal
        (``""``: none); a worker takes over only jobs taken under the same key."""
        return filter_key(self.filters)

    @property
    def name(self) -> str:
        return getattr(self.handler, "__qualname__", repr(self.handler))


class Router:
    """A set of topic handlers; a worker runs one or more routers."""

    def __init__(self) -> None:
        self._registrations: dict[str, Registration] = {}

    def task(
        self,
        topic: str,
        *,
        reply: str | Reply | None = None,
        lock_duration: timedelta | None = None,
        variables: Sequence[str] | None = None,
        retries: int | None = None,
        retry_timeout: timedelta | None = None,
        local_variables: bool = False,
        tenant_ids: Sequence[str] | None = None,
        without_tenant_id: bool = False,
        process_definition_ids: Sequence[str] | None = None,
        process_definition_keys: Sequence[str] | None = None,
        process_definition_version_tag: str | None = None,
        business_key: str | None = None,
        process_variables: Mapping[str, object] | None = None,
        extension_properties: bool = False,
    ) -> Callable[[H], H]:
        """Register the decorated function as the handler of ``topic``.

        ``reply="message_name"`` (or a :class:`Reply`) turns the topic into "complete now,
        correlate the message when the work is done". ``variables`` limits the variables
        fetched with the task (default: all). ``retries`` and ``retry_timeout`` override the
        worker's retry policy for this topic. ``local_variables=True`` fetches the variables
        of the task's own scope only (``task.variables`` then holds those).

        The filters limit which of the topic's tasks this worker fetches (each given one
        must match): ``tenant_ids`` (or ``without_tenant_id=True``),
        ``process_definition_ids``, ``process_definition_keys``,
        ``process_definition_version_tag``, ``business_key`` and ``process_variables``
        (name → value, by equality; the engine fetches a task when *any* of the names
        matches, while the other filters must all match).

        A handler may take typed variables after the task and return a dataclass or a
        pydantic model (:mod:`camunda_relay.typed`). ``extension_properties=True`` fetches
        the activity's extension properties (``camunda:property`` in the model) into
        ``task.extension_properties``.
        """
        reply, fetched = _checked(topic, reply, lock_duration, retries, variables, local_variables)
        if topic in self._registrations:
            raise ConfigurationError(f"topic {topic!r} is already registered")
        if not isinstance(extension_properties, bool):
            raise ConfigurationError("extension_properties must be True or False")
        filters = TopicFilter.of(
            tenant_ids=tenant_ids,
            without_tenant_id=without_tenant_id,
            process_definition_ids=process_definition_ids,
            process_definition_keys=process_definition_keys,
            process_definition_version_tag=process_definition_version_tag,
            business_key=business_key,
            process_variables=process_variables,
        )

        def register(handler: H) -> H:
            if not callable(handler):
                raise ConfigurationError(f"handler for {topic!r} is not callable")
            if topic in self._registrations:
                raise ConfigurationError(f"topic {topic!r} is already registered")
            runs = cast(Handler, typed_handler(handler) or handler)
            self._registrations[topic] = Registration(
                topic=topic,
                handler=runs,
                is_async=inspect.iscoroutinefunction(runs),
                reply=reply,
                lock_duration=lock_duration,
                variables=fetched,
                retries=retries,
                retry_timeout=retry_timeout,
                local_variables=local_variables,
                filters=filters if filters.body() else None,
                extension_properties=extension_properties,
            )
            return handler

        return register

    def include(self, other: Router) -> None:
        """Add every registration of ``other``; a topic registered twice is an error."""
        for registration in other:
            if registration.topic in self._registrations:
                raise ConfigurationError(f"topic {registration.topic!r} is already registered")
            self._registrations[registration.topic] = registration

    def __iter__(self) -> Iterator[Registration]:
        return iter(self._registrations.values())

    def __len__(self) -> int:
        return len(self._registrations)

    def __getitem__(self, topic: str) -> Registration:
        return self._registrations[topic]

    def __contains__(self, topic: object) -> bool:
        return topic in self._registrations

    @property
    def topics(self) -> tuple[str, ...]:
        return tuple(self._registrations)


def _checked(
    topic: object,
    reply: str | Reply | None,
    lock_duration: timedelta | None,
    retries: int | None,
    variables: Sequence[str] | None,
    local_variables: object,
) -> tuple[Reply | None, tuple[str, ...] | None]:
    """The options of :meth:`Router.task` other than the fetch filters, checked: the reply
    as a :class:`Reply`, the variable names as a tuple."""
    if not isinstance(topic, str) or not topic.strip():
        raise ConfigurationError("topic must be a non-empty string")
    if isinstance(reply, str):
        reply = Reply(message=reply)
    if reply is not None and not isinstance(reply, Reply):
        raise ConfigurationError(f"reply must be a message name or a Reply, got {reply!r}")
    if lock_duration is not None and lock_duration < timedelta(seconds=1):
        raise ConfigurationError(f"lock_duration must be at least 1 s, got {lock_duration}")
    if lock_duration is not None and lock_duration > MAX_LOCK_DURATION:
        raise ConfigurationError(
            f"lock_duration must be at most {MAX_LOCK_DURATION}, got {lock_duration}"
        )
    if retries is not None and retries < 0:
        raise ConfigurationError(f"retries must be 0 or more, got {retries}")
    if isinstance(variables, str):
        raise ConfigurationError("variables must be a list of names, not a string")
    if not isinstance(local_variables, bool):
        raise ConfigurationError("local_variables must be True or False")
    return reply, tuple(variables) if variables is not None else None
