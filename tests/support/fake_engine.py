"""The in-process fake engine, shipped to users as :mod:`camunda_relay.testing`; its names
re-exported here for the project's own tests."""

from camunda_relay.testing.fake_engine import (
    CATCH,
    MESSAGE,
    TOPIC,
    FakeEngine,
    FakeInstance,
    FakeTask,
    Fault,
    seed_bpmn,
)

SEED_BPMN = seed_bpmn()

__all__ = [
    "CATCH",
    "MESSAGE",
    "SEED_BPMN",
    "TOPIC",
    "FakeEngine",
    "FakeInstance",
    "FakeTask",
    "Fault",
    "seed_bpmn",
]
