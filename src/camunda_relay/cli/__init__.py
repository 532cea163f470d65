"""The ``camunda-relay`` command line: one command per library action.

User mistakes and unreachable services end in one line on stderr naming the problem and a
non-zero exit code, never a traceback.
"""

from camunda_relay.cli._main import cli, main
from camunda_relay.cli.demo import demo
from camunda_relay.cli.engine import engine
from camunda_relay.cli.pending import pending
from camunda_relay.cli.process import correlate, deploy, start
from camunda_relay.cli.reply import reply
from camunda_relay.cli.worker import worker

for _command in (engine, worker, deploy, start, correlate, reply, demo, pending):
    cli.add_command(_command)

__all__ = ["cli", "main"]
