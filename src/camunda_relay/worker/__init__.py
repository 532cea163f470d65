"""Running handlers: the :class:`Worker` facade and its parts (see worker.worker)."""

from camunda_relay.worker.context import WorkerStats
from camunda_relay.worker.worker import Worker, default_worker_id

__all__ = ["Worker", "WorkerStats", "default_worker_id"]
