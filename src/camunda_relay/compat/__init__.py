"""A drop-in for camunda-external-task-client-python3's worker API, on camunda-relay.

Moving a worker over is its import lines::

    from camunda.external_task.external_task import ExternalTask, TaskResult
    from camunda.external_task.external_task_worker import ExternalTaskWorker

become::

    from camunda_relay.compat import ExternalTask, ExternalTaskWorker, TaskResult

Handlers stay as they are; ``ExternalTaskWorker(worker_id, base_url, config).subscribe(
topic_names, action)`` runs a camunda-relay :class:`~camunda_relay.worker.Worker` (graceful
SIGTERM, bounded parallel handlers, lock extension, failures reported). The ``config`` keys
and what each maps to: :mod:`camunda_relay.compat.config`. ``subscribe(..., reply=
"message")`` makes the topic "complete now, correlate the message when the work is done".
"""

from camunda_relay.compat.config import KEYS as CONFIG_KEYS
from camunda_relay.compat.task import ExternalTask, TaskResult, TaskResultMissing
from camunda_relay.compat.worker import ENGINE_LOCAL_BASE_URL, ExternalTaskWorker

__all__ = [
    "CONFIG_KEYS",
    "ENGINE_LOCAL_BASE_URL",
    "ExternalTask",
    "ExternalTaskWorker",
    "TaskResult",
    "TaskResultMissing",
]
