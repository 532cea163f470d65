"""The TCP blackhole proxy on its own (an echo server behind it): what S21 relies on."""

from __future__ import annotations

import socket
import socketserver
import threading
from collections.abc import Iterator

import pytest
from harness.lab import wait_until
from harness.tcpproxy import TcpProxyThread


class _Echo(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        while data := self.request.recv(4096):
            self.request.sendall(data)


@pytest.fixture
def proxy() -> Iterator[TcpProxyThread]:
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), _Echo)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    running = TcpProxyThread(server.server_address[1])
    try:
        yield running
    finally:
        running.close()
        server.shutdown()
        server.server_close()


def _connect(proxy: TcpProxyThread, timeout: float = 5.0) -> socket.socket:
    return socket.create_connection(("127.0.0.1", proxy.port), timeout=timeout)


def test_bytes_flow_both_ways(proxy: TcpProxyThread) -> None:
    with _connect(proxy) as sock:
        sock.sendall(b"hello")
        assert sock.recv(16) == b"hello"


def test_blackholed_connections_go_silent_and_resume_in_order(proxy: TcpProxyThread) -> None:
    with _connect(proxy) as open_before:
        open_before.sendall(b"one")
        assert open_before.recv(16) == b"one"
        proxy.blackhole(True)
        open_before.sendall(b"two")
        with _connect(proxy) as opened_during:  # accepted, but nothing comes back
            opened_during.sendall(b"three")
            for sock in (open_before, opened_during):
                sock.settimeout(0.5)
                with pytest.raises(TimeoutError):
                    sock.recv(16)
            proxy.blackhole(False)
            for sock, expected in ((open_before, b"two"), (opened_during, b"three")):
                sock.settimeout(5)
                assert sock.recv(16) == expected
    assert proxy.counts()["accepted_while_blackholed"] == 1


def test_a_client_giving_up_while_silent_is_counted(proxy: TcpProxyThread) -> None:
    proxy.blackhole(True)
    sock = _connect(proxy)
    sock.sendall(b"query")
    assert wait_until(lambda: proxy.counts().get("bytes_held") == len(b"query"), timeout=5)
    sock.close()
    assert wait_until(
        lambda: proxy.counts().get("closed_by_client_while_blackholed") == 1, timeout=5
    )
    assert len(proxy.gave_up()) == 1
