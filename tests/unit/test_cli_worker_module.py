"""``camunda-relay worker MODULE`` imports MODULE from the current directory, as the README's
first worker does, also when the command is an installed script (whose ``sys.path`` has
only the script's own folder, not the current directory)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from camunda_relay.cli import cli

MODULE = """\
from camunda_relay import Router

router = Router()


@router.task("messageSending", reply="sample_response")
def send_message(task):
    return {}
"""


def test_a_worker_module_in_the_current_directory_is_imported(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "first_worker_in_cwd.py").write_text(MODULE)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", str(tmp_path))])
    monkeypatch.delitem(sys.modules, "first_worker_in_cwd", raising=False)
    env = {"CAMUNDA_URL": "http://127.0.0.1:9/engine-rest", "CAMUNDA_JOURNAL": ":memory:"}

    result = CliRunner().invoke(cli, ["worker", "first_worker_in_cwd"], env=env)

    assert "first_worker_in_cwd" in sys.modules, result.output
    # Imported and started: it ends at the engine nobody serves, in one line.
    assert result.exit_code == 1
    assert result.output.startswith("Error: GET /process-definition/count:"), result.output
    assert "not available" in result.output
    monkeypatch.delitem(sys.modules, "first_worker_in_cwd")
