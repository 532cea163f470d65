"""File variables without an engine: how one is sent and read, loaded once and lazily, kept
in the journal (a fetched one as its description, a sent one with its bytes), refused over
the size limit with one line."""

from __future__ import annotations

import asyncio
import base64

import httpx
import pytest

from camunda_relay import EngineClient, NotFound, Settings, VariableError
from camunda_relay.file_values import MAX_FILE_BYTES, MAX_SENT_FILE_BYTES
from camunda_relay.journal import codec
from camunda_relay.replies.job import Answer, Job
from camunda_relay.task import Task
from camunda_relay.variables import File, decode, encode


def test_a_file_is_sent_as_base64_with_its_name_type_and_encoding() -> None:
    typed = encode("doc", File("a.txt", b"hello", "text/plain", "UTF-8"))
    assert typed == {
        "value": base64.b64encode(b"hello").decode(),
        "type": "File",
        "valueInfo": {"filename": "a.txt", "mimeType": "text/plain", "encoding": "UTF-8"},
    }
    assert encode("doc", File("a.bin", bytearray(b"x")))["valueInfo"] == {"filename": "a.bin"}


def test_a_fetched_file_is_its_description_without_bytes() -> None:
    info = {"filename": "a.txt", "mimeType": "text/plain", "encoding": "UTF-8"}
    value = decode("doc", {"type": "File", "value": None, "valueInfo": info})
    assert isinstance(value, File)
    assert (value.name, value.mime_type, value.encoding, value.loaded) == (
        "a.txt",
        "text/plain",
        "UTF-8",
        False,
    )
    with pytest.raises(VariableError, match=r"'a\.txt'.*nowhere to load it from"):
        asyncio.run(value.read())


def test_a_file_with_its_bytes_inline_is_read_at_once() -> None:
    typed = {"type": "File", "value": base64.b64encode(b"abc").decode(), "valueInfo": {}}
    value = decode("doc", typed)
    assert isinstance(value, File)
    assert value.name == "doc"  # no file name given: the variable's
    assert asyncio.run(value.read()) == b"abc"


def test_the_bytes_are_loaded_on_first_read_only() -> None:
    calls: list[int] = []

    async def loader() -> bytes:
        calls.append(1)
        return b"data"

    async def scenario() -> tuple[bytes, bytes]:
        file = File("a.bin").bound(loader, asyncio.get_running_loop())
        assert calls == []
        first = await file.read()
        return first, await file.read()

    assert asyncio.run(scenario()) == (b"data", b"data")
    assert calls == [1]


def test_read_sync_loads_on_the_loop_from_a_thread_and_refuses_on_the_loop() -> None:
    async def loader() -> bytes:
        return b"sync"

    async def scenario() -> bytes:
        loop = asyncio.get_running_loop()
        file = File("a.bin").bound(loader, loop)
        with pytest.raises(VariableError, match="await read"):
            file.read_sync()
        return await loop.run_in_executor(None, file.read_sync)

    assert asyncio.run(scenario()) == b"sync"


def test_a_file_over_the_limit_is_one_line_naming_it_and_the_sizes() -> None:
    assert encode("upload", File("ok.bin", bytes(MAX_SENT_FILE_BYTES)))["type"] == "File"
    big = File("big.bin", bytes(MAX_SENT_FILE_BYTES + 1))
    with pytest.raises(VariableError) as raised:
        encode("upload", big)
    assert str(raised.value) == (
        "variable 'upload': a File of 15,000,001 bytes is over the limit of 15,000,000 bytes"
    )


def test_a_loaded_file_over_the_limit_is_refused_naming_it() -> None:
    seen: list[str] = []
    big = httpx.Response(200, content=bytes(MAX_FILE_BYTES + 1))

    async def scenario() -> None:
        async with engine_with({"/execution/ex/localVariables/doc/data": big}, seen) as client:
            doc = client.bind_files(fetched_task()).variables["doc"]
            assert isinstance(doc, File)
            await doc.read()

    with pytest.raises(VariableError, match=r"'doc': a File of 67,108,865 bytes is over"):
        asyncio.run(scenario())


def test_a_fetched_file_without_bytes_is_not_sent_back_unread() -> None:
    with pytest.raises(VariableError, match="read\\(\\) it first"):
        encode("doc", File("a.txt"))


def test_the_journal_keeps_a_fetched_files_description_and_a_sent_files_bytes() -> None:
    fetched = File("in.pdf", None, "application/pdf")
    task = Task(id="t", topic="x", worker_id="w", process_instance_id="p", variables={"d": fetched})
    kept = codec.from_payload(codec.to_payload(Job(task=task, message="m"))).task.variables["d"]
    assert isinstance(kept, File)
    assert (kept.name, kept.mime_type, kept.loaded) == ("in.pdf", "application/pdf", False)
    answer = Answer(variables={"out": File("out.bin", b"\x00\x01binary", "application/x")})
    stored = codec.loads_answer(codec.dumps_answer(answer))
    assert stored is not None
    out = stored.variables["out"]
    assert isinstance(out, File)
    assert (out.name, out.data, out.mime_type) == ("out.bin", b"\x00\x01binary", "application/x")


def engine_with(answers: dict[str, httpx.Response], seen: list[str]) -> EngineClient:
    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request.url.path.removeprefix("/engine-rest"))
        return answers.get(seen[-1], httpx.Response(404, json={"message": "not found"}))

    settings = Settings(url="http://engine/engine-rest")
    return EngineClient(settings, transport=httpx.MockTransport(answer))


def fetched_task() -> Task:
    doc = File("in.bin", None, "application/pdf")
    return Task(
        id="t",
        topic="x",
        worker_id="w",
        process_instance_id="pi",
        execution_id="ex",
        activity_instance_id="work:1",
        variables={"doc": doc, "n": 1},
    )


def test_a_file_is_loaded_from_the_tasks_scope_first() -> None:
    seen: list[str] = []
    answers = {"/execution/ex/localVariables/doc/data": httpx.Response(200, content=b"local")}

    async def scenario() -> bytes:
        async with engine_with(answers, seen) as client:
            doc = client.bind_files(fetched_task()).variables["doc"]
            assert isinstance(doc, File)
            return await doc.read()

    assert asyncio.run(scenario()) == b"local"
    assert seen == ["/execution/ex/localVariables/doc/data"]


def test_an_ended_scopes_file_is_loaded_from_the_history() -> None:
    """A reply topic's task is completed before its handler runs (or a job is read back from
    the journal after a restart): the runtime scopes are gone, the history has the bytes."""
    seen: list[str] = []
    history = [
        {"id": "other", "activityInstanceId": "elsewhere:1"},
        {"id": "v1", "activityInstanceId": "work:1"},
    ]
    answers = {
        "/process-instance/pi/variables/doc/data": httpx.Response(500, json={"message": "x"}),
        "/history/variable-instance": httpx.Response(200, json=history),
        "/history/variable-instance/v1/data": httpx.Response(200, content=b"kept"),
    }
    job = Job(task=fetched_task(), message="m")
    task = codec.from_payload(codec.to_payload(job)).task

    async def scenario() -> bytes:
        async with engine_with(answers, seen) as client:
            doc = client.bind_files(task).variables["doc"]
            assert isinstance(doc, File)
            return await doc.read()

    assert asyncio.run(scenario()) == b"kept"
    assert seen == [
        "/execution/ex/localVariables/doc/data",
        "/process-instance/pi/variables/doc/data",
        "/history/variable-instance",
        "/history/variable-instance/v1/data",
    ]


def test_a_file_nowhere_to_be_found_is_one_error_naming_it() -> None:
    seen: list[str] = []
    answers = {"/history/variable-instance": httpx.Response(200, json=[])}

    async def scenario() -> None:
        async with engine_with(answers, seen) as client:
            doc = client.bind_files(fetched_task()).variables["doc"]
            assert isinstance(doc, File)
            await doc.read()

    with pytest.raises(NotFound, match="File variable 'doc' is in neither"):
        asyncio.run(scenario())
