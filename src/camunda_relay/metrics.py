"""Prometheus metrics of a worker, read from its :class:`~camunda_relay.worker.WorkerStats`
when scraped (nothing is counted twice, nothing costs anything between scrapes), and the
reconciler's (orphans found, incidents raised, sweeps), all in one registry.

The collectors go into a registry the caller passes in, never the global default one; the
worker's HTTP server (:mod:`camunda_relay.serve`, ``CAMUNDA_HTTP_PORT``) serves it at
``/metrics``::

    registry = CollectorRegistry()
    register(worker, registry)
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector, CollectorRegistry

if TYPE_CHECKING:
    from camunda_relay.worker import Worker

__all__ = ["register"]

_COUNTERS = (
    ("fetched", "camunda_relay_tasks_fetched", "External tasks fetched and locked"),
    ("completed", "camunda_relay_tasks_completed", "External tasks completed"),
    ("failures_reported", "camunda_relay_failures_reported", "Handler failures reported"),
    ("bpmn_errors", "camunda_relay_bpmn_errors", "BPMN errors thrown"),
    ("replies_delivered", "camunda_relay_replies_delivered", "Reply messages delivered"),
    ("replies_failed", "camunda_relay_replies_failed", "Reply jobs failed (incident raised)"),
    (
        "replies_deferred",
        "camunda_relay_replies_deferred",
        "Reply jobs whose handler handed out a reply token",
    ),
    (
        "replies_cancelled",
        "camunda_relay_replies_cancelled",
        "Reply jobs cancelled because their process instance no longer waits (no message sent)",
    ),
    (
        "tasks_cancelled",
        "camunda_relay_tasks_cancelled",
        "Plain tasks whose handler was cancelled because the task is gone (extendLock 404)",
    ),
    ("dropped", "camunda_relay_jobs_dropped", "Jobs dropped because the lock was lost"),
    (
        "taken_over",
        "camunda_relay_jobs_taken_over",
        "Jobs left to another worker that took them over after this one lost its lease",
    ),
    ("engine_errors", "camunda_relay_engine_errors", "Failed fetches (engine unreachable, 5xx)"),
    (
        "journal_errors",
        "camunda_relay_journal_errors",
        "Journal calls that failed (database unreachable, timed out, full)",
    ),
)
_GAUGES = (
    ("locked", "camunda_relay_tasks_locked", "Tasks this worker holds a lock on"),
    ("pending_replies", "camunda_relay_replies_pending", "Reply jobs whose work or delivery runs"),
)


class _WorkerCollector(Collector):
    def __init__(self, worker: Worker) -> None:
        self._worker = worker

    def collect(self) -> Iterator[Metric]:
        stats = self._worker.stats
        labels = ["worker_id"]
        worker_id = [self._worker.worker_id]
        for attribute, name, documentation in _COUNTERS:
            counter = CounterMetricFamily(name, documentation, labels=labels)
            counter.add_metric(worker_id, getattr(stats, attribute))
            yield counter
        for attribute, name, documentation in _GAUGES:
            gauge = GaugeMetricFamily(name, documentation, labels=labels)
            gauge.add_metric(worker_id, getattr(stats, attribute))
            yield gauge
        age = GaugeMetricFamily(
            "camunda_relay_seconds_since_last_poll",
            "Seconds since the last successful fetch (-1: none yet)",
            labels=labels,
        )
        last = stats.last_poll_ok
        age.add_metric(worker_id, -1.0 if last is None else time.monotonic() - last)
        yield age


class _ReconcilerCollector(Collector):
    """The reconciler's own metrics (kept in its private registry), read when scraped."""

    def __init__(self, worker: Worker) -> None:
        self._worker = worker

    def collect(self) -> Iterator[Metric]:
        reconciler = self._worker.reconciler
        if reconciler is not None:
            yield from reconciler.registry.collect()


def register(worker: Worker, registry: CollectorRegistry) -> None:
    """Expose ``worker``'s figures, its reconciler's included, in ``registry``."""
    registry.register(_WorkerCollector(worker))
    registry.register(_ReconcilerCollector(worker))
