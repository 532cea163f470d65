"""Identity providers for the engine's bearer-token tests, in process: one that publishes an
OpenID configuration and a JWK set of our keys (and counts what it is asked), and one that
accepts connections, reads what comes and never answers (a hung identity provider)."""

from __future__ import annotations

import contextlib
import json
import selectors
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from tests.support.jwt import SigningKey


@dataclass
class StaticIssuer:
    """Serves ``/.well-known/openid-configuration`` and ``/jwks`` under :attr:`issuer`."""

    port: int
    keys: list[SigningKey] = field(default_factory=list)
    jwks_requests: int = 0
    discovery_requests: int = 0
    last_jwks_request: float = 0.0  # time.monotonic()
    hang_jwks: bool = False  # JWK set requests read, never answered (until the end)
    released: threading.Event = field(default_factory=threading.Event)

    @property
    def issuer(self) -> str:
        return f"http://127.0.0.1:{self.port}/realms/relay"

    def document(self, path: str) -> dict[str, object] | None:
        if path == "/realms/relay/.well-known/openid-configuration":
            self.discovery_requests += 1
            return {"issuer": self.issuer, "jwks_uri": f"{self.issuer}/jwks"}
        if path == "/realms/relay/jwks":
            self.jwks_requests += 1
            self.last_jwks_request = time.monotonic()
            if self.hang_jwks:
                self.released.wait()
            return {"keys": [key.jwk() for key in list(self.keys)]}
        return None


@contextmanager
def static_issuer(*keys: SigningKey) -> Iterator[StaticIssuer]:
    served = StaticIssuer(0, list(keys))

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            document = served.document(self.path)
            body = json.dumps(document).encode()
            with contextlib.suppress(OSError):  # the engine gave up waiting
                self.send_response(404 if document is None else 200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    served.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield served
    finally:
        served.released.set()
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


@dataclass
class HungIssuer:
    """Accepts every connection and reads what it is sent; answers nothing, closes nothing."""

    port: int
    connections: int = 0

    @property
    def issuer(self) -> str:
        return f"http://127.0.0.1:{self.port}/realms/relay"


def _read(sock: socket.socket) -> bool:
    try:
        return bool(sock.recv(65536))
    except OSError:
        return False


@contextmanager
def hung_issuer() -> Iterator[HungIssuer]:
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(512)
    listener.setblocking(False)
    hung = HungIssuer(listener.getsockname()[1])
    stop = threading.Event()
    held: list[socket.socket] = []

    def serve() -> None:
        with selectors.DefaultSelector() as selector:
            selector.register(listener, selectors.EVENT_READ)
            while not stop.is_set():
                for ready, _ in selector.select(timeout=0.2):
                    sock = ready.fileobj
                    assert isinstance(sock, socket.socket)
                    if sock is listener:
                        connection, _ = listener.accept()
                        connection.setblocking(False)
                        held.append(connection)
                        hung.connections += 1
                        selector.register(connection, selectors.EVENT_READ)
                    elif not _read(sock):  # the other side closed: stop watching
                        selector.unregister(sock)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield hung
    finally:
        stop.set()
        thread.join(timeout=10)
        for connection in held:
            connection.close()
        listener.close()
