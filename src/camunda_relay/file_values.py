"""Camunda's ``File`` variables: a file name, a MIME type, an encoding and the bytes.

Sent (in a completion, a reply, a deferred answer) a :class:`File` is its bytes in base64
with its ``valueInfo``. Fetched, a File variable carries no bytes (fetchAndLock never sends
them): the task holds a File whose bytes are loaded on first :meth:`File.read` (or
:meth:`File.read_sync` from a plain handler on the worker's thread pool) from the engine's
variable-data endpoints: the task's own scope first (local variables, an input mapping),
then the process instance's. Reading again answers from memory.

A File over :data:`MAX_SENT_FILE_BYTES` is refused before it is sent, and one over
:data:`MAX_FILE_BYTES` when it is loaded, with one :class:`~camunda_relay.errors.VariableError`
naming the variable and the sizes.
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field

from camunda_relay.errors import VariableError

__all__ = ["MAX_FILE_BYTES", "MAX_SENT_FILE_BYTES", "File", "FileLoader", "file_value", "too_large"]

MAX_FILE_BYTES = 64 * 1024 * 1024
"""The largest File loaded (64 MiB): its bytes are held in memory."""
MAX_SENT_FILE_BYTES = 15_000_000
"""The largest File sent: the engine's REST API takes a File as base64 text in JSON, and its
JSON parser (Jackson's default limit) refuses a text over 20,000,000 characters, which is
15,000,000 bytes in base64 (measured: 14 MiB through, 16 MiB refused)."""

FileLoader = Callable[[], Awaitable[bytes]]
"""Loads a fetched File's bytes (bound by the engine client to the task and the name)."""

_LOAD_TIMEOUT = 600.0  # seconds a plain handler waits for read_sync()


def too_large(name: str, size: int, limit: int = MAX_FILE_BYTES) -> VariableError:
    return VariableError(name, f"a File of {size:,} bytes is over the limit of {limit:,} bytes")


@dataclass(frozen=True, eq=False)
class File:
    """A File variable. Give ``data`` to send one; a fetched one loads it on first read."""

    name: str
    data: bytes | None = field(default=None, repr=False)
    mime_type: str | None = None
    encoding: str | None = None
    _loader: FileLoader | None = field(default=None, repr=False, compare=False)
    _loop: asyncio.AbstractEventLoop | None = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise VariableError(str(self.name), "a File needs a file name")
        if self.data is not None and not isinstance(self.data, bytes | bytearray):
            raise VariableError(self.name, "a File's data must be bytes")
        if isinstance(self.data, bytearray):
            object.__setattr__(self, "data", bytes(self.data))

    @property
    def loaded(self) -> bool:
        """Whether the bytes are here (given, or read once)."""
        return self.data is not None

    async def read(self) -> bytes:
        """The file's bytes, loaded from the engine on the first call."""
        if self.data is not None:
            return self.data
        if self._loader is None:
            raise VariableError(self.name, "this File has no data and nowhere to load it from")
        data = await self._loader()
        object.__setattr__(self, "data", data)
        return data

    def read_sync(self) -> bytes:
        """:meth:`read` for a plain (sync) handler, which runs on the worker's thread pool;
        an ``async def`` handler awaits :meth:`read` instead."""
        if self.data is not None:
            return self.data
        loop = self._loop
        if loop is None or self._loader is None:
            raise VariableError(self.name, "this File has no data and nowhere to load it from")
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            raise VariableError(self.name, "read_sync() on the event loop: await read()")
        return asyncio.run_coroutine_threadsafe(self.read(), loop).result(_LOAD_TIMEOUT)

    def bound(self, loader: FileLoader, loop: asyncio.AbstractEventLoop) -> File:
        """This File's description, its bytes to be loaded by ``loader`` on ``loop``."""
        return File(self.name, None, self.mime_type, self.encoding, loader, loop)

    def typed(self, variable: str) -> dict[str, object]:
        """The REST API's typed value; the bytes must be here and within the limit."""
        if self.data is None:
            raise VariableError(variable, "a File is sent with its data: read() it first")
        if len(self.data) > MAX_SENT_FILE_BYTES:
            raise too_large(variable, len(self.data), MAX_SENT_FILE_BYTES)
        info: dict[str, object] = {"filename": self.name}
        if self.mime_type is not None:
            info["mimeType"] = self.mime_type
        if self.encoding is not None:
            info["encoding"] = self.encoding
        value = base64.b64encode(self.data).decode("ascii")
        return {"value": value, "type": "File", "valueInfo": info}


def file_value(name: str, value: object, info: Mapping[str, object]) -> File:
    """A fetched File variable (its ``valueInfo``; its bytes, when sent, in base64)."""
    filename = info.get("filename")
    mime_type, encoding = info.get("mimeType"), info.get("encoding")
    data = base64.b64decode(value, validate=True) if isinstance(value, str) else None
    return File(
        filename if isinstance(filename, str) and filename else name,
        data,
        mime_type if isinstance(mime_type, str) else None,
        encoding if isinstance(encoding, str) else None,
    )
