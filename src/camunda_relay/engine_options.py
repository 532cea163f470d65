"""What one run of the bundled engine is made of: its options, its record and its users.

:class:`EngineOptions` is how to run one engine process (port, state folder, administrator,
database, bind address, HTTPS, worker user); :class:`EngineInfo` is what ``engine.json``
records of a running one. The least-privilege worker user's password is made once at random
and kept in the state folder, readable by its owner only (:func:`worker_password`).
Starting and stopping live in :mod:`camunda_relay.bundled_engine`.
"""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from camunda_relay.engine_flavours import DEFAULT_FLAVOUR, EngineFlavour
from camunda_relay.errors import ConfigurationError
from camunda_relay.files import write_private

__all__ = [
    "DEFAULT_PASSWORD",
    "DEFAULT_USER",
    "WORKER_PASSWORD_FILE",
    "WORKER_USER",
    "EngineInfo",
    "EngineOptions",
    "Jwt",
    "Postgres",
    "Tls",
    "read_worker_password",
    "worker_password",
]

DEFAULT_USER = "demo"
DEFAULT_PASSWORD = "demo"  # noqa: S105 - the documented local default, never used elsewhere
# The least-privilege worker user (the engine's WorkerAccess; ids are letters and digits).
WORKER_USER = "relayworker"
WORKER_PASSWORD_FILE = "worker-password"  # noqa: S105 - a file name
_WILDCARD_ADDRESSES = frozenset({"", "0.0.0.0", "::", "[::]"})  # noqa: S104 - names, no bind


@dataclass(frozen=True)
class Postgres:
    """Connection settings for running the engine on PostgreSQL instead of embedded H2."""

    jdbc_url: str
    user: str
    password: str = field(repr=False)


@dataclass(frozen=True)
class Tls:
    """HTTPS for the engine: a PEM certificate chain and its unencrypted key, or a PKCS#12
    file and its password (``CAMUNDA_TLS_*``)."""

    certificate: Path | None = None
    key: Path | None = None
    keystore: Path | None = None
    keystore_password: str = field(default="", repr=False)

    @classmethod
    def from_environment(cls, environ: Mapping[str, str]) -> Tls | None:
        """The ``CAMUNDA_TLS_*`` variables, or None when none is set (plain HTTP)."""

        def path(name: str) -> Path | None:
            value = environ.get(name, "").strip()
            return Path(value) if value else None

        tls = cls(
            certificate=path("CAMUNDA_TLS_CERTIFICATE"),
            key=path("CAMUNDA_TLS_KEY"),
            keystore=path("CAMUNDA_TLS_KEYSTORE"),
            keystore_password=environ.get("CAMUNDA_TLS_KEYSTORE_PASSWORD", ""),
        )
        return tls if (tls.certificate or tls.key or tls.keystore) else None

    def variables(self) -> dict[str, str]:
        """The engine's variables; paths made absolute (the engine runs in the state dir)."""
        env: dict[str, str] = {}
        for name, value in (
            ("CAMUNDA_TLS_CERTIFICATE", self.certificate),
            ("CAMUNDA_TLS_KEY", self.key),
            ("CAMUNDA_TLS_KEYSTORE", self.keystore),
        ):
            if value is not None:
                env[name] = str(value.resolve())
        if self.keystore is not None:
            env["CAMUNDA_TLS_KEYSTORE_PASSWORD"] = self.keystore_password
        return env


@dataclass(frozen=True)
class Jwt:
    """JWT bearer tokens on the engine's REST API beside Basic (``CAMUNDA_JWT_*``): access
    tokens of ``issuer_uri`` (its keys from its OpenID configuration), for ``audience`` when
    set, issued to one of ``allowed_clients`` (the ``azp`` claim) when set, whose claim
    ``user_claim`` names the engine user.

    An issuer with neither an audience nor allowed clients is refused: every token the issuer
    signs, for any client of the realm, would log in.
    """

    issuer_uri: str
    audience: str = ""
    user_claim: str = "preferred_username"
    allowed_clients: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not self.audience and not self.allowed_clients:
            raise ConfigurationError(NO_AUDIENCE)

    @classmethod
    def from_environment(cls, environ: Mapping[str, str]) -> Jwt | None:
        """The ``CAMUNDA_JWT_*`` variables, or None without ``CAMUNDA_JWT_ISSUER_URI``."""
        issuer = environ.get("CAMUNDA_JWT_ISSUER_URI", "").strip()
        if not issuer:
            return None
        return cls(
            issuer_uri=issuer,
            audience=environ.get("CAMUNDA_JWT_AUDIENCE", "").strip(),
            user_claim=environ.get("CAMUNDA_JWT_USER_CLAIM", "").strip() or "preferred_username",
            allowed_clients=_ids(environ.get("CAMUNDA_JWT_ALLOWED_CLIENTS", "")),
        )

    def variables(self) -> dict[str, str]:
        return {
            "CAMUNDA_JWT_ISSUER_URI": self.issuer_uri,
            "CAMUNDA_JWT_AUDIENCE": self.audience,
            "CAMUNDA_JWT_USER_CLAIM": self.user_claim,
            "CAMUNDA_JWT_ALLOWED_CLIENTS": ",".join(self.allowed_clients),
        }


# The engine's StartupCheck refuses the same, in the same words.
NO_AUDIENCE = (
    "CAMUNDA_JWT_ISSUER_URI is set without CAMUNDA_JWT_AUDIENCE or CAMUNDA_JWT_ALLOWED_CLIENTS:"
    " every token the issuer signs, for any of its clients, would log in; set the audience the"
    " engine's tokens carry, or the client ids (azp) allowed"
)


def _ids(text: str) -> tuple[str, ...]:
    """A comma-separated list's items, blanks and repeats left out."""
    return tuple(dict.fromkeys(item.strip() for item in text.split(",") if item.strip()))


def _port(environ: Mapping[str, str], name: str) -> int | None:
    text = environ.get(name, "").strip()
    if not text:
        return None
    if not text.isdigit() or not 1 <= int(text) <= 65535:
        raise ConfigurationError(f"{name} must be a port from 1 to 65535, not {text!r}")
    return int(text)


def _tenants(text: str) -> tuple[str, ...]:
    """``CAMUNDA_WORKER_TENANTS``: comma-separated ids of letters and digits (Camunda's id
    pattern, which the engine checks too)."""
    ids = _ids(text)
    for tenant in ids:
        if not tenant.isascii() or not tenant.isalnum():
            raise ConfigurationError(
                f"CAMUNDA_WORKER_TENANTS: tenant id {tenant!r} may have letters and digits only"
            )
    return ids


def _probe_host(bind_address: str) -> str:
    """Where to reach an engine bound to ``bind_address`` from this host."""
    if bind_address.strip() in _WILDCARD_ADDRESSES:
        return "127.0.0.1"
    address = bind_address.strip()
    return f"[{address}]" if ":" in address and not address.startswith("[") else address


@dataclass(frozen=True)
class EngineOptions:
    """How to run one engine process.

    ``worker_password`` None: the one kept in the state directory (made on first use).
    ``properties`` are extra Spring properties, passed as ``--name=value``. ``flavour`` is the
    engine to build and run (Camunda 7.24.0 by default, or Operaton).
    ``management_port`` (``CAMUNDA_MANAGEMENT_PORT``): serve the actuator's health probes
    (``/actuator/health/liveness``, ``/actuator/health/readiness``) and Prometheus metrics
    (``/actuator/prometheus``) on this port, on ``management_address``
    (``CAMUNDA_MANAGEMENT_ADDRESS``, loopback by default); None: no management port.
    ``jwt`` (``CAMUNDA_JWT_*``): accept JWT bearer tokens beside Basic; None: Basic only.
    ``worker_tenants`` (``CAMUNDA_WORKER_TENANTS``): the tenants the worker group is a member
    of, exactly, so that its members fetch those tenants' tasks; empty (the default) leaves
    the group's tenant memberships as they are.
    """

    port: int = 8080
    state_dir: Path = Path(".camunda-relay")
    user: str = DEFAULT_USER
    password: str = field(default=DEFAULT_PASSWORD, repr=False)
    postgres: Postgres | None = None
    max_heap_mb: int = 768
    ready_timeout: float = 180.0
    bind_address: str = "127.0.0.1"
    tls: Tls | None = None
    worker_user: str = WORKER_USER
    worker_password: str | None = field(default=None, repr=False)
    properties: Mapping[str, str] = field(default_factory=dict)
    management_port: int | None = None
    management_address: str = "127.0.0.1"
    flavour: EngineFlavour = DEFAULT_FLAVOUR
    worker_tenants: tuple[str, ...] = ()
    jwt: Jwt | None = None

    @classmethod
    def from_environment(
        cls,
        environ: Mapping[str, str],
        *,
        port: int,
        state_dir: Path,
        user: str,
        password: str,
        flavour: EngineFlavour = DEFAULT_FLAVOUR,
    ) -> EngineOptions:
        """Options for ``engine up`` and ``demo``: the bind address, TLS, the management port,
        bearer tokens and the worker's tenants from the engine's own variables
        (``CAMUNDA_BIND_ADDRESS``, ``CAMUNDA_TLS_*``, ``CAMUNDA_MANAGEMENT_*``,
        ``CAMUNDA_JWT_*``, ``CAMUNDA_WORKER_TENANTS``), the rest given."""
        return cls(
            port=port,
            state_dir=state_dir,
            user=user,
            password=password,
            bind_address=environ.get("CAMUNDA_BIND_ADDRESS", "127.0.0.1"),
            tls=Tls.from_environment(environ),
            management_port=_port(environ, "CAMUNDA_MANAGEMENT_PORT"),
            management_address=environ.get("CAMUNDA_MANAGEMENT_ADDRESS", "127.0.0.1"),
            flavour=flavour,
            worker_tenants=_tenants(environ.get("CAMUNDA_WORKER_TENANTS", "")),
            jwt=Jwt.from_environment(environ),
        )

    @property
    def data_dir(self) -> Path:
        return self.state_dir / "data"

    @property
    def log_file(self) -> Path:
        return self.state_dir / "engine.log"

    @property
    def scheme(self) -> str:
        return "https" if self.tls is not None else "http"

    @property
    def host(self) -> str:
        return _probe_host(self.bind_address)

    @property
    def base_url(self) -> str:
        return f"{self.scheme}://{self.host}:{self.port}"

    @property
    def management_url(self) -> str | None:
        """Where the management port answers (plain HTTP), or None when there is none."""
        if self.management_port is None:
            return None
        return f"http://{_probe_host(self.management_address)}:{self.management_port}"


@dataclass(frozen=True)
class EngineInfo:
    """A running (or recorded) engine: what ``status`` reports."""

    pid: int
    port: int
    data_dir: str
    log_file: str
    database: str
    started: int | None = None  # the process's start time (/proc/PID/stat, clock ticks)
    scheme: str = "http"
    host: str = "127.0.0.1"
    worker_user: str | None = None
    engine: str = DEFAULT_FLAVOUR.name  # the flavour: camunda or operaton
    engine_version: str = DEFAULT_FLAVOUR.version

    @property
    def flavour(self) -> EngineFlavour:
        return EngineFlavour(self.engine, self.engine_version)

    @property
    def base_url(self) -> str:
        return f"{self.scheme}://{self.host}:{self.port}"

    @property
    def rest_url(self) -> str:
        return f"{self.base_url}/engine-rest"

    @property
    def cockpit_url(self) -> str:
        return f"{self.base_url}{self.flavour.webapp_path}/cockpit/default/"

    @property
    def tasklist_url(self) -> str:
        return f"{self.base_url}{self.flavour.webapp_path}/tasklist/default/"


def worker_password(state_dir: Path) -> str:
    """The worker user's password kept in ``state_dir``; made (random, mode 0600) if none."""
    path = state_dir / WORKER_PASSWORD_FILE
    with contextlib.suppress(FileNotFoundError):
        kept = path.read_text().strip()
        if kept:
            return kept
    password = secrets.token_urlsafe(24)
    write_private(path, password + "\n")
    return password


def read_worker_password(state_dir: Path) -> str | None:
    """The worker password kept in ``state_dir``, or None when there is none."""
    try:
        return (state_dir / WORKER_PASSWORD_FILE).read_text().strip() or None
    except OSError:
        return None
