"""What the worker's HTTP server holds under abuse: half-sent and trickled requests, more
connections and requests than it serves at once, bodies (chunked too) and the secret, clients
that go away, and the log all of that leaves (bounded, in the configured format)."""

from __future__ import annotations

import io
import json
import logging
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator, Mapping

import httpx
import pytest
from prometheus_client import CollectorRegistry

from camunda_relay.cli._logging import configure
from camunda_relay.serve import MAX_BODY, MAX_HANDLERS, REQUEST_DEADLINE, HttpServer, Routes
from camunda_relay.throttled_log import ThrottledLog
from camunda_relay.worker.health import Verdict

SECRET = "a-long-enough-reply-secret"


def _ok() -> Verdict:
    return Verdict(True)


def serve(routes: Routes | None = None, **limits: float) -> HttpServer:
    server = HttpServer(
        "127.0.0.1",
        0,
        registry=CollectorRegistry(),
        live=_ok,
        ready=_ok,
        routes=routes,
        **limits,  # type: ignore[arg-type]
    )
    server.start()
    return server


def wait_for(condition: Callable[[], bool], what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout} s: {what}")
        time.sleep(0.02)


def half_sent(port: int, count: int, head: bytes) -> list[socket.socket]:
    sockets = []
    for _ in range(count):
        sock = socket.create_connection(("127.0.0.1", port), timeout=30)
        sock.sendall(head)
        sockets.append(sock)
    return sockets


def closed_by_server(sock: socket.socket) -> bool:
    sock.setblocking(False)
    try:
        return sock.recv(4096) == b""
    except BlockingIOError:
        return False
    except OSError:
        return True
    finally:
        sock.setblocking(True)


def echo(method: str, path: str, headers: Mapping[str, str], body: bytes) -> tuple[int, str, bytes]:
    return 200, "application/octet-stream", body


@pytest.fixture
def sockets() -> Iterator[list[socket.socket]]:
    opened: list[socket.socket] = []
    yield opened
    for sock in opened:
        sock.close()


# -- connections and threads -----------------------------------------------------------------


def test_200_half_sent_requests_hold_no_thread_each(sockets: list[socket.socket]) -> None:
    server = serve({"/echo": echo})
    try:
        before = threading.active_count()
        sockets += half_sent(server.port, 200, b"POST /echo HTTP/1.1\r\nContent-Length: 10\r\n")
        probe = httpx.get(f"http://127.0.0.1:{server.port}/healthz", timeout=30)
        during = threading.active_count()
    finally:
        server.close()
    assert probe.status_code == 200  # the probe got in after the 200
    assert during - before <= 2, f"{during - before} threads more"


def test_connections_are_bounded_and_a_probe_still_gets_in(sockets: list[socket.socket]) -> None:
    server = serve(max_connections=8)
    try:
        sockets += half_sent(server.port, 20, b"GET /healthz HTTP/1.1\r\n")
        probe = httpx.get(f"http://127.0.0.1:{server.port}/healthz", timeout=30)
        assert server.open_connections <= 8
        wait_for(lambda: sum(map(closed_by_server, sockets)) >= 12, "the oldest ones shed")
    finally:
        server.close()
    assert probe.status_code == 200


def test_a_request_trickled_byte_by_byte_is_closed_at_the_whole_request_deadline() -> None:
    """One byte a second never trips a per-read timeout; the request's deadline does."""
    server = serve()
    sent = 0
    try:
        with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
            sock.sendall(b"GET /healthz HTTP/1.1\r\nX-Slow: ")
            started = time.monotonic()
            while time.monotonic() - started < 3 * REQUEST_DEADLINE:
                try:
                    sock.sendall(b"x")
                except OSError:
                    break
                if closed_by_server(sock):
                    break
                sent += 1
                time.sleep(1)
            elapsed = time.monotonic() - started
    finally:
        server.close()
    assert elapsed < 3 * REQUEST_DEADLINE, f"still open after {elapsed:.0f} s ({sent} bytes)"


def test_more_requests_than_handlers_are_answered_503() -> None:
    release = threading.Event()
    entered: list[int] = []

    def slow(
        method: str, path: str, headers: Mapping[str, str], body: bytes
    ) -> tuple[int, str, bytes]:
        entered.append(1)
        release.wait(timeout=60)
        return 200, "text/plain", b"done"

    server = serve({"/slow": slow}, request_deadline=120)
    base = f"http://127.0.0.1:{server.port}"
    threads = [
        threading.Thread(target=httpx.get, args=(f"{base}/slow",), kwargs={"timeout": 90})
        for _ in range(MAX_HANDLERS)
    ]
    try:
        for thread in threads:
            thread.start()
        wait_for(lambda: len(entered) == MAX_HANDLERS, "every handler busy")
        extra = httpx.get(f"{base}/slow", timeout=90)
        probe = httpx.get(f"{base}/healthz", timeout=30)
    finally:
        release.set()
        for thread in threads:
            thread.join(timeout=90)
        server.close()
    assert extra.status_code == 503
    assert probe.status_code == 200  # the probes are not routes: never refused for it


# -- bodies ----------------------------------------------------------------------------------


def test_a_chunked_body_is_read_up_to_the_size_limit() -> None:
    server = serve({"/echo": echo})
    url = f"http://127.0.0.1:{server.port}/echo"
    try:
        small = httpx.post(url, content=iter([b"hello ", b"chunked"]), timeout=30)
        huge = httpx.post(url, content=iter([b"x" * 65536] * 17), timeout=30)
    finally:
        server.close()
    assert small.request.headers["transfer-encoding"] == "chunked"
    assert (small.status_code, small.content) == (200, b"hello chunked")
    assert MAX_BODY < 17 * 65536
    assert huge.status_code == 413


# -- the log -----------------------------------------------------------------------------------


def test_a_throttled_line_counts_the_ones_held_back() -> None:
    from camunda_relay.clock import ManualClock

    clock = ManualClock()
    logger = logging.getLogger("camunda_relay.test_throttle")
    lines: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(record.getMessage())

    logger.addHandler(Keep())
    try:
        throttle = ThrottledLog(logger, every=60, clock=clock)
        for _ in range(1000):
            throttle.note("secret", "refused")
        clock.advance(61)
        throttle.note("secret", "refused")
        throttle.note("other", "busy")
    finally:
        logger.handlers.clear()
    assert lines == ["refused", "refused (999 more in 61 s)", "busy"]


class JsonLog:
    """The ``camunda_relay`` log as ``CAMUNDA_LOG_FORMAT=json`` writes it, and stderr."""

    def __init__(self, capsys: pytest.CaptureFixture[str]) -> None:
        self.stream = io.StringIO()
        self.capsys = capsys
        self.stderr = ""

    def text(self) -> str:
        self.stderr += self.capsys.readouterr().err
        return self.stream.getvalue() + self.stderr


@pytest.fixture
def json_log(capsys: pytest.CaptureFixture[str]) -> Iterator[JsonLog]:
    root = logging.getLogger("camunda_relay")
    saved = root.handlers[:], root.level, root.propagate
    log = JsonLog(capsys)
    configure("DEBUG", "json")
    root.handlers[0].setStream(log.stream)  # type: ignore[attr-defined]
    yield log
    root.handlers[:], root.level, root.propagate = saved


def test_clients_that_go_away_leave_one_debug_line_each_in_the_log_format(
    json_log: JsonLog,
) -> None:
    server = serve({"/echo": echo})
    clients = 50
    try:
        for n in range(clients):
            sock = socket.create_connection(("127.0.0.1", server.port), timeout=30)
            if n % 2:
                sock.sendall(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\nhalf")
            else:
                sock.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            sock.close()  # a reset, the answer unread

            def settled(gone: int = (n + 1) // 2) -> bool:
                text = json_log.text()
                return "Traceback" in text or text.count("went away") >= gone

            wait_for(settled, f"the server saw client {n} go")
        assert httpx.get(f"http://127.0.0.1:{server.port}/healthz", timeout=30).status_code == 200
    finally:
        server.close()
    text = json_log.text()
    assert "Traceback" not in text
    entries = [json.loads(line) for line in text.splitlines() if line.strip()]  # all JSON
    gone = [entry for entry in entries if "went away" in entry["message"]]
    assert len(gone) == clients // 2  # one line per client that left mid-body
    assert all(entry["level"] in ("DEBUG", "INFO") for entry in entries), entries


def test_many_refusals_are_one_warning(caplog: pytest.LogCaptureFixture) -> None:
    release = threading.Event()
    entered: list[int] = []

    def slow(
        method: str, path: str, headers: Mapping[str, str], body: bytes
    ) -> tuple[int, str, bytes]:
        entered.append(1)
        release.wait(timeout=60)
        return 200, "text/plain", b""

    server = serve({"/slow": slow}, max_handlers=1, request_deadline=120)
    base = f"http://127.0.0.1:{server.port}"
    blocker = threading.Thread(target=httpx.get, args=(f"{base}/slow",), kwargs={"timeout": 90})
    try:
        blocker.start()
        wait_for(lambda: len(entered) == 1, "the one handler busy")
        with httpx.Client(base_url=base, timeout=30) as web:
            statuses = [web.get("/slow").status_code for _ in range(100)]
    finally:
        release.set()
        blocker.join(timeout=90)
        server.close()
    assert set(statuses) == {503}
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1, [r.getMessage() for r in warnings]
