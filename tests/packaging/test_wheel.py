"""The package as users get it.

The sdist and the wheel are built from a copy of this tree (the wheel from the sdist, as
``python -m build`` does), the wheel's contents are checked, and the wheel is installed into
a fresh virtual environment with the locked dependencies. From there, in a folder outside the
repository and without ``CAMUNDA_ENGINE_DIR``, the README's commands run: ``engine up`` (which
builds the engine from the packaged Maven project into its own cache folder: a minute or two
of Maven, with ``~/.m2`` reused), ``demo``, a worker module of the user's, ``engine down``.

Each command and its output is printed (``pytest -s tests/packaging`` shows them).
"""

from __future__ import annotations

import importlib.util
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tarfile
import zipfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from email.parser import HeaderParser
from pathlib import Path

import httpx
import pytest

from camunda_relay._version import __version__
from tests.support.engine import wait_for
from tests.support.tools import free_port, java_available, missing

pytestmark = [pytest.mark.packaging, pytest.mark.engine]

ROOT = Path(__file__).resolve().parents[2]
WHEEL_NAME = f"camunda_relay-{__version__}-py3-none-any.whl"
SDIST_NAME = f"camunda_relay-{__version__}.tar.gz"
MAX_WHEEL_BYTES = 400_000  # about 140 kB now: a built jar (70 MB) or a stray folder shows

# What never goes into the copy the packages are built from (as a fresh clone has none of it).
_LOCAL_ONLY = shutil.ignore_patterns(
    ".git",
    ".venv",
    "build",
    "dist",
    "site",
    "target",
    "*.egg-info",
    "__pycache__",
    "*.pyc",
    ".pytest_cache",
    ".mypy_cache",
    ".ruff_cache",
    ".camunda-relay",
    "camunda-data",
)

WORKER_MODULE = """\
from camunda_relay import Router, Task

router = Router()


@router.task("messageSending", reply="sample_response")
async def send_message(task: Task) -> dict[str, object]:
    return {"answer": f"order {task.variables['order']} done by my_worker"}
"""


def _show(command: Sequence[str | Path], output: str, code: int) -> None:
    shown = [Path(command[0]).name, *map(str, command[1:])]
    print(f"$ {shlex.join(shown)}\n{output.rstrip()}\n[exit {code}]\n")


def _run(
    command: Sequence[str | Path],
    *,
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
    timeout: float = 300,
    expect: int = 0,
) -> str:
    result = subprocess.run(
        [str(part) for part in command],
        cwd=cwd,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    output = result.stdout + result.stderr
    _show(command, output, result.returncode)
    assert result.returncode == expect, f"{command[0]} exited {result.returncode}:\n{output}"
    return output


@dataclass(frozen=True)
class Built:
    wheel: Path
    sdist: Path


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Built:
    if importlib.util.find_spec("build") is None:
        missing("the build package", "pip install -r requirements.lock")
    base = tmp_path_factory.mktemp("packages")
    source = base / "source"
    shutil.copytree(ROOT, source, ignore=_LOCAL_ONLY)
    out = base / "dist"
    # Without isolation: setuptools and wheel come pinned from requirements.lock.
    _run([sys.executable, "-m", "build", "--quiet", "--no-isolation", "--outdir", out, source])
    assert {p.name for p in out.iterdir()} == {SDIST_NAME, WHEEL_NAME}
    return Built(wheel=out / WHEEL_NAME, sdist=out / SDIST_NAME)


def _engine_sources() -> set[str]:
    """The engine's Maven project as the repository has it: the wrapper, the pom, src/."""
    return {
        path.relative_to(ROOT / "engine").as_posix()
        for path in (ROOT / "engine").rglob("*")
        if path.is_file() and "target" not in path.relative_to(ROOT / "engine").parts
    }


def test_the_wheel_holds_the_package_and_the_engine_project_only(built: Built) -> None:
    with zipfile.ZipFile(built.wheel) as wheel:
        infos = wheel.infolist()
        metadata = wheel.read(f"camunda_relay-{__version__}.dist-info/METADATA").decode()
        entry_points = wheel.read(f"camunda_relay-{__version__}.dist-info/entry_points.txt")
    size = built.wheel.stat().st_size
    print(f"{built.wheel.name}: {size:,} bytes, {len(infos)} files")
    for info in infos:
        print(f"{info.file_size:>8}  {oct(info.external_attr >> 16 & 0o777)}  {info.filename}")
    names = {info.filename for info in infos}

    assert size < MAX_WHEEL_BYTES
    assert {name.split("/", 1)[0] for name in names} == {
        "camunda_relay",
        f"camunda_relay-{__version__}.dist-info",
    }, "no tests, bench, harness or docs beside the package"
    unwanted = re.compile(r"__pycache__|\.pyc$|/target/|\.jar$|\.egg-info|\.camunda-relay|\.log$")
    assert [name for name in names if unwanted.search(name)] == []
    assert "camunda_relay/py.typed" in names
    assert f"camunda_relay-{__version__}.dist-info/licenses/LICENSE" in names

    package_sources = {
        "camunda_relay/" + path.relative_to(ROOT / "src" / "camunda_relay").as_posix()
        for path in (ROOT / "src" / "camunda_relay").rglob("*.py")
    }
    assert {name for name in names if name.endswith(".py")} == package_sources

    engine = {name.removeprefix("camunda_relay/_engine/") for name in names if "/_engine/" in name}
    assert engine == _engine_sources()
    assert {"mvnw", "pom.xml", ".mvn/wrapper/maven-wrapper.properties"} <= engine
    assert "src/main/resources/processes/correlation-message.bpmn" in engine
    mvnw = next(info for info in infos if info.filename == "camunda_relay/_engine/mvnw")
    assert mvnw.external_attr >> 16 & 0o111, "mvnw keeps its executable bit"

    headers = HeaderParser().parsestr(metadata)
    assert headers["Name"] == "camunda-relay"
    assert headers["Version"] == __version__
    assert headers["Requires-Python"] == ">=3.11"
    assert headers["License-Expression"] == "Apache-2.0"
    pythons = [c for c in headers.get_all("Classifier") or [] if re.search(r":: 3\.\d+$", c)]
    assert [c.rsplit(" ", 1)[1] for c in pythons] == ["3.11", "3.12", "3.13"]
    assert b"camunda-relay = camunda_relay.cli:main" in entry_points


def test_the_sdist_holds_what_the_wheel_is_built_from(built: Built) -> None:
    with tarfile.open(built.sdist) as sdist:
        names = {name.split("/", 1)[1] for name in sdist.getnames() if "/" in name}
    print(f"{built.sdist.name}: {built.sdist.stat().st_size:,} bytes, {len(names)} entries")
    for name in ["pyproject.toml", "README.md", "CHANGELOG.md", "src/camunda_relay/py.typed"]:
        assert name in names
    assert {f"engine/{name}" for name in _engine_sources()} <= names
    local = re.compile(r"(^|/)(target|\.venv|site|\.git)(/|$)")
    assert [name for name in names if local.search(name)] == []


@pytest.fixture
def venv(built: Built, tmp_path: Path) -> Path:
    """A fresh virtual environment with the wheel and the locked versions of its dependencies."""
    folder = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", folder])
    python = folder / "bin" / "python"
    lock = ROOT / "requirements.lock"
    _run([python, "-m", "pip", "install", "--quiet", "--constraint", lock, built.wheel])
    pinned = {
        _normalize(line.split("==")[0]): line.split("==")[1]
        for line in lock.read_text().splitlines()
        if "==" in line and not line.startswith("#")
    }
    installed = _run([python, "-m", "pip", "list", "--format=freeze", "--exclude", "pip"])
    for line in installed.splitlines():
        name, _, version = line.partition("==")
        if _normalize(name) not in {"camunda-relay", "setuptools"}:  # setuptools: the venv's
            assert pinned.get(_normalize(name)) == version, f"{line} is not locked"
    return folder


def _normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _user_env(venv: Path, home: Path, port: int) -> dict[str, str]:
    """The environment of a user who installed the wheel: no CAMUNDA_ENGINE_DIR, no paths
    into the repository, caches and state of their own."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith("CAMUNDA_")
        and key not in {"PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "XDG_CACHE_HOME"}
    }
    env.update(
        PATH=f"{venv / 'bin'}{os.pathsep}{os.environ.get('PATH', os.defpath)}",
        XDG_CACHE_HOME=str(home / "cache"),
        CAMUNDA_STATE_DIR=str(home / "state"),
        CAMUNDA_URL=f"http://127.0.0.1:{port}/engine-rest",
        CAMUNDA_USER="demo",
        CAMUNDA_PASSWORD="demo",  # the local default of the bundled engine
    )
    return env


@pytest.fixture
def worker_process() -> Iterator[list[subprocess.Popen[str]]]:
    started: list[subprocess.Popen[str]] = []
    yield started
    for process in started:
        if process.poll() is None:
            process.kill()
            process.wait()


@pytest.mark.timeout(1800)
def test_the_readme_works_from_the_installed_wheel(
    venv: Path, tmp_path: Path, worker_process: list[subprocess.Popen[str]]
) -> None:
    if not java_available():
        missing("Java", "install a JDK 17+ to build and run the engine")
    home = tmp_path / "home"
    home.mkdir()
    port = free_port()
    env = _user_env(venv, home, port)
    relay = venv / "bin" / "camunda-relay"
    python = venv / "bin" / "python"

    where = _run([python, "-c", "import camunda_relay; print(camunda_relay.__file__)"], env=env)
    assert Path(where.strip()).is_relative_to(venv)
    assert _run([relay, "--version"], cwd=home, env=env) == f"camunda-relay {__version__}\n"

    # Without a JDK: one line saying so and how to get one, and nothing built.
    no_java = {**env, "PATH": str(venv / "bin")}
    no_java.pop("JAVA_HOME", None)
    refused = _run([relay, "engine", "up", "--port", port], cwd=home, env=no_java, expect=1)
    assert refused.startswith("Error: no JDK found")
    assert refused.count("\n") == 1

    cache = home / "cache" / "camunda-relay" / f"engine-{__version__}"
    try:
        up = _run([relay, "engine", "up", "--port", port], cwd=home, env=env, timeout=1200)
        assert f"building the engine in {cache}" in up
        assert "compiling the Java sources" in up
        assert "engine ready" in up
        assert (cache / "target" / "camunda-relay-engine.jar").exists()
        _run([relay, "engine", "status"], cwd=home, env=env)

        demo = _run([relay, "demo", "--instances", "5", "--work-seconds", "0.2"], cwd=home, env=env)
        assert "building the engine" not in demo, "the engine is built once per version"
        assert re.search(r"^\s+5\s+5\s+0\s+0\s", demo, flags=re.MULTILINE), "5 of 5 finished"

        (home / "my_worker.py").write_text(WORKER_MODULE)
        log = (home / "worker.log").open("w")
        worker = subprocess.Popen(
            [str(relay), "worker", "my_worker"],
            cwd=home,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            text=True,
        )
        worker_process.append(worker)
        instances = {}
        for order in (1, 2, 3):
            key = f"order-{order}"
            start = [relay, "start", "correlation-message", "--business-key", key]
            started = _run([*start, "--var", f"order={order}"], cwd=home, env=env)
            found = re.search(r"started process instance (\S+)", started)
            assert found is not None
            instances[found.group(1)] = order
        answers = wait_for(
            lambda: _answers(port, instances), timeout=120, what="my_worker's replies"
        )
        print("answers:", answers)
        assert answers == {i: f"order {o} done by my_worker" for i, o in instances.items()}
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(timeout=60) == 0
        log.close()
        print(f"$ camunda-relay worker my_worker\n{(home / 'worker.log').read_text()}")

        check = "import camunda_relay.bundled_engine as e; print(e.needs_build(), e.jar_path())"
        assert _run([python, "-c", check], cwd=home, env=env).split()[0] == "False"
        assert not (Path(where.strip()).parent / "_engine" / "target").exists()
    finally:
        down = _run([relay, "engine", "down"], cwd=home, env=env, timeout=120, expect=0)
    assert "engine stopped" in down
    _run([relay, "engine", "status"], cwd=home, env=env, expect=3)


def _answers(port: int, instances: Mapping[str, int]) -> dict[str, str] | None:
    """The ``answer`` variable of each instance once all have ended, else None."""
    with httpx.Client(
        base_url=f"http://127.0.0.1:{port}/engine-rest", auth=("demo", "demo"), timeout=10
    ) as client:
        ids = ",".join(instances)
        history = client.get("/history/process-instance", params={"processInstanceIds": ids})
        if sum(1 for item in history.json() if item["state"] == "COMPLETED") < len(instances):
            return None
        found = client.get(
            "/history/variable-instance",
            params={"processInstanceIdIn": ids, "variableName": "answer"},
        ).json()
        return {item["processInstanceId"]: item["value"] for item in found}
