"""Settings: one frozen object, read from the environment (``CAMUNDA_*``) and a TOML file.

Precedence, lowest first: defaults, the TOML file (``CAMUNDA_CONFIG`` or ``--config``), the
environment. Loading is strict: an unknown key in the file, or an unknown ``CAMUNDA_*``
variable, is an error naming it, so a typo never silently falls back to a default. The
environment is passed in (a mapping), so tests need no monkeypatching.

Durations are ``timedelta`` objects; they become milliseconds only at the REST boundary.
"""

from __future__ import annotations

import dataclasses
import math
import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from camunda_relay.errors import ConfigurationError
from camunda_relay.oauth import shown_token_url

__all__ = [
    "ENV_PREFIX",
    "MAX_LOCK_DURATION",
    "MAX_LONG_POLL",
    "MAX_WORKER_ID",
    "Settings",
    "SettingsError",
    "masked",
]

ENV_PREFIX = "CAMUNDA_"

MAX_LONG_POLL = timedelta(minutes=30)
"""The engine refuses a fetch-and-lock ``asyncResponseTimeout`` above 30 minutes."""
MAX_LOCK_DURATION = timedelta(days=7)
"""A sane upper bound (the engine adds the lock to its clock as a Java ``long`` of ms and
stores the date; a lock is extended while a plain handler runs, so none needs to be long)."""
MAX_WORKER_ID = 255
"""The engine's ``WORKER_ID_`` column holds 255 characters; a longer id fails every fetch."""
MAX_DURATION = timedelta(days=3650)
"""Any other duration setting: ten years at most (a finite, representable value)."""

_URL_PASSWORD = re.compile(r"([a-z][a-z0-9+.-]*://[^:/@\s]*):[^@/\s]*@", re.IGNORECASE)
_KEYWORD_PASSWORD = re.compile(r"(password\s*=\s*)('(?:[^'\\]|\\.)*'|\S+)", re.IGNORECASE)


def masked(text: str) -> str:
    """``text`` with the password of any URL in it (``scheme://user:pw@``) and any libpq
    ``password=...`` keyword replaced by ``***``: how a URL or DSN may be shown."""
    return _KEYWORD_PASSWORD.sub(r"\1***", _URL_PASSWORD.sub(r"\1:***@", text))


# Variables of the prefix that belong to the engine application (engine/application.yaml) or
# to Spring's relaxed binding of ``camunda.bpm.*``; the Python side ignores them.
_ENGINE_VARIABLES = frozenset(
    {
        "CAMUNDA_PORT",
        "CAMUNDA_BIND_ADDRESS",
        "CAMUNDA_MANAGEMENT_PORT",
        "CAMUNDA_MANAGEMENT_ADDRESS",
        "CAMUNDA_DATA_DIR",
        "CAMUNDA_DB_URL",
        "CAMUNDA_DB_USER",
        "CAMUNDA_DB_PASSWORD",
        "CAMUNDA_REST_BASIC_AUTH",
        "CAMUNDA_WORKER_USER",
        "CAMUNDA_WORKER_PASSWORD",
        "CAMUNDA_WORKER_TENANTS",
        "CAMUNDA_JWT_ISSUER_URI",
        "CAMUNDA_JWT_AUDIENCE",
        "CAMUNDA_JWT_USER_CLAIM",
        "CAMUNDA_TLS_CERTIFICATE",
        "CAMUNDA_TLS_KEY",
        "CAMUNDA_TLS_KEYSTORE",
        "CAMUNDA_TLS_KEYSTORE_PASSWORD",
        "CAMUNDA_ENGINE_DIR",
        "CAMUNDA_ENGINE_CACHE",
        "CAMUNDA_CONFIG",
    }
)
# CAMUNDA_BPM_*: Spring's binding of camunda.bpm.*; CAMUNDA_RELAY_*: test hooks (failpoints).
_ENGINE_PREFIXES = ("CAMUNDA_BPM_", "CAMUNDA_RELAY_")


class SettingsError(ConfigurationError, ValueError):
    """A setting is unknown or has a value that cannot be used; the message names it."""


def _seconds(
    value: object, *, maximum: timedelta = MAX_DURATION, positive: bool = False
) -> timedelta:
    if isinstance(value, timedelta):
        seconds = value.total_seconds()
    elif isinstance(value, bool) or not isinstance(value, int | float | str):
        raise TypeError("expected a number of seconds")
    else:
        seconds = float(value)
    if not math.isfinite(seconds):
        raise ValueError(f"expected a finite number of seconds, not {value!r}")
    if seconds < 0:
        raise ValueError("must not be negative")
    if positive and seconds <= 0:
        raise ValueError("must be more than 0 seconds")
    if seconds > maximum.total_seconds():
        raise ValueError(f"at most {maximum.total_seconds():.0f} seconds, not {seconds:g}")
    return value if isinstance(value, timedelta) else timedelta(seconds=seconds)


def _bounded(
    *, maximum: timedelta = MAX_DURATION, positive: bool = False
) -> Callable[[object], timedelta]:
    return lambda value: _seconds(value, maximum=maximum, positive=positive)


def _bool(value: object) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in {"1", "true", "yes", "on"}:
        return True
    if text in {"0", "false", "no", "off"}:
        return False
    raise ValueError("expected true or false")


def _positive_int(value: object) -> int:
    if isinstance(value, bool):
        raise TypeError("expected a whole number")
    number = int(value) if isinstance(value, int | str) else None
    if number is None or number < 1:
        raise ValueError("expected a whole number of at least 1")
    return number


def _non_negative_int(value: object) -> int:
    if isinstance(value, bool):
        raise TypeError("expected a whole number")
    number = int(value) if isinstance(value, int | str) else None
    if number is None or number < 0:
        raise ValueError("expected a whole number of at least 0")
    return number


def _choice(value: object, choices: tuple[str, ...]) -> str:
    text = _text(value).strip().lower()
    if text not in choices:
        raise ValueError(f"expected one of {', '.join(choices)}")
    return text


def _text(value: object) -> str:
    if not isinstance(value, str):
        raise TypeError("expected text")
    return value


def _name(value: object) -> str:
    text = _text(value).strip()
    if not text:
        raise ValueError("expected a variable name")
    return text


def _optional_text(value: object) -> str | None:
    return _text(value) or None


def _optional_port(value: object) -> int | None:
    if isinstance(value, str) and not value.strip():
        return None
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise TypeError("expected a port number")
    try:
        port = int(value)
    except ValueError:
        raise ValueError(f"expected a port number, not {value!r}") from None
    if not 1 <= port <= 65535:
        raise ValueError(f"expected a port from 1 to 65535, not {port}")
    return port


def _optional_path(value: object) -> Path | None:
    text = _text(value)
    return Path(text) if text else None


FETCH_ORDERS = ("none", "create-time-asc", "create-time-desc")
"""CAMUNDA_FETCH_ORDER: the order of fetchAndLock's ``sorting`` (by the tasks' create time;
Camunda 7.21 or later, Operaton), applied after the priority when CAMUNDA_USE_PRIORITY is on."""

MIN_REPLY_SECRET = 16
"""The shortest secret the HTTP reply endpoint accepts (CAMUNDA_REPLY_SECRET)."""


@dataclass(frozen=True)
class Settings:
    """Everything the library, the worker and the CLI can be configured with."""

    url: str = field(default="http://localhost:8080/engine-rest", repr=False)
    user: str | None = None
    password: str | None = field(default=None, repr=False)
    token: str | None = field(default=None, repr=False)
    tls_verify: bool = True
    ca_bundle: Path | None = None
    request_timeout: timedelta = timedelta(seconds=30)
    worker_id: str | None = None
    max_in_flight: int = 32
    max_pending_replies: int = 10_000
    lock_duration: timedelta = timedelta(seconds=60)
    long_poll: timedelta = timedelta(seconds=20)
    use_priority: bool = True
    fetch_order: Literal["none", "create-time-asc", "create-time-desc"] = "none"
    retries: int = 3
    retry_timeout: timedelta = timedelta(seconds=10)
    reply_deadline: timedelta = timedelta(minutes=10)
    reply_secret: str | None = field(default=None, repr=False)
    shutdown_grace: timedelta = timedelta(seconds=25)
    # How often the worker asks the engine whether the instances of its running reply jobs
    # still wait for their replies (0: never), and how long a cancelled handler may clean up.
    cancel_check_interval: timedelta = timedelta(seconds=30)
    cancel_grace: timedelta = timedelta(seconds=10)
    journal: str = field(default=".camunda-relay/journal.sqlite3", repr=False)
    journal_lease: timedelta = timedelta(seconds=60)
    journal_retention: timedelta = timedelta(days=7)
    log_error_details: bool = False
    reconcile: Literal["off", "report", "incident", "resume"] = "report"
    reconcile_interval: timedelta = timedelta(minutes=5)
    reconcile_min_age: timedelta = timedelta(minutes=5)
    state_dir: Path = Path(".camunda-relay")
    http_address: str = "127.0.0.1"
    http_port: int | None = None
    log_format: Literal["text", "json"] = "text"
    url_resolve: Literal["off", "all"] = "off"
    oauth_token_url: str | None = None
    oauth_client_id: str | None = None
    oauth_client_secret: str | None = field(default=None, repr=False)
    oauth_scope: str | None = None
    oauth_audience: str | None = None
    oauth_client_auth: Literal["basic", "post"] = "basic"
    trace_variable: str = "traceparent"
    trace_state_variable: str = "tracestate"

    def __post_init__(self) -> None:
        for url in self.urls:
            shown = masked(url)
            if not url.startswith(("http://", "https://")):
                raise SettingsError(f"CAMUNDA_URL must start with http:// or https://: {shown}")
            _check_url(shown, url)
        if self.url_resolve == "all" and len(self.urls) > 1:
            raise SettingsError(
                "CAMUNDA_URL_RESOLVE=all expands one host name to its addresses: give one URL "
                "in CAMUNDA_URL, not a list"
            )
        if self.worker_id is not None and len(self.worker_id) > MAX_WORKER_ID:
            raise SettingsError(
                f"the worker id (CAMUNDA_WORKER_ID, --worker-id) has {len(self.worker_id)} "
                f"characters; the engine keeps at most {MAX_WORKER_ID}"
            )
        if self.fetch_order not in FETCH_ORDERS:
            raise SettingsError(f"CAMUNDA_FETCH_ORDER must be one of {', '.join(FETCH_ORDERS)}")
        if self.token and self.user:
            raise SettingsError("set either CAMUNDA_TOKEN or CAMUNDA_USER, not both")
        if self.user and self.password is None:
            raise SettingsError("CAMUNDA_USER is set but CAMUNDA_PASSWORD is not")
        _check_oauth(self)
        if self.reply_secret is not None:
            _check_reply_secret(self)
        if self.reply_secret is not None and len(self.reply_secret) < MIN_REPLY_SECRET:
            raise SettingsError(
                f"CAMUNDA_REPLY_SECRET must have at least {MIN_REPLY_SECRET} characters "
                "(e.g. python -c 'import secrets; print(secrets.token_urlsafe(32))')"
            )

    @classmethod
    def load(
        cls,
        environ: Mapping[str, str],
        *,
        config_file: Path | None = None,
        overrides: Mapping[str, object] | None = None,
    ) -> Settings:
        """Defaults, then the TOML file, then the environment, then explicit overrides."""
        values: dict[str, object] = {}
        path = config_file or _optional_path(environ.get("CAMUNDA_CONFIG", ""))
        if path is not None:
            values.update(_read_toml(path))
        values.update(_read_env(environ))
        values.update({k: v for k, v in (overrides or {}).items() if v is not None})
        return cls._build(values)

    @classmethod
    def _build(cls, values: Mapping[str, object]) -> Settings:
        converted: dict[str, Any] = {}
        for name, raw in values.items():
            convert = _CONVERTERS[name]
            try:
                converted[name] = convert(raw)
            except (TypeError, ValueError) as error:
                raise SettingsError(f"setting {name} ({_env_name(name)}): {error}") from None
        return cls(**converted)

    def __repr__(self) -> str:
        shown = {"url": self.shown_url, "journal": self.shown_journal}
        fields = (
            f"{f.name}={shown.get(f.name, getattr(self, f.name))!r}"
            for f in dataclasses.fields(self)
            if f.repr or f.name in shown
        )
        return f"Settings({', '.join(fields)})"

    @property
    def urls(self) -> tuple[str, ...]:
        """The engine nodes' REST URLs: ``url`` is one URL or a comma-separated list of the
        nodes of one engine cluster (one database)."""
        return tuple(part.strip().rstrip("/") for part in self.url.split(",") if part.strip())

    @property
    def shown_url(self) -> str:
        """``url`` as it may be printed: a password in it masked."""
        return masked(self.url)

    @property
    def shown_journal(self) -> str:
        """``journal`` as it may be printed: a DSN's password masked."""
        return masked(self.journal)

    @property
    def is_default_password(self) -> bool:
        return self.user == "demo" and self.password == "demo"  # noqa: S105


_CONVERTERS: dict[str, Callable[[object], object]] = {
    "url": lambda v: _text(v).strip().rstrip("/"),
    "user": _optional_text,
    "password": _text,
    "token": _optional_text,
    "tls_verify": _bool,
    "ca_bundle": _optional_path,
    "request_timeout": _bounded(maximum=timedelta(hours=1), positive=True),
    "worker_id": _optional_text,
    "max_in_flight": _positive_int,
    "max_pending_replies": _positive_int,
    "lock_duration": _bounded(maximum=MAX_LOCK_DURATION, positive=True),
    "long_poll": _bounded(maximum=MAX_LONG_POLL),
    "use_priority": _bool,
    "fetch_order": lambda v: _choice(v, FETCH_ORDERS),
    "retries": _non_negative_int,
    "retry_timeout": _seconds,
    "reply_deadline": _seconds,
    "reply_secret": _optional_text,
    "shutdown_grace": _seconds,
    "cancel_check_interval": _seconds,
    "cancel_grace": _seconds,
    "journal": _text,
    "journal_lease": _bounded(positive=True),
    "journal_retention": _seconds,
    "log_error_details": _bool,
    "reconcile": lambda v: _choice(v, ("off", "report", "incident", "resume")),
    "reconcile_interval": _seconds,
    "reconcile_min_age": _seconds,
    "state_dir": lambda v: Path(_text(v)),
    "http_address": lambda v: _text(v).strip() or "127.0.0.1",
    "http_port": lambda v: _optional_port(v),
    "log_format": lambda v: _choice(v, ("text", "json")),
    "url_resolve": lambda v: _choice(v, ("off", "all")),
    "oauth_token_url": lambda v: _optional_text(_text(v).strip()),
    "oauth_client_id": _optional_text,
    "oauth_client_secret": _optional_text,
    "oauth_scope": _optional_text,
    "oauth_audience": _optional_text,
    "oauth_client_auth": lambda v: _choice(v, ("basic", "post")),
    "trace_variable": lambda v: _name(v),
    "trace_state_variable": lambda v: _name(v),
}
assert set(_CONVERTERS) == {f.name for f in dataclasses.fields(Settings)}


def _check_url(shown: str, url: str) -> None:
    """A URL with a host and, if given, a port in range: else one line naming it."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError when out of range or not a number
    except ValueError as error:
        raise SettingsError(f"CAMUNDA_URL {shown} is not a valid URL ({error})") from None
    if not parts.hostname:
        raise SettingsError(f"CAMUNDA_URL {shown} names no host")


_LOOPBACK = ("localhost", "127.0.0.1", "::1")


def _check_oauth(settings: Settings) -> None:
    """OAuth2 client credentials: all three given, alone, and sent over TLS off loopback."""
    url, client, secret = (
        settings.oauth_token_url,
        settings.oauth_client_id,
        settings.oauth_client_secret,
    )
    if url is None and client is None and secret is None:
        return
    if url is None or client is None or secret is None:
        raise SettingsError(
            "OAuth2 needs CAMUNDA_OAUTH_TOKEN_URL, CAMUNDA_OAUTH_CLIENT_ID and "
            "CAMUNDA_OAUTH_CLIENT_SECRET together"
        )
    if settings.user or settings.token:
        raise SettingsError("set either CAMUNDA_OAUTH_* or CAMUNDA_USER/CAMUNDA_TOKEN, not both")
    shown = shown_token_url(url)
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError when out of range or not a number
    except ValueError as error:
        raise SettingsError(
            f"CAMUNDA_OAUTH_TOKEN_URL {shown} is not a valid URL ({error})"
        ) from None
    host = parts.hostname or ""
    if parts.scheme not in ("http", "https") or not host:
        raise SettingsError(f"CAMUNDA_OAUTH_TOKEN_URL must be an http(s) URL with a host: {shown}")
    if parts.scheme == "http" and not (host in _LOOPBACK or host.startswith("127.")):
        raise SettingsError(
            f"CAMUNDA_OAUTH_TOKEN_URL must use https:// off loopback (the client secret goes "
            f"there): {shown}"
        )


def _check_reply_secret(settings: Settings) -> None:
    """The reply secret without the whitespace around it (a Kubernetes Secret made from a
    file ends in a newline: the header a caller sends never does); whitespace inside it is
    refused, since no ``Authorization`` header can carry it."""
    secret = settings.reply_secret or ""
    stripped = secret.strip()
    if any(character.isspace() for character in stripped):
        raise SettingsError(
            "CAMUNDA_REPLY_SECRET has whitespace inside it: no Authorization header can send "
            "it; use a secret without spaces or line breaks"
        )
    if stripped != secret:
        object.__setattr__(settings, "reply_secret", stripped)


def _env_name(name: str) -> str:
    return ENV_PREFIX + name.upper()


def _read_env(environ: Mapping[str, str]) -> dict[str, object]:
    known = {_env_name(name): name for name in _CONVERTERS}
    values: dict[str, object] = {}
    for key, value in environ.items():
        if not key.startswith(ENV_PREFIX) or key in _ENGINE_VARIABLES:
            continue
        if key.startswith(_ENGINE_PREFIXES):
            continue
        if key not in known:
            raise SettingsError(f"unknown setting {key} in the environment")
        values[known[key]] = value
    return values


def _read_toml(path: Path) -> dict[str, object]:
    try:
        with path.open("rb") as handle:
            data = tomllib.load(handle)
    except OSError as error:
        raise SettingsError(f"cannot read settings file {path}: {error.strerror}") from None
    except tomllib.TOMLDecodeError as error:
        raise SettingsError(f"settings file {path} is not valid TOML: {error}") from None
    table = data.get("camunda-relay", data)
    if not isinstance(table, dict):
        raise SettingsError(f"settings file {path}: [camunda-relay] must be a table")
    unknown = sorted(set(table) - set(_CONVERTERS))
    if unknown:
        raise SettingsError(f"settings file {path}: unknown setting {unknown[0]!r}")
    return dict(table)
