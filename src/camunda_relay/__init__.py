"""camunda-relay: Camunda 7 external-task workers in Python.

The conception's pattern, made safe: a worker completes the external task at once, does the
long work in the background, and correlates the reply message to the very process instance
that asked for it when the work is done.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
