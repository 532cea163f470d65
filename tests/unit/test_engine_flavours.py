"""The engine flavours: naming one, and deriving the Operaton project from the Camunda one."""

from __future__ import annotations

import re
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner

from camunda_relay import engine_build, errors
from camunda_relay.cli import cli
from camunda_relay.engine_flavours import DEFAULT_FLAVOUR, FLAVOURS, EngineFlavour, derive
from camunda_relay.http.httpx_stack import answer as httpx_answer

ENGINE = Path(__file__).resolve().parents[2] / "engine"
OPERATON = EngineFlavour.parse("operaton")


def test_names_and_releases() -> None:
    assert DEFAULT_FLAVOUR == EngineFlavour("camunda", "7.24.0") == EngineFlavour.parse("camunda")
    assert EngineFlavour.parse(" Operaton ") == EngineFlavour("operaton", "1.0.3")
    assert EngineFlavour.parse("camunda:7.21.0").key == "camunda-7.21.0"
    assert OPERATON.webapp_path == "/operaton/app"
    assert OPERATON.property_prefix == "operaton.bpm"
    assert not OPERATON.json_variables
    assert DEFAULT_FLAVOUR.json_variables
    for wrong in ("cibseven", "camunda:7.20.0", "operaton:2.0", ""):
        with pytest.raises(ValueError, match=r"choose one of camunda \(7\.24\.0\), operaton"):
            EngineFlavour.parse(wrong)


def test_the_default_is_the_release_the_pom_names() -> None:
    pom = (ENGINE / "pom.xml").read_text()
    found = re.search(r"<camunda\.version>([^<]+)</camunda\.version>", pom)
    assert found is not None
    assert found.group(1) == DEFAULT_FLAVOUR.version == FLAVOURS["camunda"][0]


def test_an_older_camunda_only_changes_the_release() -> None:
    pom = (ENGINE / "pom.xml").read_text()
    older = derive("pom.xml", pom, EngineFlavour.parse("camunda:7.22.0"))
    assert older == pom.replace(
        "<camunda.version>7.24.0</camunda.version>", "<camunda.version>7.22.0</camunda.version>"
    )
    java = ENGINE / "src/main/java/io/camundarelay/engine/StartupCheck.java"
    assert derive("src/main/java/x/StartupCheck.java", java.read_text(), older_flavour()) is None


def older_flavour() -> EngineFlavour:
    return EngineFlavour.parse("camunda:7.23.0")


def test_the_operaton_pom_takes_operatons_artifacts_and_leaves_spin_out() -> None:
    pom = derive("pom.xml", (ENGINE / "pom.xml").read_text(), OPERATON)
    assert pom is not None
    assert "<camunda.version>1.0.3</camunda.version>" in pom
    assert "<artifactId>operaton-bom</artifactId>" in pom
    assert "<artifactId>operaton-bpm-spring-boot-starter-rest</artifactId>" in pom
    assert "<artifactId>operaton-bpm-spring-boot-starter-webapp</artifactId>" in pom
    assert "<groupId>org.operaton.bpm.springboot</groupId>" in pom
    assert "spin" not in re.sub(r"<!--.*?-->", "", pom, flags=re.S).lower()
    assert not re.search(r"<groupId>org\.camunda", pom)
    # What is not Camunda's stays as it is (Spring Boot, H2, PostgreSQL, anything added later).
    for kept in ("spring-boot-starter-jdbc", "<artifactId>h2</artifactId>", "postgresql"):
        assert kept in pom


def test_a_new_camunda_dependency_is_taken_over_by_the_same_rule() -> None:
    pom = (
        "<camunda.version>7.24.0</camunda.version>\n"
        "    <dependency>\n      <groupId>org.camunda.bpm</groupId>\n"
        "      <artifactId>camunda-engine-plugin-connect</artifactId>\n    </dependency>\n"
        "    <dependency>\n      <groupId>org.springframework.boot</groupId>\n"
        "      <artifactId>spring-boot-starter-actuator</artifactId>\n    </dependency>\n"
    )
    derived = derive("pom.xml", pom, OPERATON)
    assert derived is not None
    assert "<groupId>org.operaton.bpm</groupId>" in derived
    assert "<artifactId>operaton-engine-plugin-connect</artifactId>" in derived
    assert "<artifactId>spring-boot-starter-actuator</artifactId>" in derived


def test_a_pom_without_the_release_property_is_refused() -> None:
    with pytest.raises(ValueError, match=r"camunda\.version"):
        derive("pom.xml", "<project/>", OPERATON)


def test_java_and_settings_move_to_operatons_packages_and_prefix() -> None:
    java = derive(
        "src/main/java/A.java",
        "import org.camunda.bpm.engine.ProcessEngine;\n"
        'String id = env.getProperty("camunda.bpm.admin-user.id", "");\n'
        'String name = "camunda-relay workers"; // CAMUNDA_USER stays\n',
        OPERATON,
    )
    assert java == (
        "import org.operaton.bpm.engine.ProcessEngine;\n"
        'String id = env.getProperty("operaton.bpm.admin-user.id", "");\n'
        'String name = "camunda-relay workers"; // CAMUNDA_USER stays\n'
    )
    yaml = derive(
        "src/main/resources/application.yaml",
        "camunda:\n  bpm:\n    history-level: full\nrelay:\n  x: ${camunda.bpm.admin-user.id}\n"
        "logging:\n  level:\n    org.camunda.bpm.engine.context: WARN\n",
        OPERATON,
    )
    assert yaml == (
        "operaton:\n  bpm:\n    history-level: full\nrelay:\n  x: ${operaton.bpm.admin-user.id}\n"
        "logging:\n  level:\n    org.operaton.bpm.engine.context: WARN\n"
    )
    bpmn = ENGINE / "src/main/resources/processes/correlation-message.bpmn"
    assert derive("src/main/resources/processes/x.bpmn", bpmn.read_text(), OPERATON) is None


def test_every_source_of_the_operaton_engine_is_derived_none_is_kept_by_hand() -> None:
    """engine/ is the one source: no Operaton file of its own anywhere in it."""
    assert not [
        p for p in ENGINE.rglob("*") if "operaton" in p.name.lower() and "target" not in p.parts
    ]
    for source in (ENGINE / "src").rglob("*.java"):
        derived = derive(source.relative_to(ENGINE).as_posix(), source.read_text(), OPERATON)
        assert derived is not None
        assert "org.camunda." not in derived
        assert '"camunda.bpm.' not in derived


def test_each_flavour_builds_in_a_folder_of_its_own(tmp_path: Path) -> None:
    project = tmp_path / "engine"
    (project / "src").mkdir(parents=True)
    (project / "pom.xml").write_text("<camunda.version>7.24.0</camunda.version>")
    assert engine_build.build_dir(project) == project
    assert engine_build.build_dir(project, OPERATON) == project / "target/flavours/operaton-1.0.3"
    assert engine_build.jar_path(project, OPERATON) == (
        project / "target/flavours/operaton-1.0.3/target" / engine_build.JAR_NAME
    )
    environ = {"CAMUNDA_ENGINE_CACHE": str(tmp_path / "cache")}
    assert engine_build.cache_dir(environ).name.count("-") == 1
    assert engine_build.cache_dir(environ, OPERATON).name.endswith("-operaton-1.0.3")
    assert engine_build.needs_build(project, OPERATON)


def test_the_operaton_stage_is_derived_and_a_changed_source_rebuilds_it(tmp_path: Path) -> None:
    project = tmp_path / "engine"
    java = project / "src/main/java/A.java"
    java.parent.mkdir(parents=True)
    java.write_text("import org.camunda.bpm.engine.ProcessEngine;\n")
    (project / "pom.xml").write_text("<camunda.version>7.24.0</camunda.version>")
    (project / "mvnw").write_text("#!/bin/sh\n")
    where = engine_build.build_dir(project, OPERATON)
    engine_build._stage(project, where, OPERATON)
    assert (where / "src/main/java/A.java").read_text() == (
        "import org.operaton.bpm.engine.ProcessEngine;\n"
    )
    assert "1.0.3" in (where / "pom.xml").read_text()
    jar = engine_build.jar_path(project, OPERATON)
    jar.parent.mkdir(parents=True)
    jar.write_bytes(b"jar")
    (jar.parent / "built-from.sha256").write_text(engine_build._digest(project, OPERATON))
    assert not engine_build.needs_build(project, OPERATON)
    java.write_text("import org.camunda.bpm.engine.IdentityService;\n")
    assert engine_build.needs_build(project, OPERATON)


def test_engine_up_names_the_engines_it_knows() -> None:
    result = CliRunner().invoke(cli, ["engine", "up", "--engine", "cibseven"])
    assert result.exit_code == 2
    assert "unknown engine 'cibseven': choose one of camunda (7.24.0), operaton (1.0.3)" in (
        result.output
    )
    assert "--engine ENGINE" in CliRunner().invoke(cli, ["demo", "--help"]).output


@pytest.mark.parametrize(
    ("status", "message"),
    [
        (400, "Cannot complete external task: Unsupported value type 'Json'"),
        (500, "Cannot find serializer for value 'Value 'null' of type 'json', isTransient=false'."),
    ],
)
def test_an_engine_refusing_json_is_named_as_such(status: int, message: str) -> None:
    response = httpx.Response(status, json={"type": "ProcessEngineException", "message": message})
    error = errors.from_response(httpx_answer(response), "POST /external-task/1/complete")
    assert isinstance(error, errors.JsonUnsupported)
    assert not error.retryable
    assert str(error.message).startswith("the engine stores no Json variables")
    assert message in error.message
