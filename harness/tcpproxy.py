"""A TCP proxy that can blackhole: ``client → proxy → server`` for any TCP protocol (S21 puts
it in front of the PostgreSQL journal).

Blackholed, the proxy still accepts connections and reads what clients send, but forwards
nothing, in either direction, and opens no connection upstream: to both sides the network
has gone silent, with no FIN and no RST, as behind a firewall ``drop`` rule. When the
blackhole ends, what was held is forwarded in order, as TCP retransmissions deliver it once
such a rule is removed; a client that gave up meanwhile has closed its socket, and that
close is forwarded too.

A proxy in user space cannot hide TCP acknowledgements: the client's kernel sees its bytes
acknowledged, so kernel timers (TCP keepalive, ``TCP_USER_TIMEOUT``) never fire behind it.
Only the timeouts a client keeps itself (a connect timeout, a deadline on each call) end a
stuck call here, which is what S21 asks of the journal.

:class:`TcpProxyThread` runs it on a thread of its own, for synchronous scenario code.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections import Counter
from typing import Any

__all__ = ["TcpProxy", "TcpProxyThread"]

_CHUNK = 64 * 1024


class TcpProxy:
    """The proxy on an asyncio loop; :meth:`blackhole` switches the silence on and off."""

    def __init__(self, upstream_port: int, *, upstream_host: str = "127.0.0.1") -> None:
        self.upstream = (upstream_host, upstream_port)
        self.port = 0
        self.counts: Counter[str] = Counter()
        self.gave_up: list[float] = []  # when clients closed silent connections (time.time())
        self._flowing = asyncio.Event()
        self._flowing.set()
        self._server: asyncio.Server | None = None
        self._open: set[asyncio.Task[Any]] = set()

    @property
    def blackholed(self) -> bool:
        return not self._flowing.is_set()

    def blackhole(self, on: bool) -> None:
        if on and not self.blackholed:
            self.counts["blackholes"] += 1
            self._flowing.clear()
        elif not on:
            self._flowing.set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = int(self._server.sockets[0].getsockname()[1])

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._open):
            task.cancel()
        if self._open:
            await asyncio.wait(set(self._open), timeout=5)

    # -- one connection ---------------------------------------------------------------------

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._open.add(task)
        self.counts["accepted"] += 1
        if self.blackholed:
            self.counts["accepted_while_blackholed"] += 1
        inbox: asyncio.Queue[bytes] = asyncio.Queue()
        reading = asyncio.ensure_future(self._read_client(reader, inbox))
        try:
            await self._flowing.wait()  # no upstream connection while blackholed
            try:
                up_reader, up_writer = await asyncio.open_connection(*self.upstream)
            except OSError:
                self.counts["upstream_refused"] += 1
                return
            try:
                await asyncio.gather(
                    self._to_upstream(inbox, up_writer), self._to_client(up_reader, writer)
                )
            finally:
                up_writer.close()
        finally:
            reading.cancel()
            writer.close()
            self._open.discard(task)

    async def _read_client(self, reader: asyncio.StreamReader, inbox: asyncio.Queue[bytes]) -> None:
        """Read everything the client sends (held while blackholed); b"" at its end."""
        while True:
            try:
                data = await reader.read(_CHUNK)
            except ConnectionError:
                data = b""
            if self.blackholed:
                self.counts["bytes_held"] += len(data)
                if not data:  # the client gave up on a silent connection
                    self.counts["closed_by_client_while_blackholed"] += 1
                    self.gave_up.append(time.time())
            await inbox.put(data)
            if not data:
                return

    async def _to_upstream(self, inbox: asyncio.Queue[bytes], writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError):
            while data := await inbox.get():
                await self._flowing.wait()
                writer.write(data)
                await writer.drain()
            await self._flowing.wait()
        writer.close()  # the client's close reaches the server (once the silence ends)

    async def _to_client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError):
            while True:
                data = await reader.read(_CHUNK)
                await self._flowing.wait()
                if not data:
                    break
                writer.write(data)
                await writer.drain()
        writer.close()


class TcpProxyThread:
    """A :class:`TcpProxy` on a private event loop thread, driven from synchronous code."""

    def __init__(self, upstream_port: int, **kwargs: Any) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, daemon=True, name="tcp-proxy"
        )
        self._thread.start()
        self.proxy: TcpProxy = self._call(self._make(upstream_port, kwargs))
        self._call(self.proxy.start())

    async def _make(self, upstream_port: int, kwargs: dict[str, Any]) -> TcpProxy:
        return TcpProxy(upstream_port, **kwargs)

    def _call(self, coroutine: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(timeout=30)

    @property
    def port(self) -> int:
        return self.proxy.port

    def blackhole(self, on: bool) -> None:
        async def switch() -> None:
            self.proxy.blackhole(on)

        self._call(switch())

    def counts(self) -> dict[str, int]:
        async def snapshot() -> dict[str, int]:
            return dict(self.proxy.counts)

        result: dict[str, int] = self._call(snapshot())
        return result

    def gave_up(self) -> list[float]:
        """When clients closed connections while blackholed (``time.time()``), in order."""

        async def snapshot() -> list[float]:
            return list(self.proxy.gave_up)

        result: list[float] = self._call(snapshot())
        return result

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._call(self.proxy.stop())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()
