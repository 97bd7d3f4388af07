"""The official SDK → a real ``execbridge serve`` → llama-cpp-python's real server (SmolLM2-135M),
directly and through LiteLLM's proxy.

What is tested is that the server's own request validation accepts every history shape the gateway
sends (several rounds of calls and results, parallel calls, client tools beside server ones, a
continuation after ``pause_turn``, uploads, images, PDFs), streamed and not, and that the forms it
refuses (``tool_choice: "required"``, a streamed ``"auto"``, ``file`` parts, null content) are learnt
instead of failing the request. The model is tiny: assertions are about the protocol (no error from
the upstream, the right block types, commands that really ran in the sandbox), never about answers.
"""

from __future__ import annotations

import base64
import io
import struct
import zlib
from collections.abc import Iterator
from typing import Any

import anthropic
import pytest
from anthropic.types.beta import BetaMessage

from execbridge.ids import server_tool_use_id, tool_use_id
from execbridge.testing.pdf import pdf_with_text

from .conftest import MODEL, Gateway, Upstream, serve_gateway

pytestmark = pytest.mark.real_server

PYTHON_TOOL = [{"type": "code_execution_20250522", "name": "code_execution"}]
BASH_TOOLS = [{"type": "code_execution_20250825", "name": "code_execution"}]
WEATHER = {
    "name": "get_weather",
    "description": "The weather in a city.",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}
# Short answers keep each model turn near a second; the model's code is then short too.
MAX_TOKENS = 48
SERVER_RESULTS = {
    "code_execution_tool_result",
    "bash_code_execution_tool_result",
    "text_editor_code_execution_tool_result",
}
MODEL_OUTCOMES = {"code_execution_result", "execution_time_exceeded", "invalid_tool_input"}
both = pytest.mark.parametrize("stream", [False, True], ids=["json", "sse"])


@pytest.fixture
def client(gateway: Gateway) -> Iterator[anthropic.Anthropic]:
    with anthropic.Anthropic(base_url=gateway.url, api_key="sk-local", max_retries=0, timeout=300) as sdk:
        yield sdk


def create(sdk: anthropic.Anthropic, stream: bool, **request: Any) -> BetaMessage:
    """One request, streamed (the SDK folds the events) or not; the SDK raises on any error."""
    request = {"model": MODEL, "max_tokens": MAX_TOKENS, "betas": ["code-execution-2025-08-25"], **request}
    if not stream:
        return sdk.beta.messages.create(**request)
    with sdk.beta.messages.stream(**request) as events:
        return events.get_final_message()


def history(message: BetaMessage) -> list[dict[str, Any]]:
    """The response's content as the client sends it back."""
    return [block.model_dump(mode="json", exclude_none=True) for block in message.content]


def check_pairs(message: BetaMessage) -> None:
    """Every server call is answered by its own result block, right after it or after other calls."""
    calls = [b.id for b in message.content if b.type == "server_tool_use"]
    results = [b.tool_use_id for b in message.content if b.type in SERVER_RESULTS]
    assert results == calls, [b.type for b in message.content]


def bash_call(command: str) -> dict[str, Any]:
    return {
        "type": "server_tool_use",
        "id": server_tool_use_id(),
        "name": "bash_code_execution",
        "input": {"command": command},
    }


def stdout_of(message: BetaMessage, call_id: str) -> str:
    (result,) = [b for b in message.content if b.type in SERVER_RESULTS and b.tool_use_id == call_id]
    assert result.content.type == "bash_code_execution_result", result
    return result.content.stdout


# ---------------------------------------------------------------- calls the model makes


@both
def test_forced_python_call_runs_in_the_sandbox(client, stream):
    """One function, named by tool_choice: the form llama-cpp-python implements best."""
    message = create(
        client,
        stream,
        tools=PYTHON_TOOL,
        tool_choice={"type": "tool", "name": "code_execution"},
        messages=[{"role": "user", "content": "Print the sum of 2 and 3 with Python."}],
    )
    call, result = message.content[0], message.content[1]
    assert call.type == "server_tool_use" and call.name == "code_execution" and isinstance(call.input, dict)
    assert result.type == "code_execution_tool_result" and result.tool_use_id == call.id
    # The sandbox's answer (an exit code, the time limit), or the model's own fault: streamed, this
    # server's named calls are not always valid JSON. Never "unavailable", the gateway's failure.
    outcome = result.content.type if result.content.type == "code_execution_result" else result.content.error_code
    assert outcome in MODEL_OUTCOMES, message.model_dump_json()
    assert message.stop_reason in ("end_turn", "max_tokens")
    assert message.container is not None
    check_pairs(message)


@both
def test_required_choice_among_several_functions_is_adapted(client, stream):
    """Bash and the editor, tool_choice "any": llama-cpp-python fails "required" (a bare 500) and a
    streamed "auto" (an empty stream); the gateway learns both and the request succeeds."""
    message = create(
        client,
        stream,
        tools=BASH_TOOLS,
        tool_choice={"type": "any"},
        messages=[{"role": "user", "content": "List the files in the current directory."}],
    )
    assert message.stop_reason in ("end_turn", "max_tokens")
    assert {b.type for b in message.content} <= {"text", "server_tool_use", *SERVER_RESULTS}
    check_pairs(message)


@both
def test_client_tool_call_then_its_result(client, stream):
    first = create(
        client,
        stream,
        tools=[*BASH_TOOLS, WEATHER],
        tool_choice={"type": "tool", "name": "get_weather"},
        messages=[{"role": "user", "content": "What is the weather in Oslo?"}],
    )
    assert first.stop_reason == "tool_use"
    (call,) = [b for b in first.content if b.type == "tool_use"]
    assert call.name == "get_weather" and call.id.startswith("toolu_")
    answer = create(
        client,
        stream,
        tools=[*BASH_TOOLS, WEATHER],
        container=first.container.id if first.container else None,
        messages=[
            {"role": "user", "content": "What is the weather in Oslo?"},
            {"role": "assistant", "content": history(first)},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": call.id, "content": "Sunny, 21 °C"}]},
        ],
    )
    assert answer.stop_reason in ("end_turn", "max_tokens")


# ---------------------------------------------------------------- history shapes the gateway sends


@both
def test_several_rounds_of_calls_and_results(client, stream):
    """Three rounds in one conversation, each a call the client left for the gateway to run: the
    upstream sees call/result pairs from every earlier round, and the container keeps its files."""
    messages: list[dict[str, Any]] = []
    container = None
    for round_ in range(1, 4):
        call = bash_call(f"echo round{round_} >> /workspace/log && cat /workspace/log | wc -l")
        messages += [{"role": "user", "content": f"Step {round_}."}, {"role": "assistant", "content": [call]}]
        message = create(client, stream, tools=BASH_TOOLS, container=container, messages=messages)
        assert message.content[0].type == "bash_code_execution_tool_result"
        assert stdout_of(message, call["id"]).strip() == str(round_)  # really ran, in the same container
        container = message.container.id
        messages[-1] = {"role": "assistant", "content": [call, *history(message)]}


@both
def test_parallel_calls_in_one_assistant_turn(client, stream):
    first, second = bash_call("echo one"), bash_call("echo two")
    message = create(
        client,
        stream,
        tools=BASH_TOOLS,
        messages=[{"role": "user", "content": "Run both."}, {"role": "assistant", "content": [first, second]}],
    )
    assert [b.type for b in message.content[:2]] == ["bash_code_execution_tool_result"] * 2
    assert stdout_of(message, first["id"]) == "one\n" and stdout_of(message, second["id"]) == "two\n"


@both
def test_server_and_client_calls_in_one_batch(client, stream):
    """A batch that mixed both kinds: the server call was deferred and runs before the model is asked."""
    server = bash_call("echo deferred")
    weather = {"type": "tool_use", "id": tool_use_id(), "name": "get_weather", "input": {"city": "Oslo"}}
    message = create(
        client,
        stream,
        tools=[*BASH_TOOLS, WEATHER],
        messages=[
            {"role": "user", "content": "Weather in Oslo, and run echo."},
            {"role": "assistant", "content": [server, weather]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": weather["id"], "content": "Rain"}]},
        ],
    )
    assert stdout_of(message, server["id"]) == "deferred\n"
    assert message.stop_reason in ("end_turn", "max_tokens", "tool_use")


@both
def test_continuation_after_pause_turn(upstream: Upstream, tmp_path, stream):
    with (
        serve_gateway(upstream.base_url, tmp_path, EXECBRIDGE_MAX_ITERATIONS="1") as gateway,
        anthropic.Anthropic(base_url=gateway.url, api_key="sk-local", max_retries=0, timeout=300) as sdk,
    ):
        question = {"role": "user", "content": "Print 6 times 7 with Python."}
        paused = create(
            sdk, stream, tools=PYTHON_TOOL, tool_choice={"type": "tool", "name": "code_execution"}, messages=[question]
        )
        assert paused.stop_reason == "pause_turn"
        check_pairs(paused)
        resumed = create(
            sdk,
            stream,
            tools=PYTHON_TOOL,
            container=paused.container.id,
            messages=[question, {"role": "assistant", "content": history(paused)}],
        )
        assert resumed.stop_reason in ("end_turn", "max_tokens")


@both
def test_upload_then_a_call_reading_it(client, stream):
    uploaded = client.beta.files.upload(file=("notes.txt", io.BytesIO(b"hello from the upload\n"), "text/plain"))
    call = bash_call("cat /workspace/notes.txt")
    message = create(
        client,
        stream,
        tools=BASH_TOOLS,
        betas=["code-execution-2025-08-25", "files-api-2025-04-14"],
        messages=[
            {"role": "user", "content": [{"type": "container_upload", "file_id": uploaded.id}]},
            {"role": "assistant", "content": [call]},
        ],
    )
    assert stdout_of(message, call["id"]) == "hello from the upload\n"


# ---------------------------------------------------------------- content a text model may not take


def tiny_png() -> str:
    """A 2 by 2 red PNG, made here: a real image without shipping one."""
    raw = b"".join(b"\x00" + b"\xff\x00\x00" * 2 for _ in range(2))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 2, 2, 8, 2, 0, 0, 0))
    png += chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")
    return base64.b64encode(png).decode()


@both
def test_images_in_the_question_and_in_a_tool_result(client, stream):
    """llama-cpp-python takes image parts even for a text-only model (its chat template writes the
    parts out as text), so a small image goes through; so does one a client tool returned."""
    image = {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": tiny_png()}}
    weather = {"type": "tool_use", "id": tool_use_id(), "name": "get_weather", "input": {"city": "Oslo"}}
    message = create(
        client,
        stream,
        tools=[*BASH_TOOLS, WEATHER],
        messages=[
            {"role": "user", "content": [image, {"type": "text", "text": "What colour is this?"}]},
            {"role": "assistant", "content": [weather]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": weather["id"], "content": [image]}]},
        ],
    )
    assert message.stop_reason in ("end_turn", "max_tokens", "tool_use")


def test_an_image_too_big_for_the_context_is_the_clients_400(client):
    """The server writes an image's base64 into the prompt: a large one overflows the context, and
    the client hears the server's own words as a 400, not a 502."""
    noise = base64.b64encode(bytes(range(256)) * 200).decode()  # ~68 KB of base64: far past 8192 tokens
    image = {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": noise}}
    with pytest.raises(anthropic.BadRequestError, match="maximum context length"):
        create(client, False, messages=[{"role": "user", "content": [image, {"type": "text", "text": "Describe."}]}])


@both
def test_a_pdf_reaches_the_model_as_its_text_where_file_parts_are_refused(client, stream):
    """The server refuses ``file`` parts (a 500 report); the gateway learns it and sends the PDF's text."""
    for pdf in (pdf_with_text("Invoice 17: total 99 EUR."), b"%PDF-1.4\n%%EOF\n"):  # with and without text
        data = base64.b64encode(pdf).decode()
        document = {"type": "document", "source": {"type": "base64", "media_type": "application/pdf", "data": data}}
        message = create(
            client,
            stream,
            messages=[{"role": "user", "content": [document, {"type": "text", "text": "Summarise it."}]}],
        )
        assert message.stop_reason in ("end_turn", "max_tokens")


# ---------------------------------------------------------------- what the SDK asks of the route


@both
def test_stop_sequences_are_matched_by_the_gateway(client, stream):
    """No ``stop`` reaches the server; the gateway finds the first stop string in what the model writes.
    The stops are a space and the common letters: no English answer avoids them all."""
    stops = [" ", "e", "a", "o", "i", "t", "\n"]
    message = create(client, stream, stop_sequences=stops, messages=[{"role": "user", "content": "Say hello."}])
    assert (message.stop_reason, message.stop_sequence in stops) == ("stop_sequence", True), message
    assert not any(stop in block.text for block in message.content for stop in stops)


@both
def test_one_call_when_parallel_calls_are_disabled(client, stream):
    """``parallel_tool_calls: false`` is taken (LiteLLM passes it on), and one call is all there is."""
    message = create(
        client,
        stream,
        tools=[*PYTHON_TOOL, WEATHER],
        tool_choice={"type": "tool", "name": "get_weather", "disable_parallel_tool_use": True},
        messages=[{"role": "user", "content": "Weather in Paris?"}],
    )
    assert [b.type for b in message.content if b.type in ("tool_use", "server_tool_use")] == ["tool_use"]
    assert message.stop_reason == "tool_use"


def test_system_messages_and_thinking(client):
    """A ``system`` message inside ``messages`` reaches the server as its system prompt; ``thinking``,
    which this route cannot carry, is refused before the server is asked."""
    message = create(
        client,
        False,
        messages=[{"role": "system", "content": "Answer in one word."}, {"role": "user", "content": "Hi?"}],
    )
    assert message.stop_reason in ("end_turn", "max_tokens")
    with pytest.raises(anthropic.BadRequestError, match="thinking"):
        create(
            client,
            False,
            max_tokens=2048,
            thinking={"type": "enabled", "budget_tokens": 1024},
            messages=[{"role": "user", "content": "Hi?"}],
        )


def test_null_content_is_learnt_as_empty(upstream: Upstream, tmp_path):
    """Databricks' dialect (forced) sends null content beside calls; llama-cpp-python refuses it in a
    pydantic report (HTTP 500), LiteLLM drops the key and the server's template fails on it; either
    way the gateway resends with "" and keeps it for the model."""
    with (
        serve_gateway(upstream.base_url, tmp_path, EXECBRIDGE_UPSTREAM_DIALECT="databricks") as gateway,
        anthropic.Anthropic(base_url=gateway.url, api_key="sk-local", max_retries=0, timeout=300) as sdk,
    ):
        for _ in range(2):
            call = bash_call("echo ok")
            message = create(
                sdk,
                False,
                tools=BASH_TOOLS,
                messages=[{"role": "user", "content": "Run it."}, {"role": "assistant", "content": [call]}],
            )
            assert stdout_of(message, call["id"]) == "ok\n"
