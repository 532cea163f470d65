# ruff: noqa: T201 - a command-line tool that prints
"""A stub of the few REST endpoints a worker calls, answering at once: the engine taken out of
the picture, so that a worker's own CPU per task can be measured without the JVM's noise.

From SIGUSR1 on, it hands out ``--tasks`` tasks of topic ``messageSending`` by
fetch-and-lock (long polling when none are left), answers every complete and message with
204, and prints one JSON line when the last message arrived. Not an engine: nothing is
checked.

    python -m bench.stub_engine --port 8099 --tasks 5000
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import time
import uuid

_OK_204 = b"HTTP/1.1 204 No Content\r\n\r\n"


def _json_response(body: object) -> bytes:
    payload = json.dumps(body).encode()
    return (
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: "
        + str(len(payload)).encode()
        + b"\r\n\r\n"
        + payload
    )


class Stub:
    def __init__(self, tasks: int) -> None:
        self.total = tasks
        self.issued = 0
        self.completed = 0
        self.messages = 0
        self.fetches = 0  # fetch-and-lock calls that handed out at least one task
        self.first_fetch: float | None = None
        self.more = asyncio.Event()
        self.done = asyncio.Event()
        self.prefix = uuid.uuid4().hex[:8]

    def _task(self, number: int) -> dict[str, object]:
        ident = f"{self.prefix}-{number:07d}"
        return {
            "activityId": "send_message",
            "activityInstanceId": f"send_message:{ident}",
            "errorMessage": None,
            "errorDetails": None,
            "executionId": f"exec-{ident}",
            "id": f"task-{ident}",
            "lockExpirationTime": "2099-01-01T00:00:00.000+0000",
            "createTime": "2026-01-01T00:00:00.000+0000",
            "processDefinitionId": "correlation-message:1:def",
            "processDefinitionKey": "correlation-message",
            "processDefinitionVersionTag": None,
            "processInstanceId": f"pi-{ident}",
            "retries": None,
            "suspended": False,
            "workerId": "bench",
            "topicName": "messageSending",
            "tenantId": None,
            "variables": {},
            "priority": 0,
            "businessKey": f"key-{ident}",
            "extensionProperties": {},
        }

    async def fetch(self, body: dict[str, object]) -> bytes:
        if self.first_fetch is None:
            self.first_fetch = time.time()
        wait = float(body.get("asyncResponseTimeout") or 0) / 1000  # type: ignore[arg-type]
        waiter = self.more if not self.more.is_set() else self.done
        if (not self.more.is_set() or self.issued >= self.total) and wait > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(waiter.wait(), timeout=wait)
        if not self.more.is_set():
            return _json_response([])
        count = min(int(body.get("maxTasks") or 1), self.total - self.issued)  # type: ignore[call-overload]
        tasks = [self._task(self.issued + i) for i in range(count)]
        self.issued += count
        self.fetches += 1 if count else 0
        return _json_response(tasks)

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                method, path, _ = lines[0].split(" ", 2)
                length = 0
                for line in lines[1:]:
                    name, _, value = line.partition(":")
                    if name.strip().lower() == "content-length":
                        length = int(value)
                raw = await reader.readexactly(length) if length else b""
                writer.write(await self.route(method, path, raw))
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async def route(self, method: str, path: str, raw: bytes) -> bytes:
        path = path.split("?", 1)[0]
        if path.endswith("/fetchAndLock"):
            return await self.fetch(json.loads(raw or b"{}"))
        if path.endswith("/complete"):
            self.completed += 1
            return _OK_204
        if path.endswith("/message"):
            self.messages += 1
            if self.messages >= self.total and not self.done.is_set():
                self.done.set()
                print(
                    json.dumps(
                        {
                            "tasks": self.total,
                            "first_fetch": self.first_fetch,
                            "last_message": time.time(),
                            "fetches": self.fetches,
                        }
                    ),
                    flush=True,
                )
            return _OK_204
        if path.endswith("/process-definition/count"):
            return _json_response({"count": 1})
        if path.endswith("/engine"):
            return _json_response([{"name": "default"}])
        if path.endswith("/history/external-task-log/count"):
            return _json_response({"count": 1})
        return b"HTTP/1.1 404 Not Found\r\nContent-Length: 2\r\n\r\n{}"


async def main(port: int, tasks: int) -> None:
    stub = Stub(tasks)
    # Tasks are handed out from SIGUSR1 on, so that a worker can start up first.
    asyncio.get_running_loop().add_signal_handler(signal.SIGUSR1, stub.more.set)
    server = await asyncio.start_server(stub.handle, "127.0.0.1", port, backlog=1024)
    print(json.dumps({"listening": port}), flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--tasks", type=int, default=5000)
    args = parser.parse_args()
    asyncio.run(main(args.port, args.tasks))
