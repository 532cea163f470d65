"""``camunda-relay deploy|start|correlate``: one engine call each, from the shell.

Each command runs one coroutine on :class:`~camunda_relay.client.EngineClient` and turns the
errors a user can cause into one line in the terms of the command ("no process definition
with key 'x' is deployed" rather than the engine's wording). Input is checked before anything
is sent, so a bad argument never leaves half the work done.

``--var NAME=VALUE`` takes VALUE as JSON when it parses (``42``, ``true``, ``null``,
``{"a": 1}``, ``"007"``) and as plain text otherwise (``--var city=Berlin``).
"""

from __future__ import annotations

import asyncio
import json
import re
import xml.etree.ElementTree as ET
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import click

from camunda_relay.client import EngineClient
from camunda_relay.errors import (
    AmbiguousCorrelation,
    AuthenticationFailed,
    BadRequest,
    EngineError,
    EngineUnavailable,
    InvalidInput,
    NoMatchingExecution,
    NotFound,
    PermissionDenied,
    RelayError,
    ServerError,
    VariableError,
)
from camunda_relay.settings import Settings
from camunda_relay.variables import encode_all, validate_business_key

__all__ = ["correlate", "deploy", "parse_value", "parse_variables", "start"]

DEPLOYABLE = (".bpmn", ".bpmn20.xml", ".dmn", ".dmn11.xml")
DEFAULT_DEPLOYMENT = "camunda-relay"

_BPMN = "{http://www.omg.org/spec/BPMN/20100524/MODEL}"
_MATCH_COUNT = re.compile(r"(\d+) executions? match")

T = TypeVar("T")

# What a command says when an engine error has a meaning in its terms; None: say the default.
Explain = Callable[[EngineError], str | None]


# --- input ------------------------------------------------------------------------------


class _BadArgument(click.ClickException):
    """A bad argument: one ``Error:`` line and exit code 2, like click's usage errors.

    (A ``click.UsageError`` raised in a command gets the usage text prepended: three lines.)
    """

    exit_code = 2


def _usage(message: str) -> click.ClickException:
    return _BadArgument(message)


def _json_constant(name: str) -> object:
    raise ValueError(name)  # NaN/Infinity are not JSON the engine accepts: keep them as text


def parse_value(text: str) -> object:
    """VALUE of ``--var``: JSON when it parses, else the text itself."""
    try:
        return json.loads(text, parse_constant=_json_constant)
    except ValueError:
        return text


def parse_variables(items: Sequence[str]) -> dict[str, object]:
    """``NAME=VALUE`` arguments to variables; a usage error names the first bad one.

    The values are checked as the client will send them (an int beyond 64 bits ...), so a bad
    one is a usage error before anything is sent.
    """
    variables: dict[str, object] = {}
    for item in items:
        name, equals, text = item.partition("=")
        name = name.strip()
        if not equals or not name:
            raise _usage(f"--var {item!r}: expected NAME=VALUE, e.g. --var amount=42")
        if name in variables:
            raise _usage(f"--var {name!r} is given twice")
        variables[name] = parse_value(text)
    try:
        encode_all(variables)
    except VariableError as error:
        raise _usage(f"--var {error.name!r}: {error.problem}") from None
    return variables


def _check_business_key(key: str | None) -> None:
    if key is None:
        return
    try:
        validate_business_key(key)
    except InvalidInput as error:
        raise _usage(f"--business-key: {error}") from None


_var_option = click.option(
    "--var",
    "var_items",
    multiple=True,
    metavar="NAME=VALUE",
    help="A process variable; VALUE is JSON if it parses, else text. Repeatable.",
)


# --- running one engine call ------------------------------------------------------------------


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _engine_error(settings: Settings, error: EngineError, explain: Explain) -> str:
    """The one line for an engine error: the command's own words, else a general one."""
    if isinstance(error, EngineUnavailable):
        if error.status is None:
            reason = error.message.rsplit(": ", 1)[-1]  # after check_access's "at URL: "
            reason = re.sub(r"^engine not reachable \((.*)\)$", r"\1", reason)
            return f"engine not reachable at {settings.shown_url} ({reason}); is it running?"
        return f"the engine at {settings.shown_url} is unavailable (HTTP {error.status}); try later"
    if isinstance(error, PermissionDenied):
        return explain(error) or f"{_who(settings)} lacks a permission: {_one_line(error.message)}"
    if isinstance(error, AuthenticationFailed):
        return _one_line(error.message)  # check_access names the setting to fix
    return explain(error) or _one_line(str(error))


def _who(settings: Settings) -> str:
    return f"user {settings.user!r}" if settings.user else "this login"


def _run(
    settings: Settings,
    action: Callable[[EngineClient], Awaitable[T]],
    explain: Explain = lambda _: None,
) -> T:
    """Run ``action`` with a client; errors become one ``Error:`` line and exit code 1."""

    async def main() -> T:
        async with EngineClient(settings) as client:
            # One authenticated GET first: wrong credentials or a CAMUNDA_URL that is not the
            # REST API are named as such, not mistaken for "no such process" (a 404).
            await client.check_access()
            return await action(client)

    try:
        return asyncio.run(main())
    except EngineError as error:
        raise click.ClickException(_engine_error(settings, error, explain)) from None
    except RelayError as error:
        raise click.ClickException(_one_line(str(error))) from None


# --- deploy -----------------------------------------------------------------------------------


def _process_keys(path: Path, data: bytes) -> list[str]:
    """Keys of the executable processes in a BPMN file; a usage error when it is not XML."""
    try:
        # The user's own model files; expat resolves no external entities.
        root = ET.fromstring(data)  # noqa: S314
    except ET.ParseError as error:
        raise _usage(f"{path}: not well-formed XML ({error})") from None
    return [
        element.get("id", "")
        for element in root.iter(f"{_BPMN}process")
        if element.get("isExecutable", "true").lower() != "false" and element.get("id")
    ]


def _read_models(paths: Sequence[Path]) -> tuple[dict[str, bytes], list[str]]:
    """Resource name -> content, and the process keys they define (checked before sending)."""
    files: dict[str, bytes] = {}
    keys: list[str] = []
    for path in paths:
        if not path.name.lower().endswith(DEPLOYABLE):
            raise _usage(f"{path}: not a BPMN or DMN file (expected {', '.join(DEPLOYABLE)})")
        if path.name in files:
            raise _usage(f"two files are named {path.name!r}; the engine keys resources by name")
        try:
            data = path.read_bytes()
        except OSError as error:
            raise _usage(f"cannot read {path}: {error.strerror}") from None
        files[path.name] = data
        if ".bpmn" in path.name.lower():
            keys.extend(_process_keys(path, data))
        else:
            _process_keys(path, data)  # well-formedness only
    return files, keys


def _definitions(deployment: Mapping[str, Any], field: str) -> list[Mapping[str, Any]]:
    found = deployment.get(field) or {}
    values = found.values() if isinstance(found, Mapping) else found
    return sorted(
        (d for d in values if isinstance(d, Mapping)),
        key=lambda d: (str(d.get("key")), int(d.get("version") or 0)),
    )


def _explain_deploy(settings: Settings) -> Explain:
    def explain(error: EngineError) -> str | None:
        if isinstance(error, PermissionDenied):
            return (
                f"{_who(settings)} may not deploy: deploying needs a user with deployment "
                "rights (CREATE on Deployment), such as the administrator"
            )
        if isinstance(error, BadRequest | ServerError):
            return f"the engine refused the deployment: {_one_line(error.message)}"
        return None

    return explain


@click.command()
@click.argument(
    "files",
    nargs=-1,
    required=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
)
@click.option(
    "--name",
    default=DEFAULT_DEPLOYMENT,
    show_default=True,
    help="Deployment name; unchanged files are compared with deployments of this name.",
)
@click.pass_obj
def deploy(settings: Settings, files: tuple[Path, ...], name: str) -> None:
    """Deploy BPMN/DMN files; only files that changed become new versions."""
    resources, keys = _read_models(files)

    async def action(client: EngineClient) -> tuple[dict[str, Any], dict[str, Any]]:
        deployment = await client.deploy(name, resources, changed_only=True)
        new = {str(d.get("key")) for d in _definitions(deployment, "deployedProcessDefinitions")}
        current: dict[str, Any] = {}
        for key in keys:
            if key not in new:
                current[key] = await client.process_definition(key)
        return deployment, current

    deployment, unchanged = _run(settings, action, _explain_deploy(settings))
    processes = _definitions(deployment, "deployedProcessDefinitions")
    decisions = _definitions(deployment, "deployedDecisionDefinitions")
    if processes or decisions:
        click.echo(f"deployment {deployment.get('id')} ({deployment.get('name') or name})")
    else:
        # The engine answers an unchanged deployment with the latest one of that name.
        click.echo(f"nothing changed since deployment {deployment.get('id')} ({name})")
    for definition in processes:
        click.echo(f"  process {definition.get('key')} version {definition.get('version')} (new)")
    for key, definition in unchanged.items():
        version = definition.get("version") if definition else "?"
        click.echo(f"  process {key} version {version} (unchanged)")
    for definition in decisions:
        click.echo(f"  decision {definition.get('key')} version {definition.get('version')} (new)")


# --- start ------------------------------------------------------------------------------------


@click.command()
@click.argument("key")
@click.option("--business-key", required=True, help="The instance's business key (max 255).")
@_var_option
@click.pass_obj
def start(settings: Settings, key: str, business_key: str, var_items: tuple[str, ...]) -> None:
    """Start an instance of the latest version of process KEY."""
    _check_business_key(business_key)
    variables = parse_variables(var_items)

    def explain(error: EngineError) -> str | None:
        if isinstance(error, PermissionDenied):
            return (
                f"{_who(settings)} may not start {key!r}: starting needs CREATE on Process "
                "Instance and CREATE_INSTANCE on the process definition, such as the "
                "administrator has"
            )
        if isinstance(error, NotFound):
            # With authorizations on, a definition the user may not read is not found either.
            return (
                f"no process definition with key {key!r} is deployed, "
                f"or {_who(settings)} may not read it"
            )
        if isinstance(error, BadRequest):
            return f"the engine refused to start {key!r}: {_one_line(error.message)}"
        return None

    instance = _run(
        settings,
        lambda client: client.start_process(key, business_key=business_key, variables=variables),
        explain,
    )
    if not isinstance(instance.get("id"), str) or not instance["id"]:
        raise click.ClickException(
            f"the server at {settings.shown_url} answered the start without a process "
            "instance id: is CAMUNDA_URL the REST API of a Camunda 7 engine?"
        )
    click.echo(
        f"started process instance {instance.get('id')} "
        f"(business key {instance.get('businessKey', business_key)!r})"
    )


# --- correlate --------------------------------------------------------------------------------


@click.command()
@click.argument("message")
@click.option("--business-key", default=None, help="Correlate to the instance with this key.")
@click.option("--process-instance", default=None, help="Correlate to this process instance id.")
@_var_option
@click.pass_obj
def correlate(
    settings: Settings,
    message: str,
    business_key: str | None,
    process_instance: str | None,
    var_items: tuple[str, ...],
) -> None:
    """Correlate MESSAGE to the process instance waiting for it."""
    if (business_key is None) == (process_instance is None):
        raise _usage("give either --business-key or --process-instance (exactly one)")
    _check_business_key(business_key)
    if process_instance is not None and not process_instance.strip():
        raise _usage("--process-instance must not be empty")
    variables = parse_variables(var_items)
    target = (
        f"with business key {business_key!r}"
        if business_key is not None
        else f"with id {process_instance!r}"
    )

    def explain(error: EngineError) -> str | None:
        if isinstance(error, PermissionDenied):
            return (
                f"{_who(settings)} may not correlate message {message!r}: correlating needs "
                "UPDATE_INSTANCE on the process definition (the relayworkers group has it)"
            )
        if isinstance(error, NoMatchingExecution):
            return f"no process instance {target} is waiting for message {message!r}"
        if isinstance(error, AmbiguousCorrelation):
            count = _MATCH_COUNT.search(error.message)
            many = f"{count.group(1)} executions" if count else "several executions"
            if business_key is not None:
                return (
                    f"{many} wait for message {message!r} with business key {business_key!r}"
                    "; correlate by --process-instance"
                )
            return f"{many} of process instance {process_instance!r} wait for message {message!r}"
        if isinstance(error, BadRequest):
            return f"the engine refused message {message!r}: {_one_line(error.message)}"
        return None

    _run(
        settings,
        lambda client: client.correlate(
            message,
            process_instance_id=process_instance,
            business_key=business_key,
            variables=variables,
        ),
        explain,
    )
    click.echo(f"correlated message {message!r} to the process instance {target}")
