"""An HTTP fault proxy between the worker and the engine (``worker → proxy → engine``).

What toxiproxy does at the TCP level, plus what it cannot: faults per HTTP route, and
``drop_response``, the "the engine committed but the answer was lost" case. Faults:

- ``latency`` (``ms``, ``jitter``): wait before forwarding (adds to the other faults);
- ``blackhole``: accept the request, never answer (until the client gives up);
- ``reset``: close with ``SO_LINGER 0`` (the client sees a connection reset);
- ``drop_response``: forward, let the engine commit, then close the client's socket without
  relaying the answer;
- ``truncate_response`` (``bytes``): relay the first bytes of the answer, then close;
- ``http_status`` (``status``): answer 500/502/503 at once, forwarding nothing;
- ``slow_body`` (``bytes``, ``ms``): relay the answer in small pieces with pauses.

Each :class:`Rule` may be limited to a request-line pattern (``"POST /engine-rest/message"``,
``"/external-task/*/complete"``; ``*`` is a wildcard, a pattern without a method matches any
method, and the ``/engine-rest`` prefix may be left out), fire with a probability drawn from
a seeded random generator, and at most ``count`` times. :meth:`FaultProxy.freeze` also stalls
the exchanges already in flight (a half-open connection as the client sees it).

Control it in-process (:class:`ProxyThread`, from synchronous scenario code) or over HTTP on
``control_port``: ``PUT /rules`` (a JSON list of rules), ``POST /rules`` (add one),
``DELETE /rules``, ``POST /freeze``, ``POST /thaw``, ``GET /stats``.

One request per client connection: the proxy forwards with ``Connection: close`` and relays
the engine's answer (which then says ``Connection: close``), so framing needs no parsing.
"""

from __future__ import annotations

import asyncio
import contextlib
import fnmatch
import json
import random
import re
import socket
import struct
import threading
import time
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from harness.history import Operation, OperationLog, template

__all__ = ["FAULTS", "FaultProxy", "ProxyThread", "Rule"]

FAULTS = frozenset(
    {
        "latency",
        "blackhole",
        "reset",
        "drop_response",
        "truncate_response",
        "http_status",
        "slow_body",
    }
)
_REASONS = {500: "Internal Server Error", 502: "Bad Gateway", 503: "Service Unavailable"}
_MAX_HEAD = 64 * 1024


@dataclass
class Rule:
    """One fault, where it applies and how often."""

    fault: str
    match: str = "*"
    probability: float = 1.0
    ms: float = 0.0
    jitter: float = 0.0
    bytes: int = 0
    status: int = 503
    count: int | None = None  # fire at most this many times (None: no limit)
    fired: int = 0

    def __post_init__(self) -> None:
        if self.fault not in FAULTS:
            raise ValueError(f"unknown fault {self.fault!r} (known: {sorted(FAULTS)})")
        if not 0.0 <= self.probability <= 1.0:
            raise ValueError("probability must be within 0..1")

    def matches(self, method: str, path: str) -> bool:
        pattern = self.match.strip()
        if pattern in ("", "*"):
            return True
        want_method, _, want_path = pattern.rpartition(" ")
        if want_method and want_method.upper() != method.upper():
            return False
        path = path.split("?", 1)[0]
        bare = path.removeprefix("/engine-rest")
        return any(fnmatch.fnmatchcase(candidate, want_path) for candidate in (path, bare))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Rule:
        known = {name for name in cls.__dataclass_fields__ if name != "fired"}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown rule fields {sorted(unknown)}")
        return cls(**data)


@dataclass
class _Request:
    method: str
    path: str
    head: bytes
    body: bytes
    worker: str | None = None
    key: str | None = None
    op: str = ""


@dataclass
class _State:
    rules: list[Rule] = field(default_factory=list)
    frozen: bool = False
    counts: Counter[str] = field(default_factory=Counter)


class FaultProxy:
    """The proxy itself; runs on an asyncio loop (see :class:`ProxyThread` for a thread)."""

    def __init__(
        self,
        upstream_port: int,
        *,
        upstream_host: str = "127.0.0.1",
        seed: int = 0,
        history: OperationLog | None = None,
        listen_port: int = 0,
        listen_host: str = "127.0.0.1",
        control_port: int | None = None,
    ) -> None:
        self.upstream = (upstream_host, upstream_port)
        self.listen_host = listen_host  # another loopback address: one engine node of several
        self._random = random.Random(seed)
        self._history = history
        self._listen_port = listen_port
        self._control_port = control_port
        self._state = _State()
        self._servers: list[asyncio.Server] = []
        self._open: set[asyncio.Task[None]] = set()
        self.port = 0

    # -- control ------------------------------------------------------------------------

    def set_rules(self, rules: Iterable[Rule]) -> None:
        self._state.rules = list(rules)

    def add_rule(self, rule: Rule) -> None:
        self._state.rules = [*self._state.rules, rule]

    def clear(self) -> None:
        self._state.rules = []

    def freeze(self) -> None:
        """Stall every exchange, new and in flight: nothing more reaches the client."""
        self._state.frozen = True

    def thaw(self) -> None:
        """New exchanges flow again; the ones stalled by :meth:`freeze` stay dead."""
        self._state.frozen = False

    def stats(self) -> dict[str, Any]:
        return {
            "counts": dict(self._state.counts),
            "rules": [asdict(rule) for rule in self._state.rules],
            "frozen": self._state.frozen,
        }

    # -- lifecycle ----------------------------------------------------------------------

    async def start(self) -> None:
        server = await asyncio.start_server(self._serve, self.listen_host, self._listen_port)
        self.port = server.sockets[0].getsockname()[1]
        self._servers.append(server)
        if self._control_port is not None:
            control = await asyncio.start_server(self._control, "127.0.0.1", self._control_port)
            self._control_port = control.sockets[0].getsockname()[1]
            self._servers.append(control)

    @property
    def control_port(self) -> int | None:
        return self._control_port

    async def stop(self) -> None:
        for server in self._servers:
            server.close()
        for task in list(self._open):
            task.cancel()
        if self._open:
            await asyncio.wait(set(self._open), timeout=5)
        for server in self._servers:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(server.wait_closed(), 5)

    # -- one client connection ------------------------------------------------------------

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._open.add(task)
        try:
            request = await _read_request(reader)
            if request is not None:
                await self._exchange(request, reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass
        except asyncio.CancelledError:
            _abort(writer)
            raise
        finally:
            self._open.discard(task)
            with contextlib.suppress(Exception):
                writer.close()

    def _pick(self, request: _Request) -> tuple[list[Rule], Rule | None]:
        """The latency rules that apply, and the one terminal fault (if any)."""
        delays: list[Rule] = []
        for rule in self._state.rules:
            if rule.count is not None and rule.fired >= rule.count:
                continue
            if not rule.matches(request.method, request.path):
                continue
            if self._random.random() >= rule.probability:
                continue
            rule.fired += 1
            if rule.fault == "latency":
                delays.append(rule)
                continue
            return delays, rule
        return delays, None

    async def _exchange(
        self, request: _Request, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        op = Operation(op=request.op, key=request.key, worker=request.worker, invoke_t=time.time())
        delays, rule = self._pick(request)
        fault = rule.fault if rule else None
        op.fault = "+".join([*(["latency"] if delays else []), *([fault] if fault else [])]) or None
        if fault:
            self._state.counts[fault] += 1
        try:
            for delay in delays:
                wait = delay.ms + self._random.uniform(-delay.jitter, delay.jitter)
                await asyncio.sleep(max(wait, 0.0) / 1000)
            if self._state.frozen or fault == "blackhole":
                op.fault = op.fault or "frozen"
                await _hold(reader)
                return
            if fault == "reset":
                _abort(writer)
                return
            if fault == "http_status" and rule is not None:
                answer = _status_answer(rule.status)
                writer.write(answer)
                await writer.drain()
                op.result, op.http_status, op.err_type = "fail", rule.status, "ProxyInjected"
                return
            try:
                response = await self._forward(request, reader)
            except OSError:  # the engine is down: the worker sees its connection reset
                op.result, op.err_type = "fail", "ConnectionRefused"
                _abort(writer)
                return
            if response is None:  # the client went away while the engine worked
                return
            status, err_type = _status_of(response)
            op.http_status, op.err_type = status, err_type
            if status == 200 and request.op.endswith(" /external-task/fetchAndLock"):
                op.tasks = _count_tasks(response)
            if self._state.frozen:
                op.fault = (op.fault + "+" if op.fault else "") + "frozen"
                await _hold(reader)
                return
            if fault == "drop_response":
                writer.close()
                return
            if fault == "truncate_response" and rule is not None:
                writer.write(response[: rule.bytes])
                await writer.drain()
                writer.close()
                return
            if fault == "slow_body" and rule is not None:
                step = max(rule.bytes, 1)
                for offset in range(0, len(response), step):
                    writer.write(response[offset : offset + step])
                    await writer.drain()
                    await asyncio.sleep(rule.ms / 1000)
            else:
                writer.write(response)
                await writer.drain()
            op.result = "ok" if status is not None and 200 <= status < 300 else "fail"
        finally:
            op.end_t = time.time()
            if self._history is not None:
                self._history.write(op)

    async def _forward(self, request: _Request, client: asyncio.StreamReader) -> bytes | None:
        """Send the request to the engine and read its whole answer; None when the client
        closed its side first (the engine's connection is closed too, as a dead worker's)."""
        up_reader, up_writer = await asyncio.open_connection(*self.upstream)
        try:
            up_writer.write(request.head + request.body)
            await up_writer.drain()
            answer = asyncio.ensure_future(up_reader.read())
            gone = asyncio.ensure_future(client.read(1))
            done, _ = await asyncio.wait({answer, gone}, return_when=asyncio.FIRST_COMPLETED)
            if answer in done:
                gone.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await gone  # the client's reader is free again (for _hold)
                return answer.result()
            answer.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await answer
            return None
        finally:
            _abort(up_writer)

    # -- the control port -----------------------------------------------------------------

    async def _control(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request = await _read_request(reader, rewrite=False)
            if request is None:
                return
            status, body = self._command(request.method, request.path, request.body)
            payload = json.dumps(body).encode()
            writer.write(
                f"HTTP/1.1 {status} X\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(payload)}\r\nConnection: close\r\n\r\n".encode()
                + payload
            )
            await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    def _command(self, method: str, path: str, body: bytes) -> tuple[int, Any]:
        try:
            data = json.loads(body) if body.strip() else None
            if (method, path) == ("GET", "/stats"):
                return 200, self.stats()
            if (method, path) == ("PUT", "/rules"):
                self.set_rules(Rule.from_dict(item) for item in data or [])
            elif (method, path) == ("POST", "/rules"):
                self.add_rule(Rule.from_dict(data or {}))
            elif (method, path) == ("DELETE", "/rules"):
                self.clear()
            elif (method, path) == ("POST", "/freeze"):
                self.freeze()
            elif (method, path) == ("POST", "/thaw"):
                self.thaw()
            else:
                return 404, {"error": f"no command {method} {path}"}
        except (ValueError, TypeError) as error:
            return 400, {"error": str(error)}
        return 200, self.stats()


async def _read_request(reader: asyncio.StreamReader, *, rewrite: bool = True) -> _Request | None:
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError:
        return None
    if len(head) > _MAX_HEAD:
        raise ConnectionError("request head too large")
    lines = head.decode("latin-1").split("\r\n")
    method, path, version = [*lines[0].split(" ", 2), "", ""][:3]
    headers: list[tuple[str, str]] = []
    length = 0
    for line in lines[1:]:
        if not line:
            continue
        name, _, value = line.partition(":")
        if name.strip().lower() == "content-length":
            length = int(value.strip())
        if rewrite and name.strip().lower() in ("connection", "keep-alive"):
            continue
        headers.append((name, value))
    body = await reader.readexactly(length) if length else b""
    if rewrite:
        head = (
            f"{method} {path} {version}\r\n".encode("latin-1")
            + b"".join(f"{n}:{v}\r\n".encode("latin-1") for n, v in headers)
            + b"Connection: close\r\n\r\n"
        )
    op, key = template(method, path)
    request = _Request(method=method, path=path, head=head, body=body, op=op, key=key)
    _describe_body(request)
    return request


def _describe_body(request: _Request) -> None:
    """Take the worker id and the instance id of a message from the body (no values)."""
    if not request.body or not request.body.lstrip().startswith(b"{"):
        return
    try:
        data = json.loads(request.body)
    except ValueError:
        return
    if not isinstance(data, dict):
        return
    worker = data.get("workerId")
    request.worker = worker if isinstance(worker, str) else None
    if request.op.endswith(" /message"):
        instance = data.get("processInstanceId")
        request.key = instance if isinstance(instance, str) else None


def _status_of(response: bytes) -> tuple[int | None, str | None]:
    match = re.match(rb"HTTP/1\.[01] (\d{3})", response)
    if match is None:
        return None, None
    status = int(match.group(1))
    err_type = None
    if status >= 400:
        found = re.search(rb'"type"\s*:\s*"([A-Za-z0-9_.]+)"', response)
        err_type = found.group(1).decode() if found else None
    return status, err_type


def _count_tasks(response: bytes) -> int | None:
    """How many tasks a fetchAndLock answer carries (its body is a JSON list)."""
    head, _, body = response.partition(b"\r\n\r\n")
    if b"transfer-encoding: chunked" in head.lower():
        chunks, rest = [], body
        while rest:
            size_line, _, rest = rest.partition(b"\r\n")
            size = int(size_line.split(b";")[0] or b"0", 16)
            if size == 0:
                break
            chunks.append(rest[:size])
            rest = rest[size + 2 :]
        body = b"".join(chunks)
    try:
        tasks = json.loads(body)
    except ValueError:
        return None
    return len(tasks) if isinstance(tasks, list) else None


def _status_answer(status: int) -> bytes:
    body = json.dumps(
        {"type": "ProxyInjected", "message": f"injected by the fault proxy ({status})"}
    ).encode()
    reason = _REASONS.get(status, "Error")
    return (
        f"HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
        + body
    )


async def _hold(reader: asyncio.StreamReader) -> None:
    """Keep the connection open and silent until the client closes it."""
    with contextlib.suppress(ConnectionError):
        while await reader.read(4096):
            pass


def _abort(writer: asyncio.StreamWriter) -> None:
    """Close with SO_LINGER 0: the peer sees a reset, not an orderly close."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


class ProxyThread:
    """A :class:`FaultProxy` on a private event loop thread, driven from synchronous code."""

    def __init__(self, upstream_port: int, **kwargs: Any) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True, name="proxy")
        self._thread.start()
        self.proxy = self._call(self._make(upstream_port, kwargs))
        self._call(self.proxy.start())

    async def _make(self, upstream_port: int, kwargs: dict[str, Any]) -> FaultProxy:
        return FaultProxy(upstream_port, **kwargs)

    def _call(self, coroutine: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(timeout=30)

    def _do(self, function: Any, *args: Any) -> Any:
        async def call() -> Any:
            return function(*args)

        return self._call(call())

    @property
    def port(self) -> int:
        return int(self.proxy.port)

    @property
    def url(self) -> str:
        return f"http://{self.proxy.listen_host}:{self.port}/engine-rest"

    def set_rules(self, *rules: Rule) -> None:
        self._do(self.proxy.set_rules, list(rules))

    def add_rule(self, rule: Rule) -> None:
        self._do(self.proxy.add_rule, rule)

    def clear(self) -> None:
        self._do(self.proxy.clear)

    def freeze(self) -> None:
        self._do(self.proxy.freeze)

    def thaw(self) -> None:
        self._do(self.proxy.thaw)

    def stats(self) -> dict[str, Any]:
        result: dict[str, Any] = self._do(self.proxy.stats)
        return result

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._call(self.proxy.stop())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()
