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

import click
import httpx

from camunda_relay import tracing
from camunda_relay.cli._logging import configure
from camunda_relay.errors import ConfigurationError
from camunda_relay.failpoints import Failpoints
from camunda_relay.journal import Journal
from camunda_relay.router import Router
from camunda_relay.serve import Routes, probe_host, serve_worker
from camunda_relay.settings import Settings

log = logging.getLogger(__name__)

CHECK_TIMEOUT = 5.0  # seconds `worker --check` waits for the worker's answer


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


async def serve(router: Router, settings: Settings) -> None:
    """Run a worker until SIGTERM or SIGINT, then shut down within the grace period; with
    ``CAMUNDA_HTTP_PORT`` set, serve its metrics, probes and :func:`worker_routes`
    meanwhile."""
    from camunda_relay.worker import Worker

    worker = Worker(
        router,
        settings,
        failpoints=Failpoints.from_environment(os.environ),
        tracing=tracing.from_environment(settings, os.environ),
    )
    server = None
    loop = asyncio.get_running_loop()
    try:
        routes = worker_routes(settings, shared=(worker.journal, loop))
    except ConfigurationError:
        await worker.shutdown()
        raise
    if settings.http_port is not None:
        try:
            server = serve_worker(worker, settings.http_address, settings.http_port, routes=routes)
        except ConfigurationError:
            await worker.shutdown()
            raise
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, worker.stop)
    try:
        accessible = await worker.client.check_access()
        worker.health.engine_answered()
        if accessible == 0:
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
        if server is not None:  # POST /reply answers 503 from now on; the probes go on
            await asyncio.to_thread(server.close_routes)
        await worker.shutdown()
        if server is not None:
            server.close()


def check(settings: Settings, probe: str) -> tuple[bool, str]:
    """Ask the running worker's server for ``/readyz`` (``ready``) or ``/healthz``
    (``live``): whether it passed, and one line saying so."""
    if settings.http_port is None:
        raise ConfigurationError("CAMUNDA_HTTP_PORT is not set: the worker serves no probe to ask")
    host = probe_host(settings.http_address)
    shown = f"[{host}]" if ":" in host else host
    path = "/readyz" if probe == "ready" else "/healthz"
    url = f"http://{shown}:{settings.http_port}{path}"
    try:
        response = httpx.get(url, timeout=CHECK_TIMEOUT)
    except httpx.HTTPError as error:
        return False, f"not {probe}: no answer from {url} ({type(error).__name__})"
    try:
        answer = response.json()
        problems = [str(problem) for problem in answer.get("problems", [])]
    except (ValueError, AttributeError):
        return False, f"not {probe}: {url} answered {response.status_code}, not a probe's JSON"
    if response.status_code == 200:
        return True, probe
    return False, f"not {probe}: {'; '.join(problems) or f'HTTP {response.status_code}'}"


def _search_current_directory() -> None:
    """Let MODULE be a file in the current directory, as with ``python -m``: an installed
    ``camunda-relay`` script has only its own folder on ``sys.path``."""
    if "" not in sys.path and os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())


@click.command()
@click.argument("target", metavar="MODULE[:ROUTER]", required=False)
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
    help="Same as CAMUNDA_HTTP_PORT: serve /metrics, /healthz and /readyz on this port.",
)
@click.option(
    "--check",
    "probe",
    type=click.Choice(["ready", "live"]),
    is_flag=False,
    flag_value="ready",
    default=None,
    help="Ask the running worker (CAMUNDA_HTTP_ADDRESS, CAMUNDA_HTTP_PORT) whether it is "
    "ready (/readyz, the default) or live (/healthz); exit 0 or 1 with one line.",
)
@click.pass_obj
def worker(
    settings: Settings,
    target: str | None,
    max_in_flight: int | None,
    worker_id: str | None,
    log_level: str,
    metrics_port: int | None,
    probe: str | None,
) -> None:
    """Run the handlers registered on a Router (default attribute: ``router``)."""
    if metrics_port is not None:
        settings = dataclasses.replace(settings, http_port=metrics_port)
    if probe is not None:
        passed, line = check(settings, probe)
        click.echo(line)
        raise SystemExit(0 if passed else 1)
    if target is None:
        raise click.UsageError("Missing argument 'MODULE[:ROUTER]'.")
    _search_current_directory()
    router = load_router(target)
    if max_in_flight is not None:
        settings = dataclasses.replace(settings, max_in_flight=max_in_flight)
    if worker_id is not None:
        settings = dataclasses.replace(settings, worker_id=worker_id)
    configure(log_level, settings.log_format)
    asyncio.run(serve(router, settings))


def worker_routes(
    settings: Settings, *, shared: tuple[Journal, asyncio.AbstractEventLoop] | None = None
) -> Routes:
    """The routes the worker's HTTP server serves beside its metrics and probes:
    ``POST /reply`` (deferred replies) when ``CAMUNDA_REPLY_SECRET`` is set, answered
    through ``shared`` (the worker's journal and its loop) when given."""
    from camunda_relay.replies.http import reply_routes

    routes = reply_routes(settings, shared=shared)
    if routes and settings.http_port is None:
        log.warning(
            "CAMUNDA_REPLY_SECRET is set but CAMUNDA_HTTP_PORT is not: POST /reply is not "
            "served (set CAMUNDA_HTTP_PORT to serve it)"
        )
    return routes
