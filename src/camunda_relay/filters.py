"""Which tasks of a topic a worker fetches: the per-topic filters of fetchAndLock.

A :class:`TopicFilter` is checked when the handler is registered (one
:class:`~camunda_relay.errors.ConfigurationError` naming the option) and becomes part of
the topic's body in ``POST /external-task/fetchAndLock``. The names follow the Java and JS
external-task clients (``tenantIdIn``, ``withoutTenantId``, ``processDefinitionKeyIn``, ...).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType

from camunda_relay.errors import ConfigurationError

__all__ = ["TopicFilter"]

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
