"""Deferred replies: the token a reply topic's handler hands out, and answering it.

A handler of a reply topic that passes the work on (to a payment provider, a batch job, a
person) reads ``task.reply_token``, hands it to whoever will answer, and raises
:class:`~camunda_relay.task.DeferReply`. The job then waits in the journal, held by nobody,
with its reply deadline running. Whoever holds the token answers, once, from any process
that can reach the journal (the same answer again, a retry after a lost response, is
accepted again; another answer is refused):

- :func:`send_reply` (the reply's variables) or :func:`fail_reply` (a reason: the waiting
  execution gets an incident with it), from Python;
- ``camunda-relay reply TOKEN --var name=value`` / ``--fail "reason"``;
- ``POST /reply`` on the worker's HTTP server, behind ``CAMUNDA_REPLY_SECRET``
  (:mod:`camunda_relay.replies.http`).

Answering only writes the answer into the journal; a worker serving the topic claims the
job and delivers the reply on the same path as every reply (to the instance the task came
from, too early retried, already delivered confirmed, once). An answer that comes while the
handler still runs is delivered too, whatever becomes of that attempt: no later attempt runs
past it. Past the deadline the token is expired and the waiting execution gets an incident.
When the instance is cancelled meanwhile (or moves on without the reply), the job ends
``cancelled`` and its token answers so.

A token is 32 random bytes (``secrets``), URL-safe text, derived from nothing: it reveals
nothing about the instance; it never starts with ``-`` (a command line would take it for an
option). The journal keeps only its SHA-256. Each attempt of the work gets a new token (a
re-run after a crash too); the last one handed out is the one that answers, unless an earlier
one was answered first: that answer is taken before any new attempt starts.
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
import secrets
from collections.abc import Mapping

from camunda_relay.errors import ReplyTokenError
from camunda_relay.journal.base import Journal, Verdict
from camunda_relay.journal.codec import dumps_answer
from camunda_relay.replies.job import Answer
from camunda_relay.tracing import answering
from camunda_relay.variables import encode_all

__all__ = ["fail_reply", "hash_token", "new_token", "send_reply"]

_TOKEN_BYTES = 32
_TOKEN = re.compile(r"[A-Za-z0-9_-]{43}")
_MAX_REASON = 3900  # what an incident's message column takes (see replies.incidents)

_REFUSED = {
    Verdict.UNKNOWN: "unknown reply token (never issued, superseded by a later attempt, or "
    "its job is gone)",
    Verdict.USED: "this reply token was answered already, with another answer: a token "
    "takes one answer (the same answer again is accepted)",
    Verdict.EXPIRED: "this reply token has expired: its reply deadline passed, or its job "
    "went on without it",
    Verdict.CANCELLED: "the process instance was cancelled: nobody waits for this reply any more",
}


def new_token() -> tuple[str, str]:
    """A fresh token and its hash (the hash is what the journal keeps).

    Never one that starts with ``-``: ``camunda-relay reply TOKEN`` would take it for an
    option (about one token in 64 did)."""
    token = secrets.token_urlsafe(_TOKEN_BYTES)
    while token.startswith("-"):
        token = secrets.token_urlsafe(_TOKEN_BYTES)
    return token, hash_token(token)


def hash_token(token: str) -> str:
    """The SHA-256 of ``token``, hex: the journal's key for it."""
    return hashlib.sha256(token.encode()).hexdigest()


async def send_reply(
    journal: Journal, token: str, variables: Mapping[str, object] | None = None
) -> None:
    """Answer ``token`` with the reply's ``variables``; a worker delivers the message.

    :class:`~camunda_relay.errors.ReplyTokenError` (one line, naming why) when the token is
    unknown, used or expired; :class:`~camunda_relay.errors.VariableError` for a value that
    cannot be sent; :class:`~camunda_relay.errors.JournalError` when the journal fails.
    """
    values = dict(variables or {})
    encode_all(values)  # a value the engine cannot take fails here, not at the worker
    await _answer(journal, token, Answer(variables=values))


async def fail_reply(journal: Journal, token: str, reason: str) -> None:
    """Answer ``token`` with a failure: the waiting execution gets an incident with
    ``reason`` (no reply is sent). Errors as :func:`send_reply`."""
    if not isinstance(reason, str) or not reason.strip():
        raise ReplyTokenError("a failure needs a reason (the incident's message)")
    await _answer(journal, token, Answer(failure=reason.strip()[:_MAX_REASON]))


async def _answer(journal: Journal, token: str, answer: Answer) -> None:
    if not isinstance(token, str) or not _TOKEN.fullmatch(token.strip()):
        raise ReplyTokenError(_REFUSED[Verdict.UNKNOWN])
    with answering() as trace:
        if trace:
            answer = dataclasses.replace(answer, trace=trace)
        verdict = await journal.answer(hash_token(token.strip()), dumps_answer(answer))
        if verdict is not Verdict.ACCEPTED:
            raise ReplyTokenError(_REFUSED[verdict], verdict=verdict.value)
