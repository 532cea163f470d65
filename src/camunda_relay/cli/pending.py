"""``camunda-relay pending``: the reply jobs in a worker's journal, orphans, retry and cancel.

::

    camunda-relay pending [--journal PATH_OR_URL] [--state S | --all] [--json] [--show-errors]
    camunda-relay pending --orphans [--message NAME ...] [--min-age SECONDS] [--json]
    camunda-relay pending retry ID [--deadline SECONDS]
    camunda-relay pending cancel ID [--yes]

The listing shows ids, states, ages, attempts, deliveries and the last error (what failed
and the exception's type): never a variable value or a handler's result. The text of a
handler's exception, which may quote a value, is shown only with ``--show-errors``.
``--orphans`` asks the engine for executions waiting for a reply message that no journal
job will answer (:mod:`camunda_relay.replies.reconciler`).

``retry`` puts a failed or dropped job back where a worker resumes it: failed with a result
(delivery failed) to ``done``, to send the message again; failed without one (the work failed)
to ``acknowledged``, to run the work again; dropped to ``recorded``, so the worker first checks
whether the task was completed after all. Each gets a fresh delivery deadline, and its lease
is released, so a running worker claims it at its next housekeeping round (a third of
``CAMUNDA_JOURNAL_LEASE``), a stopped one at its next start.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import re
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TypeVar

import click

from camunda_relay.client import EngineClient
from camunda_relay.errors import CorruptJob, JournalError, JournalUnavailable
from camunda_relay.journal import Journal, open_journal
from camunda_relay.journal.base import UnreadableJob
from camunda_relay.replies.job import Job, JobState
from camunda_relay.replies.reconciler import Orphan, find_orphans
from camunda_relay.settings import Settings, masked

__all__ = ["journal_option", "pending", "target_journal", "with_journal"]

T = TypeVar("T")

DEFAULT_MESSAGE = "sample_response"
_ERROR_WIDTH = 60
_STATES = [state.value for state in JobState]
# How an earlier camunda-relay stored a failed handler's error: with the exception's text.
_LEGACY_ERROR = re.compile(r"^(work failed after \d+ attempts): ([A-Za-z_][\w.]*)(?::.*)?$", re.S)


# -- opening the journal -----------------------------------------------------------------------


def _shown(target: str) -> str:
    """The journal as it may be shown: a URL's or DSN's password masked."""
    return masked(target)


def _error(job: Job, details: bool) -> str | None:
    """The job's error as shown: what failed and the type; the exception's text with
    ``details`` only (a journal of an earlier version kept the text in ``error``)."""
    if details:
        return f"{job.error}: {job.error_detail}" if job.error_detail else job.error
    legacy = _LEGACY_ERROR.match(job.error or "")
    return f"{legacy.group(1)} ({legacy.group(2)})" if legacy else job.error


def _owner() -> str:
    return f"camunda-relay-pending-{os.getpid()}"


def _open(target: str) -> Journal:
    """The journal at ``target``; an error line when there is none to read.

    The lease is zero: a job this command saves is free for any worker to claim at once.
    """
    if target == ":memory:":
        raise click.ClickException(
            "the journal is ':memory:', which lives inside a worker process: point --journal "
            "(or CAMUNDA_JOURNAL) at a SQLite file or a postgresql:// URL"
        )
    if "://" not in target and not Path(target).is_file():
        raise click.ClickException(
            f"no journal at {target} (give --journal PATH_OR_URL or set CAMUNDA_JOURNAL)"
        )
    return open_journal(target, owner=_owner(), lease=timedelta(0))


def with_journal(target: str, action: Callable[[Journal], Awaitable[T]]) -> T:
    async def main() -> T:
        journal = _open(target)
        try:
            return await action(journal)
        finally:
            await journal.close()

    try:
        return asyncio.run(main())
    except JournalError as error:
        problem = str(error)
        verb = "use" if isinstance(error, JournalUnavailable) else "read"
        prefix = f"SQLite journal {target}: "
        if problem.startswith(prefix) or target not in problem:
            problem = f"cannot {verb} the journal {_shown(target)}: {problem.removeprefix(prefix)}"
        raise click.ClickException(masked(problem)) from None
    except Exception as error:
        if not type(error).__module__.startswith("psycopg"):
            raise
        problem = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise click.ClickException(f"cannot use the journal {_shown(target)}: {problem}") from None


# -- presenting --------------------------------------------------------------------------------


def _age(seconds: float) -> str:
    seconds = max(seconds, 0.0)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{int(seconds // size)}{unit}"
    return f"{int(seconds)}s"


def _stamp(epoch: float | None) -> str | None:
    if epoch is None:
        return None
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="seconds")


def _job_record(job: Job, now: float, details: bool) -> dict[str, object]:
    """What a person may see of a job: ids, state, counts, times, the error; no values
    (the exception's text only with ``details``)."""
    record: dict[str, object] = {
        "id": job.id,
        "state": job.state.value,
        "message": job.message,
        "topic": job.task.topic,
        "process_instance_id": job.task.process_instance_id,
        "business_key": job.task.business_key,
        "age_seconds": round(now - job.created_at, 3),
        "created_at": _stamp(job.created_at),
        "updated_at": _stamp(job.updated_at),
        "deadline": _stamp(job.deadline),
        "attempts": job.attempts,
        "deliveries": job.deliveries,
        "has_result": job.result is not None,
        "error": _error(job, details=False),
    }
    if details:
        record["error_detail"] = job.error_detail
    return record


def _orphan_record(orphan: Orphan) -> dict[str, object]:
    since = orphan.waiting_since
    return {
        "process_instance_id": orphan.process_instance_id,
        "execution_id": orphan.execution_id,
        "business_key": orphan.business_key,
        "message": orphan.message,
        "activity_id": orphan.activity_id,
        "waiting_since": since.isoformat(timespec="seconds") if since else None,
    }


def _table(headers: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    body = [list(headers), *[list(row) for row in rows]]
    widths = [max(len(row[i]) for row in body) for i in range(len(headers))]
    lines = [
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in body
    ]
    return "\n".join(lines)


def _short(text: str | None) -> str:
    if not text:
        return "-"
    line = " ".join(text.split())
    return line if len(line) <= _ERROR_WIDTH else line[: _ERROR_WIDTH - 1] + "…"


def _print_jobs(jobs: list[Job], now: float, details: bool) -> None:
    headers = ("ID", "STATE", "AGE", "ATTEMPTS", "DELIVERIES", "MESSAGE", "INSTANCE", "ERROR")
    rows = [
        (
            job.id,
            job.state.value,
            _age(now - job.created_at),
            str(job.attempts),
            str(job.deliveries),
            job.message,
            job.task.process_instance_id,
            _short(_error(job, details)),
        )
        for job in jobs
    ]
    click.echo(_table(headers, rows))


def _print_orphans(orphans: list[Orphan]) -> None:
    headers = ("INSTANCE", "EXECUTION", "MESSAGE", "ACTIVITY", "WAITING SINCE", "BUSINESS KEY")
    rows = [
        (
            orphan.process_instance_id,
            orphan.execution_id,
            orphan.message,
            orphan.activity_id or "-",
            orphan.waiting_since.isoformat(timespec="seconds") if orphan.waiting_since else "-",
            orphan.business_key or "-",
        )
        for orphan in orphans
    ]
    click.echo(_table(headers, rows))


# -- the commands ------------------------------------------------------------------------------


journal_option = click.option(
    "--journal",
    "journal_target",
    metavar="PATH_OR_URL",
    default=None,
    help="The worker's journal: a SQLite file or a postgresql:// URL (default: $CAMUNDA_JOURNAL).",
)


def target_journal(ctx: click.Context, given: str | None) -> str:
    if given:
        return given
    parent = ctx.parent.params.get("journal_target") if ctx.parent is not None else None
    if isinstance(parent, str) and parent:
        return parent
    return ctx.find_object(Settings).journal  # type: ignore[union-attr]


@click.group(invoke_without_command=True)
@journal_option
@click.option(
    "--state",
    type=click.Choice(_STATES, case_sensitive=False),
    default=None,
    help="Only jobs in this state (finished states too).",
)
@click.option("--all", "show_all", is_flag=True, help="Include finished jobs.")
@click.option("--json", "as_json", is_flag=True, help="JSON instead of a table.")
@click.option(
    "--show-errors",
    is_flag=True,
    help="Show the text of a failed handler's exception (it may quote a variable's value).",
)
@click.option(
    "--orphans",
    is_flag=True,
    help="Instead: executions waiting for a reply message that no journal job will send.",
)
@click.option(
    "--message",
    "messages",
    multiple=True,
    metavar="NAME",
    help=f"With --orphans: a reply message to check (repeatable; default {DEFAULT_MESSAGE}, "
    "plus the messages of the journal's jobs).",
)
@click.option(
    "--min-age",
    type=click.FloatRange(min=0),
    metavar="SECONDS",
    default=60.0,
    show_default=True,
    help="With --orphans: ignore executions waiting for less than this many seconds.",
)
@click.pass_context
def pending(
    ctx: click.Context,
    journal_target: str | None,
    state: str | None,
    show_all: bool,
    as_json: bool,
    show_errors: bool,
    orphans: bool,
    messages: tuple[str, ...],
    min_age: float,
) -> None:
    """List the reply jobs of a worker's journal (unfinished ones unless --all or --state).

    ``pending --orphans`` lists executions waiting for a reply no journal job will send;
    ``pending retry ID`` resumes a failed or dropped job; ``pending cancel ID`` deletes one.
    Shown: ids, states, ages, attempts, deliveries, the last error (its type); never
    variable values. ``--show-errors`` adds the exception's text, which may quote one.
    """
    if ctx.invoked_subcommand is not None:
        return
    settings: Settings = ctx.obj
    target = journal_target or settings.journal
    if orphans:
        checked, found = with_journal(
            target,
            lambda journal: _orphans(settings, journal, messages, timedelta(seconds=min_age)),
        )
        if as_json:
            click.echo(json.dumps([_orphan_record(orphan) for orphan in found], indent=2))
        elif not found:
            click.echo(
                f"no orphans: every execution waiting over {min_age:g} s for "
                f"{', '.join(checked)} has a journal job or a camundaRelay incident"
            )
        else:
            _print_orphans(found)
        return
    wanted = JobState(state.lower()) if state else None
    jobs, counts, unreadable = with_journal(
        target, lambda journal: _list(journal, wanted, show_all)
    )
    now = time.time()
    if as_json:
        records = [_job_record(job, now, show_errors) for job in jobs]
        records += [dataclasses.asdict(bad) for bad in unreadable]
        click.echo(json.dumps(records, indent=2))
        return
    if unreadable:
        _print_unreadable(unreadable)
    if jobs:
        _print_jobs(jobs, now, show_errors)
    else:
        what = f"{wanted.value} " if wanted else ("" if show_all else "unfinished ")
        click.echo(f"no {what}jobs in {_shown(target)}")
    if wanted is None and not show_all:
        hidden = ", ".join(f"{counts[s]} {s.value}" for s in JobState if s.finished and counts[s])
        if hidden:
            click.echo(f"(not shown: {hidden}; --all or --state to see them)")


def _print_unreadable(unreadable: list[UnreadableJob]) -> None:
    click.echo(
        "cannot be read (given back; no worker takes them: `pending cancel ID` lets the "
        "reconciler resume the instance):"
    )
    rows = [(bad.id, bad.state, bad.topic, _short(bad.reason)) for bad in unreadable]
    click.echo(_table(("ID", "STATE", "TOPIC", "WHY"), rows) + "\n")


async def _list(
    journal: Journal, state: JobState | None, show_all: bool
) -> tuple[list[Job], dict[JobState, int], list[UnreadableJob]]:
    unreadable = await journal.unreadable()
    counts = await journal.counts()
    if state is not None and not state.finished:
        jobs = [job for job in await journal.unfinished() if job.state is state]
    elif state is not None or show_all:
        jobs = await journal.jobs()
        if state is not None:
            jobs = [job for job in jobs if job.state is state]
    else:
        jobs = await journal.unfinished()
    return jobs, counts, unreadable


async def _orphans(
    settings: Settings, journal: Journal, given: Sequence[str], min_age: timedelta
) -> tuple[list[str], list[Orphan]]:
    messages = set(given or [DEFAULT_MESSAGE])
    messages.update(job.message for job in await journal.jobs())
    async with EngineClient(settings) as client:
        await client.check_access()
        found = await find_orphans(client, journal, messages, min_age=min_age)
    return sorted(messages), found


def _retried(job: Job, deadline: timedelta) -> Job:
    """The job back in the state a worker resumes it from (see the module docstring)."""
    fresh = time.time() + deadline.total_seconds()
    if job.state is JobState.DROPPED:
        return job.advance(JobState.RECORDED, deadline=fresh)
    if job.state is not JobState.FAILED:
        raise click.ClickException(
            f"job {job.id} is {job.state.value}: only failed or dropped jobs can be retried"
        )
    if job.result is not None:
        return job.advance(JobState.DONE, deadline=fresh)
    # The work runs again: an answer the failed attempt took goes with its token.
    return job.advance(JobState.ACKNOWLEDGED, attempts=0, deadline=fresh, token_hash=None)


_NEXT = {
    JobState.DONE: "the message is sent again",
    JobState.ACKNOWLEDGED: "the work runs again, then the message is sent",
    JobState.RECORDED: "the worker checks whether its task was completed and, if so, runs "
    "the work (if not, the job is dropped again and the engine offers the task anew)",
}


@pending.command()
@click.argument("job_id", metavar="ID")
@journal_option
@click.option(
    "--deadline",
    type=click.FloatRange(min=1),
    metavar="SECONDS",
    default=None,
    help="Seconds from now to deliver the reply (default: $CAMUNDA_REPLY_DEADLINE).",
)
@click.pass_context
def retry(
    ctx: click.Context, job_id: str, journal_target: str | None, deadline: float | None
) -> None:
    """Put a failed or dropped job back to be resumed by a worker."""
    settings: Settings = ctx.obj
    target = target_journal(ctx, journal_target)
    window = timedelta(seconds=deadline) if deadline else settings.reply_deadline

    async def action(journal: Journal) -> tuple[Job, Job]:
        job = await journal.get(job_id)
        if job is None:
            raise click.ClickException(f"no job {job_id} in {_shown(target)}")
        retried = _retried(job, window)
        await journal.save(retried)  # the journal's lease is zero: free to claim at once
        return job, retried

    before, after = with_journal(target, action)
    click.echo(f"job {after.id}: {before.state.value} -> {after.state.value}")
    click.echo(
        f"a worker on this journal resumes it ({_NEXT[after.state]}) at its next housekeeping "
        f"round or start; reply deadline {_stamp(after.deadline)}"
    )


@pending.command()
@click.argument("job_id", metavar="ID")
@journal_option
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
@click.pass_context
def cancel(ctx: click.Context, job_id: str, journal_target: str | None, yes: bool) -> None:
    """Delete a job from the journal (its instance then waits until someone acts)."""
    target = target_journal(ctx, journal_target)

    async def find(journal: Journal) -> Job | UnreadableJob | None:
        try:
            return await journal.get(job_id)
        except CorruptJob as error:  # a row no reader of this version reads: it may go
            return UnreadableJob(job_id, "?", "unreadable", str(error))

    job = with_journal(target, find)
    if job is None:
        raise click.ClickException(f"no job {job_id} in {_shown(target)}")
    if isinstance(job, UnreadableJob):
        if not yes:
            click.confirm(
                f"Delete job {job_id}, which cannot be read? The reconciler will report its "
                "instance as an orphan (and resume it with CAMUNDA_RECONCILE=resume).",
                abort=True,
            )
    elif not yes:
        warning = (
            f"Delete job {job.id} ({job.state.value}, process instance "
            f"{job.task.process_instance_id})?"
        )
        if not job.state.finished:
            warning += (
                f" No worker will send {job.message!r} for it; the reconciler will report the "
                "instance as an orphan. A worker running the job now writes it back: stop it "
                "first."
            )
        click.confirm(warning, abort=True)

    async def delete(journal: Journal) -> bool:
        return await journal.delete(job_id)

    if not with_journal(target, delete):
        raise click.ClickException(f"no job {job_id} in {_shown(target)}")
    click.echo(f"job {job_id} deleted")
