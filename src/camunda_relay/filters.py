"""Which tasks of a topic a worker fetches: the per-topic filters of fetchAndLock.

A :class:`TopicFilter` is checked when the handler is registered (one
:class:`~camunda_relay.errors.ConfigurationError` naming the option) and becomes part of
the topic's body in ``POST /external-task/fetchAndLock``. The names follow the Java and JS
external-task clients (``tenantIdIn``, ``withoutTenantId``, ``processDefinitionKeyIn``, ...).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType

from camunda_relay.errors import ConfigurationError
from camunda_relay.task import Task

__all__ = ["TopicFilter", "filter_key"]

_PLAIN = (str, int, float, bool)


def _names(option: str, values: Sequence[str] | None) -> tuple[str, ...] | None:
    if values is None:
        return None
    if isinstance(values, str):
        raise ConfigurationError(f"{option} must be a list of strings, not a string")
    names = tuple(values)
    if not names or not all(isinstance(name, str) and name for name in names):
        raise ConfigurationError(f"{option} must be a non-empty list of non-empty strings")
    return names


@dataclass(frozen=True)
class TopicFilter:
    """Only tasks matching every given attribute are fetched (None: no restriction).

    ``process_variables`` is the exception: the engine fetches a task when any one of the
    given variables equals its value (measured on Camunda 7.24).
    """

    tenant_ids: tuple[str, ...] | None = None
    without_tenant_id: bool = False
    process_definition_ids: tuple[str, ...] | None = None
    process_definition_keys: tuple[str, ...] | None = None
    process_definition_version_tag: str | None = None
    business_key: str | None = None
    process_variables: Mapping[str, object] = field(default_factory=dict)

    @classmethod
    def of(
        cls,
        *,
        tenant_ids: Sequence[str] | None = None,
        without_tenant_id: bool = False,
        process_definition_ids: Sequence[str] | None = None,
        process_definition_keys: Sequence[str] | None = None,
        process_definition_version_tag: str | None = None,
        business_key: str | None = None,
        process_variables: Mapping[str, object] | None = None,
    ) -> TopicFilter:
        """Check the options as a user gives them (lists, a mapping) and freeze them."""
        tenants = _names("tenant_ids", tenant_ids)
        if not isinstance(without_tenant_id, bool):
            raise ConfigurationError("without_tenant_id must be True or False")
        if tenants is not None and without_tenant_id:
            raise ConfigurationError("tenant_ids and without_tenant_id exclude each other")
        for option, text in (
            ("process_definition_version_tag", process_definition_version_tag),
            ("business_key", business_key),
        ):
            if text is not None and (not isinstance(text, str) or not text):
                raise ConfigurationError(f"{option} must be a non-empty string")
        if business_key is not None and len(business_key) > 255:
            raise ConfigurationError("business_key is longer than 255 characters")
        matched = dict(process_variables or {})
        for name, value in matched.items():
            if not isinstance(name, str) or not name:
                raise ConfigurationError("process_variables names must be non-empty strings")
            if value is None or not isinstance(value, _PLAIN):
                raise ConfigurationError(
                    f"process_variables[{name!r}] must be a str, int, float or bool "
                    f"(the engine matches by equality), got {type(value).__name__}"
                )
        return cls(
            tenant_ids=tenants,
            without_tenant_id=without_tenant_id,
            process_definition_ids=_names("process_definition_ids", process_definition_ids),
            process_definition_keys=_names("process_definition_keys", process_definition_keys),
            process_definition_version_tag=process_definition_version_tag,
            business_key=business_key,
            process_variables=MappingProxyType(matched),
        )

    def body(self) -> dict[str, object]:
        """The fields of fetchAndLock's topic body (only those that restrict)."""
        body: dict[str, object] = {}
        if self.tenant_ids is not None:
            body["tenantIdIn"] = list(self.tenant_ids)
        if self.without_tenant_id:
            body["withoutTenantId"] = True
        if self.process_definition_ids is not None:
            body["processDefinitionIdIn"] = list(self.process_definition_ids)
        if self.process_definition_keys is not None:
            body["processDefinitionKeyIn"] = list(self.process_definition_keys)
        if self.process_definition_version_tag is not None:
            body["processDefinitionVersionTag"] = self.process_definition_version_tag
        if self.business_key is not None:
            body["businessKey"] = self.business_key
        if self.process_variables:
            body["processVariables"] = dict(self.process_variables)
        return body

    @property
    def key(self) -> str:
        """A stable name of these filters (:func:`filter_key`)."""
        return filter_key(self)

    def matches(self, task: Task) -> bool | None:
        """Whether fetchAndLock with these filters would have fetched ``task`` (None: it
        cannot be told from the task: a version tag, which a task record does not carry)."""
        if self.tenant_ids is not None and task.tenant_id not in self.tenant_ids:
            return False
        if self.without_tenant_id and task.tenant_id is not None:
            return False
        ids, keys = self.process_definition_ids, self.process_definition_keys
        if ids is not None and task.process_definition_id not in ids:
            return False
        if keys is not None and task.process_definition_key not in keys:
            return False
        if self.business_key is not None and task.business_key != self.business_key:
            return False
        wanted = self.process_variables
        if wanted and not any(
            name in task.variables and task.variables[name] == value
            for name, value in wanted.items()
        ):
            return False
        return None if self.process_definition_version_tag is not None else True


def filter_key(filters: TopicFilter | None) -> str:
    """A stable name of a registration's fetch filters, kept with every job the
    registration takes: ``""`` for none, else a hash of the restricting fields (lists
    sorted), equal for equal filters in any process and version. It names the filters
    without showing them (a tenant id or a variable's value stays out of the journal)."""
    body = filters.body() if filters is not None else {}
    if not body:
        return ""
    canonical = {
        name: sorted(value) if isinstance(value, list) else value for name, value in body.items()
    }
    text = json.dumps(canonical, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()[:32]
