"""The fault proxy on its own (no engine): each fault does what the scenarios rely on."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest
from harness import history
from harness.faultproxy import ProxyThread, Rule
from harness.history import OperationLog


class _Upstream(BaseHTTPRequestHandler):
    hits: list[str] = []  # noqa: RUF012 - shared by the handler instances of one server

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        self.rfile.read(length)
        self.hits.append(f"{self.command} {self.path}")
        body = json.dumps({"ok": True, "path": self.path}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = _answer

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def proxy(tmp_path: Path) -> Iterator[ProxyThread]:
    _Upstream.hits = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Upstream)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    log = OperationLog(tmp_path / "history.jsonl")
    running = ProxyThread(server.server_address[1], seed=3, history=log, control_port=0)
    try:
        yield running
    finally:
        running.close()
        log.close()
        server.shutdown()
        server.server_close()


def _client(proxy: ProxyThread, timeout: float = 5.0) -> httpx.Client:
    return httpx.Client(base_url=proxy.url, timeout=timeout)


def test_without_rules_the_answer_is_relayed(proxy: ProxyThread) -> None:
    with _client(proxy) as client:
        for _ in range(3):  # one connection per request; the client copes
            assert client.post("/message", json={"processInstanceId": "p1"}).json()["ok"]
    assert len(_Upstream.hits) == 3


def test_http_status_answers_without_forwarding(proxy: ProxyThread) -> None:
    proxy.set_rules(Rule("http_status", match="POST /message", status=503))
    with _client(proxy) as client:
        assert client.post("/message", json={}).status_code == 503
        assert client.get("/engine").status_code == 200
    assert _Upstream.hits == ["GET /engine-rest/engine"]


def test_drop_response_lets_the_engine_commit_and_loses_the_answer(
    proxy: ProxyThread, tmp_path: Path
) -> None:
    proxy.set_rules(Rule("drop_response", match="/external-task/*/complete"))
    with _client(proxy) as client:
        with pytest.raises(httpx.RemoteProtocolError):
            client.post("/external-task/t-1/complete", json={"workerId": "w"})
        assert client.post("/external-task/fetchAndLock", json={}).status_code == 200
    assert _Upstream.hits[0] == "POST /engine-rest/external-task/t-1/complete"
    # The proxy writes an operation once its exchange has ended, just after the client's.
    deadline = time.monotonic() + 10
    while len(list(history.read(tmp_path / "history.jsonl"))) < 2:
        assert time.monotonic() < deadline, "the history never got both operations"
        time.sleep(0.01)
    (dropped, fetched) = list(history.read(tmp_path / "history.jsonl"))
    assert dropped["op"] == "POST /external-task/{id}/complete"
    assert (dropped["key"], dropped["worker"], dropped["result"]) == ("t-1", "w", "info")
    assert dropped["http_status"] == 200
    assert fetched["result"] == "ok"


def test_reset_truncate_and_blackhole_end_in_transport_errors(proxy: ProxyThread) -> None:
    with _client(proxy, timeout=1.0) as client:
        proxy.set_rules(Rule("reset"))
        with pytest.raises(httpx.TransportError):
            client.get("/engine")
        proxy.set_rules(Rule("truncate_response", bytes=20))
        with pytest.raises(httpx.TransportError):
            client.get("/engine")
        proxy.set_rules(Rule("blackhole"))
        with pytest.raises(httpx.ReadTimeout):
            client.get("/engine")


def test_count_and_seeded_probability(proxy: ProxyThread) -> None:
    proxy.set_rules(Rule("http_status", status=500, count=2))
    with _client(proxy) as client:
        assert [client.get("/engine").status_code for _ in range(3)] == [500, 500, 200]
        proxy.set_rules(Rule("http_status", status=502, probability=0.5))
        first = [client.get("/engine").status_code for _ in range(20)]
    assert set(first) == {200, 502}


def test_control_port(proxy: ProxyThread) -> None:
    control = httpx.Client(base_url=f"http://127.0.0.1:{proxy.proxy.control_port}", timeout=5)
    with control, _client(proxy) as client:
        rules = [{"fault": "http_status", "status": 502, "match": "GET /engine"}]
        assert control.put("/rules", json=rules).status_code == 200
        assert client.get("/engine").status_code == 502
        assert control.delete("/rules").json()["rules"] == []
        assert client.get("/engine").status_code == 200
        assert control.put("/rules", json=[{"fault": "nonsense"}]).status_code == 400
