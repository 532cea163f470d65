"""``make compat``'s runner: reading pytest's closing line, finding a Python, the table."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests import compat


@pytest.mark.parametrize(
    ("output", "counts"),
    [
        ("....\n94 passed in 812.42s (0:13:32)\n", {"passed": 94}),
        (
            "x\n==== 1 failed, 3 passed, 2 skipped in 2.1s ====\n",
            {"failed": 1, "passed": 3, "skipped": 2},
        ),
        ("SKIPPED [2] a.py:3: why\n5 passed, 2 skipped in 27.89s\n", {"passed": 5, "skipped": 2}),
        ("1 error in 0.1s\n", {"error": 1}),
        ("Traceback: no closing line\n", {}),
    ],
)
def test_the_closing_line_is_counted(output: str, counts: dict[str, int]) -> None:
    assert compat._counts(output) == counts


def test_skip_reasons_are_summed_per_reason() -> None:
    output = (
        "SKIPPED [1] tests/engine/test_client.py:246: Operaton 1.0.3 is built without Json\n"
        "SKIPPED [2] tests/engine/test_cli_process.py:224: Operaton 1.0.3 is built without Json\n"
    )
    assert compat._skip_reasons(output) == "3 skipped: Operaton 1.0.3 is built without Json"


def test_a_python_is_found_in_pyenv(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The newest release that runs; a PATH entry that does not run (a pyenv shim of a
    version not selected) is passed over."""
    for release, works in (("3.12.1", True), ("3.12.10", False), ("3.12.9", True), ("3.1.2", True)):
        python = tmp_path / "versions" / release / "bin" / "python"
        python.parent.mkdir(parents=True)
        minor = ".".join(release.split(".")[:2])
        python.write_text(f"#!/bin/sh\necho {minor}\n" if works else "#!/bin/sh\nexit 127\n")
        python.chmod(0o755)
    shims = tmp_path / "shims"
    shims.mkdir()
    (shims / "python3.12").write_text("#!/bin/sh\nexit 127\n")
    (shims / "python3.12").chmod(0o755)
    monkeypatch.setenv("PYENV_ROOT", str(tmp_path))
    monkeypatch.setenv("PATH", str(shims))
    assert compat.find_python("3.12") == tmp_path / "versions/3.12.9/bin/python"
    assert compat.find_python("3.1") == tmp_path / "versions/3.1.2/bin/python"
    assert compat.find_python("3.99") is None


def test_the_table_has_a_row_per_engine_and_per_python() -> None:
    engines = [
        compat.Row("Camunda 7.24.0", True, {"passed": 94}, 812.0, 10.0),
        compat.Row(
            "Operaton 1.0.3", False, {"passed": 80, "failed": 1}, 700.0, 7.0, "2 skipped: no Json"
        ),
        compat.Row("Camunda 7.21.0", False, note="build failed: no such artifact"),
    ]
    pythons = [compat.Row("Python 3.13.0", True, {"passed": 430, "skipped": 2}, 40.0)]
    lines = compat.table(engines, pythons).splitlines()
    assert lines[2] == "| Camunda 7.24.0 | 10 s | 94 passed | 812 s | ok |  |"
    assert (
        lines[3]
        == "| Operaton 1.0.3 | 7 s | 80 passed, 1 failed | 700 s | FAILED | 2 skipped: no Json |"
    )
    assert lines[4].startswith("| Camunda 7.21.0 | - | build failed: no such artifact |")
    assert lines[-1] == "| Python 3.13.0 | 430 passed, 2 skipped | 40 s | ok |"
