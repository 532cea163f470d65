"""Where the engine's Maven project is, where it is built, the JDK check, and a build in the
per-user cache, with a stand-in ``mvnw`` (the real build runs in tests/packaging)."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from camunda_relay import engine_build
from camunda_relay._version import __version__
from camunda_relay.errors import EngineBuildError
from camunda_relay.settings import Settings

_MAVEN = """#!/bin/sh
echo built >> runs.log
echo "[INFO] Downloaded from central: https://repo.example/x.pom (2 kB at 9 kB/s)"
echo "[INFO] --- resources:3.3.1:resources (default-resources) @ camunda-relay-engine ---"
echo "[INFO] --- compiler:3.14.0:compile (default-compile) @ camunda-relay-engine ---"
echo "[INFO] --- spring-boot:3.5.7:repackage (repackage) @ camunda-relay-engine ---"
mkdir -p target && echo jar > target/camunda-relay-engine.jar
"""

_FAILING_MAVEN = """#!/bin/sh
echo "[INFO] Scanning for projects..."
echo "[ERROR] COMPILATION ERROR : "
echo "[ERROR] /x/EngineApplication.java:[3,1] class, interface, enum, or record expected"
echo "[ERROR] -> [Help 1]"
echo "[ERROR] Re-run Maven using the -X switch to enable full debug logging."
exit 1
"""


def _script(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


def _project(folder: Path, maven: str = _MAVEN) -> Path:
    (folder / "src" / "main").mkdir(parents=True)
    (folder / "pom.xml").write_text("<project/>")
    (folder / "src" / "main" / "App.java").write_text("class App {}")
    (folder / ".mvn" / "wrapper").mkdir(parents=True)
    (folder / ".mvn" / "wrapper" / "maven-wrapper.properties").write_text("x=1\n")
    # As in an installed wheel, the packaged copy need not be executable or writable.
    (folder / "mvnw").write_text(maven)
    return folder


def _read_only(folder: Path) -> None:
    for path in [folder, *folder.rglob("*")]:
        path.chmod(0o555 if path.is_dir() else 0o444)


@pytest.fixture
def packaged(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A stand-in for the copy installed with the package, a fake JDK, and a cache folder."""
    project = _project(tmp_path / "site-packages" / "_engine")
    monkeypatch.setattr(engine_build, "PACKAGED_ENGINE", project)
    monkeypatch.setenv("CAMUNDA_ENGINE_CACHE", str(tmp_path / "cache"))
    jdk = tmp_path / "jdk"
    _script(jdk / "bin" / "javac", "#!/bin/sh\necho javac 17.0.15\n")
    monkeypatch.setenv("JAVA_HOME", str(jdk))
    yield project
    for path in [project, *project.rglob("*")]:
        path.chmod(0o755)


def test_the_cache_folder_follows_xdg_and_the_setting(tmp_path: Path) -> None:
    version = f"engine-{__version__}"
    home = {"HOME": str(tmp_path)}
    assert engine_build.cache_dir(home) == tmp_path / ".cache" / "camunda-relay" / version
    xdg = {**home, "XDG_CACHE_HOME": str(tmp_path / "xdg")}
    assert engine_build.cache_dir(xdg) == tmp_path / "xdg" / "camunda-relay" / version
    relative = {**home, "XDG_CACHE_HOME": "relative/cache"}  # ignored, as the spec says
    assert engine_build.cache_dir(relative) == tmp_path / ".cache" / "camunda-relay" / version
    configured = {**xdg, "CAMUNDA_ENGINE_CACHE": str(tmp_path / "mine")}
    assert engine_build.cache_dir(configured) == tmp_path / "mine" / version


def test_a_clone_builds_its_own_engine_folder_in_place() -> None:
    project = engine_build.engine_project_dir()
    assert project == Path(__file__).resolve().parents[2] / "engine"
    assert engine_build.build_dir(project) == project
    assert engine_build.jar_path(project) == project / "target" / engine_build.JAR_NAME


def test_the_packaged_engine_is_built_in_the_cache_once(packaged: Path, tmp_path: Path) -> None:
    _read_only(packaged)
    lines: list[str] = []
    cache = tmp_path / "cache" / f"engine-{__version__}"
    assert engine_build.build_dir(packaged) == cache
    assert engine_build.needs_build(packaged)

    jar = engine_build.ensure_built(packaged, progress=lines.append)

    assert jar == cache / "target" / engine_build.JAR_NAME
    assert jar.exists()
    assert not (packaged / "target").exists(), "nothing is written beside the package"
    assert (cache / "src" / "main" / "App.java").read_text() == "class App {}"
    assert lines[0].startswith(f"building the engine in {cache}")
    steps = [line.split("] ", 1)[1] for line in lines[1:-1]]
    assert steps == [
        "downloading Maven plugins and the engine's dependencies",
        "copying the resources",
        "compiling the Java sources",
        "adding the dependencies to the jar",
    ]
    assert lines[-1].startswith("engine built in ")
    assert not engine_build.needs_build(packaged)
    again: list[str] = []
    assert engine_build.ensure_built(packaged, progress=again.append) == jar
    assert again == [], "once per version: a second call builds nothing"
    assert (cache / "runs.log").read_text() == "built\n"


def test_other_packaged_sources_of_the_same_version_are_built_again(packaged: Path) -> None:
    engine_build.ensure_built(packaged)
    source = packaged / "src" / "main" / "App.java"
    source.write_text("class App { int changed; }")
    os.utime(source, (0, 0))  # the digest decides, not the timestamps
    assert engine_build.needs_build(packaged)
    cache = engine_build.ensure_built(packaged).parents[1]
    assert (cache / "src" / "main" / "App.java").read_text() == "class App { int changed; }"
    assert (cache / "runs.log").read_text() == "built\nbuilt\n"


def test_classes_of_removed_sources_do_not_stay_in_the_build(packaged: Path) -> None:
    engine_build.ensure_built(packaged)
    cache = engine_build.build_dir(packaged)
    stale = cache / "target" / "classes" / "io" / "Removed.class"
    stale.parent.mkdir(parents=True)
    stale.write_text("a class whose source was deleted")
    source = packaged / "src" / "main" / "App.java"
    source.write_text("class App { int changed; }")
    engine_build.ensure_built(packaged)
    assert not stale.exists()


def test_a_failed_build_shows_mavens_errors_without_its_advice(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    project = _project(tmp_path / "engine", _FAILING_MAVEN)
    (project / "mvnw").chmod(0o755)
    _script(tmp_path / "jdk" / "bin" / "javac", "#!/bin/sh\necho javac 21.0.2\n")
    monkeypatch.setenv("JAVA_HOME", str(tmp_path / "jdk"))
    with pytest.raises(EngineBuildError) as raised:
        engine_build.ensure_built(project)
    lines = str(raised.value).splitlines()
    assert lines[0] == f"engine build failed (log: {project / 'target' / 'build.log'})"
    assert lines[1:] == [
        "[ERROR] COMPILATION ERROR : ",
        "[ERROR] /x/EngineApplication.java:[3,1] class, interface, enum, or record expected",
    ]


def test_no_jdk_is_one_line_saying_how_to_get_one(tmp_path: Path) -> None:
    empty = tmp_path / "bin"
    empty.mkdir()
    with pytest.raises(EngineBuildError) as raised:
        engine_build.find_jdk({"PATH": str(empty)})
    message = str(raised.value)
    assert "\n" not in message
    assert message.startswith("no JDK found (no javac on the PATH, no JAVA_HOME)")
    assert "JDK 17 or newer" in message
    assert "apt-get install openjdk-17-jdk-headless" in message


def test_a_jre_in_java_home_is_not_a_jdk(tmp_path: Path) -> None:
    _script(tmp_path / "jre" / "bin" / "java", "#!/bin/sh\n")
    with pytest.raises(EngineBuildError, match=r"has no bin/javac: .* not a JRE; install one"):
        engine_build.find_jdk({"JAVA_HOME": str(tmp_path / "jre"), "PATH": ""})


@pytest.mark.parametrize(
    ("says", "release"), [("javac 1.8.0_392", 8), ("javac 11.0.21", 11), ("javac 16", 16)]
)
def test_a_jdk_older_than_17_is_named(tmp_path: Path, says: str, release: int) -> None:
    _script(tmp_path / "old" / "javac", f"#!/bin/sh\necho {says} >&2\n")
    with pytest.raises(EngineBuildError, match=rf"is Java {release}: .* JDK 17 or newer"):
        engine_build.find_jdk({"PATH": str(tmp_path / "old")})


def test_a_jdk_17_or_newer_is_found_on_the_path(tmp_path: Path) -> None:
    javac = _script(tmp_path / "jdk" / "javac", "#!/bin/sh\necho javac 25\n")
    assert engine_build.find_jdk({"PATH": str(tmp_path / "jdk")}) == javac


def test_the_build_checks_for_a_jdk_before_maven_runs(
    packaged: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("JAVA_HOME")
    monkeypatch.setenv("PATH", str(tmp_path / "nothing"))
    with pytest.raises(EngineBuildError, match=r"^no JDK found"):
        engine_build.ensure_built(packaged)
    assert not (tmp_path / "cache").exists()


def test_the_cache_setting_is_known_to_the_settings() -> None:
    settings = Settings.load({"CAMUNDA_ENGINE_CACHE": "/somewhere", "XDG_CACHE_HOME": "/x"})
    assert settings == Settings()
