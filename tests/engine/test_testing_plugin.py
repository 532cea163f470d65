"""The pytest plugin camunda_relay.testing ships: the README's example test, run by pytest in
a subprocess from a folder of its own as a user would, gets the bundled engine from
``camunda_engine`` and runs its handler once with ``run_handlers_sync``."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
MY_WORKER = """
from camunda_relay import Router, Task

router = Router()


@router.task("messageSending", reply="sample_response")
async def send_message(task: Task) -> dict[str, object]:
    return {"var1": 1, "var2": "value"}
"""


def readme_example() -> str:
    """The example test of the README's "Testing your handlers", as a user copies it."""
    readme = (ROOT / "README.md").read_text()
    found = re.search(r"```python\n(# test_my_worker\.py\n.*?)```", readme, flags=re.S)
    assert found, "the README shows an example test"
    return found.group(1)


def test_the_readme_example_gets_the_bundled_engine_from_the_fixture(
    tmp_path: Path, engine_jar: Path
) -> None:
    (tmp_path / "my_worker.py").write_text(MY_WORKER)
    (tmp_path / "test_my_worker.py").write_text(readme_example())
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CAMUNDA_", "PYTEST_"))}
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_my_worker.py"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    assert "2 passed" in done.stdout
