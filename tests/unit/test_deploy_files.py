"""The deployment files (deploy/) speak the settings the code reads.

hadolint and kubernetes-validate (make lint-deploy) check the Containerfiles and manifests
against their own rules; these tests check them against the project: every variable given to
a worker is a setting of :class:`~camunda_relay.settings.Settings`, every variable given to
an engine is one that engine/application.yaml reads, the shutdown grace fits in the grace
period the orchestrator gives, and the probes ask the endpoints the processes serve.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from camunda_relay.settings import ENV_PREFIX, Settings

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
MANIFESTS = sorted((DEPLOY / "kubernetes").glob("*.yaml"))
CONTAINERFILES = sorted((DEPLOY / "containers").glob("*.Containerfile"))
# Read by the conception's example module, not by Settings.
EXAMPLE_VARIABLES = {"SAMPLE_WORK_SECONDS"}


def _documents() -> Iterator[dict[str, Any]]:
    for path in MANIFESTS:
        for document in yaml.safe_load_all(path.read_text()):
            if document and "apiVersion" in document and document.get("kind") != "Kustomization":
                yield document


def _containers(kind: str, name: str) -> list[dict[str, Any]]:
    for document in _documents():
        if document["kind"] == kind and document["metadata"]["name"] == name:
            return list(document["spec"]["template"]["spec"]["containers"])
    raise AssertionError(f"no {kind} {name} in deploy/kubernetes")


def _pod_spec(kind: str, name: str) -> dict[str, Any]:
    for document in _documents():
        if document["kind"] == kind and document["metadata"]["name"] == name:
            return dict(document["spec"]["template"]["spec"])
    raise AssertionError(f"no {kind} {name} in deploy/kubernetes")


def _env(container: dict[str, Any]) -> dict[str, Any]:
    return {item["name"]: item for item in container.get("env", [])}


def _compose() -> dict[str, Any]:
    return dict(yaml.safe_load((DEPLOY / "compose.yaml").read_text()))


def _setting_variables() -> set[str]:
    return {ENV_PREFIX + field.name.upper() for field in dataclasses.fields(Settings)}


def _engine_variables() -> set[str]:
    text = (REPO / "engine" / "src" / "main" / "resources" / "application.yaml").read_text()
    return set(re.findall(r"\$\{(CAMUNDA_[A-Z_]+)", text))


def _containerfile_env(path: Path) -> set[str]:
    names: set[str] = set()
    for block in re.findall(r"^ENV (.+?)(?<!\\)$", path.read_text(), flags=re.M | re.S):
        names.update(re.findall(r"(?:^|\s)([A-Z][A-Z0-9_]*)=", block))
    return names


def test_the_worker_is_given_only_settings() -> None:
    known = _setting_variables() | EXAMPLE_VARIABLES
    given = set(_env(_containers("Deployment", "camunda-relay-worker")[0]))
    given |= _containerfile_env(DEPLOY / "containers" / "worker.Containerfile")
    for name in ("worker-1", "worker-2"):
        given |= set(_compose()["services"][name]["environment"])
    unknown = sorted(n for n in given if n.startswith(ENV_PREFIX) and n not in known)
    assert not unknown, f"not settings of camunda-relay: {unknown}"
    assert "CAMUNDA_JOURNAL" in given
    assert "CAMUNDA_URL" in given


def test_the_engine_is_given_only_what_application_yaml_reads() -> None:
    known = _engine_variables()
    given = set(_env(_containers("Deployment", "camunda-relay-engine")[0]))
    given |= _containerfile_env(DEPLOY / "containers" / "engine.Containerfile")
    given |= set(_compose()["x-engine"]["environment"])
    unknown = sorted(n for n in given if n.startswith(ENV_PREFIX) and n not in known)
    assert not unknown, f"not read by engine/application.yaml: {unknown}"


def test_passwords_come_from_secrets_only() -> None:
    for kind, name in (
        ("Deployment", "camunda-relay-engine"),
        ("Deployment", "camunda-relay-worker"),
        ("StatefulSet", "postgres"),
    ):
        for container in _containers(kind, name):
            for variable, item in _env(container).items():
                if "PASSWORD" in variable or variable == "CAMUNDA_JOURNAL":
                    assert "secretKeyRef" in item.get("valueFrom", {}), (name, variable)
    for path in CONTAINERFILES:
        assert "PASSWORD" not in " ".join(_containerfile_env(path)), path.name


def test_the_worker_gets_more_time_to_stop_than_its_grace() -> None:
    spec = _pod_spec("Deployment", "camunda-relay-worker")
    grace = float(_env(spec["containers"][0])["CAMUNDA_SHUTDOWN_GRACE"]["value"])
    assert spec["terminationGracePeriodSeconds"] > grace + 5
    compose = _compose()["x-worker"]
    assert float(compose["stop_grace_period"].rstrip("s")) > grace + 5
    assert float(compose["environment"]["CAMUNDA_SHUTDOWN_GRACE"]) == grace


def test_probes_ask_the_endpoints_served() -> None:
    worker = _containers("Deployment", "camunda-relay-worker")[0]
    assert worker["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert worker["readinessProbe"]["httpGet"]["path"] == "/readyz"
    engine = _containers("Deployment", "camunda-relay-engine")[0]
    assert engine["livenessProbe"]["httpGet"]["path"] == "/actuator/health/liveness"
    assert engine["readinessProbe"]["httpGet"]["path"] == "/actuator/health/readiness"


@pytest.mark.parametrize("path", CONTAINERFILES, ids=lambda p: p.name)
def test_images_run_unprivileged_with_a_health_check(path: Path) -> None:
    text = path.read_text()
    final_user = re.findall(r"^USER (\S+)", text, flags=re.M)
    assert final_user, "no USER"
    assert not final_user[-1].startswith(("root", "0:", "0")), final_user[-1]
    assert re.search(r"^HEALTHCHECK ", text, flags=re.M)
    # Exec form, so the process is PID 1 and gets SIGTERM itself.
    entrypoint = re.findall(r"^ENTRYPOINT (.+)$", text, flags=re.M)
    assert entrypoint, "no ENTRYPOINT"
    assert entrypoint[-1].startswith("["), entrypoint


def test_every_manifest_is_in_the_kustomization() -> None:
    kustomization = yaml.safe_load((DEPLOY / "kubernetes" / "kustomization.yaml").read_text())
    listed = set(kustomization["resources"])
    present = {p.name for p in MANIFESTS} - {"kustomization.yaml"}
    assert listed == present
