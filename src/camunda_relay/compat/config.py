"""The client's ``config`` keys, each mapped to the camunda-relay setting that means the same,
or refused with one line naming it.

======================== ================================================================
client key               camunda-relay
======================== ================================================================
maxTasks                 ``max_in_flight``: tasks locked at once (run in parallel here,
                         one after another in the client); the client's default 1 applies
asyncResponseTimeout     ``long_poll`` (ms), client default 30000
lockDuration             ``lock_duration`` (ms), client default 300000; extended while a
                         handler runs
retries                  ``retries``: for a handler that raises (the client never reported
                         those; ``task.failure()`` brings its own ``max_retries``)
retryTimeout             ``retry_timeout`` (ms), likewise
httpTimeoutMillis        ``request_timeout`` (ms); a long poll waits asyncResponseTimeout
                         plus this
timeoutDeltaMillis       refused: the long poll's margin is ``httpTimeoutMillis`` here
sleepSeconds             the longest pause after an engine error (backoff from 0.5 s up to
                         it; an empty topic is not an error and costs no pause)
auth_basic               ``user`` and ``password``
auth_bearer              ``token`` (text, or ``{"access_token": ...}``)
isDebug                  DEBUG level for the ``camunda_relay`` loggers (requests and
                         outcomes; never a body or a variable's value)
includeExtensionProperties  fetch the activity's extension properties (client default on)
deserializeValues        False: Json variables read as JSON text, as in the client
usePriority              ``use_priority``, client default False
sorting                  ``fetch_order``: ``[{"sortBy": "createTime", "sortOrder": "asc"}]``
                         or ``"desc"``; None: no order
======================== ================================================================

Any other key is refused: a typo would otherwise fall back to a default unnoticed. Settings
the client has no key for (the journal, the reply deadline, the URL when ``base_url`` is not
given) come from the ``CAMUNDA_*`` environment as for every camunda-relay worker; a key given
here wins over its variable, and the client's default applies only when neither is set.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import timedelta

from camunda_relay.backoff import Backoff
from camunda_relay.errors import ConfigurationError
from camunda_relay.settings import ENV_PREFIX, Settings, SettingsError
from camunda_relay.worker.context import POLL_BACKOFF

__all__ = ["CLIENT_DEFAULTS", "CompatConfig", "compat_config"]

CLIENT_DEFAULTS: Mapping[str, object] = {
    "max_in_flight": 1,
    "long_poll": timedelta(milliseconds=30000),
    "lock_duration": timedelta(milliseconds=300000),
    "use_priority": False,
}
"""The client's defaults where they differ from camunda-relay's (used when neither the
``config`` nor the environment sets them)."""

REFUSED = {
    "timeoutDeltaMillis": "camunda-relay waits asyncResponseTimeout plus httpTimeoutMillis for "
    "a long poll: drop timeoutDeltaMillis (or raise httpTimeoutMillis)",
}


@dataclass(frozen=True)
class CompatConfig:
    """What a client ``config`` comes to: the settings and the parts beside them."""

    settings: Settings
    poll_backoff: Backoff = POLL_BACKOFF
    debug: bool = False
    extension_properties: bool = True
    json_as_text: bool = False


def _ms(key: str, value: object) -> timedelta:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigurationError(f"config key {key!r} must be a number of milliseconds")
    return timedelta(milliseconds=value)


def _int(key: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigurationError(f"config key {key!r} must be a whole number")
    return value


def _flag(key: str, value: object) -> bool:
    if not isinstance(value, bool):
        raise ConfigurationError(f"config key {key!r} must be True or False")
    return value


def _auth_basic(key: str, value: object) -> dict[str, object]:
    if not isinstance(value, Mapping) or set(value) != {"username", "password"}:
        raise ConfigurationError(f"config key {key!r} must be {{'username': ..., 'password': ...}}")
    return {"user": value["username"], "password": value["password"]}


def _auth_bearer(key: str, value: object) -> str:
    token = value.get("access_token") if isinstance(value, Mapping) else value
    if not isinstance(token, str) or not token:
        raise ConfigurationError(f"config key {key!r} must be a token or {{'access_token': ...}}")
    return token.removeprefix("Bearer ").removeprefix("bearer ")


def _sorting(key: str, value: object) -> str:
    if value is None or value == []:
        return "none"
    if isinstance(value, list) and len(value) == 1 and isinstance(value[0], Mapping):
        order = value[0]
        if order.get("sortBy") == "createTime" and order.get("sortOrder") in ("asc", "desc"):
            return f"create-time-{order['sortOrder']}"
    raise ConfigurationError(
        f"config key {key!r}: camunda-relay orders by create time only: "
        "[{'sortBy': 'createTime', 'sortOrder': 'asc' or 'desc'}] or None"
    )


_SETTINGS: dict[str, tuple[str, Callable[[str, object], object]]] = {
    "maxTasks": ("max_in_flight", _int),
    "asyncResponseTimeout": ("long_poll", _ms),
    "lockDuration": ("lock_duration", _ms),
    "retries": ("retries", _int),
    "retryTimeout": ("retry_timeout", _ms),
    "httpTimeoutMillis": ("request_timeout", _ms),
    "usePriority": ("use_priority", _flag),
    "sorting": ("fetch_order", _sorting),
    "auth_bearer": ("token", _auth_bearer),
}
_OTHERS = frozenset(
    {"auth_basic", "sleepSeconds", "isDebug", "includeExtensionProperties", "deserializeValues"}
)
KEYS = frozenset(_SETTINGS) | _OTHERS | frozenset(REFUSED)
"""Every key of the client's ``config`` this module knows (mapped or refused)."""


def _overrides(config: Mapping[str, object]) -> dict[str, object]:
    """The settings the mapped keys give, each checked alone so its error names the key."""
    overrides: dict[str, object] = {}
    for key, value in config.items():
        if key == "auth_basic":
            part = _auth_basic(key, value)
        elif key in _SETTINGS:
            name, convert = _SETTINGS[key]
            part = {name: convert(key, value)}
        else:
            continue
        try:
            Settings.load({}, overrides=part)
        except SettingsError as error:
            raise ConfigurationError(f"config key {key!r}: {error}") from None
        overrides.update(part)
    return overrides


def _backoff(config: Mapping[str, object]) -> Backoff:
    if "sleepSeconds" not in config:
        return POLL_BACKOFF
    seconds = config["sleepSeconds"]
    if isinstance(seconds, bool) or not isinstance(seconds, int | float) or seconds <= 0:
        raise ConfigurationError("config key 'sleepSeconds' must be a number of seconds above 0")
    cap = timedelta(seconds=seconds)
    return Backoff(base=min(POLL_BACKOFF.base, cap), cap=cap)


def compat_config(
    config: Mapping[str, object] | None,
    environ: Mapping[str, str],
    *,
    base_url: str | None = None,
    worker_id: str | None = None,
) -> CompatConfig:
    """The client's ``config`` (and ``base_url``, ``worker_id``) over the environment's
    settings; an unknown or refused key is a :class:`ConfigurationError` naming it."""
    config = dict(config or {})
    for key in config:
        if key in REFUSED:
            raise ConfigurationError(f"config key {key!r} is not supported: {REFUSED[key]}")
        if key not in KEYS:
            raise ConfigurationError(
                f"unknown config key {key!r} (known: {', '.join(sorted(KEYS))})"
            )
    overrides = {
        name: value
        for name, value in CLIENT_DEFAULTS.items()
        if f"{ENV_PREFIX}{name.upper()}" not in environ
    }
    overrides.update(_overrides(config))
    if base_url is not None:
        overrides["url"] = base_url
    if worker_id is not None:
        overrides["worker_id"] = worker_id
    try:
        settings = Settings.load(environ, overrides=overrides)
    except SettingsError as error:
        raise ConfigurationError(str(error)) from None
    return CompatConfig(
        settings=settings,
        poll_backoff=_backoff(config),
        debug=_flag("isDebug", config.get("isDebug", False)),
        extension_properties=_flag(
            "includeExtensionProperties", config.get("includeExtensionProperties", True)
        ),
        json_as_text=not _flag("deserializeValues", config.get("deserializeValues", True)),
    )
