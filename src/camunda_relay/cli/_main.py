"""The command group, shared options and the one place that turns errors into exit codes.

The commands are added to the group in :mod:`camunda_relay.cli` (explicitly, not as an import
side effect), so no command module imports this one back."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import click

from camunda_relay._version import __version__
from camunda_relay.errors import RelayError
from camunda_relay.settings import Settings

_HANDLED = (RelayError,)


class _Group(click.Group):
    """Turns the project's own errors into ``error: <message>`` and exit code 1."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except _HANDLED as error:
            raise click.ClickException(str(error)) from None


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="camunda-relay", message="%(prog)s %(version)s")
@click.option(
    "--config",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="TOML settings file (default: $CAMUNDA_CONFIG).",
)
@click.pass_context
def cli(ctx: click.Context, config: Path | None) -> None:
    """Camunda 7 external-task workers: complete now, correlate when the work is done."""
    ctx.obj = Settings.load(os.environ, config_file=config)


def main() -> None:
    cli(prog_name="camunda-relay")
