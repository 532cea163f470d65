"""Build, start, probe and stop the bundled Camunda 7 engine (the ``engine/`` application).

The engine is Camunda 7.24.0 unless ``EngineOptions.flavour`` names another
(:mod:`camunda_relay.engine_flavours`: Operaton, derived from the same sources).

Used by the CLI (``camunda-relay engine up|down|status``) and by the test suite, so that both
start the engine the same way:

- :func:`ensure_built` builds the jar with the Maven wrapper when it is missing or not built
  from the current sources (:mod:`camunda_relay.engine_build`: a clone's ``engine/`` in place,
  the copy installed with the package in a per-user cache, once per version);
- :func:`start` launches it in the background on loopback with its own data directory and
  log file, and returns once ``GET /engine-rest/engine`` answers (or raises
  :class:`EngineStartError` carrying the tail of the engine log);
- :func:`stop` ends it by process id (SIGTERM, then SIGKILL after a grace period).

The state of an engine started this way (pid, port, data directory, log, the process's
start time) is kept in ``engine.json`` inside a state directory, which is how ``status`` and
``down`` find it. Before any signal, :func:`is_our_engine` checks that the recorded pid is
still that engine (its command line names the jar, its start time is the recorded one): a
stale record whose pid now belongs to another process is never signalled.

The state directory, the data directory, the log and ``engine.json`` are their owner's only
(``0700`` folders, ``0600`` files; the engine runs with umask ``077``, so H2's files are too).

The engine runs with authorizations on. Besides the administrator (``EngineOptions.user``)
it gets a least-privilege worker user, :data:`WORKER_USER`, whose password is made once at
random and kept in ``worker-password`` (mode 0600) in the state directory: the demo's worker
logs in with it, and nobody has to type it. :func:`start` raises the engine's one-line reason
when it refuses its settings (a default password off loopback). The options, the record and
the worker password live in :mod:`camunda_relay.engine_options`, the build in
:mod:`camunda_relay.engine_build`.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import time
from collections.abc import Mapping
from dataclasses import asdict
from pathlib import Path

import httpx

from camunda_relay.engine_build import (
    JAR_NAME,
    build_dir,
    cache_dir,
    engine_project_dir,
    ensure_built,
    find_jdk,
    jar_path,
    needs_build,
)
from camunda_relay.engine_flavours import DEFAULT_FLAVOUR, EngineFlavour
from camunda_relay.engine_options import (
    DEFAULT_PASSWORD,
    DEFAULT_USER,
    WORKER_PASSWORD_FILE,
    WORKER_USER,
    EngineInfo,
    EngineOptions,
    Jwt,
    Postgres,
    Tls,
    read_worker_password,
    worker_password,
)
from camunda_relay.errors import BundledEngineError, EngineBuildError
from camunda_relay.files import PRIVATE_UMASK, private_dir, private_file, write_private

__all__ = [
    "DEFAULT_FLAVOUR",
    "DEFAULT_PASSWORD",
    "DEFAULT_USER",
    "WORKER_PASSWORD_FILE",
    "WORKER_USER",
    "BundledEngineError",
    "EngineBuildError",
    "EngineFlavour",
    "EngineInfo",
    "EngineOptions",
    "EngineStartError",
    "Jwt",
    "Postgres",
    "Tls",
    "build_dir",
    "cache_dir",
    "check_port_free",
    "engine_project_dir",
    "ensure_built",
    "find_jdk",
    "forget",
    "is_our_engine",
    "is_ready",
    "jar_path",
    "kill",
    "needs_build",
    "pid_alive",
    "read_info",
    "read_worker_password",
    "start",
    "stop",
    "worker_password",
]

INFO_FILE = "engine.json"
# The engine's one line when it refuses its settings (StartupCheck.REFUSAL in engine/).
REFUSAL = "camunda-relay engine: refusing to start: "
# Engine variables this module sets itself for each start, never inherited.
_OWN_VARIABLES = (
    "CAMUNDA_DB_",
    "CAMUNDA_TLS_",
    "CAMUNDA_WORKER_",
    "CAMUNDA_MANAGEMENT_",
    "CAMUNDA_JWT_",
)


# Engines started by this process: kept so that they are reaped (no zombies, no
# "subprocess still running" warnings) when stopped from here.
_children: dict[int, subprocess.Popen[bytes]] = {}


class EngineStartError(BundledEngineError):
    """The engine did not become ready; the message ends with the tail of its log."""


def _tail(path: Path, lines: int = 25) -> str:
    """The log's last lines, leaving out Java stack frames so that the causes stay visible."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "(no log)"
    kept = [
        line
        for line in text.splitlines()
        if not line.lstrip().startswith(("at ", "... ")) and line.strip()
    ]
    return "\n".join(kept[-lines:])


def _engine_env(options: EngineOptions) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(_OWN_VARIABLES)}
    env.update(
        CAMUNDA_PORT=str(options.port),
        CAMUNDA_BIND_ADDRESS=options.bind_address,
        CAMUNDA_DATA_DIR=str(options.data_dir.resolve()),
        CAMUNDA_USER=options.user,
        CAMUNDA_PASSWORD=options.password,
        CAMUNDA_WORKER_USER=options.worker_user,
        CAMUNDA_WORKER_PASSWORD=options.worker_password or worker_password(options.state_dir),
    )
    if options.worker_tenants:
        env["CAMUNDA_WORKER_TENANTS"] = ",".join(options.worker_tenants)
    if options.jwt is not None:
        env.update(options.jwt.variables())
    if options.tls is not None:
        env.update(options.tls.variables())
    if options.management_port is not None:
        env.update(
            CAMUNDA_MANAGEMENT_PORT=str(options.management_port),
            CAMUNDA_MANAGEMENT_ADDRESS=options.management_address,
        )
    if options.postgres is not None:
        env.update(
            CAMUNDA_DB_URL=options.postgres.jdbc_url,
            CAMUNDA_DB_USER=options.postgres.user,
            CAMUNDA_DB_PASSWORD=options.postgres.password,
        )
    return env


def is_ready(base_url: str, *, timeout: float = 2.0) -> bool:
    """True when the engine answers its open readiness probe with the default engine.

    The probe sends no credentials, so it does not check an HTTPS engine's certificate: a
    client that logs in does (and names an untrusted one as such).
    """
    try:
        response = httpx.get(
            f"{base_url}/engine-rest/engine",
            timeout=timeout,
            verify=False,  # noqa: S501 - no credentials are sent; see above
        )
    except httpx.HTTPError:
        return False
    if response.status_code != 200:
        return False
    try:
        engines = response.json()
    except ValueError:
        return False
    return isinstance(engines, list) and any(
        isinstance(e, Mapping) and e.get("name") == "default" for e in engines
    )


def start(options: EngineOptions, *, jar: Path | None = None) -> EngineInfo:
    """Start the engine in the background and return once it is ready.

    Raises :class:`EngineStartError` when the process exits early (with the engine's one-line
    reason when it refused its settings, else the log's tail) or the engine is not ready
    within ``options.ready_timeout`` seconds; the process is stopped then.
    """
    jar = jar or ensure_built(flavour=options.flavour)
    if is_ready(options.base_url, timeout=1.0):
        raise EngineStartError(f"port {options.port} already serves an engine; stop it first")
    check_port_free(options.port, options.bind_address)
    private_dir(options.state_dir)
    private_dir(options.data_dir)
    command = [
        _java(),
        f"-Xmx{options.max_heap_mb}m",
        "-jar",
        str(jar),
        *(f"--{name}={value}" for name, value in options.properties.items()),
    ]
    env = _engine_env(options)
    with private_file(options.log_file).open("ab") as log:
        log_start = log.tell()
        process = subprocess.Popen(
            command,
            cwd=options.state_dir,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            umask=PRIVATE_UMASK,
        )
    _children[process.pid] = process
    info = EngineInfo(
        pid=process.pid,
        port=options.port,
        data_dir=str(options.data_dir.resolve()),
        log_file=str(options.log_file.resolve()),
        database="postgresql" if options.postgres else "h2-file",
        started=_start_time(process.pid),
        scheme=options.scheme,
        host=options.host,
        worker_user=options.worker_user,
        engine=options.flavour.name,
        engine_version=options.flavour.version,
    )
    deadline = time.monotonic() + options.ready_timeout
    while not is_ready(options.base_url, timeout=1.0):
        if process.poll() is not None:
            _children.pop(process.pid, None)
            refusal = _refusal(options.log_file, log_start)
            if refusal is not None:
                raise EngineStartError(f"the engine refused to start: {refusal}")
            raise EngineStartError(
                f"engine exited with code {process.returncode} before it was ready "
                f"(log: {options.log_file})\n{_tail(options.log_file)}"
            )
        if time.monotonic() > deadline:
            stop(process.pid)
            raise EngineStartError(
                f"engine not ready after {options.ready_timeout:.0f} s "
                f"(log: {options.log_file})\n{_tail(options.log_file)}"
            )
        time.sleep(0.25)
    write_private(options.state_dir / INFO_FILE, json.dumps(asdict(info), indent=2))
    return info


def check_port_free(port: int, address: str = "127.0.0.1") -> None:
    """One line instead of a boot that fails half a minute later: the port is taken."""
    host = address.strip().strip("[]")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as Tomcat binds
        try:
            probe.bind((host, port))
        except OSError as error:
            raise EngineStartError(
                f"port {port} on {host or 'all interfaces'} is in use ({error.strerror}): "
                "choose another with --port, or stop the program that holds it"
            ) from None


def _refusal(log: Path, offset: int) -> str | None:
    """The engine's reason for refusing its settings, written to ``log`` after ``offset``."""
    try:
        with log.open("rb") as handle:
            handle.seek(offset)
            text = handle.read().decode(errors="replace")
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith(REFUSAL):
            return line.removeprefix(REFUSAL).strip()
    return None


def _java() -> str:
    home = os.environ.get("JAVA_HOME")
    if home and (Path(home) / "bin" / "java").exists():
        return str(Path(home) / "bin" / "java")
    return "java"


def read_info(state_dir: Path) -> EngineInfo | None:
    """The engine recorded in ``state_dir``, or None when there is none."""
    try:
        data = json.loads((state_dir / INFO_FILE).read_text())
        return EngineInfo(**data)
    except (OSError, ValueError, TypeError):
        return None


def forget(state_dir: Path) -> None:
    """Remove the record of ``state_dir`` (a stale one: its engine is gone)."""
    with contextlib.suppress(FileNotFoundError):
        (state_dir / INFO_FILE).unlink()


def _start_time(pid: int) -> int | None:
    """The process's start time in clock ticks since boot (Linux); None where unknown."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return int(stat.rsplit(")", 1)[-1].split()[19])
    except (OSError, ValueError, IndexError):
        return None


def is_our_engine(info: EngineInfo) -> bool:
    """Whether ``info.pid`` is still the engine recorded: alive, its command line names the
    engine's jar, and its start time is the one recorded (a pid reused by another process,
    even another engine started later, is not). Where ``/proc`` is missing, alive is all
    that can be told."""
    if not pid_alive(info.pid):
        return False
    try:
        command = Path(f"/proc/{info.pid}/cmdline").read_bytes()
    except FileNotFoundError:
        return not Path("/proc/self").exists()  # no /proc here: alive is what is known
    except OSError:
        return False
    if JAR_NAME.encode() not in command:
        return False
    return info.started is None or _start_time(info.pid) == info.started


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child still answers kill(0); it is not alive for our purposes.
    with contextlib.suppress(OSError):
        stat = Path(f"/proc/{pid}/stat").read_text()
        if stat.rsplit(")", 1)[-1].split()[0] == "Z":
            return False
    return True


def stop(pid: int, *, grace: float = 30.0) -> bool:
    """Stop the process: SIGTERM, then SIGKILL after ``grace`` seconds. False if not running."""
    if not pid_alive(pid):
        return False
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while pid_alive(pid):
        _reap(pid)
        if time.monotonic() > deadline:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            deadline = time.monotonic() + 10
        time.sleep(0.1)
    _reap(pid)
    return True


def _reap(pid: int) -> None:
    child = _children.get(pid)
    if child is not None:
        if child.poll() is not None:
            del _children[pid]
        return
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


def kill(pid: int) -> None:
    """SIGKILL the engine (for crash tests)."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while pid_alive(pid) and time.monotonic() < deadline:
        _reap(pid)
        time.sleep(0.05)
