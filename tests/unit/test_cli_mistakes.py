"""A user's mistake ends in one line naming it and a non-zero exit, never a traceback: bad
settings, a journal that cannot be one, a worker module that does not import, a server that
is not Camunda. No engine needed: each is refused before one would be asked."""

from __future__ import annotations

import http.server
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from camunda_relay.cli import cli
from tests.support.tools import free_port


def _invoke(args: list[str], env: dict[str, str] | None = None) -> Result:
    return CliRunner().invoke(cli, args, env=env)


def _one_line(result: Result) -> str:
    """The single ``Error:`` line of a failed command (and nothing else)."""
    assert result.exit_code not in (0, None), result.output
    assert not isinstance(result.exception, AssertionError)
    lines = result.output.strip().splitlines()
    assert len(lines) == 1, result.output
    assert lines[0].startswith("Error: "), lines[0]
    return lines[0]


@pytest.mark.parametrize(
    ("variable", "value", "named"),
    [
        ("CAMUNDA_LONG_POLL", "inf", "CAMUNDA_LONG_POLL"),
        ("CAMUNDA_LONG_POLL", "1e400", "CAMUNDA_LONG_POLL"),
        ("CAMUNDA_RETRY_TIMEOUT", "1e20", "CAMUNDA_RETRY_TIMEOUT"),
        ("CAMUNDA_REQUEST_TIMEOUT", "0", "CAMUNDA_REQUEST_TIMEOUT"),
        ("CAMUNDA_LOCK_DURATION", "1e15", "CAMUNDA_LOCK_DURATION"),
        ("CAMUNDA_WORKER_ID", "w" * 300, "at most 255"),
        ("CAMUNDA_USE_PRIORITY", "maybe", "(CAMUNDA_USE_PRIORITY): expected true or false"),
        ("CAMUNDA_FETCH_ORDER", "oldest", "(CAMUNDA_FETCH_ORDER): expected one of none, create"),
        ("CAMUNDA_URL", "http://127.0.0.1:99999/engine-rest", "Port out of range"),
        ("CAMUNDA_URL", "http://[::1", "Invalid IPv6 URL"),
    ],
)
def test_a_bad_setting_is_one_line(variable: str, value: str, named: str) -> None:
    line = _one_line(_invoke(["start", "p", "--business-key", "k"], env={variable: value}))
    assert named in line


def test_a_worker_id_option_longer_than_the_engines_column_is_one_line() -> None:
    result = _invoke(["worker", "camunda_relay.examples.conception", "--worker-id", "w" * 256])
    assert "256 characters; the engine keeps at most 255" in _one_line(result)


def test_a_password_in_the_url_is_masked_in_the_error() -> None:
    url = f"http://relay:canary-pw@127.0.0.1:{free_port()}/engine-rest"
    line = _one_line(_invoke(["start", "p", "--business-key", "k"], env={"CAMUNDA_URL": url}))
    assert "engine not reachable at http://relay:***@127.0.0.1" in line
    assert "canary" not in line


# -- worker modules ------------------------------------------------------------------------------

MODULES = {
    "relay_bad_syntax": ("def broken(:\n    pass\n", "has a syntax error at {file}:1"),
    "relay_bad_import": (
        "import os\nimport relay_no_such_module\n",
        "failed at {file}:2: ModuleNotFoundError: No module named 'relay_no_such_module'",
    ),
    "relay_bad_raise": (
        "x = 1\nraise RuntimeError('boom at import')\n",
        "failed at {file}:2: RuntimeError: boom at import",
    ),
}


@pytest.mark.parametrize("module", sorted(MODULES))
def test_a_worker_module_that_does_not_import_is_one_line(
    module: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source, expected = MODULES[module]
    file = tmp_path / f"{module}.py"
    file.write_text(source)
    monkeypatch.syspath_prepend(str(tmp_path))
    line = _one_line(_invoke(["worker", module]))
    assert expected.format(file=file) in line


# -- journals ------------------------------------------------------------------------------------


def _damaged(path: Path) -> None:
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE t (x TEXT)")
        conn.executemany("INSERT INTO t VALUES (?)", [("x" * 500,) for _ in range(200)])
        (root,) = conn.execute("SELECT rootpage FROM sqlite_master WHERE name = 't'").fetchone()
        (size,) = conn.execute("PRAGMA page_size").fetchone()
    conn.close()
    data = bytearray(path.read_bytes())
    data[(root - 1) * size : root * size] = b"\x5a" * size
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("kind", ["folder", "garbage", "truncated", "damaged", "postgres"])
def test_a_journal_that_cannot_be_one_is_one_line(kind: str, tmp_path: Path) -> None:
    target = tmp_path / "journal.sqlite3"
    if kind == "folder":
        target.mkdir()
    elif kind == "garbage":
        target.write_bytes(b"not a database\n" * 300)
    elif kind == "truncated":
        _damaged(target)
        target.write_bytes(target.read_bytes()[:1500])
    elif kind == "damaged":
        _damaged(target)
    journal = f"postgresql://u:canary-pw@127.0.0.1:{free_port()}/db" if kind == "postgres" else ""
    line = _one_line(_invoke(["pending", "--journal", journal or str(target)]))
    assert "canary" not in line
    assert "journal" in line
    if kind == "postgres":
        assert "u:***@" in line


# -- a server that is not Camunda ----------------------------------------------------------------


class _Anything(http.server.BaseHTTPRequestHandler):
    """Answers every request with 200 and an empty JSON object (count: 1 for counts)."""

    def _answer(self) -> None:
        self.rfile.read(int(self.headers.get("content-length") or 0))
        body = b'{"count": 1}' if self.path.endswith("/count") else b"{}"
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = _answer

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def not_camunda() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Anything)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/engine-rest"
    server.shutdown()
    server.server_close()


def test_start_against_a_server_that_is_not_camunda_is_one_line(not_camunda: str) -> None:
    result = _invoke(["start", "p", "--business-key", "k"], env={"CAMUNDA_URL": not_camunda})
    line = _one_line(result)
    assert "without a process instance id" in line
    assert not_camunda in line
    assert "None" not in line
