"""The bundled engine for integration tests: started on a free loopback port with a fresh
state directory and known credentials, stopped when done (the pytest plugin's
``camunda_engine`` fixture uses this)."""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from camunda_relay import bundled_engine
from camunda_relay.engine_flavours import EngineFlavour
from camunda_relay.settings import Settings

__all__ = ["FLAVOUR", "PASSWORD", "USER", "WORKER_USER", "Engine", "free_port", "start_engine"]

# The engine the fixtures build and run: CAMUNDA_RELAY_TEST_ENGINE=operaton or camunda:7.22.0
# (make compat runs each); Camunda 7.24.0 when unset.
FLAVOUR = EngineFlavour.parse(os.environ.get("CAMUNDA_RELAY_TEST_ENGINE") or "camunda")

USER = "relayadmin"
PASSWORD = "relay-test-secret"  # noqa: S105 - a throwaway engine's administrator, on loopback
# The least-privilege worker user every bundled engine has; its password is the one the
# engine's state directory keeps (bundled_engine.worker_password).
WORKER_USER = bundled_engine.WORKER_USER


@dataclass(frozen=True)
class Engine:
    """A running bundled engine: where it answers, and clients and settings for it."""

    info: bundled_engine.EngineInfo
    options: bundled_engine.EngineOptions

    @property
    def rest_url(self) -> str:
        return self.info.rest_url

    @property
    def worker_password(self) -> str:
        return bundled_engine.worker_password(self.options.state_dir)

    @property
    def worker_auth(self) -> tuple[str, str]:
        return WORKER_USER, self.worker_password

    def client(self, **kwargs: Any) -> httpx.Client:
        """A REST client logged in as the administrator (``auth=`` to change that)."""
        kwargs.setdefault("auth", (USER, PASSWORD))
        return httpx.Client(base_url=self.rest_url, timeout=30, **kwargs)

    def worker_client(self) -> httpx.Client:
        """A REST client logged in as the least-privilege worker user."""
        return self.client(auth=self.worker_auth)

    def settings(self, **changes: Any) -> Settings:
        """Worker settings for this engine, as the administrator, with an in-memory journal
        unless ``changes`` say otherwise."""
        values: dict[str, Any] = {
            "url": self.rest_url,
            "user": USER,
            "password": PASSWORD,
            "journal": ":memory:",
        }
        values.update(changes)
        return Settings(**values)

    def stop(self) -> bool:
        return bundled_engine.stop(self.info.pid)


def start_engine(
    jar: Path,
    state_dir: Path,
    port: int,
    postgres: bundled_engine.Postgres | None = None,
    **options: Any,
) -> Engine:
    """Start the engine ``jar`` (:func:`~camunda_relay.bundled_engine.ensure_built`) on
    ``port`` with its state in ``state_dir``; returns once it is ready."""
    options.setdefault("flavour", FLAVOUR)
    engine_options = bundled_engine.EngineOptions(
        port=port, state_dir=state_dir, user=USER, password=PASSWORD, postgres=postgres, **options
    )
    return Engine(info=bundled_engine.start(engine_options, jar=jar), options=engine_options)


def free_port() -> int:
    """A TCP port free on loopback now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
