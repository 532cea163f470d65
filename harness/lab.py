"""One scenario's world: a real engine (H2 in file mode, or PostgreSQL), the fault proxy in
front of it, worker subprocesses pointed at the proxy, the ledger, and the scenario's folder.

The engine's administrator has a canary password and every instance carries a canary
payload, so the checker can prove that neither reaches a worker log line (the workers log at
DEBUG). Workers run as ``python -m camunda_relay.cli worker harness.fault_worker``, so a
``kill -9`` is real; each worker keeps its own SQLite journal in the folder (unless told to
share one) and its stderr in ``worker-<name>.log``.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import httpx

from camunda_relay import bundled_engine
from harness import chaos
from harness.faultproxy import ProxyThread
from harness.history import OperationLog

__all__ = ["CANARY_PAYLOAD", "PROCESS_KEY", "USER", "Lab", "WorkerProcess", "wait_until"]

REPO = Path(__file__).resolve().parents[1]
USER = "relayfaults"
CANARY_PAYLOAD = "canary-payload-5b1d"
PROCESS_KEY = "correlation-message"
CATCH_ACTIVITY = "wait_for_response"
MESSAGE = "sample_response"


def wait_until(condition: Callable[[], Any], *, timeout: float, interval: float = 0.5) -> Any:
    """Poll ``condition`` until it returns something truthy; the last value at the deadline."""
    deadline = time.monotonic() + timeout
    delay = 0.05
    while True:
        try:
            result = condition()
        except httpx.HTTPError:
            result = None
        if result or time.monotonic() > deadline:
            return result
        time.sleep(delay)
        delay = min(delay * 2, interval)


def free_port() -> int:
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class WorkerProcess:
    """One worker subprocess, restartable; its log file collects every run's stderr."""

    def __init__(self, name: str, command: list[str], env: dict[str, str], log: Path) -> None:
        self.name = name
        self.command = command
        self.env = env
        self.log = log
        self.process: subprocess.Popen[bytes] | None = None
        self.starts = 0
        self.exit_codes: list[int] = []

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def start(self, **env: str) -> WorkerProcess:
        self.env.update(env)
        self.starts += 1
        seed = self.env.get("HARNESS_SEED", "0")
        self.env["CAMUNDA_RELAY_FAILPOINTS_SEED"] = f"{seed}{self.starts:03d}"
        # Unique per process, as the default is, but readable in the operation history;
        # FAULT_FIXED_WORKER_ID keeps one id across restarts (a Kubernetes pod name).
        fixed = self.env.get("FAULT_FIXED_WORKER_ID")
        self.env["CAMUNDA_WORKER_ID"] = fixed or f"{self.name}-{self.starts}-{secrets.token_hex(3)}"
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                self.command,
                env=self.env,
                cwd=REPO,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        return self

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def kill9(self) -> None:
        if self.process is not None and self.alive():
            chaos.kill9(self.process.pid)
            self.wait(30)

    def term(self) -> None:
        if self.process is not None and self.alive():
            self.process.send_signal(signal.SIGTERM)

    def wait(self, timeout: float) -> int | None:
        if self.process is None:
            return None
        try:
            code = self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None
        if len(self.exit_codes) < self.starts:
            self.exit_codes.append(code)
        return code

    def stop(self, grace: float = 40.0) -> int | None:
        """SIGTERM, then SIGKILL after ``grace`` s; returns the exit code of the SIGTERM."""
        if not self.alive():
            return self.wait(1)
        self.term()
        code = self.wait(grace)
        if code is None:
            self.kill9()
        return code

    def cpu(self) -> float:
        return chaos.cpu_seconds(self.pid) if self.alive() else 0.0


class Lab:
    """Engine + proxy + workers for one scenario; ``close()`` ends everything it started."""

    def __init__(
        self,
        name: str,
        folder: Path,
        *,
        seed: int,
        jar: Path | None = None,
        postgres: bool = False,
    ) -> None:
        self.name = name
        self.folder = folder
        self.seed = seed
        folder.mkdir(parents=True, exist_ok=True)
        self.password = f"canary-pw-{secrets.token_hex(6)}"
        self.ledger_path = folder / "ledger.sqlite3"
        self.history_path = folder / "history.jsonl"
        self.workers: dict[str, WorkerProcess] = {}
        self.instances: list[str] = []
        self.marks: list[tuple[str, float]] = []
        self.notes: dict[str, Any] = {}
        self._pg: Any = None
        self._pg_base: Path | None = None
        self.pg_journals: list[str] = []  # DSNs of PostgreSQL journals (read by the checker)
        self.jar = jar or bundled_engine.ensure_built()
        pg = self._start_postgres() if postgres else None
        self.options = bundled_engine.EngineOptions(
            port=free_port(),
            state_dir=folder / "engine",
            user=USER,
            password=self.password,
            postgres=pg,
            ready_timeout=300.0,
        )
        self.engine_pid = bundled_engine.start(self.options, jar=self.jar).pid
        self.history = OperationLog(self.history_path)
        self.proxy = ProxyThread(self.options.port, seed=seed, history=self.history, control_port=0)
        self.rest = httpx.Client(
            base_url=f"{self.options.base_url}/engine-rest",
            auth=(USER, self.password),
            timeout=60,
        )

    # -- PostgreSQL -------------------------------------------------------------------------

    def _postgres_server(self) -> Any:
        """The lab's PostgreSQL server, started on first use (for the engine or a journal)."""
        if self._pg is not None:
            return self._pg
        from tests.support import postgres as pg
        from tests.support.tools import postgres_bin_dir

        bin_dir = postgres_bin_dir()
        if bin_dir is None:
            raise RuntimeError("PostgreSQL server not installed (Debian's postgresql package)")
        self._pg_base = Path(tempfile.mkdtemp(prefix="relay-faults-pg-"))
        self._pg = pg.init_server(bin_dir, self._pg_base, free_port())
        return self._pg

    def _start_postgres(self) -> bundled_engine.Postgres:
        from tests.support import postgres as pg

        server = self._postgres_server()
        server.create_database("camunda")
        return bundled_engine.Postgres(server.jdbc_url("camunda"), pg.USER, pg.PASSWORD)

    def journal_database(self, name: str = "journal", *, port: int | None = None) -> str:
        """A new database for a shared PostgreSQL journal; its ``postgresql://`` URL (at
        ``port`` instead of the server's own when given: a proxy in front of it)."""
        from tests.support import postgres as pg

        server = self._postgres_server()
        server.create_database(name)
        url = f"postgresql://{pg.USER}:{pg.PASSWORD}@127.0.0.1:{{port}}/{name}"
        self.pg_journals.append(url.format(port=server.port))
        return url.format(port=port or server.port)

    @property
    def postgres_port(self) -> int:
        return int(self._postgres_server().port)

    def postgres_stop_immediate(self) -> None:
        self._pg.stop(mode="immediate")

    def postgres_start(self) -> None:
        self._pg.start()

    # -- the engine -------------------------------------------------------------------------

    def engine_kill9(self) -> None:
        bundled_engine.kill(self.engine_pid)

    def engine_start(self) -> None:
        self.engine_pid = bundled_engine.start(self.options, jar=self.jar).pid

    def engine_suspend(self) -> None:
        chaos.suspend(self.engine_pid)

    def engine_resume(self) -> None:
        chaos.resume(self.engine_pid)

    def mark(self, what: str) -> None:
        """Remember when a fault started or ended (``"fault-end"`` is what I5 measures from)."""
        self.marks.append((what, time.time()))

    # -- workers ----------------------------------------------------------------------------

    def worker(
        self,
        name: str = "w1",
        *,
        work: str = "1",
        failpoints: str = "",
        journal: Path | str | None = None,
        start: bool = True,
        **settings: str,
    ) -> WorkerProcess:
        """A worker subprocess; ``settings`` are CAMUNDA_* settings in lower case
        (``lock_duration="10"``) or FAULT_* variables of :mod:`harness.fault_worker`."""
        env = {k: v for k, v in os.environ.items() if not k.startswith(("CAMUNDA_", "FAULT_"))}
        env.update(
            PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")])),
            CAMUNDA_URL=self.proxy.url,
            CAMUNDA_USER=USER,
            CAMUNDA_PASSWORD=self.password,
            CAMUNDA_JOURNAL=str(journal or self.folder / f"journal-{name}.sqlite3"),
            CAMUNDA_LONG_POLL="5",
            CAMUNDA_REQUEST_TIMEOUT="10",
            CAMUNDA_SHUTDOWN_GRACE="10",
            CAMUNDA_JOURNAL_LEASE="15",
            CAMUNDA_RETRY_TIMEOUT="0.5",
            CAMUNDA_REPLY_DEADLINE="900",
            FAULT_LEDGER=str(self.ledger_path),
            FAULT_WORK_SECONDS=work,
            FAULT_WORKER_NAME=name,
            HARNESS_SEED=str(self.seed),
        )
        if failpoints:
            env["CAMUNDA_RELAY_FAILPOINTS"] = failpoints
        env.update(
            {
                key if key.startswith("FAULT_") else f"CAMUNDA_{key.upper()}": value
                for key, value in settings.items()
            }
        )
        command = [
            sys.executable,
            "-m",
            "camunda_relay.cli",
            "worker",
            "harness.fault_worker",
            "--log-level",
            "DEBUG",
        ]
        process = WorkerProcess(name, command, env, self.folder / f"worker-{name}.log")
        self.workers[name] = process
        if start:
            process.start()
        return process

    def worker_logs(self) -> list[Path]:
        return sorted(self.folder.glob("worker-*.log"))

    def journals(self) -> list[Path]:
        return sorted(self.folder.glob("journal-*.sqlite3"))

    # -- instances --------------------------------------------------------------------------

    def deploy(self, name: str, bpmn: str) -> None:
        response = self.rest.post(
            "/deployment/create",
            data={"deployment-name": name, "deploy-changed-only": "true"},
            files={f"{name}.bpmn": (f"{name}.bpmn", bpmn.encode(), "application/octet-stream")},
        )
        response.raise_for_status()

    def start_instances(
        self,
        count: int,
        *,
        process_key: str = PROCESS_KEY,
        business_key: str | Callable[[int], str] | None = None,
        variables: Mapping[str, Any] | None = None,
    ) -> list[str]:
        started: list[str] = []
        for n in range(count):
            if callable(business_key):
                key: str | None = business_key(n)
            else:
                key = business_key or f"{self.name}-{len(self.instances) + n}"
            values = {"payload": {"value": CANARY_PAYLOAD, "type": "String"}}
            for var, value in (variables or {}).items():
                values[var] = {"value": value, "type": "String"}
            response = self.rest.post(
                f"/process-definition/key/{process_key}/start",
                json={"businessKey": key, "variables": values},
            )
            response.raise_for_status()
            started.append(str(response.json()["id"]))
        self.instances.extend(started)
        return started

    def unfinished(self, ids: Sequence[str]) -> list[str]:
        if not ids:
            return []
        response = self.rest.post(
            "/history/process-instance",
            json={"processInstanceIds": list(ids), "finished": True},
        )
        response.raise_for_status()
        done = {item["id"] for item in response.json()}
        return [i for i in ids if i not in done]

    def wait_finished(self, ids: Sequence[str], timeout: float) -> bool:
        return bool(wait_until(lambda: not self.unfinished(ids), timeout=timeout, interval=1.0))

    def waiting(self) -> int:
        """How many executions wait for the reply message right now."""
        response = self.rest.get(
            "/execution/count", params={"messageEventSubscriptionName": MESSAGE}
        )
        response.raise_for_status()
        return int(response.json()["count"])

    def external_tasks(self) -> int:
        response = self.rest.get("/external-task/count")
        response.raise_for_status()
        return int(response.json()["count"])

    # -- the end ----------------------------------------------------------------------------

    def stop_workers(self, grace: float = 40.0) -> dict[str, int | None]:
        return {name: worker.stop(grace) for name, worker in self.workers.items()}

    def close(self) -> None:
        for worker in self.workers.values():
            with contextlib.suppress(Exception):
                if worker.alive():
                    chaos.resume(worker.pid)
                    worker.kill9()
        with contextlib.suppress(Exception):
            self.rest.close()
        with contextlib.suppress(Exception):
            self.proxy.close()
        with contextlib.suppress(Exception):
            self.history.close()
        with contextlib.suppress(Exception):
            chaos.resume(self.engine_pid)
            bundled_engine.stop(self.engine_pid, grace=20)
        if self._pg is not None:
            with contextlib.suppress(Exception):
                self._pg.stop(mode="immediate")
            if self._pg_base is not None:
                shutil.rmtree(self._pg_base, ignore_errors=True)
