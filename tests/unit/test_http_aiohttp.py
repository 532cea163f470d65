"""The aiohttp stack on real loopback sockets: what goes on the wire, and how each failure a
worker meets (a closed port, a reset, a lost answer, a silent server, TLS) becomes the same
error as on httpx. The fault proxy (harness/faultproxy.py) sits between the client and a
small HTTP server."""

from __future__ import annotations

import asyncio
import base64
import json
import ssl
import threading
from collections.abc import Awaitable, Callable, Iterator
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, TypeVar

import pytest
from harness.faultproxy import ProxyThread, Rule

from camunda_relay import EngineClient, errors
from camunda_relay.http import ConnectFailed, TlsFailed
from camunda_relay.http.aiohttp_stack import AiohttpStack
from camunda_relay.nodes import Nodes
from camunda_relay.settings import Settings
from tests.support.tls import Certificates, make_certificates
from tests.support.tools import free_port

T = TypeVar("T")


class _Engine(BaseHTTPRequestHandler):
    """Answers every request with 200 and a small JSON object; records what it was sent."""

    protocol_version = "HTTP/1.1"  # keeps connections alive
    seen: list[dict[str, Any]] = []  # noqa: RUF012 - shared by the handlers of one server

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length)
        self.seen.append(
            {
                "request": f"{self.command} {self.path}",
                "headers": {name.lower(): value for name, value in self.headers.items()},
                "body": body,
                "client_port": self.client_address[1],
            }
        )
        answer = json.dumps({"count": 3}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    do_GET = do_POST = _answer

    def log_message(self, format: str, *args: object) -> None:
        pass


def _serve(tls: ssl.SSLContext | None = None) -> tuple[ThreadingHTTPServer, threading.Thread]:
    _Engine.seen = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Engine)
    if tls is not None:
        server.socket = tls.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    return server, thread


@pytest.fixture
def engine() -> Iterator[int]:
    server, thread = _serve()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


@pytest.fixture
def proxy(engine: int) -> Iterator[ProxyThread]:
    running = ProxyThread(engine, seed=3, control_port=0)
    try:
        yield running
    finally:
        running.close()


def _call(settings: Settings, action: Callable[[EngineClient], Awaitable[T]]) -> T:
    async def go() -> T:
        async with EngineClient(settings) as client:
            assert isinstance(client._http, AiohttpStack)
            return await action(client)

    return asyncio.run(asyncio.wait_for(go(), timeout=60))


def test_requests_carry_the_headers_and_compact_json_and_share_one_connection(
    engine: int,
) -> None:
    settings = Settings(url=f"http://127.0.0.1:{engine}/engine-rest", user="demo", password="pw")

    async def calls(client: EngineClient) -> bool:
        await client.correlate("m", process_instance_id="p/1", variables={"ü": 1})
        await client.complete("t 1", "w")
        return await client.external_task_completed("t", "w")

    assert _call(settings, calls) is True
    correlated, completed, counted = _Engine.seen
    assert correlated["request"] == "POST /engine-rest/message"
    assert json.loads(correlated["body"]) == {
        "messageName": "m",
        "processInstanceId": "p/1",
        "processVariables": {"ü": {"value": 1, "type": "Integer", "valueInfo": {}}},
    }
    assert b": " not in correlated["body"]  # compact, as httpx sent it
    headers = correlated["headers"]
    assert headers["authorization"] == "Basic " + base64.b64encode(b"demo:pw").decode()
    assert headers["content-type"] == "application/json"
    assert headers["accept"] == "application/json"
    assert headers["user-agent"].startswith("camunda-relay/")
    assert "cookie" not in headers
    assert completed["request"] == "POST /engine-rest/external-task/t%201/complete"
    assert counted["request"].startswith("GET /engine-rest/history/external-task-log/count?")
    assert len({seen["client_port"] for seen in _Engine.seen}) == 1, "kept alive"


def test_a_closed_port_is_an_unreachable_engine() -> None:
    settings = Settings(url=f"http://127.0.0.1:{free_port()}/engine-rest")
    with pytest.raises(errors.EngineUnavailable) as caught:
        _call(settings, lambda client: client.complete("t", "w"))
    assert caught.value.retryable
    assert caught.value.message == "engine not reachable (connection failed)"
    assert isinstance(caught.value.__cause__, ConnectFailed)
    assert _call(settings, lambda client: client.ready()) is False


def test_a_node_that_refuses_connections_is_skipped(engine: int) -> None:
    down = f"http://127.0.0.1:{free_port()}/engine-rest"
    settings = Settings(url=f"{down},http://127.0.0.1:{engine}/engine-rest")
    assert _call(settings, lambda client: client.external_task_completed("t", "w")) is True


def test_a_lost_answer_is_retryable_and_the_request_is_not_sent_again(
    proxy: ProxyThread,
) -> None:
    proxy.set_rules(Rule("drop_response", match="/external-task/*/complete"))
    with pytest.raises(errors.EngineUnavailable) as caught:
        _call(Settings(url=proxy.url), lambda client: client.complete("t-1", "w"))
    assert caught.value.retryable
    assert caught.value.message.startswith("connection error (")
    assert [seen["request"] for seen in _Engine.seen] == [
        "POST /engine-rest/external-task/t-1/complete"
    ]


@pytest.mark.parametrize("fault", [Rule("reset"), Rule("truncate_response", bytes=20)])
def test_a_broken_connection_is_retryable(proxy: ProxyThread, fault: Rule) -> None:
    proxy.set_rules(fault)
    with pytest.raises(errors.EngineUnavailable) as caught:
        _call(Settings(url=proxy.url), lambda client: client.correlate("m", business_key="k"))
    assert caught.value.retryable
    assert caught.value.request == "POST /message"


def test_a_silent_engine_times_out(proxy: ProxyThread) -> None:
    proxy.set_rules(Rule("blackhole"))
    settings = Settings(url=proxy.url, request_timeout=timedelta(seconds=1))
    with pytest.raises(errors.EngineUnavailable) as caught:
        _call(settings, lambda client: client.complete("t", "w"))
    assert caught.value.message == "timed out"


@pytest.fixture(scope="module")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    return make_certificates(tmp_path_factory.mktemp("tls"))


_SERVER_NAMES: list[str | None] = []  # the TLS server names the TLS engine was asked for


@pytest.fixture
def tls_engine(certificates: Certificates) -> Iterator[int]:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(certificates.certificate, certificates.key)
    _SERVER_NAMES.clear()
    context.sni_callback = lambda sock, name, ctx: _SERVER_NAMES.append(name)
    server, thread = _serve(context)
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def test_tls_with_the_ca_bundle_and_an_untrusted_certificate(
    tls_engine: int, certificates: Certificates
) -> None:
    url = f"https://127.0.0.1:{tls_engine}/engine-rest"
    trusted = Settings(url=url, ca_bundle=certificates.ca)
    assert _call(trusted, lambda client: client.external_task_completed("t", "w")) is True
    assert _call(Settings(url=url, tls_verify=False), lambda client: client.ready()) is True
    with pytest.raises(errors.TlsError) as caught:
        _call(Settings(url=url, ca_bundle=certificates.self_signed), lambda c: c.complete("t", "w"))
    assert isinstance(caught.value.__cause__, TlsFailed)
    assert not caught.value.retryable
    assert caught.value.message == (
        "the engine's TLS certificate is not trusted (unable to get local issuer certificate): "
        "set CAMUNDA_CA_BUNDLE to the PEM file of the CA that signed it"
    )


def test_a_resolved_node_gets_its_name_as_host_header_and_tls_server_name(
    tls_engine: int, certificates: Certificates
) -> None:
    settings = Settings(
        url=f"https://localhost:{tls_engine}/engine-rest",
        url_resolve="all",
        ca_bundle=certificates.ca,
    )

    async def resolver(host: str, port: int) -> list[str]:
        return ["127.0.0.1"]

    async def go(client: EngineClient) -> bool:
        client.nodes = Nodes(settings.urls, resolve=True, resolver=resolver)
        await client.nodes.refresh()
        assert client.nodes.current[0].url.startswith("https://127.0.0.1:")
        return await client.external_task_completed("t")

    assert _call(settings, go) is True
    (seen,) = _Engine.seen
    assert seen["headers"]["host"] == f"localhost:{tls_engine}"
    assert _SERVER_NAMES == ["localhost"]


def test_https_to_a_plain_port_is_a_tls_error(engine: int, tmp_path: Path) -> None:
    with pytest.raises(errors.TlsError, match=r"\(WRONG_VERSION_NUMBER\).*HTTPS port"):
        _call(
            Settings(url=f"https://127.0.0.1:{engine}/engine-rest"),
            lambda client: client.complete("t", "w"),
        )


def test_a_closed_client_refuses_requests_and_is_not_ready(engine: int) -> None:
    async def go() -> tuple[bool, bool]:
        client = EngineClient(Settings(url=f"http://127.0.0.1:{engine}/engine-rest"))
        before = await client.ready()
        await client.aclose()
        await client.aclose()  # idempotent
        return before, await client.ready()

    assert asyncio.run(go()) == (True, False)


def test_credentials_in_the_url_are_sent_as_basic_auth(engine: int) -> None:
    settings = Settings(url=f"http://relay:p%40ss@127.0.0.1:{engine}/engine-rest")
    assert _call(settings, lambda client: client.external_task_completed("t")) is True
    (seen,) = _Engine.seen
    assert seen["headers"]["authorization"] == "Basic " + base64.b64encode(b"relay:p@ss").decode()


def test_a_proxy_from_the_environment_is_used(engine: int, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("NO_PROXY", "no_proxy", "http_proxy", "HTTPS_PROXY", "https_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{engine}")
    settings = Settings(url="http://engine.invalid/engine-rest")
    assert _call(settings, lambda client: client.external_task_completed("t")) is True
    (seen,) = _Engine.seen
    assert seen["request"].startswith("GET http://engine.invalid/engine-rest/history/")
