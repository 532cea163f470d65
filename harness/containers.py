"""The seed flow end to end through the images (``make e2e-containers``).

Builds the engine image and the conception's worker image (deploy/containers; docker where it
answers, podman otherwise), then runs PostgreSQL, two engine containers on one database and
two worker containers on one PostgreSQL journal, each worker long-polling both engines. It
starts instances on both nodes, kills one engine container and one worker container
(SIGKILL) while replies are pending, and checks from the engine's history that every
instance finished, each passing the catch event once, with no incident and the reply of its
own work. Last it stops the surviving worker with SIGTERM and checks that it exits cleanly
within its grace period. The containers share the host's network and listen on loopback.

PostgreSQL runs as a host process (Debian's server, as in the tests): no database image is
needed. A machine without a registry makes the Debian base image with
deploy/containers/local-base.sh (run here when the image is missing and cannot be pulled).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from camunda_relay._version import __version__
from harness.lab import CATCH_ACTIVITY, PROCESS_KEY, free_port, wait_until

REPO = Path(__file__).resolve().parents[1]
CONTAINERS = REPO / "deploy" / "containers"
BASE_IMAGE = "docker.io/library/debian:bookworm-slim"
ENGINE_IMAGE = f"camunda-relay-engine:{__version__}"
WORKER_IMAGE = f"camunda-relay-worker:{__version__}"
EXAMPLE_IMAGE = f"camunda-relay-example:{__version__}"
PREFIX = "relay-e2e-"
ADMIN = "e2eadmin"
WORKER_USER = "relayworker"


def say(text: str) -> None:
    sys.stdout.write(f"[{time.strftime('%H:%M:%S')}] {text}\n")
    sys.stdout.flush()


def container_engine() -> str:
    """``CONTAINER_ENGINE``, else docker when its daemon answers, else podman."""
    chosen = os.environ.get("CONTAINER_ENGINE")
    if chosen:
        return chosen
    if shutil.which("docker"):
        probe = subprocess.run(["docker", "info"], capture_output=True, check=False)
        if probe.returncode == 0:
            return "docker"
    if shutil.which("podman"):
        return "podman"
    raise SystemExit("e2e-containers: neither docker nor podman is installed")


def run(command: Sequence[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(command), text=True, check=False, **kwargs)  # type: ignore[call-overload, no-any-return]


def image_size(engine: str, image: str) -> int:
    out = run([engine, "image", "inspect", "--format", "{{.Size}}", image], capture_output=True)
    return int(out.stdout.strip() or 0)


def build_images(engine: str) -> dict[str, float]:
    """The base image when missing, then the three images; seconds per build."""
    if run([engine, "image", "inspect", BASE_IMAGE], capture_output=True).returncode != 0:
        pulled = run([engine, "pull", BASE_IMAGE], capture_output=True)
        if pulled.returncode != 0:
            say(f"{BASE_IMAGE} cannot be pulled here: making it with local-base.sh")
            env = {**os.environ, "CONTAINER_ENGINE": engine}
            if run(["bash", str(CONTAINERS / "local-base.sh")], env=env).returncode != 0:
                raise SystemExit("e2e-containers: could not make the base image")
    seconds: dict[str, float] = {}
    for image, containerfile, target in (
        (ENGINE_IMAGE, "engine.Containerfile", None),
        (WORKER_IMAGE, "worker.Containerfile", "worker"),
        (EXAMPLE_IMAGE, "worker.Containerfile", "example"),
    ):
        command = [engine, "build", "-f", str(CONTAINERS / containerfile), "-t", image]
        if target:
            command += ["--target", target]
        began = time.monotonic()
        say(f"building {image}")
        done = run([*command, str(REPO)], capture_output=True)
        if done.returncode != 0:
            sys.stderr.write(done.stdout[-4000:] + done.stderr[-4000:])
            raise SystemExit(f"e2e-containers: building {image} failed")
        seconds[image] = time.monotonic() - began
    return seconds


@dataclass
class Container:
    """One container of the run: its name, its environment (kept in a private file, not on a
    command line) and its image."""

    engine: str
    name: str
    image: str
    env: Mapping[str, str]
    folder: Path
    args: Sequence[str] = ()
    started: bool = field(default=False, init=False)

    def start(self) -> None:
        env_file = self.folder / f"{self.name}.env"
        env_file.touch(mode=0o600)
        env_file.write_text("".join(f"{k}={v}\n" for k, v in self.env.items()))
        command = [self.engine, "run", "-d", "--name", self.name, "--network", "host"]
        command += ["--env-file", str(env_file), self.image, *self.args]
        done = run(command, capture_output=True)
        if done.returncode != 0:
            raise SystemExit(f"e2e-containers: starting {self.name} failed: {done.stderr.strip()}")
        self.started = True

    def kill(self) -> None:
        run([self.engine, "kill", "--signal", "KILL", self.name], capture_output=True)

    def stop(self, timeout: int) -> tuple[int, float]:
        """SIGTERM, SIGKILL after ``timeout`` seconds; the exit code and the seconds taken."""
        began = time.monotonic()
        run([self.engine, "stop", "-t", str(timeout), self.name], capture_output=True)
        taken = time.monotonic() - began
        code = run(
            [self.engine, "inspect", "--format", "{{.State.ExitCode}}", self.name],
            capture_output=True,
        )
        return int(code.stdout.strip() or -1), taken

    def logs(self) -> str:
        done = run([self.engine, "logs", self.name], capture_output=True)
        return done.stdout + done.stderr

    def remove(self) -> None:
        if self.started:
            run([self.engine, "rm", "-f", "-v", self.name], capture_output=True)


@contextlib.contextmanager
def postgres() -> Iterator[tuple[str, int]]:
    """A PostgreSQL server on loopback with the databases camunda and journal."""
    from tests.support import postgres as pg
    from tests.support.tools import postgres_bin_dir

    bin_dir = postgres_bin_dir()
    if bin_dir is None:
        raise SystemExit("e2e-containers: PostgreSQL is not installed (Debian's postgresql)")
    base = Path(tempfile.mkdtemp(prefix="relay-e2e-pg-"))  # the server's user must enter it
    server = pg.init_server(bin_dir, base, free_port())
    try:
        server.create_database("camunda")
        server.create_database("journal")
        yield pg.PASSWORD, server.port
    finally:
        server.stop("immediate")
        shutil.rmtree(base, ignore_errors=True)


class Engine:
    """The REST API of one engine node, as the administrator."""

    def __init__(self, port: int, password: str) -> None:
        self.url = f"http://127.0.0.1:{port}/engine-rest"
        self.http = httpx.Client(base_url=self.url, auth=(ADMIN, password), timeout=30)

    def ready(self) -> bool:
        try:
            return self.http.get("/process-definition/count").status_code == 200
        except httpx.HTTPError:
            return False

    def get(self, path: str, **params: object) -> list[dict[str, object]]:
        response = self.http.get(path, params={"maxResults": 1_000_000, **params})
        response.raise_for_status()
        return list(response.json())


def wait_for(what: str, condition: object, timeout: float) -> None:
    if not wait_until(condition, timeout=timeout, interval=1.0):  # type: ignore[arg-type]
        raise SystemExit(f"e2e-containers: {what} not within {timeout:.0f} s")


def check_history(engine: Engine, instances: Mapping[str, str]) -> dict[str, object]:
    """Every instance finished once, through its own reply, without incident."""
    finished = {
        str(item["id"])
        for item in engine.get("/history/process-instance", processDefinitionKey=PROCESS_KEY)
        if item.get("state") == "COMPLETED"
    }
    passages = Counter(
        str(item["processInstanceId"])
        for item in engine.get("/history/activity-instance", activityId=CATCH_ACTIVITY)
        if item.get("endTime") and not item.get("canceled")
    )
    targets = {
        str(item["processInstanceId"]): item.get("value")
        for item in engine.get("/history/variable-instance", variableName="processed_for")
    }
    incidents = [i for i in engine.get("/incident") if i.get("processInstanceId") in instances]
    definitions = engine.get("/process-definition", key=PROCESS_KEY)
    return {
        "instances": len(instances),
        "finished": len(finished & set(instances)),
        "passed the catch event once": sum(1 for i in instances if passages[i] == 1),
        "passed it more than once": sum(1 for i in instances if passages[i] > 1),
        "reply of its own work": sum(1 for i, key in instances.items() if targets.get(i) == key),
        "incidents": len(incidents),
        "seed process versions": len(definitions),
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m harness.containers", description=__doc__)
    parser.add_argument("--instances", type=int, default=60)
    parser.add_argument("--work-seconds", type=float, default=5.0)
    parser.add_argument("--no-build", action="store_true", help="use the images as they are")
    parser.add_argument("--build-only", action="store_true", help="build the images, no run")
    options = parser.parse_args(argv)
    # A stopped run (make interrupted, a CI timeout) still removes its containers and server.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

    engine_cli = container_engine()
    say(f"container engine: {engine_cli}")
    built = {} if options.no_build else build_images(engine_cli)
    sizes = {image: image_size(engine_cli, image) for image in (ENGINE_IMAGE, EXAMPLE_IMAGE)}
    if options.build_only:
        for image, size in sizes.items():
            say(f"image {image}: {size / 1e6:.0f} MB")
        return 0

    folder = Path(tempfile.mkdtemp(prefix="relay-e2e-"))
    containers: list[Container] = []
    admin_password = secrets.token_urlsafe(18)
    worker_password = secrets.token_urlsafe(18)
    try:
        with postgres() as (db_password, db_port):
            ports = [free_port() for _ in range(2)]
            engines = []
            for n, port in enumerate(ports, start=1):
                engines.append(
                    Container(
                        engine_cli,
                        f"{PREFIX}engine-{n}",
                        ENGINE_IMAGE,
                        {
                            "CAMUNDA_BIND_ADDRESS": "127.0.0.1",
                            "CAMUNDA_PORT": str(port),
                            "CAMUNDA_MANAGEMENT_ADDRESS": "127.0.0.1",
                            "CAMUNDA_MANAGEMENT_PORT": str(free_port()),
                            "CAMUNDA_DB_URL": f"jdbc:postgresql://127.0.0.1:{db_port}/camunda",
                            "CAMUNDA_DB_USER": "relay",
                            "CAMUNDA_DB_PASSWORD": db_password,
                            "CAMUNDA_USER": ADMIN,
                            "CAMUNDA_PASSWORD": admin_password,
                            "CAMUNDA_WORKER_USER": WORKER_USER,
                            "CAMUNDA_WORKER_PASSWORD": worker_password,
                        },
                        folder,
                    )
                )
            containers += engines
            began = time.monotonic()
            say("starting two engine containers at once on one PostgreSQL database")
            for container in engines:
                container.start()
            nodes = [Engine(port, admin_password) for port in ports]
            wait_for("both engines answering", lambda: all(n.ready() for n in nodes), 300)
            say(f"both engines up in {time.monotonic() - began:.1f} s")

            urls = ",".join(node.url for node in nodes)
            journal = f"postgresql://relay:{db_password}@127.0.0.1:{db_port}/journal"
            http_ports = [free_port() for _ in range(2)]
            workers = [
                Container(
                    engine_cli,
                    f"{PREFIX}worker-{n}",
                    EXAMPLE_IMAGE,
                    {
                        "CAMUNDA_URL": urls,
                        "CAMUNDA_USER": WORKER_USER,
                        "CAMUNDA_PASSWORD": worker_password,
                        "CAMUNDA_JOURNAL": journal,
                        "CAMUNDA_WORKER_ID": f"e2e-worker-{n}",
                        "CAMUNDA_HTTP_ADDRESS": "127.0.0.1",
                        "CAMUNDA_HTTP_PORT": str(port),
                        "CAMUNDA_JOURNAL_LEASE": "10",
                        "CAMUNDA_LOCK_DURATION": "20",
                        "CAMUNDA_SHUTDOWN_GRACE": "25",
                        "CAMUNDA_LOG_FORMAT": "json",
                        "SAMPLE_WORK_SECONDS": str(options.work_seconds),
                    },
                    folder,
                )
                for n, port in enumerate(http_ports, start=1)
            ]
            containers += workers
            for container in workers:
                container.start()

            def ready(port: int) -> bool:
                try:
                    return httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=5).is_success
                except httpx.HTTPError:
                    return False

            wait_for("both workers ready", lambda: all(ready(p) for p in http_ports), 120)
            say("both workers ready (/readyz)")

            instances: dict[str, str] = {}
            for i in range(options.instances):
                key = f"e2e-{i:04d}"
                node = nodes[i % 2]
                response = node.http.post(
                    f"/process-definition/key/{PROCESS_KEY}/start", json={"businessKey": key}
                )
                response.raise_for_status()
                instances[str(response.json()["id"])] = key
            say(f"{len(instances)} instances started, half on each node")

            def waiting() -> int:
                subscriptions = nodes[1].get(
                    "/event-subscription", eventType="message", eventName="sample_response"
                )
                return sum(1 for s in subscriptions if s.get("processInstanceId") in instances)

            wait_for("replies pending", lambda: waiting() >= min(10, len(instances)), 120)
            say(f"{waiting()} instances wait for their reply: killing engine-1 and worker-1")
            engines[0].kill()
            workers[0].kill()
            killed_at = time.monotonic()

            def all_finished() -> bool:
                done = nodes[1].get(
                    "/history/process-instance", processDefinitionKey=PROCESS_KEY, finished=True
                )
                return sum(1 for item in done if item["id"] in instances) == len(instances)

            wait_for("every instance finished", all_finished, 600)
            say(f"all finished {time.monotonic() - killed_at:.1f} s after the kills")

            result = check_history(nodes[1], instances)
            code, taken = workers[1].stop(timeout=40)
            result["surviving worker's exit code after SIGTERM"] = code
            result["seconds it took to stop"] = round(taken, 1)
            logs = "".join(c.logs() for c in containers)
            (folder / "containers.log").write_text(logs)
            leaked = [
                name
                for name, value in (
                    ("admin password", admin_password),
                    ("worker password", worker_password),
                    ("database password", db_password),
                )
                if value in logs
            ]
            result["secrets in container logs"] = leaked
    finally:
        for container in containers:
            container.remove()

    for image, seconds in built.items():
        say(f"built {image} in {seconds:.0f} s")
    for image, size in sizes.items():
        say(f"image {image}: {size / 1e6:.0f} MB")
    sys.stdout.write(json.dumps(result, indent=2) + "\n")
    n = len(instances)
    ok = (
        result["finished"] == n
        and result["passed the catch event once"] == n
        and result["reply of its own work"] == n
        and result["incidents"] == 0
        and result["seed process versions"] == 1
        and code == 0
        and not leaked
    )
    say("PASS" if ok else f"FAIL (logs: {folder / 'containers.log'})")
    if ok:
        shutil.rmtree(folder, ignore_errors=True)
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
