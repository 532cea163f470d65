"""Testing kit for users' own tests of their handlers and workers.

- :func:`run_handlers` / :func:`run_handlers_sync` run a router's handlers once against
  given tasks (:func:`make_task`) and tell what each did (:class:`Outcome`): completed,
  replied, deferred, threw a BPMN error, or failed. No engine needed.
- :class:`FakeEngine`: the small in-process fake of the engine's REST API that this
  project's own tests use for error paths (a lost response, a 503, a lock lost); hand
  ``FakeEngine().transport()`` to :class:`~camunda_relay.EngineClient` or a
  :class:`~camunda_relay.Worker`.
- The pytest plugin (:mod:`camunda_relay.testing.pytest_plugin`, loaded by pytest when
  camunda-relay is installed): the ``camunda_engine`` fixture starts the bundled engine for
  integration tests (:class:`Engine`, :func:`start_engine`).
"""

from camunda_relay.testing.engine import Engine, start_engine
from camunda_relay.testing.fake_engine import FakeEngine, FakeInstance, FakeTask, Fault
from camunda_relay.testing.handlers import Outcome, make_task, run_handlers, run_handlers_sync

__all__ = [
    "Engine",
    "FakeEngine",
    "FakeInstance",
    "FakeTask",
    "Fault",
    "Outcome",
    "make_task",
    "run_handlers",
    "run_handlers_sync",
    "start_engine",
]
