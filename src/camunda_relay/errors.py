"""The one exception hierarchy of camunda-relay.

::

    RelayError                      anything this package raises on purpose
    ├── ConfigurationError          a usage or set-up mistake (unknown topic, bad option)
    │   └── SettingsError           (settings.py) a setting is unknown or unusable
    ├── InvalidInput                a value the engine would refuse (business key too long ...)
    │   └── VariableError           a variable cannot be sent to the engine; names it
    ├── BundledEngineError          the bundled engine failed to build or start
    │   ├── EngineBuildError        (engine_build.py) no project, no JDK, or Maven failed
    │   └── EngineStartError        (bundled_engine.py) not ready; with the log's tail
    ├── IllegalTransition           a reply job was moved to a state its state cannot reach (a bug)
    ├── ReplyTokenError             a deferred reply's token is unknown, used or expired
    ├── JournalError                the journal failed (SQLite, PostgreSQL)
    │   ├── JournalUnavailable      the journal database cannot be reached / timed out [retryable]
    │   └── CorruptJob              a stored job cannot be read (damaged, or from a newer version)
    └── EngineError                 the engine answered with an error, or could not be reached
        ├── EngineUnavailable       connection refused/reset, timeout, 502/503/504  [retryable]
        ├── TlsError                the engine's certificate is not trusted, or no TLS there
        ├── ServerError             500 from the engine (a database hiccup, ...)    [retryable]
        │   └── ConcurrentModification  OptimisticLockingException              [retryable]
        ├── AuthenticationFailed    401/403: wrong or missing credentials
        │   ├── PermissionDenied    403: logged in, but the user lacks a permission
        │   └── TokenRefused        (oauth.py) the identity provider refused the client
        ├── NotFound                404: no such task, instance, definition ...
        └── BadRequest              400: the engine refused the request
            ├── JsonUnsupported     the engine stores no Json variables (no Spin JSON format)
            ├── TaskNotLocked       complete/failure/extendLock by a worker that lost the lock
            ├── NoMatchingExecution a message found nobody waiting (yet, or any more)
            └── AmbiguousCorrelation a message matched several executions

Engine responses are mapped to these classes in exactly one place, :func:`from_response`,
and the HTTP stack's failures (:mod:`camunda_relay.http`) in :func:`from_transport_error`;
database errors in the journals' own ``_errors`` helpers (one per backend).
Whether an error is worth retrying is a property of the error (``retryable``), never a guess
at the call site. Messages never contain variable values or credentials.
"""

from __future__ import annotations

import re
import ssl
from typing import ClassVar

from camunda_relay.http import Answer, ConnectFailed, HttpError, TimedOut, TlsFailed

__all__ = [
    "AmbiguousCorrelation",
    "AuthenticationFailed",
    "BadRequest",
    "BundledEngineError",
    "ConcurrentModification",
    "ConfigurationError",
    "CorruptJob",
    "EngineBuildError",
    "EngineError",
    "EngineUnavailable",
    "IllegalTransition",
    "InvalidInput",
    "JournalError",
    "JournalUnavailable",
    "JsonUnsupported",
    "NoMatchingExecution",
    "NotFound",
    "PermissionDenied",
    "RelayError",
    "ReplyTokenError",
    "ServerError",
    "TaskNotLocked",
    "TlsError",
    "TokenRefused",
    "VariableError",
    "from_response",
    "from_transport_error",
]


class RelayError(Exception):
    """Base of every error camunda-relay raises on purpose."""

    retryable: ClassVar[bool] = False


class ConfigurationError(RelayError):
    """A usage or set-up mistake; retrying will not help."""


class InvalidInput(RelayError, ValueError):
    """A value the engine would refuse, caught before anything is sent. Names the value."""


class VariableError(InvalidInput):
    """A value cannot be sent to (or read from) the engine. The message names the variable."""

    def __init__(self, name: str, problem: str) -> None:
        super().__init__(f"variable {name!r}: {problem}")
        self.name = name
        self.problem = problem


class BundledEngineError(RelayError):
    """The bundled engine could not be built, started or stopped."""


class EngineBuildError(BundledEngineError):
    """The engine could not be built: no project, no JDK, or the Maven build failed."""


class IllegalTransition(RelayError):
    """A reply job was asked to move to a state its current state cannot reach: a bug."""


class ReplyTokenError(RelayError):
    """A deferred reply's token cannot be answered: ``verdict`` is ``unknown``, ``used``,
    ``expired`` or ``cancelled`` (or ``invalid`` for an unusable answer). The message never
    holds the token."""

    def __init__(self, message: str, *, verdict: str = "invalid") -> None:
        super().__init__(message)
        self.verdict = verdict


class JournalError(RelayError):
    """The journal (SQLite file, PostgreSQL database) failed. Names the problem, never a
    payload or a password."""


class JournalUnavailable(JournalError):
    """The journal cannot be reached or did not answer in time; try again later."""

    retryable = True


class CorruptJob(JournalError, ValueError):
    """A stored job cannot be read (damaged, or written by a newer camunda-relay).

    The message names the job and the problem, never the payload.
    """


class EngineError(RelayError):
    """The engine answered with an error status, or could not be reached."""

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        error_type: str | None = None,
        code: int | None = None,
        request: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.error_type = error_type
        self.code = code
        self.request = request

    def __str__(self) -> str:
        where = f"{self.request}: " if self.request else ""
        status = f" (HTTP {self.status})" if self.status else ""
        return f"{where}{self.message}{status}"


class EngineUnavailable(EngineError):
    """The engine could not be reached or is overloaded; try again later."""

    retryable = True


class TlsError(EngineError):
    """The TLS handshake failed: the engine's certificate is not trusted (unknown CA, wrong
    host name, expired), or the port does not speak TLS. Retrying will not help."""


class ServerError(EngineError):
    """The engine failed with a 500; often transient (a database restart)."""

    retryable = True


class ConcurrentModification(ServerError):
    """Two transactions raced on the same data (OptimisticLockingException)."""


class AuthenticationFailed(EngineError):
    """401/403: the credentials are missing or wrong, or the user lacks a permission."""


class PermissionDenied(AuthenticationFailed):
    """403: the user is logged in but its authorizations do not allow the request."""


class TokenRefused(AuthenticationFailed):
    """The OAuth2 token endpoint refused the client credentials (or gave no token); the
    message names the token URL and the status, never the secret."""


class NotFound(EngineError):
    """404: the task, instance, definition or deployment does not exist (any more)."""


class BadRequest(EngineError):
    """400: the engine refused the request as it stands."""


class JsonUnsupported(BadRequest):
    """The engine cannot store ``Json`` variables: it has no Spin JSON data format (the
    bundled Operaton engine has none). A 400 "Unsupported value type 'Json'" or a 500
    "Cannot find serializer for value ... of type 'json'"; never retryable."""


# What a dict, a list or a long str needs on the engine, for the messages that refuse them.
JSON_UNSUPPORTED = (
    "the engine stores no Json variables (it has no Spin JSON data format, like the bundled "
    "Operaton engine): dicts, lists and strs over 4,000 characters cannot be sent to it; send "
    "numbers, strs, bools, dates or bytes, or add Spin's JSON data format to the engine"
)


class TaskNotLocked(BadRequest):
    """The external task is not locked by this worker (the lock expired and was taken)."""


class NoMatchingExecution(BadRequest):
    """A message found no execution waiting for it: too early, or already passed."""


class AmbiguousCorrelation(BadRequest):
    """A message matched several executions (e.g. a business key that is not unique)."""


_NO_MATCH = re.compile(r"No process definition or execution matches", re.IGNORECASE)
_AMBIGUOUS = re.compile(r"Cannot correlate a? ?message .*to a single execution", re.IGNORECASE)
# The engine has no Json type (no Spin plugin) or no serializer for it (Spin without a format).
_NO_JSON = re.compile(
    r"Unsupported value type 'json'|Cannot find serializer for value .* of type 'json'", re.I
)
_NOT_LOCKED = re.compile(r"(is locked by worker|is not locked|cannot be .* not locked)", re.I)
_UNAVAILABLE_STATUSES = frozenset({502, 503, 504})
# The engine answers a wrong password and a user held back by its login throttling with the
# same 401 (telling them apart would tell a stranger which user ids exist).
LOGIN_REFUSED = (
    "wrong CAMUNDA_USER or CAMUNDA_PASSWORD, or that user is held back after failed logins "
    "(the engine refuses it for up to 60 s after each wrong password, then accepts it again)"
)


def from_response(response: Answer, request: str) -> EngineError:
    """Map an engine error answer to its exception class (the one place that does this)."""
    error_type: str | None = None
    code: int | None = None
    message = response.reason or "error"
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict):
        if isinstance(body.get("type"), str):
            error_type = body["type"]
        if isinstance(body.get("message"), str) and body["message"]:
            message = body["message"]
        if isinstance(body.get("code"), int):
            code = body["code"]
    status = response.status
    cls: type[EngineError]
    if status in (400, 500) and _NO_JSON.search(message):
        return JsonUnsupported(
            f"{JSON_UNSUPPORTED} (the engine answered: {message})",
            status=status,
            error_type=error_type,
            code=code,
            request=request,
        )
    if status == 401:
        cls = AuthenticationFailed
        message = f"authentication failed: {LOGIN_REFUSED}"
    elif status == 403:
        cls = PermissionDenied
    elif status == 404:
        cls = NotFound
    elif status == 400:
        if _AMBIGUOUS.search(message):
            cls = AmbiguousCorrelation
        elif _NO_MATCH.search(message):
            cls = NoMatchingExecution
        elif _NOT_LOCKED.search(message):
            cls = TaskNotLocked
        else:
            cls = BadRequest
    elif status in _UNAVAILABLE_STATUSES:
        cls = EngineUnavailable
    elif status >= 500:
        optimistic = error_type == "OptimisticLockingException" or code == 1
        cls = ConcurrentModification if optimistic else ServerError
    else:
        cls = EngineError
    return cls(message, status=status, error_type=error_type, code=code, request=request)


def from_transport_error(error: HttpError, request: str) -> EngineError:
    """Map a connection failure or timeout; the message names the kind, not the payload."""
    if isinstance(error, TlsFailed):
        tls = error.ssl_error
        reason = getattr(tls, "verify_message", None) or getattr(tls, "reason", None)
        if isinstance(tls, ssl.SSLCertVerificationError):
            message = (
                f"the engine's TLS certificate is not trusted ({reason or 'not verified'}): "
                "set CAMUNDA_CA_BUNDLE to the PEM file of the CA that signed it"
            )
        else:
            message = (
                f"the TLS handshake with the engine failed ({reason or type(tls).__name__}): "
                "does CAMUNDA_URL name the engine's HTTPS port?"
            )
        return TlsError(message, request=request)
    if isinstance(error, TimedOut):
        kind = "timed out"
    elif isinstance(error, ConnectFailed):
        kind = "engine not reachable (connection failed)"
    else:
        kind = f"connection error ({error.kind})"
    return EngineUnavailable(kind, request=request)
