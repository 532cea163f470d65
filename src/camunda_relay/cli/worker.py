"""``camunda-relay worker MODULE[:ROUTER]``: run the handlers of a router until stopped."""

from __future__ import annotations

import asyncio
import dataclasses
import importlib
import logging
import os
import signal
import sys
import traceback
from typing import TYPE_CHECKING

import click

from camunda_relay.cli._logging import configure
from camunda_relay.errors import ConfigurationError
from camunda_relay.failpoints import Failpoints
from camunda_relay.router import Router
from camunda_relay.settings import Settings

if TYPE_CHECKING:
    from camunda_relay.worker import Worker

log = logging.getLogger(__name__)


def load_router(target: str) -> Router:
    """Import ``module[:attribute]`` (attribute defaults to ``router``) and check it."""
    module_name, _, attribute = target.partition(":")
    attribute = attribute or "router"
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as error:
        if error.name and module_name.startswith(error.name):
            raise ConfigurationError(f"cannot import worker module {module_name!r}") from None
        raise ConfigurationError(_import_problem(module_name, error)) from None
    except Exception as error:  # noqa: BLE001 - the user's module: one line, not a traceback
        raise ConfigurationError(_import_problem(module_name, error)) from None
    router = getattr(module, attribute, None)
    if not isinstance(router, Router):
        raise ConfigurationError(
            f"{module_name}:{attribute} is not a camunda_relay Router "
            f"(found {type(router).__name__})"
        )
    if len(router) == 0:
        raise ConfigurationError(f"{module_name}:{attribute} has no handlers")
    return router


def _import_problem(module_name: str, error: Exception) -> str:
    """What went wrong importing the user's module: the error's own line and where."""
    if isinstance(error, SyntaxError):
        where = f"{error.filename}:{error.lineno}"
        return f"worker module {module_name!r} has a syntax error at {where}: {error.msg}"
    frames = [
        frame
        for frame in traceback.extract_tb(error.__traceback__)
        if not frame.filename.startswith("<frozen ")
    ]
    where = f" at {frames[-1].filename}:{frames[-1].lineno}" if frames else ""
    text = str(error).strip().splitlines()
    problem = f"{type(error).__name__}: {text[0]}" if text else type(error).__name__
    return f"importing worker module {module_name!r} failed{where}: {problem}"


async def serve(router: Router, settings: Settings, metrics_port: int | None = None) -> None:
    """Run a worker until SIGTERM or SIGINT, then shut down within the grace period."""
    from camunda_relay.worker import Worker

    worker = Worker(router, settings, failpoints=Failpoints.from_environment(os.environ))
    if metrics_port is not None:
        _serve_metrics(worker, metrics_port)
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, worker.stop)
    try:
        if await worker.client.check_access() == 0:
            log.warning(
                "user %s sees no deployed process definition: this worker gets no task until "
                "one is deployed and the user may read it (the engine's worker group "
                "relayworkers has that right; see the README's 'Who may do what')",
                repr(settings.user) if settings.user else "(no login)",
            )
        await worker.run()
    finally:
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(signum)
        await worker.shutdown()


def _serve_metrics(worker: Worker, port: int) -> None:
    import prometheus_client
    from prometheus_client.registry import CollectorRegistry

    from camunda_relay.metrics import register

    registry = CollectorRegistry()
    register(worker, registry)
    try:
        prometheus_client.start_http_server(port, addr="127.0.0.1", registry=registry)
    except OSError as error:
        raise ConfigurationError(f"cannot serve metrics on port {port}: {error.strerror}") from None


def _search_current_directory() -> None:
    """Let MODULE be a file in the current directory, as with ``python -m``: an installed
    ``camunda-relay`` script has only its own folder on ``sys.path``."""
    if "" not in sys.path and os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())


@click.command()
@click.argument("target", metavar="MODULE[:ROUTER]")
@click.option("--max-in-flight", type=click.IntRange(1, 10_000), default=None)
@click.option("--worker-id", default=None, help="Unique per process (default: host-pid-random).")
@click.option(
    "--log-level",
    type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"], case_sensitive=False),
    default="INFO",
    show_default=True,
)
@click.option(
    "--metrics-port",
    type=click.IntRange(1, 65535),
    default=None,
    help="Serve Prometheus metrics on 127.0.0.1:PORT/metrics.",
)
@click.pass_obj
def worker(
    settings: Settings,
    target: str,
    max_in_flight: int | None,
    worker_id: str | None,
    log_level: str,
    metrics_port: int | None,
) -> None:
    """Run the handlers registered on a Router (default attribute: ``router``)."""
    _search_current_directory()
    router = load_router(target)
    if max_in_flight is not None:
        settings = dataclasses.replace(settings, max_in_flight=max_in_flight)
    if worker_id is not None:
        settings = dataclasses.replace(settings, worker_id=worker_id)
    configure(log_level)
    asyncio.run(serve(router, settings, metrics_port))
