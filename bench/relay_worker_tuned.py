"""The bench workers with candidate performance fixes applied from outside (experiments).

camunda-relay's code is not changed by the benchmark; this module patches the installed one
at import time, as chosen by ``BENCH_PATCHES`` (comma-separated), so that a fix's effect can
be measured before it is made for real:

- ``limit:N``: at most N engine requests in flight per worker (an asyncio.Semaphore around
  ``EngineClient._send``), so that httpcore's connection pool never holds a long queue of
  waiting requests (its request assignment scans the whole queue for every request);
- ``sync:MODE``: the SQLite journal's ``PRAGMA synchronous`` (``NORMAL`` instead of ``FULL``:
  no fsync per commit; an upper bound for what group commit would give);
- ``sniffio`` is not a patch here: the runner puts the real ``sniffio`` package on
  ``PYTHONPATH`` (httpcore imports it on every request and, when it is missing, pays for a
  failed import each time).

``BENCH_ROUTER`` picks the router: ``relay`` (no work, the default) or ``scale``.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

from camunda_relay import client as _client
from camunda_relay.journal import sqlite as _journal_sqlite

_patches = [p.strip() for p in os.environ.get("BENCH_PATCHES", "").split(",") if p.strip()]

for _patch in _patches:
    _name, _, _value = _patch.partition(":")
    if _name == "limit":
        _limit = int(_value)
        _gates: dict[int, asyncio.Semaphore] = {}
        _original_send = _client.EngineClient._send

        async def _limited_send(
            self: Any,
            *args: Any,
            _gates: dict[int, asyncio.Semaphore] = _gates,
            _limit: int = _limit,
            _original_send: Any = _original_send,
            **kwargs: Any,
        ) -> Any:
            gate = _gates.get(id(self))
            if gate is None:
                gate = _gates[id(self)] = asyncio.Semaphore(_limit)
            async with gate:
                return await _original_send(self, *args, **kwargs)

        _client.EngineClient._send = _limited_send  # type: ignore[method-assign]
    elif _name == "sync":
        _mode = _value.upper()
        _original_connect = _journal_sqlite._connect

        def _connect(
            path: Any, _mode: str = _mode, _original_connect: Any = _original_connect
        ) -> Any:
            conn = _original_connect(path)
            conn.execute(f"PRAGMA synchronous = {_mode}")
            return conn

        _journal_sqlite._connect = _connect
    elif _name == "sniffio":
        import sniffio  # noqa: F401 - fails loudly when the runner did not provide it
    else:
        raise SystemExit(f"unknown BENCH_PATCHES entry {_patch!r}")

if os.environ.get("BENCH_ROUTER", "relay") == "scale":
    from bench.scale_worker import router
else:
    from bench.relay_worker import router

__all__ = ["router"]
