"""The pytest plugin (entry point ``pytest11``, loaded when camunda-relay is installed):
fixtures that start the bundled engine for integration tests.

The engine is Camunda 7.24.0, or the one ``CAMUNDA_RELAY_TEST_ENGINE`` names (``operaton``,
``camunda:7.22.0``).

- ``camunda_engine_jar`` (session): the engine built once (a Maven build the first time,
  then from the cache); skipped without a JDK 17+, failed instead under ``CI=true``.
- ``camunda_engine`` (session): one engine for the session on a free loopback port, H2 in a
  fresh folder, administrator :data:`~camunda_relay.testing.engine.USER`; a
  :class:`~camunda_relay.testing.Engine` (``rest_url``, ``client()``, ``settings()``),
  stopped at the end.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from camunda_relay import bundled_engine
from camunda_relay.testing.engine import FLAVOUR, Engine, free_port, start_engine

__all__ = ["camunda_engine", "camunda_engine_jar"]


def _java_available() -> bool:
    java_home = os.environ.get("JAVA_HOME")
    return shutil.which("java") is not None or bool(java_home and Path(java_home).is_dir())


@pytest.fixture(scope="session")
def camunda_engine_jar() -> Path:
    """The bundled engine's jar, built when needed."""
    if not _java_available():
        message = "Java not available (install a JDK 17+ to run the engine tests)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"CI=true: {message}", pytrace=False)
        pytest.skip(message)
    return bundled_engine.ensure_built(flavour=FLAVOUR)


@pytest.fixture(scope="session")
def camunda_engine(
    camunda_engine_jar: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Engine]:
    """One bundled engine for the session, on a free loopback port, stopped at the end."""
    running = start_engine(camunda_engine_jar, tmp_path_factory.mktemp("engine"), free_port())
    try:
        yield running
    finally:
        running.stop()
