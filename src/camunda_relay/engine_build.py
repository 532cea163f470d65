"""Building the bundled engine: which Maven project, where it is built, with which JDK.

- :func:`engine_project_dir`: ``CAMUNDA_ENGINE_DIR``, a clone's ``engine/``, or the copy the
  wheel installs as package data (``camunda_relay/_engine``: the Maven wrapper, the pom and the
  sources, no built jar);
- :func:`build_dir`: a clone builds in place (``engine/target/``); the installed copy is
  copied into the per-user cache (:func:`cache_dir`) and built there, once per version;
- :func:`ensure_built`: checks for a JDK (:func:`find_jdk`), runs ``mvnw package`` and turns
  its output into a few lines of progress.

Each function takes the engine's flavour (:class:`~camunda_relay.engine_flavours.EngineFlavour`:
Camunda 7.24.0 by default, Operaton, or an older Camunda release). The default is built as
above; another flavour is derived from the same project
(:func:`camunda_relay.engine_flavours.derive`) into a folder of its own,
``engine/target/flavours/<name>-<version>/`` in a clone and ``engine-<version>-<name>-<release>``
in the cache, and built there, once.

:mod:`camunda_relay.bundled_engine` re-exports these; the CLI and the tests call them there.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import re
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

from camunda_relay._version import __version__
from camunda_relay.engine_flavours import DEFAULT_FLAVOUR, EngineFlavour, derive
from camunda_relay.errors import EngineBuildError

__all__ = [
    "JAR_NAME",
    "PACKAGED_ENGINE",
    "build_dir",
    "cache_dir",
    "engine_project_dir",
    "ensure_built",
    "find_jdk",
    "jar_path",
    "needs_build",
]

JAR_NAME = "camunda-relay-engine.jar"

# The engine's Maven project in a clone, and the copy of it that the wheel installs as package
# data (pyproject.toml maps engine/ to the package camunda_relay._engine).
_CLONE_ENGINE = Path(__file__).resolve().parents[2] / "engine"
PACKAGED_ENGINE = Path(__file__).resolve().parent / "_engine"
_WRAPPER_FILES = ("pom.xml", "mvnw", "mvnw.cmd")
_STAMP_FILE = "built-from.sha256"
_DERIVED_SUFFIXES = frozenset({".xml", ".java", ".yaml", ".yml", ".properties"})
_JAVA_RELEASE = 17
_HOW_TO_GET_A_JDK = (
    "install one (Debian/Ubuntu: apt-get install openjdk-17-jdk-headless; macOS: brew install "
    "openjdk@17; elsewhere: adoptium.net) or point JAVA_HOME at one"
)


def engine_project_dir() -> Path:
    """The engine's Maven project: ``CAMUNDA_ENGINE_DIR``, else a clone's ``engine/`` (when this
    package runs from the clone's ``src/``), else the copy installed with the package."""
    configured = os.environ.get("CAMUNDA_ENGINE_DIR")
    if configured:
        return Path(configured)
    if (_CLONE_ENGINE / "pom.xml").exists():
        return _CLONE_ENGINE
    return PACKAGED_ENGINE


def cache_dir(
    environ: Mapping[str, str] = os.environ, flavour: EngineFlavour = DEFAULT_FLAVOUR
) -> Path:
    """Where the installed package builds its engine: ``engine-<version>`` inside
    ``CAMUNDA_ENGINE_CACHE``, else inside ``$XDG_CACHE_HOME/camunda-relay``, else inside
    ``~/.cache/camunda-relay``; another flavour than the default in
    ``engine-<version>-<flavour>-<release>`` beside it."""
    configured = environ.get("CAMUNDA_ENGINE_CACHE")
    if configured:
        root = Path(configured).expanduser()
    else:
        xdg = environ.get("XDG_CACHE_HOME", "")
        # The XDG spec ignores a relative XDG_CACHE_HOME.
        home = Path(environ["HOME"]) if environ.get("HOME") else Path.home()
        root = (Path(xdg) if Path(xdg).is_absolute() else home / ".cache") / "camunda-relay"
    if flavour.is_default:
        return root / f"engine-{__version__}"
    return root / f"engine-{__version__}-{flavour.key}"


def build_dir(project: Path | None = None, flavour: EngineFlavour = DEFAULT_FLAVOUR) -> Path:
    """Where ``project`` is built: in place for a clone's ``engine/`` or ``CAMUNDA_ENGINE_DIR``;
    the copy installed with the package (which may be read-only, and which every environment
    with this version shares) is built in :func:`cache_dir`. Another flavour than the default
    is derived into ``target/flavours/<name>-<release>/`` of the project in place, or into its
    own folder of the cache."""
    project = project or engine_project_dir()
    if project.resolve() == PACKAGED_ENGINE.resolve():
        return cache_dir(flavour=flavour)
    if flavour.is_default:
        return project
    return project / "target" / "flavours" / flavour.key


def jar_path(project: Path | None = None, flavour: EngineFlavour = DEFAULT_FLAVOUR) -> Path:
    return build_dir(project, flavour) / "target" / JAR_NAME


def _sources(project: Path) -> Iterator[Path]:
    """The files a build reads: the wrapper, the pom and ``src/`` (never ``target/``)."""
    for name in _WRAPPER_FILES:
        if (project / name).is_file():
            yield project / name
    for folder in (".mvn", "src"):
        yield from sorted(path for path in (project / folder).rglob("*") if path.is_file())


def _digest(project: Path, flavour: EngineFlavour = DEFAULT_FLAVOUR) -> str:
    digest = hashlib.sha256(flavour.key.encode() + b"\0")
    for path in _sources(project):
        digest.update(path.relative_to(project).as_posix().encode() + b"\0")
        digest.update(path.read_bytes() + b"\0")
    return digest.hexdigest()


def needs_build(project: Path | None = None, flavour: EngineFlavour = DEFAULT_FLAVOUR) -> bool:
    """True when the jar is missing or not built from the project's current files.

    In place, that is a jar older than any file of the build; in the cache or a flavour's own
    folder, a jar built from other files than the project's (the digest of what was built,
    flavour included, is kept beside it)."""
    project = project or engine_project_dir()
    jar = jar_path(project, flavour)
    if not jar.exists():
        return True
    where = build_dir(project, flavour)
    if where != project:
        stamp = where / "target" / _STAMP_FILE
        return not stamp.exists() or stamp.read_text().strip() != _digest(project, flavour)
    built = jar.stat().st_mtime
    return any(source.stat().st_mtime > built for source in _sources(project))


def find_jdk(environ: Mapping[str, str] = os.environ) -> Path:
    """The ``javac`` the Maven build will use: from ``JAVA_HOME``, else from the ``PATH``.

    Raises :class:`EngineBuildError`, one line saying how to get a JDK, when there is none or
    it is older than 17."""
    home = environ.get("JAVA_HOME")
    if home:
        javac = Path(home) / "bin" / "javac"
        if not javac.is_file():
            raise EngineBuildError(
                f"JAVA_HOME ({home}) has no bin/javac: building the bundled engine needs a "
                f"JDK {_JAVA_RELEASE} or newer, not a JRE; {_HOW_TO_GET_A_JDK}"
            )
    else:
        found = shutil.which("javac", path=environ.get("PATH", os.defpath))
        if found is None:
            raise EngineBuildError(
                f"no JDK found (no javac on the PATH, no JAVA_HOME): building the bundled "
                f"engine needs a JDK {_JAVA_RELEASE} or newer; {_HOW_TO_GET_A_JDK}"
            )
        javac = Path(found)
    release = _javac_release(javac)
    if release is not None and release < _JAVA_RELEASE:
        raise EngineBuildError(
            f"the JDK at {javac.parent.parent} is Java {release}: building the bundled engine "
            f"needs a JDK {_JAVA_RELEASE} or newer; {_HOW_TO_GET_A_JDK}"
        )
    return javac


def _javac_release(javac: Path) -> int | None:
    """The feature release of ``javac -version`` ("javac 17.0.15" is 17, "javac 1.8.0" is 8)."""
    try:
        result = subprocess.run(
            [str(javac), "-version"], capture_output=True, text=True, timeout=60, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    found = re.search(r"javac (\d+)(?:\.(\d+))?", result.stdout + result.stderr)
    if found is None:
        return None
    major = int(found.group(1))
    return int(found.group(2) or 0) if major == 1 else major


def ensure_built(
    project: Path | None = None,
    *,
    log: Path | None = None,
    progress: Callable[[str], None] | None = None,
    flavour: EngineFlavour = DEFAULT_FLAVOUR,
) -> Path:
    """Build the engine jar of ``flavour`` with the Maven wrapper if needed; return its path.

    A clone's project is built in place (``engine/target/``); the copy installed with the
    package is copied into :func:`cache_dir` and built there, once per version. A build
    reports its steps to ``progress``, a line each. Two processes building at once take
    turns; the second finds the jar built. Raises :class:`EngineBuildError` when there is no
    project, no JDK (:func:`find_jdk`), or the build fails (with the errors from its log).
    """
    project = project or engine_project_dir()
    if not (project / "pom.xml").exists():
        raise EngineBuildError(f"no engine project at {project} (set CAMUNDA_ENGINE_DIR)")
    if not needs_build(project, flavour):
        return jar_path(project, flavour)
    find_jdk()
    where = build_dir(project, flavour)
    say = progress or (lambda _line: None)
    which = "" if flavour.is_default else f" ({flavour.title})"
    began = time.monotonic()
    with _build_lock(where / "target"):
        if not needs_build(project, flavour):
            return jar_path(project, flavour)
        say(
            f"building the engine{which} in {where} (once per version: a minute or two, "
            "several when Maven first downloads its dependencies)"
        )
        if where != project:
            _stage(project, where, flavour)
        # Maven compiles what changed and never removes a class whose source is gone: a
        # class of a removed plugin would still be in the jar (and still run).
        shutil.rmtree(where / "target" / "classes", ignore_errors=True)
        log = log or where / "target" / "build.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        code = _maven_package(where, log, _MavenSteps(say, began))
        jar = jar_path(project, flavour)
        if code != 0 or not jar.exists():
            raise EngineBuildError(f"engine build{which} failed (log: {log})\n{_build_errors(log)}")
        jar.touch()  # the jar may keep an older timestamp than a source file edited mid-build
        if where != project:
            (where / "target" / _STAMP_FILE).write_text(_digest(project, flavour) + "\n")
    say(f"engine built in {time.monotonic() - began:.0f} s: {jar}")
    return jar


@contextlib.contextmanager
def _build_lock(folder: Path) -> Iterator[None]:
    folder.mkdir(parents=True, exist_ok=True)
    with (folder / ".build.lock").open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _stage(project: Path, where: Path, flavour: EngineFlavour = DEFAULT_FLAVOUR) -> None:
    """Copy the project's build files into ``where`` (``target/`` stays, for Maven's reuse),
    derived for ``flavour`` (:func:`camunda_relay.engine_flavours.derive`)."""
    for folder in (".mvn", "src"):
        shutil.rmtree(where / folder, ignore_errors=True)
    for source in _sources(project):
        relative = source.relative_to(project)
        copy = where / relative
        copy.parent.mkdir(parents=True, exist_ok=True)
        derived = None
        if not flavour.is_default and source.suffix in _DERIVED_SUFFIXES:
            try:
                derived = derive(relative.as_posix(), source.read_text(), flavour)
            except ValueError as error:
                raise EngineBuildError(
                    f"cannot derive the {flavour.title} engine: {error}"
                ) from None
        if derived is None:
            shutil.copyfile(source, copy)
        else:
            copy.write_text(derived)
    (where / "mvnw").chmod(0o755)


def _maven_package(where: Path, log: Path, steps: _MavenSteps) -> int:
    """Run ``mvnw package`` in ``where``: every line into ``log``, the steps to ``steps``."""
    command = ["./mvnw", "-B", "package", "-DskipTests"]
    with (
        log.open("wb") as out,
        subprocess.Popen(
            command,
            cwd=where,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        ) as process,
    ):
        assert process.stdout is not None
        for line in process.stdout:
            out.write(line)
            steps.feed(line.decode(errors="replace"))
        return process.wait()


class _MavenSteps:
    """Turns Maven's output into a few lines a user can follow."""

    # A goal's line: "[INFO] --- compiler:3.14.1:compile (default-compile) @ artifact ---".
    _GOAL = re.compile(r"--- ([\w.-]+):[\w.-]+:([\w-]+) ")
    _STEPS: Mapping[tuple[str, str], str] = {
        ("resources", "resources"): "copying the resources",
        ("compiler", "compile"): "compiling the Java sources",
        ("jar", "jar"): "packaging the jar",
        ("spring-boot", "repackage"): "adding the dependencies to the jar",
    }
    _EVERY = 100  # downloads between two progress lines

    def __init__(self, say: Callable[[str], None], began: float) -> None:
        self._say = say
        self._began = began
        self._downloads = 0

    def feed(self, line: str) -> None:
        if line.startswith(("Downloaded from ", "[INFO] Downloaded from ")):
            self._downloads += 1
            if self._downloads == 1:
                self._step("downloading Maven plugins and the engine's dependencies")
            elif self._downloads % self._EVERY == 0:
                self._step(f"downloaded {self._downloads} files")
            return
        goal = self._GOAL.search(line)
        if goal is not None:
            step = self._STEPS.get((goal.group(1), goal.group(2)))
            if step is not None:
                self._step(step)

    def _step(self, what: str) -> None:
        self._say(f"  [{time.monotonic() - self._began:4.0f} s] {what}")


# Maven's closing advice after a failure: how to re-run it, where its wiki is.
_MAVEN_ADVICE = (
    "-> [Help",
    "Re-run Maven",
    "To see the full stack",
    "For more information about the errors",
    "-rf :",
    "cwiki.apache.org",
)


def _build_errors(log: Path) -> str:
    """Maven's ``[ERROR]`` lines (its own advice about -e and -X left out), else the tail."""
    try:
        lines = log.read_text(errors="replace").splitlines()
    except OSError:
        return "(no log)"
    errors = [
        line
        for line in lines
        if line.startswith("[ERROR]")
        and line.strip() != "[ERROR]"
        and not any(advice in line for advice in _MAVEN_ADVICE)
    ]
    if errors:
        return "\n".join(errors[-25:])
    return "\n".join(line for line in lines[-25:] if line.strip())
