"""The ``camunda-relay`` command line: one command per library action.

User mistakes and unreachable services end in one line on stderr naming the problem and a
non-zero exit code, never a traceback.
"""

from camunda_relay.cli._main import main

__all__ = ["main"]
