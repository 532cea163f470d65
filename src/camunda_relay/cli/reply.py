"""``camunda-relay reply TOKEN``: answer a deferred reply from the command line.

``--var NAME=VALUE`` (repeatable; VALUE is JSON when it parses, as for ``start``) sends the
reply with those variables; ``--fail "reason"`` ends it in an incident with that reason. The
answer goes into the journal (``--journal``, else ``CAMUNDA_JOURNAL``); a worker serving the
topic delivers it. An unknown, used, expired or cancelled token ("the process instance was
cancelled") is one line and exit code 1. Neither the token nor a value is ever printed. With
tracing configured (``OTEL_*``), the answer is a span in the trace that ``TRACEPARENT`` (and
``TRACESTATE``) in the environment name.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import click

from camunda_relay import tracing
from camunda_relay.cli.pending import journal_option, target_journal, with_journal
from camunda_relay.cli.process import parse_variables
from camunda_relay.journal import Journal
from camunda_relay.replies.tokens import fail_reply, send_reply
from camunda_relay.settings import Settings

__all__ = ["reply"]


@click.command()
@click.argument("token")
@click.option(
    "--var",
    "var_items",
    multiple=True,
    metavar="NAME=VALUE",
    help="A variable sent with the reply; VALUE is JSON if it parses, else text. Repeatable.",
)
@click.option("--fail", "failure", default=None, metavar="REASON", help="Fail it: an incident.")
@journal_option
@click.pass_context
def reply(
    ctx: click.Context,
    token: str,
    var_items: Sequence[str],
    failure: str | None,
    journal_target: str | None,
) -> None:
    """Answer the deferred reply TOKEN: with variables, or with --fail REASON."""
    if failure is not None and var_items:
        raise click.UsageError("give either --var or --fail, not both")
    if failure is not None and not failure.strip():
        raise click.UsageError("--fail needs a reason (the incident's message)")
    variables = parse_variables(var_items)

    async def answer(journal: Journal) -> None:
        if failure is not None:
            await fail_reply(journal, token, failure)
        else:
            await send_reply(journal, token, variables)

    # Tracing on (OTEL_*): the answer joins the trace that TRACEPARENT names.
    tracing.from_environment(ctx.find_object(Settings) or Settings(), os.environ)
    with tracing.remote_parent(os.environ):
        with_journal(target_journal(ctx, journal_target), answer)
    count = len(variables)
    outcome = "failure" if failure is not None else f"reply ({count} variable{'s' * (count != 1)})"
    click.echo(f"{outcome} accepted; a worker serving the topic delivers it")
