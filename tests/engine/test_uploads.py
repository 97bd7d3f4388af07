"""``container_upload`` placement and generated files, through the engine with the fake sandbox."""

from __future__ import annotations

import pytest

from execbridge.config import Settings
from execbridge.engine.events import ServerToolResultReady
from execbridge.engine.loop import Engine
from execbridge.engine.uploads import container_filename, unique_name, upload_ids
from execbridge.errors import InvalidRequest
from execbridge.files import FileService
from execbridge.sandbox.base import ExecutionResult
from execbridge.store.memory import MemoryStore
from execbridge.testing import FakeContainerService, ScriptedUpstream, fake_output
from execbridge.types import (
    CommandOutcome,
    ContainerUpload,
    Message,
    OutputFile,
    ServerToolResult,
    Text,
    ToolCall,
    ToolFailure,
    ToolResult,
)

from .test_loop import call, collect, done, request, text, user


@pytest.fixture
def files(tmp_path) -> FileService:
    service = FileService(MemoryStore().files, tmp_path / "files", max_bytes=1 << 20)
    service.prepare()
    return service


def engine(upstream: ScriptedUpstream, sandbox: FakeContainerService, files: FileService | None) -> Engine:
    return Engine(upstream, sandbox, Settings(), files=files)


def with_upload(*file_ids: str, note: str = "look") -> Message:
    return Message("user", (*(ContainerUpload(i) for i in file_ids), Text(note)))


def first_user_text(upstream: ScriptedUpstream) -> str:
    return " ".join(p.text for p in upstream.seen[0].messages[0].parts if isinstance(p, Text))


@pytest.mark.parametrize(
    ("filename", "expected"),
    [
        ("data.csv", "data.csv"),
        ("../../etc/passwd", "passwd"),
        ("C:\\tmp\\x.csv", "x.csv"),
        ("a\nb\x00c.txt", "abc.txt"),
        ("-rf", "_rf"),
        ("..", "upload"),
        ("", "upload"),
        ("  spaced name.txt ", "spaced name.txt"),
        ("é" * 150 + ".csv", "é" * 98 + ".csv"),
    ],
)
def test_container_filename_is_one_safe_component(filename, expected):
    assert container_filename(filename) == expected


def test_unique_name_suffixes_before_the_extension():
    assert unique_name("a.csv", set()) == "a.csv"
    assert unique_name("a.csv", {"a.csv", "a-2.csv"}) == "a-3.csv"
    assert unique_name("Makefile", {"Makefile"}) == "Makefile-2"
    assert unique_name(".env", {".env"}) == ".env-2"


def test_upload_ids_in_order_once():
    messages = (with_upload("file_b", "file_a"), Message("assistant", (Text("ok"),)), with_upload("file_b", "file_c"))
    assert upload_ids(messages) == ("file_b", "file_a", "file_c")


async def test_uploads_are_put_before_the_model_runs_and_the_model_is_told_where(files):
    data = await files.create("k", "sales.csv", b"a,b\n", downloadable=False)
    again = await files.create("k", "dir/sales.csv", b"c,d\n", downloadable=False)
    sandbox = FakeContainerService()
    upstream = ScriptedUpstream(text("ok") + done())
    events = await collect(engine(upstream, sandbox, files), request(with_upload(data.id, again.id)))
    container = events[0].container
    assert sandbox.sessions[container.id].files == {"sales.csv": "a,b\n", "sales-2.csv": "c,d\n"}
    note = first_user_text(upstream)
    assert "/workspace/sales.csv" in note and "/workspace/sales-2.csv" in note and note.endswith("look")
    assert await files.placements(container.id) == {data.id: "/workspace/sales.csv", again.id: "/workspace/sales-2.csv"}


async def test_an_upload_is_put_once_per_container_so_the_models_changes_survive(files):
    data = await files.create("k", "notes.txt", b"original", downloadable=False)
    sandbox = FakeContainerService()
    upstream = ScriptedUpstream(text("ok") + done(), text("again") + done())
    first = await collect(engine(upstream, sandbox, files), request(with_upload(data.id)))
    container_id = first[0].container.id
    sandbox.sessions[container_id].files["notes.txt"] = "the model changed this"
    history = (with_upload(data.id), Message("assistant", (Text("ok"),)), user("more"))
    await collect(engine(upstream, sandbox, files), request(*history, container_id=container_id))
    assert sandbox.sessions[container_id].files["notes.txt"] == "the model changed this"
    assert "/workspace/notes.txt" in first_user_text(upstream)  # still told, on the later turn too


async def test_unknown_or_foreign_upload_is_refused_before_anything_exists(files):
    theirs = await files.create("someone-else", "x.csv", b"", downloadable=False)
    sandbox = FakeContainerService()
    upstream = ScriptedUpstream()
    with pytest.raises(InvalidRequest, match=rf"'file_nope', '{theirs.id}'"):
        await collect(engine(upstream, sandbox, files), request(with_upload("file_nope", theirs.id)))
    assert sandbox.sessions == {} and upstream.seen == []


async def test_without_the_tool_or_the_files_api_uploads_are_ignored_or_refused(files):
    upstream = ScriptedUpstream(text("no tool") + done())
    await collect(engine(upstream, FakeContainerService(), files), request(with_upload("file_nope"), tools=()))
    assert first_user_text(upstream) == "look"  # nothing was put anywhere, so nothing is claimed
    with pytest.raises(InvalidRequest, match="Files API"):
        await collect(engine(ScriptedUpstream(), FakeContainerService(), None), request(with_upload("file_x")))


async def test_command_outputs_are_published_and_listed_for_the_model(files):
    def respond(kind: str, source: str) -> ExecutionResult:
        return ExecutionResult("drew\n", "", 0, 1.0, files=(fake_output("chart.png", b"\x89PNG..."),))

    upstream = ScriptedUpstream(call(0, "bash_code_execution", '{"command": "plot"}') + done("tool_calls"), done())
    events = await collect(engine(upstream, FakeContainerService(respond), files), request(user("go")))
    outcome = next(e.result.outcome for e in events if isinstance(e, ServerToolResultReady))
    (chart,) = outcome.files
    record = await files.get("k", chart.file_id)
    assert (record.filename, record.mime_type, record.downloadable) == ("chart.png", "image/png", True)
    assert await files.read(record) == b"\x89PNG..."
    seen = upstream.seen[1].messages[-1].parts[0].content[0].text
    assert "files returned to the user from $OUTPUT_DIR: chart.png (7 bytes)" in seen


async def test_a_too_large_bash_output_publishes_nothing(files):
    def respond(kind: str, source: str) -> ExecutionResult:
        return ExecutionResult(
            "",
            "",
            0,
            1.0,
            error_code="output_file_too_large",
            files=(fake_output("ok.txt", b"ok"),),
            files_too_large=("big.bin",),
        )

    upstream = ScriptedUpstream(call(0, "bash_code_execution", '{"command": "x"}') + done("tool_calls"), done())
    events = await collect(engine(upstream, FakeContainerService(respond), files), request(user("go")))
    outcome = next(e.result.outcome for e in events if isinstance(e, ServerToolResultReady))
    assert isinstance(outcome, ToolFailure) and outcome.error_code == "output_file_too_large"
    assert "big.bin" in outcome.message
    assert (await files.list("k")).records == ()


async def test_output_files_in_history_are_shown_to_the_model_by_name(files):
    chart = await files.create("k", "chart.png", b"png", downloadable=True)
    call_block = ToolCall("srvtoolu_1", "bash_code_execution", {"command": "plot"}, server=True)
    result = ServerToolResult(
        "srvtoolu_1", "bash_code_execution", CommandOutcome("", "", 0, (OutputFile(chart.id, "", 0),))
    )
    upstream = ScriptedUpstream(text("ok") + done())
    history = (user("go"), Message("assistant", (call_block, result)), user("and?"))
    await collect(engine(upstream, FakeContainerService(), files), request(*history))
    replayed = upstream.seen[0].messages[1].parts[-1]
    assert isinstance(replayed, ToolResult) and "chart.png (3 bytes)" in replayed.content[0].text
