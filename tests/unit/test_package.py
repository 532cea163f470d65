"""The package's shape: the public names are pinned, no module imports itself back through
others, and the reply job's states move only as its transition table allows."""

from __future__ import annotations

import ast
import importlib
import pkgutil
from pathlib import Path

import pytest

import camunda_relay
from camunda_relay.errors import IllegalTransition
from camunda_relay.replies.job import FINISHED, TRANSITIONS, UNFINISHED, Job, JobState
from camunda_relay.task import Task

PACKAGE = Path(camunda_relay.__file__).parent

PUBLIC = {
    "AmbiguousCorrelation",
    "AuthenticationFailed",
    "BadRequest",
    "BpmnError",
    "Complete",
    "ConcurrentModification",
    "ConfigurationError",
    "EngineClient",
    "EngineError",
    "EngineUnavailable",
    "InvalidInput",
    "Job",
    "JobState",
    "JournalError",
    "JournalUnavailable",
    "JsonUnsupported",
    "MemoryJournal",
    "NoMatchingExecution",
    "NotFound",
    "PermissionDenied",
    "RelayError",
    "DeferReply",
    "Reply",
    "ReplyTokenError",
    "RetryLater",
    "Router",
    "ServerError",
    "Settings",
    "SettingsError",
    "Task",
    "TaskNotLocked",
    "TlsError",
    "VariableError",
    "Worker",
    "WorkerStats",
    "__version__",
    "fail_reply",
    "send_reply",
}


def test_the_public_names_are_pinned() -> None:
    assert set(camunda_relay.__all__) == PUBLIC
    for name in PUBLIC:
        assert getattr(camunda_relay, name) is not None


def _module_name(path: Path) -> str:
    relative = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = list(relative.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(path: Path, module: str) -> set[str]:
    """Package modules imported at import time (not under TYPE_CHECKING, not in functions)."""
    tree = ast.parse(path.read_text())
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()
    for node in tree.body:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            continue
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{anchor}.{base}" if base else anchor
            targets = [base] + [f"{base}.{alias.name}" for alias in node.names]
        found.update(t for t in targets if t.startswith("camunda_relay"))
    return found


def _graph() -> dict[str, set[str]]:
    modules = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    return {
        name: {target for target in _imports(path, name) if target in modules and target != name}
        for name, path in modules.items()
    }


def test_no_module_imports_itself_back_through_others() -> None:
    graph = _graph()
    # A package's __init__ re-exporting its own submodules is not a cycle of its own making.
    for name, targets in graph.items():
        if name == "camunda_relay" or (PACKAGE.parent / name.replace(".", "/")).is_dir():
            graph[name] = {t for t in targets if not t.startswith(name + ".")}
    cycles: list[list[str]] = []
    state: dict[str, int] = {}

    def visit(node: str, trail: list[str]) -> None:
        state[node] = 1
        for target in sorted(graph[node]):
            if state.get(target) == 1:
                cycles.append([*trail[trail.index(target) :], target])
            elif target not in state:
                visit(target, [*trail, target])
        state[node] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])
    assert cycles == []


def test_every_module_imports_on_its_own() -> None:
    for info in pkgutil.walk_packages([str(PACKAGE)], prefix="camunda_relay."):
        if info.name.endswith("__main__") or info.name.endswith(".postgres"):
            continue
        importlib.import_module(info.name)


def _job(state: JobState) -> Job:
    task = Task(id="t", topic="topic", worker_id="w", process_instance_id="pi")
    return Job(task=task, message="m", state=state)


@pytest.mark.parametrize("state", list(JobState))
def test_a_job_moves_only_as_the_table_allows(state: JobState) -> None:
    for target in JobState:
        if target in TRANSITIONS[state]:
            assert _job(state).advance(target).state is target
        else:
            with pytest.raises(IllegalTransition, match=f"{state.value} cannot move to"):
                _job(state).advance(target)


def test_the_state_sets_cover_every_state_once() -> None:
    assert set(JobState) == FINISHED | UNFINISHED
    assert not FINISHED & UNFINISHED
    assert set(TRANSITIONS) == set(JobState)
    assert JobState.FAILING in UNFINISHED, "a job whose incident is not in yet is not done"
