"""Which engine the bundled engine is built as: Camunda 7 (the default) or Operaton.

The engine's Maven project (``engine/``) is written for Camunda 7 and is the only source: an
Operaton engine is *derived* from it when it is built (:func:`derive`): ``org.camunda.`` becomes
``org.operaton.`` in the Java sources, the pom's Camunda artifacts become Operaton's, and the
``camunda.bpm`` settings of ``application.yaml`` become ``operaton.bpm``. Older Camunda 7
releases are the same project with another ``camunda.version`` (test targets for ``make
compat``).

Operaton 1.0.3's Spin JSON data format is not on Maven Central (the registry refuses
``org.operaton.spin:operaton-spin-dataformat-json-jackson:1.0.3`` and
``operaton-spin-dataformat-all:1.0.3``; at 1.0.0 their parent pom ``operaton-spin-root`` is
missing), so the Operaton engine is built without Spin and stores no ``Json`` variables: the
worker sees that at start (:meth:`camunda_relay.client.EngineClient.stores_json`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

__all__ = [
    "DEFAULT_FLAVOUR",
    "FLAVOURS",
    "EngineFlavour",
    "derive",
]

# The releases each engine is built at; the first one is what its bare name means.
FLAVOURS: Mapping[str, tuple[str, ...]] = {
    "camunda": ("7.24.0", "7.23.0", "7.22.0", "7.21.0"),
    "operaton": ("1.0.3",),
}


@dataclass(frozen=True)
class EngineFlavour:
    """One engine the bundled engine can be built as: ``camunda`` or ``operaton``, a release."""

    name: str = "camunda"
    version: str = FLAVOURS["camunda"][0]

    @classmethod
    def parse(cls, text: str) -> EngineFlavour:
        """``camunda``, ``operaton`` or ``NAME:VERSION`` (``camunda:7.22.0``); ValueError names
        the choices for anything else."""
        name, _, version = text.strip().lower().partition(":")
        releases = FLAVOURS.get(name)
        if releases is None or (version and version not in releases):
            raise ValueError(f"unknown engine {text.strip()!r}: choose one of {choices()}")
        return cls(name, version or releases[0])

    @property
    def key(self) -> str:
        """``camunda-7.24.0``: the name of its build folder."""
        return f"{self.name}-{self.version}"

    @property
    def title(self) -> str:
        """``Camunda 7.24.0``, ``Operaton 1.0.3``."""
        return f"{self.name.capitalize()} {self.version}"

    @property
    def is_default(self) -> bool:
        return self == DEFAULT_FLAVOUR

    @property
    def webapp_path(self) -> str:
        """Where Cockpit, Tasklist and Admin are served (Operaton moved them)."""
        return f"/{self.name}/app"

    @property
    def property_prefix(self) -> str:
        """The prefix of the engine's Spring settings (``camunda.bpm``, ``operaton.bpm``)."""
        return f"{self.name}.bpm"

    @property
    def json_variables(self) -> bool:
        """Whether the bundled engine of this flavour stores ``Json`` variables (Spin)."""
        return self.name == "camunda"


DEFAULT_FLAVOUR = EngineFlavour()


def choices() -> str:
    """Every engine that can be named, for help texts and errors."""
    names = [f"{name} ({releases[0]})" for name, releases in FLAVOURS.items()]
    older = [f"{name}:{v}" for name, releases in FLAVOURS.items() for v in releases[1:]]
    return ", ".join(names + older)


# -- deriving an engine project from the Camunda one -------------------------------------------

# The pom's property holding the release (engine/pom.xml).
_VERSION_PROPERTY = re.compile(r"<camunda\.version>[^<]*</camunda\.version>")
_DEPENDENCY = re.compile(r"[ \t]*<dependency>.*?</dependency>[ \t]*\n?", re.S)
_GROUP = re.compile(r"<groupId>([^<]+)</groupId>")
_ARTIFACT = re.compile(r"<artifactId>([^<]+)</artifactId>")
# Camunda artifacts the Operaton build leaves out: Spin's JSON data format is not served for
# Operaton 1.0.3, and the Spin plugin without a data format would register the Json type
# anyway (a Json variable then fails with a bare 500 "Cannot find serializer" at completion;
# without the plugin the engine refuses it in its answer, which the worker can tell at start).
_OPERATON_LEFT_OUT = frozenset(
    {"camunda-spin-dataformat-json-jackson", "camunda-engine-plugin-spin"}
)
# A Spring setting or logger name of Camunda's, in Java or YAML text.
_CAMUNDA_PACKAGE = re.compile(r"\borg\.camunda\.")
_CAMUNDA_SETTING = re.compile(r"(?<![\w.-])camunda\.bpm\b")
_CAMUNDA_YAML_ROOT = re.compile(r"^camunda:", re.M)


def derive(relative_path: str, text: str, flavour: EngineFlavour) -> str | None:
    """The text of one file of the engine project for ``flavour``; None leaves it unchanged.

    ``relative_path`` is the file's path inside the project (``pom.xml``,
    ``src/main/java/...``)."""
    if relative_path == "pom.xml":
        return _derive_pom(text, flavour)
    if flavour.name != "operaton":
        return None
    if relative_path.endswith(".java"):
        return _CAMUNDA_SETTING.sub("operaton.bpm", _CAMUNDA_PACKAGE.sub("org.operaton.", text))
    if relative_path.endswith((".yaml", ".yml", ".properties")):
        text = _CAMUNDA_YAML_ROOT.sub("operaton:", text)
        return _CAMUNDA_SETTING.sub("operaton.bpm", _CAMUNDA_PACKAGE.sub("org.operaton.", text))
    return None


def _derive_pom(text: str, flavour: EngineFlavour) -> str:
    if not _VERSION_PROPERTY.search(text):
        raise ValueError("engine/pom.xml has no <camunda.version> property to set")
    text = _VERSION_PROPERTY.sub(f"<camunda.version>{flavour.version}</camunda.version>", text)
    if flavour.name == "operaton":
        text = _DEPENDENCY.sub(_operaton_dependency, text)
    return text


def _operaton_dependency(block: re.Match[str]) -> str:
    """A ``<dependency>`` of Camunda's as Operaton's (``org.camunda.bpm`` ->
    ``org.operaton.bpm``, ``camunda-X`` -> ``operaton-X``), or nothing when left out."""
    text = block.group(0)
    group = _GROUP.search(text)
    artifact = _ARTIFACT.search(text)
    if group is None or artifact is None or not group.group(1).startswith("org.camunda."):
        return text
    if artifact.group(1) in _OPERATON_LEFT_OUT:
        return ""
    new_group = "org.operaton." + group.group(1).removeprefix("org.camunda.")
    new_artifact = "operaton-" + artifact.group(1).removeprefix("camunda-")
    text = text.replace(group.group(0), f"<groupId>{new_group}</groupId>")
    return text.replace(artifact.group(0), f"<artifactId>{new_artifact}</artifactId>")
