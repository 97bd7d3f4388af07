"""The official SDKs through library mode (``execbridge.open``), as the gateway tests drive ``serve``:
sync and async clients, a CSV uploaded and analysed in a real sandbox, streams that arrive as they are
made, and a stream the client leaves early ending the request's work."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import anthropic
import openai
import pytest
from anthropic.types import BashCodeExecutionResultBlock, BashCodeExecutionToolResultBlock

import execbridge
from execbridge.library.transport import run_on
from execbridge.testing import FakeUpstream, Turn, last_tool_result

from .conftest import KEY, library_options

BASH_TOOL = [{"type": "code_execution_20250825", "name": "code_execution"}]
SALES = b"month,amount\nJan,120.5\nFeb,98\nMar,143.25\n"
TOTAL_SCRIPT = """python3 -c "
import csv
rows = list(csv.DictReader(open('/workspace/sales.csv')))
print('total', sum(float(r['amount']) for r in rows))
" """


def sdk(gateway: execbridge.LocalGateway) -> anthropic.Anthropic:
    return anthropic.Anthropic(api_key=KEY, base_url=gateway.base_url, http_client=gateway.http_client(), max_retries=0)


def test_a_sync_client_uploads_a_table_and_the_models_code_reads_it(fake: FakeUpstream, tmp_path: Path) -> None:
    fake.reset(
        [
            Turn.text("Adding it up.").call("bash_code_execution", command=TOTAL_SCRIPT),
            lambda request: Turn.text(f"It printed {last_tool_result(request)!r}."),
        ]
    )
    with execbridge.open(upstream=fake.databricks_url, **library_options(tmp_path)) as gateway:
        client = sdk(gateway)
        uploaded = client.beta.files.upload(file=("sales.csv", SALES, "text/csv"))
        message = client.messages.create(
            model="m",
            max_tokens=512,
            tools=BASH_TOOL,  # type: ignore[list-item]
            messages=[
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "Total my sales."},
                        {"type": "container_upload", "file_id": uploaded.id},
                    ],
                }
            ],
            extra_headers={"anthropic-beta": "files-api-2025-04-14"},
        )
        assert gateway.services.files is not None  # the same services serve would run on
    _intro, _call, result, answer = message.content
    assert isinstance(result, BashCodeExecutionToolResultBlock)
    assert isinstance(result.content, BashCodeExecutionResultBlock), result.content
    assert (result.content.return_code, result.content.stdout) == (0, "total 361.75\n")
    assert message.stop_reason == "end_turn" and message.container is not None
    assert "total 361.75" in answer.text  # type: ignore[union-attr]
    assert (tmp_path / "execbridge.sqlite3").exists()  # the store is the data directory's, as for serve


def test_errors_come_back_as_the_sdks_own_exceptions(fake: FakeUpstream, tmp_path: Path) -> None:
    with execbridge.open(upstream=fake.databricks_url, **library_options(tmp_path)) as gateway:
        client = sdk(gateway)
        with pytest.raises(anthropic.NotFoundError) as missing:
            client.beta.files.retrieve_metadata("file_nope")
        with pytest.raises(anthropic.BadRequestError) as bad:
            client.messages.create(model="m", max_tokens=-1, messages=[{"role": "user", "content": "hi"}])
    assert missing.value.body["error"]["type"] == "not_found_error"  # type: ignore[index]
    assert "max_tokens" in bad.value.message
    assert missing.value.response.headers["request-id"].startswith("req_")


def test_a_sync_stream_arrives_while_the_request_is_still_running(fake: FakeUpstream, tmp_path: Path) -> None:
    """The second model turn waits until the client has read the first turn's text: a transport that
    held the response back until its end would never get there (and the reply would say so)."""
    first_text_read = threading.Event()

    def second_turn(request: object) -> Turn:  # type: ignore[valid-type]
        streamed = first_text_read.wait(timeout=60)
        return Turn.text("streamed" if streamed else "buffered")

    fake.reset([Turn.text("Running it.").call("bash_code_execution", command="echo hi"), second_turn])
    with execbridge.open(upstream=fake.databricks_url, **library_options(tmp_path)) as gateway:
        texts: list[str] = []
        with sdk(gateway).messages.stream(
            model="m",
            max_tokens=512,
            tools=BASH_TOOL,
            messages=[{"role": "user", "content": "go"}],  # type: ignore[list-item]
        ) as stream:
            for text in stream.text_stream:
                texts.append(text)
                first_text_read.set()
            final = stream.get_final_message()
    assert "".join(texts) == "Running it.streamed"
    assert final.stop_reason == "end_turn"


def test_a_stream_left_early_ends_the_requests_work(fake: FakeUpstream, tmp_path: Path) -> None:
    fake.reset([Turn.text("Sleeping.").call("bash_code_execution", command="sleep 600")])
    with execbridge.open(upstream=fake.databricks_url, **library_options(tmp_path)) as gateway:
        with sdk(gateway).messages.stream(
            model="m",
            max_tokens=512,
            tools=BASH_TOOL,
            messages=[{"role": "user", "content": "go"}],  # type: ignore[list-item]
        ) as stream:
            for event in stream:
                if event.type == "content_block_start" and event.content_block.type == "server_tool_use":
                    break  # the command is about to run: leave now
        loop = gateway._loop
        assert loop is not None
        requests_running = run_on(loop, _request_tasks())
    assert requests_running == []  # closing the stream cancelled the request (and its command) at once


async def _request_tasks() -> list[str]:
    return [t.get_name() for t in asyncio.all_tasks() if t.get_name().startswith("execbridge POST")]


async def test_an_async_client_on_the_gateways_own_loop(fake: FakeUpstream, tmp_path: Path) -> None:
    fake.reset([Turn.text("Running it.").call("bash_code_execution", command="echo hi from $PWD"), Turn.text("Done.")])
    async with execbridge.open(upstream=fake.databricks_url, **library_options(tmp_path)) as gateway:
        client = anthropic.AsyncAnthropic(
            api_key=KEY, base_url=gateway.base_url, http_client=gateway.async_http_client(), max_retries=0
        )
        events = []
        async with client.messages.stream(
            model="m",
            max_tokens=512,
            tools=BASH_TOOL,
            messages=[{"role": "user", "content": "go"}],  # type: ignore[list-item]
        ) as stream:
            async for event in stream:
                events.append(event.type)
            final = await stream.get_final_message()
    result = final.content[2]
    assert isinstance(result, BashCodeExecutionToolResultBlock)
    assert result.content.stdout == "hi from /workspace\n"  # type: ignore[union-attr]
    assert events[0] == "message_start" and events[-1] == "message_stop"


async def test_an_async_client_on_another_loop_than_the_gateways(fake: FakeUpstream, tmp_path: Path) -> None:
    """A notebook's case: ``with execbridge.open(...)`` in a cell, then ``await`` on the kernel's loop."""
    fake.reset([Turn.text("Hello.")])
    with execbridge.open(upstream=fake.databricks_url, **library_options(tmp_path)) as gateway:
        client = anthropic.AsyncAnthropic(
            api_key=KEY, base_url=gateway.base_url, http_client=gateway.async_http_client(), max_retries=0
        )
        message = await client.messages.create(model="m", max_tokens=64, messages=[{"role": "user", "content": "hi"}])
        await client.close()
    assert message.content[0].text == "Hello."  # type: ignore[union-attr]


async def test_a_sync_client_cannot_block_the_loop_it_runs_on(fake: FakeUpstream, tmp_path: Path) -> None:
    async with execbridge.open(upstream=fake.databricks_url, **library_options(tmp_path)) as gateway:
        with pytest.raises(anthropic.APIConnectionError) as refused:
            sdk(gateway).models.list()
    assert "async_http_client" in str(refused.value.__cause__)


def test_settings_or_options_not_both(tmp_path: Path) -> None:
    settings = execbridge.load_settings(upstream_url="http://127.0.0.1:9/v1", data_dir=tmp_path)
    with pytest.raises(TypeError, match="not both"):
        execbridge.open(upstream="http://127.0.0.1:9/v1", settings=settings)
    assert execbridge.open(settings=settings).settings is settings


def test_clients_need_an_open_gateway(tmp_path: Path) -> None:
    gateway = execbridge.open(upstream="http://127.0.0.1:9/v1", data_dir=tmp_path)
    with pytest.raises(RuntimeError, match="not open"):
        gateway.http_client()


def test_an_openai_client_reaches_the_gateway_too(fake: FakeUpstream, tmp_path: Path) -> None:
    """The same ``http_client`` serves the OpenAI SDK (the Responses API, where the gateway offers it)."""
    with execbridge.open(upstream=fake.databricks_url, **library_options(tmp_path)) as gateway:
        client = openai.OpenAI(api_key=KEY, base_url=f"{gateway.base_url}/v1", http_client=gateway.http_client())
        models = [m.id for m in client.models.list()]
        with pytest.raises(openai.NotFoundError) as missing:
            client.files.retrieve("file_nope")
    assert models and all(isinstance(m, str) for m in models)
    assert missing.value.status_code == 404 and missing.value.response.headers["request-id"].startswith("req_")
