"""``camunda-relay demo``: the whole system at work, in one command.

Starts the bundled engine if none answers, runs the conception's worker in this process,
starts a batch of seed-process instances with fresh business keys, shows their progress
(started / waiting for the reply / finished / incident), prints a summary, and says where to
look. Exit code 0 when every instance finished, 1 (naming the others) otherwise.

One instance (the first business key) shows a deferred reply: its handler hands out the
reply token instead of a result, and the demo answers it through the CLI, as another system
would (``camunda-relay reply TOKEN --var ...``, in a process of its own). The token itself is
never printed. Skipped when the journal is ``:memory:`` (no other process can reach it).

The instances are started with the configured user (the administrator, ``demo`` by default);
the worker logs in as the bundled engine's least-privilege worker user, with the password
``engine up`` keeps in the state directory, when the engine at ``CAMUNDA_URL`` is the one
recorded there (else with the configured user too).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import inspect
import os
import signal
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from urllib.parse import urlsplit

import click

from camunda_relay import bundled_engine
from camunda_relay.cli._logging import configure
from camunda_relay.cli.engine import engine_option
from camunda_relay.client import EngineClient
from camunda_relay.engine_flavours import DEFAULT_FLAVOUR, EngineFlavour
from camunda_relay.errors import ConfigurationError, EngineUnavailable
from camunda_relay.examples.conception import make_router
from camunda_relay.replies.job import JobState
from camunda_relay.router import Router
from camunda_relay.settings import Settings, masked
from camunda_relay.task import DeferReply, Task
from camunda_relay.worker import Worker

PROCESS_KEY = "correlation-message"
_START_CONCURRENCY = 16
# The demo's worker claims answered deferred replies every second (a third of this lease).
_DEMO_LEASE = timedelta(seconds=3)
DEFERRED_VALUE = "answered through the CLI"


@dataclass
class Progress:
    started: int = 0
    waiting: int = 0
    finished: int = 0
    incidents: int = 0

    def line(self, total: int, elapsed: float) -> str:
        return (
            f"[{elapsed:6.1f} s] started {self.started}/{total}  "
            f"waiting for reply {self.waiting}  finished {self.finished}  "
            f"incidents {self.incidents}"
        )


def _engine_base(settings: Settings) -> str:
    parts = urlsplit(settings.urls[0])
    return f"{parts.scheme}://{parts.netloc}"


def _ensure_engine(settings: Settings, flavour: EngineFlavour = DEFAULT_FLAVOUR) -> bool:
    """Start the bundled engine (``flavour``) when the configured local URL does not answer.
    True if this call started it."""
    base = _engine_base(settings)
    if bundled_engine.is_ready(base):
        info = bundled_engine.read_info(settings.state_dir)
        if info is not None and info.flavour != flavour and bundled_engine.is_our_engine(info):
            click.echo(
                f"the engine running here is {info.flavour.title}, not {flavour.title}: "
                "using it (camunda-relay engine down stops it)",
                err=True,
            )
        return False
    parts = urlsplit(settings.urls[0])
    if parts.hostname not in {"localhost", "127.0.0.1"}:
        raise EngineUnavailable(f"engine not reachable at {settings.shown_url}")
    jar = bundled_engine.ensure_built(progress=click.echo, flavour=flavour)
    port = parts.port or 8080
    click.echo(f"starting the engine ({flavour.title}) on port {port}...")
    info = bundled_engine.start(
        bundled_engine.EngineOptions.from_environment(
            os.environ,
            port=port,
            state_dir=settings.state_dir,
            user=settings.user or bundled_engine.DEFAULT_USER,
            password=settings.password or bundled_engine.DEFAULT_PASSWORD,
            flavour=flavour,
        ),
        jar=jar,
    )
    click.echo(f"engine ready (pid {info.pid}); stop it with: camunda-relay engine down")
    return True


def worker_settings(settings: Settings) -> Settings:
    """The settings of the demo's worker: the bundled engine's worker user when the engine at
    ``settings.url`` is the one recorded in ``settings.state_dir``, else ``settings``."""
    info = bundled_engine.read_info(settings.state_dir)
    password = bundled_engine.read_worker_password(settings.state_dir)
    parts = urlsplit(settings.urls[0])
    if (
        info is None
        or info.worker_user is None
        or password is None
        or info.port != (parts.port or (443 if parts.scheme == "https" else 80))
        or not bundled_engine.pid_alive(info.pid)
    ):
        return settings
    return dataclasses.replace(settings, user=info.worker_user, password=password, token=None)


def demo_router(work_seconds: float, deferred_key: str | None, tokens: dict[str, str]) -> Router:
    """The conception's worker; the instance with ``deferred_key`` hands out its reply token
    (into ``tokens``) instead of a result."""
    send = make_router(work_seconds)["messageSending"]
    router = Router()

    @router.task("messageSending", reply=send.reply)
    async def send_or_defer(task: Task) -> Mapping[str, object] | None:
        if deferred_key is not None and task.business_key == deferred_key and task.reply_token:
            tokens[deferred_key] = task.reply_token  # handed to "another system"
            raise DeferReply
        result = send.handler(task)
        return await result if inspect.isawaitable(result) else result

    return router


async def _answer_deferred(
    settings: Settings, key: str, tokens: dict[str, str], limit: float
) -> None:
    """Wait for the deferred instance's token, then answer it with ``camunda-relay reply``."""
    deadline = time.monotonic() + limit
    while key not in tokens:
        if time.monotonic() > deadline:
            return
        await asyncio.sleep(0.2)
    click.echo(
        f"deferred reply: instance {key} handed out a reply token; answering it from "
        f"another process: camunda-relay reply <token> --var 'var2={DEFERRED_VALUE}'"
    )
    command = [sys.executable, "-m", "camunda_relay.cli", "reply", tokens[key]]
    command += ["--var", f"var2={DEFERRED_VALUE}"]
    env = {**os.environ, "CAMUNDA_JOURNAL": settings.journal}
    done = await asyncio.to_thread(
        subprocess.run, command, env=env, capture_output=True, text=True, timeout=120, check=False
    )
    said = (done.stdout or done.stderr).strip().splitlines()
    click.echo(f"  camunda-relay reply: {said[-1] if said else f'exit code {done.returncode}'}")


async def _start_instances(client: EngineClient, keys: Sequence[str]) -> list[str]:
    gate = asyncio.Semaphore(_START_CONCURRENCY)

    async def start(key: str) -> str:
        async with gate:
            instance = await client.start_process(PROCESS_KEY, business_key=key)
            return str(instance["id"])

    return list(await asyncio.gather(*(start(key) for key in keys)))


async def _progress(
    client: EngineClient, worker: Worker, instance_ids: Sequence[str]
) -> tuple[Progress, list[dict[str, object]]]:
    history = await client.historic_process_instances(process_instance_ids=instance_ids)
    with_incidents = await client.historic_process_instances(
        process_instance_ids=instance_ids, with_incidents=True
    )
    ours = set(instance_ids)
    waiting = sum(
        1
        for job in await worker.journal.unfinished()
        if job.state in (JobState.ACKNOWLEDGED, JobState.DEFERRED, JobState.DONE)
        and job.task.process_instance_id in ours
    )
    finished = sum(1 for item in history if item.get("state") == "COMPLETED")
    progress = Progress(
        started=len(instance_ids),
        waiting=waiting,
        finished=finished,
        incidents=len(with_incidents),
    )
    return progress, history


def _summary(
    total: int, progress: Progress, history: Sequence[dict[str, object]], wall: float
) -> None:
    durations = sorted(
        float(item["durationInMillis"])  # type: ignore[arg-type]
        for item in history
        if item.get("durationInMillis") is not None
    )
    click.echo("")
    click.echo("  instances     finished   incidents   not finished   wall time   instances/s")
    rate = progress.finished / wall if wall > 0 else 0.0
    click.echo(
        f"  {total:>9}   {progress.finished:>8}   {progress.incidents:>9}   "
        f"{total - progress.finished:>12}   {wall:>7.1f} s   {rate:>11.1f}"
    )
    if len(durations) >= 2:
        quantiles = statistics.quantiles(durations, n=100)
        click.echo(
            f"  start-to-end latency: p50 {quantiles[49] / 1000:.2f} s, "
            f"p95 {quantiles[94] / 1000:.2f} s, max {durations[-1] / 1000:.2f} s"
        )


async def _run_demo(
    settings: Settings, instances: int, work_seconds: float, limit: float, keep_running: bool
) -> int:
    run_id = uuid.uuid4().hex[:6]
    keys = [f"demo-{run_id}-{number:04d}" for number in range(1, instances + 1)]
    deferred_key = keys[0] if settings.journal != ":memory:" else None
    tokens: dict[str, str] = {}
    own = worker_settings(settings)
    own = dataclasses.replace(own, journal_lease=min(own.journal_lease, _DEMO_LEASE))
    worker = Worker(demo_router(work_seconds, deferred_key, tokens), own)
    starter = EngineClient(settings)
    answering: asyncio.Task[None] | None = None
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, worker.stop)
    runner: asyncio.Task[None] | None = None
    try:
        await starter.check_access()
        await worker.client.check_access()
        definition = await worker.client.process_definition(PROCESS_KEY)
        if definition is None:
            raise ConfigurationError(f"process {PROCESS_KEY!r} is not deployed on this engine")
        runner = asyncio.ensure_future(worker.run())
        click.echo(
            f"starting {instances} instances of {PROCESS_KEY} (business keys demo-{run_id}-*)"
        )
        began = time.monotonic()
        if deferred_key is not None:
            answering = asyncio.ensure_future(
                _answer_deferred(settings, deferred_key, tokens, limit)
            )
        instance_ids = await _start_instances(starter, keys)
        progress, history = await _watch(worker, instance_ids, began, limit)
        if answering is not None:
            await answering
        wall = time.monotonic() - began
        _summary(instances, progress, history, wall)
        unfinished = [
            str(item.get("businessKey")) for item in history if item.get("state") != "COMPLETED"
        ]
        missing = instances - len(history)
        _where_to_look(settings)
        if keep_running and not worker.stopping:
            click.echo("the worker keeps running: start processes in Tasklist; Ctrl-C to stop")
            await runner
        if unfinished or missing:
            shown = ", ".join(unfinished[:20]) + (" ..." if len(unfinished) > 20 else "")
            click.echo(f"not finished: {len(unfinished) + missing} instances: {shown}", err=True)
            return 1
        return 0
    finally:
        if answering is not None and not answering.done():
            answering.cancel()
        worker.stop()
        if runner is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await runner
        await worker.shutdown()
        await starter.aclose()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(signum)


async def _watch(
    worker: Worker, instance_ids: Sequence[str], began: float, limit: float
) -> tuple[Progress, list[dict[str, object]]]:
    interactive = sys.stdout.isatty()
    last_line = ""
    last_print = 0.0
    while True:
        progress, history = await _progress(worker.client, worker, instance_ids)
        elapsed = time.monotonic() - began
        line = progress.line(len(instance_ids), elapsed)
        if interactive:
            click.echo("\r" + line, nl=False)
        elif line != last_line and elapsed - last_print >= 2.0:
            click.echo(line)
            last_print = elapsed
        last_line = line
        settled = progress.finished + progress.incidents >= len(instance_ids)
        if settled or elapsed > limit or worker.stopping:
            if interactive:
                click.echo("")
            else:
                click.echo(line)
            return progress, history
        await asyncio.sleep(0.5)


def _where_to_look(settings: Settings) -> None:
    base = masked(_engine_base(settings))
    info = bundled_engine.read_info(settings.state_dir)
    webapps = (info.flavour if info is not None else DEFAULT_FLAVOUR).webapp_path
    click.echo(f"  Cockpit : {base}{webapps}/cockpit/default/")
    click.echo(f"  Tasklist: {base}{webapps}/tasklist/default/")
    if settings.user in (None, bundled_engine.DEFAULT_USER) and settings.password in (
        None,
        bundled_engine.DEFAULT_PASSWORD,
    ):
        click.echo("  login   : demo / demo (local default)")
    worker = worker_settings(settings)
    if worker.user != settings.user:
        click.echo(f"  worker  : ran as {worker.user} (rights of a worker only)")
    click.echo("  stop the engine: camunda-relay engine down")


@click.command()
@click.option("--instances", "-n", type=click.IntRange(1, 100_000), default=20, show_default=True)
@click.option(
    "--work-seconds",
    type=click.FloatRange(0, 3600),
    default=2.0,
    show_default=True,
    help="Simulated work time of each job.",
)
@click.option(
    "--timeout",
    type=click.FloatRange(1),
    default=600.0,
    show_default=True,
    help="Give up waiting after this many seconds.",
)
@click.option(
    "--keep-running",
    is_flag=True,
    help="Keep the worker running afterwards, for processes started in Tasklist.",
)
@engine_option
@click.pass_obj
def demo(
    settings: Settings,
    instances: int,
    work_seconds: float,
    timeout: float,
    keep_running: bool,
    flavour: EngineFlavour,
) -> None:
    """Run the conception end to end: engine, worker, a batch of processes, a summary."""
    configure("WARNING", settings.log_format)
    if settings.user is None and settings.token is None:
        settings = dataclasses.replace(
            settings, user=bundled_engine.DEFAULT_USER, password=bundled_engine.DEFAULT_PASSWORD
        )
    _ensure_engine(settings, flavour)
    code = asyncio.run(_run_demo(settings, instances, work_seconds, timeout, keep_running))
    raise SystemExit(code)
