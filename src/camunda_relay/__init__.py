"""camunda-relay: Camunda 7 external-task workers in Python.

The conception's pattern, made safe: a worker completes the external task at once, does the
long work in the background, and correlates the reply message to the very process instance
that asked for it when the work is done:

    router = Router()

    @router.task("messageSending", reply="sample_response")
    async def send_message(task: Task) -> dict[str, object]:
        ...  # the long work
        return {"var1": 1, "var2": "value"}

    async with Worker(router, Settings.load(os.environ)) as worker:
        await worker.run()
"""

from camunda_relay._version import __version__
from camunda_relay.client import EngineClient
from camunda_relay.errors import (
    AmbiguousCorrelation,
    AuthenticationFailed,
    BadRequest,
    ConcurrentModification,
    ConfigurationError,
    EngineError,
    EngineUnavailable,
    InvalidInput,
    JournalError,
    JournalUnavailable,
    JsonUnsupported,
    NoMatchingExecution,
    NotFound,
    PermissionDenied,
    RelayError,
    ReplyTokenError,
    ServerError,
    TaskNotLocked,
    TlsError,
    VariableError,
)
from camunda_relay.journal import MemoryJournal
from camunda_relay.replies.job import Job, JobState
from camunda_relay.replies.tokens import fail_reply, send_reply
from camunda_relay.router import Reply, Router
from camunda_relay.settings import Settings, SettingsError
from camunda_relay.task import BpmnError, Complete, DeferReply, RetryLater, Task
from camunda_relay.worker import Worker, WorkerStats

__all__ = [
    "AmbiguousCorrelation",
    "AuthenticationFailed",
    "BadRequest",
    "BpmnError",
    "Complete",
    "ConcurrentModification",
    "ConfigurationError",
    "DeferReply",
    "EngineClient",
    "EngineError",
    "EngineUnavailable",
    "InvalidInput",
    "Job",
    "JobState",
    "JournalError",
    "JournalUnavailable",
    "JsonUnsupported",
    "MemoryJournal",
    "NoMatchingExecution",
    "NotFound",
    "PermissionDenied",
    "RelayError",
    "Reply",
    "ReplyTokenError",
    "RetryLater",
    "Router",
    "ServerError",
    "Settings",
    "SettingsError",
    "Task",
    "TaskNotLocked",
    "TlsError",
    "VariableError",
    "Worker",
    "WorkerStats",
    "__version__",
    "fail_reply",
    "send_reply",
]
