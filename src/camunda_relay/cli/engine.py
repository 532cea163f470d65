"""``camunda-relay engine up|down|status``: the bundled engine as a background process."""

from __future__ import annotations

import os
from pathlib import Path

import click

from camunda_relay import bundled_engine
from camunda_relay.engine_flavours import DEFAULT_FLAVOUR, EngineFlavour, choices
from camunda_relay.settings import Settings


def _flavour(_ctx: click.Context, _param: click.Parameter, value: str | None) -> EngineFlavour:
    if value is None:
        return DEFAULT_FLAVOUR
    try:
        return EngineFlavour.parse(value)
    except ValueError as error:
        raise click.BadParameter(str(error)) from None


engine_option = click.option(
    "--engine",
    "flavour",
    metavar="ENGINE",
    callback=_flavour,
    default=None,
    help=(
        f"The engine to build and run: camunda (Camunda {DEFAULT_FLAVOUR.version}, the "
        "default) or operaton (Operaton, from the same sources: webapps under /operaton/app/, "
        "no Json variables); older Camunda releases as camunda:VERSION. "
        f"Choices: {choices()}."
    ),
)


@click.group()
def engine() -> None:
    """Run the bundled Camunda 7 engine (H2 file database by default) on loopback.

    CAMUNDA_BIND_ADDRESS and CAMUNDA_TLS_* are passed on to the engine (see the README).
    """


def _state_dir(settings: Settings, state_dir: Path | None) -> Path:
    return state_dir or settings.state_dir


def _running(state: Path) -> bundled_engine.EngineInfo | None:
    """The engine recorded in ``state`` if it still runs; a stale record (the process is
    gone, or its pid now belongs to another program) is reported and removed, never
    signalled."""
    info = bundled_engine.read_info(state)
    if info is None:
        return None
    if bundled_engine.is_our_engine(info):
        return info
    bundled_engine.forget(state)
    click.echo(
        f"removed a stale engine record (pid {info.pid} is not the engine started here)",
        err=True,
    )
    return None


_state_option = click.option(
    "--state-dir",
    type=click.Path(path_type=Path, file_okay=False),
    default=None,
    help="Where the engine keeps its data and log (default: $CAMUNDA_STATE_DIR or .camunda-relay).",
)


@engine.command()
@click.option("--port", type=click.IntRange(1, 65535), default=8080, show_default=True)
@_state_option
@engine_option
@click.pass_obj
def up(settings: Settings, port: int, state_dir: Path | None, flavour: EngineFlavour) -> None:
    """Build the engine if needed, start it in the background, return when it is ready."""
    state = _state_dir(settings, state_dir)
    running = _running(state)
    if running is not None:
        click.echo(f"engine already running (pid {running.pid})")
        if running.flavour != flavour:
            click.echo(
                f"  it is {running.flavour.title}, not {flavour.title}: stop it first with "
                "camunda-relay engine down",
                err=True,
            )
        _describe(running, settings)
        return
    bundled_engine.check_port_free(port)  # before a build and a boot that would fail late
    jar = bundled_engine.ensure_built(progress=click.echo, flavour=flavour)
    click.echo(f"starting the engine ({flavour.title}) on port {port}...")
    options = bundled_engine.EngineOptions.from_environment(
        os.environ,
        port=port,
        state_dir=state,
        user=settings.user or bundled_engine.DEFAULT_USER,
        password=settings.password or bundled_engine.DEFAULT_PASSWORD,
        flavour=flavour,
    )
    info = bundled_engine.start(options, jar=jar)
    click.echo(f"engine ready (pid {info.pid})")
    _describe(info, settings)
    click.echo("stop it with: camunda-relay engine down")


def _describe(info: bundled_engine.EngineInfo, settings: Settings) -> None:
    user = settings.user or bundled_engine.DEFAULT_USER
    if settings.password is None or settings.is_default_password:
        login_note = f"{bundled_engine.DEFAULT_PASSWORD} (local default; set CAMUNDA_PASSWORD)"
    else:
        login_note = "(from CAMUNDA_PASSWORD)"
    click.echo(f"  engine   : {info.flavour.title}")
    click.echo(f"  REST API : {info.rest_url}")
    click.echo(f"  Cockpit  : {info.cockpit_url}")
    click.echo(f"  Tasklist : {info.tasklist_url}")
    click.echo(f"  login    : {user} / {login_note}")
    if info.worker_user:
        password_file = Path(info.data_dir).parent / bundled_engine.WORKER_PASSWORD_FILE
        click.echo(f"  worker   : {info.worker_user} / password in {password_file}")
    click.echo(f"  database : {info.database} in {info.data_dir}")
    click.echo(f"  log      : {info.log_file}")
    if not info.flavour.json_variables:
        click.echo(
            f"  note     : {info.flavour.title} has no Spin JSON data format here: no Json "
            "variables (dict, list, str over 4,000 characters)"
        )


@engine.command()
@_state_option
@click.pass_obj
def down(settings: Settings, state_dir: Path | None) -> None:
    """Stop the engine started by ``engine up``."""
    state = _state_dir(settings, state_dir)
    info = _running(state)
    if info is None or not bundled_engine.stop(info.pid):
        click.echo("engine not running")
        return
    bundled_engine.forget(state)
    click.echo(f"engine stopped (pid {info.pid})")


@engine.command()
@_state_option
@click.pass_obj
def status(settings: Settings, state_dir: Path | None) -> None:
    """Say whether the engine runs, and where. Exit code 3 when it does not."""
    info = _running(_state_dir(settings, state_dir))
    if info is None:
        click.echo("engine not running")
        raise SystemExit(3)
    ready = bundled_engine.is_ready(info.base_url)
    click.echo(f"engine running (pid {info.pid}), {'ready' if ready else 'not answering yet'}")
    _describe(info, settings)
