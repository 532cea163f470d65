"""Fixtures shared by all tiers: the bundled engine (session-wide, from the plugin that
camunda_relay.testing ships) and PostgreSQL."""

from __future__ import annotations

import logging
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from camunda_relay import tracing
from tests.support import keycloak as kc
from tests.support import postgres as pg
from tests.support.engine import FLAVOUR, Engine
from tests.support.tools import free_port, missing, postgres_bin_dir


@pytest.fixture(autouse=True)
def _package_logger_restored() -> Iterator[None]:
    """A CLI command run in-process configures the ``camunda_relay`` logger (its own handler,
    no propagation); put it back so that later tests' ``caplog`` still sees the records."""
    logger = logging.getLogger("camunda_relay")
    saved = (logger.handlers[:], logger.level, logger.propagate)
    yield
    logger.handlers[:], logger.level, logger.propagate = saved


_TRACING_HOOKS = ("_log_ids", "_answering", "_remote_parent", "_current_traceparent")


@pytest.fixture(autouse=True)
def _tracing_hooks_restored() -> Iterator[None]:
    """A test that makes an in-process tracer installs the tracing module's hooks (with its
    exporter, to a receiver that is gone after the test); put them back, so that tracing
    stays off for the tests after it."""
    saved = [getattr(tracing, name) for name in _TRACING_HOOKS]
    yield
    for name, hook in zip(_TRACING_HOOKS, saved, strict=True):
        setattr(tracing, name, hook)


def pytest_report_header() -> str:
    return f"engine: {FLAVOUR.title} (CAMUNDA_RELAY_TEST_ENGINE)"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests marked ``json`` need Json variables: skipped on an engine built without them (the
    bundled Operaton engine: its Spin JSON data format is not served); a test of its own checks
    what the worker says there."""
    if FLAVOUR.json_variables:
        return
    skip = pytest.mark.skip(reason=f"{FLAVOUR.title} is built without Json variables")
    for item in items:
        if item.get_closest_marker("json") is not None:
            item.add_marker(skip)


# The bundled engine comes from camunda_relay.testing's pytest plugin (camunda_engine_jar,
# camunda_engine), the same fixtures users get; these are the names the suite uses.


@pytest.fixture(scope="session")
def engine_jar(camunda_engine_jar: Path) -> Path:
    return camunda_engine_jar


@pytest.fixture(scope="session")
def engine(camunda_engine: Engine) -> Engine:
    """One engine for the session, H2 in file mode, on a free loopback port."""
    return camunda_engine


@pytest.fixture
def rest(engine: Engine) -> Iterator[httpx.Client]:
    with engine.client() as client:
        yield client


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[pg.PostgresServer]:
    bin_dir = postgres_bin_dir()
    if bin_dir is None:
        missing("PostgreSQL server", "install Debian's postgresql package")
    assert bin_dir is not None
    base = Path(tempfile.mkdtemp(prefix="camunda-relay-pg-"))
    server = pg.init_server(bin_dir, base, free_port())
    yield server
    server.stop(mode="immediate")
    shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="session")
def keycloak(tmp_path_factory: pytest.TempPathFactory) -> Iterator[kc.Keycloak]:
    """A real Keycloak for the session (Java 21+, the distribution from Maven Central), with
    the realm ``relay``; skipped when either is missing, failed under CI=true."""
    try:
        java_home = kc.find_java_home()
        home = kc.distribution(Path(__file__).resolve().parents[1] / "engine")
    except kc.KeycloakUnavailable as error:
        missing("Keycloak", str(error))
        raise
    log = tmp_path_factory.mktemp("keycloak") / "keycloak.log"
    server = kc.start(home, java_home, free_port(), log)
    yield server
    server.stop()
