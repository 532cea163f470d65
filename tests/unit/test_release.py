"""What users read about a release: one version everywhere, the Pythons it is tested on,
the changelog, and docs that name every setting."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

from click.testing import CliRunner

import camunda_relay
from camunda_relay._version import __version__
from camunda_relay.cli import cli
from camunda_relay.settings import ENV_PREFIX, Settings

ROOT = Path(__file__).resolve().parents[2]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())

# The Pythons the tests run on (make compat runs the unit tests on each); the classifiers
# list exactly these.
TESTED_PYTHONS = ["3.11", "3.12", "3.13"]


def test_the_version_is_read_from_one_place() -> None:
    project = PYPROJECT["project"]
    assert "version" not in project
    assert project["dynamic"] == ["version"]
    attr = PYPROJECT["tool"]["setuptools"]["dynamic"]["version"]["attr"]
    assert attr == "camunda_relay._version.__version__"
    assert camunda_relay.__version__ == __version__
    assert re.fullmatch(r"\d+\.\d+\.\d+", __version__)


def test_the_engine_has_the_packages_version() -> None:
    pom = (ROOT / "engine" / "pom.xml").read_text()
    # The project's own <version>, right after its artifactId (the parent's comes before).
    own = re.search(
        r"<artifactId>camunda-relay-engine</artifactId>\s*<version>([^<]+)</version>", pom
    )
    assert own is not None
    assert own.group(1) == __version__


def test_the_cli_says_its_version() -> None:
    result = CliRunner().invoke(cli, ["--version"], env={"CAMUNDA_NO_SUCH_SETTING": "x"})
    assert result.exit_code == 0, result.output
    assert result.output == f"camunda-relay {__version__}\n"


def test_the_classifiers_name_the_tested_pythons() -> None:
    project = PYPROJECT["project"]
    prefix = "Programming Language :: Python :: 3."
    listed = [c.rsplit(" :: ", 1)[1] for c in project["classifiers"] if c.startswith(prefix)]
    assert listed == TESTED_PYTHONS
    assert project["requires-python"] == f">={TESTED_PYTHONS[0]}"


def test_the_changelog_has_this_release() -> None:
    changelog = (ROOT / "CHANGELOG.md").read_text()
    releases = re.findall(r"^## \[([^\]]+)\]", changelog, flags=re.MULTILINE)
    assert releases, "no release headings"
    assert releases[0] in (__version__, "Unreleased")
    assert __version__ in releases
    section = changelog.split(f"## [{__version__}]", 1)[1].split("\n## [", 1)[0]
    assert "### Added" in section


def test_the_docs_name_every_setting() -> None:
    page = (ROOT / "docs" / "settings.md").read_text()
    readme = (ROOT / "README.md").read_text()
    for field in Settings.__dataclass_fields__:
        name = f"`{ENV_PREFIX}{field.upper()}`"
        assert name in page, f"docs/settings.md does not name {name}"
        assert name in readme, f"README.md does not name {name}"
