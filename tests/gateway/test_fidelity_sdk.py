"""What the official SDK asks of a Chat Completions route, end to end (issue 10 §3): the SDK → a real
``execbridge serve`` → the scripted fake upstream (and a real sandbox where code runs).

PDFs reach models that take no PDF files as their text; stop sequences end the turn where they match,
with ``stop_reason: "stop_sequence"``; ``thinking`` reaches Databricks' Claude endpoints (and their
signed reasoning goes back to them), and is refused where it cannot; ``disable_parallel_tool_use``
means one call; Anthropic's conversation checks answer in Anthropic's words before any upstream is
asked; ``system`` messages join the system prompt; every id the gateway makes fits ``[a-zA-Z0-9_]+``.
"""

from __future__ import annotations

import base64
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import pytest

from execbridge.testing import FakeUpstream, Turn, last_tool_result, tool_results
from execbridge.testing.pdf import pdf_with_text

from .conftest import CLIENT_KEY, UPSTREAM_KEYS, Gateway, sdk_client, serve_process

CLAUDE = "databricks-claude-sonnet-4-5"
CODE_EXECUTION = [{"type": "code_execution_20250825", "name": "code_execution"}]
WEATHER = {
    "name": "get_weather",
    "description": "The weather in a city.",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}
THINKING = {"type": "enabled", "budget_tokens": 2048}
both = pytest.mark.parametrize("stream", [False, True], ids=["json", "sse"])


def create(sdk: anthropic.Anthropic, stream: bool, **request: Any) -> Any:
    request = {"model": CLAUDE, "max_tokens": 4096, **request}
    if not stream:
        return sdk.messages.create(**request)
    with sdk.messages.stream(**request) as events:
        return events.get_final_message()


def pdf_document(*pages: str) -> dict[str, Any]:
    data = base64.b64encode(pdf_with_text(*pages)).decode()
    return {"type": "document", "source": {"type": "base64", "media_type": "application/pdf", "data": data}}


def user_text(request: dict[str, Any]) -> str:
    """Every text the upstream got in user messages."""
    out = []
    for message in request["messages"]:
        if message["role"] == "user":
            content = message["content"]
            out += [content] if isinstance(content, str) else [p.get("text", "") for p in content]
    return "\n".join(out)


@pytest.fixture
def sdk(gateway: Gateway) -> anthropic.Anthropic:
    return sdk_client(gateway.url, CLIENT_KEY)


# ---------------------------------------------------------------- PDFs


@both
def test_a_pdf_reaches_databricks_as_its_text(sdk, fake, stream):
    fake.reset([Turn.text("The number is 7321.")])
    message = create(
        sdk,
        stream,
        messages=[
            {"role": "user", "content": [pdf_document("The secret number is 7321."), {"type": "text", "text": "?"}]}
        ],
    )
    assert message.content[0].text == "The number is 7321."
    (request,) = fake.chat_requests
    assert "The secret number is 7321." in user_text(request)
    assert "extracted by the gateway" in user_text(request)
    assert all(isinstance(m["content"], str) for m in request["messages"])  # no file part anywhere


@pytest.fixture(scope="module")
def generic(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, FakeUpstream]]:
    """A gateway in front of a generic OpenAI-compatible fake (its dialect guessed, nothing forced) that
    refuses ``file`` parts, as llama-cpp-python's server and Databricks do."""
    accepted = {f"Bearer {key}" for key in UPSTREAM_KEYS}
    data_dir = tmp_path_factory.mktemp("generic-gateway")
    env = {**os.environ, "EXECBRIDGE_DATA_DIR": str(data_dir), "EXECBRIDGE_SANDBOX__SPARE_CONTAINERS": "0"}
    with (
        FakeUpstream(authorize=accepted.__contains__, file_parts=False) as upstream,
        serve_process(env, Path(data_dir), "--upstream", upstream.base_url) as url,
    ):
        yield url, upstream


def test_a_refused_pdf_part_is_learnt_once_per_model(generic):
    url, upstream = generic
    upstream.reset([Turn.text("first"), Turn.text("second")])
    sdk = sdk_client(url, CLIENT_KEY)
    for expected in ("first", "second"):
        message = sdk.messages.create(
            model="pdf-model",
            max_tokens=64,
            messages=[
                {"role": "user", "content": [pdf_document("Invoice total: 99 EUR."), {"type": "text", "text": "?"}]}
            ],
        )
        assert message.content[0].text == expected
    refused, resent, second = upstream.chat_requests
    assert any(p["type"] == "file" for p in refused["messages"][0]["content"])
    assert [status for status, _ in upstream.rejections] == [400]  # learnt once, then kept for the model
    assert "Invoice total: 99 EUR." in user_text(resent) and "Invoice total: 99 EUR." in user_text(second)


# ---------------------------------------------------------------- stop sequences


@both
def test_a_stop_sequence_ends_the_turn_and_is_named(sdk, fake, stream):
    # Three characters a chunk: the stop string arrives split over several chunks.
    fake.reset([Turn.text("The answer is 42.</answer> and then some", chunk_chars=3)])
    message = create(
        sdk, stream, stop_sequences=["</never>", "</answer>"], messages=[{"role": "user", "content": "answer"}]
    )
    assert [b.text for b in message.content] == ["The answer is 42."]
    assert (message.stop_reason, message.stop_sequence) == ("stop_sequence", "</answer>")
    assert message.usage.output_tokens > 0 and message.usage.input_tokens > 0
    (request,) = fake.chat_requests
    assert "stop" not in request and request["stream"] is True  # matched here, on a streamed turn


@both
def test_no_stop_sequence_matched_is_end_turn(sdk, fake, stream):
    fake.reset([Turn.text("Nothing to stop here.")])
    message = create(sdk, stream, stop_sequences=["</answer>"], messages=[{"role": "user", "content": "answer"}])
    assert message.content[0].text == "Nothing to stop here."
    assert (message.stop_reason, message.stop_sequence) == ("end_turn", None)


# ---------------------------------------------------------------- thinking


def reasoning_parts(message: dict[str, Any]) -> list[dict[str, Any]]:
    content = message.get("content")
    return [p for p in content if p["type"] == "reasoning"] if isinstance(content, list) else []


@both
def test_thinking_reaches_databricks_claude_and_its_signature_survives_the_loop(sdk, fake, stream):
    """Two rounds of server calls with thinking on: Databricks (Claude's rule) wants the signed reasoning
    that opened the loop sent back on every round, and the fake refuses any request without it."""
    fake.reset(
        [
            Turn.reasoning("I should run it.", signature="sig-1")
            .but(content_parts=True)
            .call("bash_code_execution", command="echo one"),
            Turn.tool_call("bash_code_execution", command="echo two"),
            lambda req: Turn.text(f"Both ran: {' '.join(r.split('stdout:')[1].strip() for r in tool_results(req))}"),
        ]
    )
    question = {"role": "user", "content": "run two commands"}
    message = create(sdk, stream, thinking=THINKING, tools=CODE_EXECUTION, messages=[question])
    assert fake.rejections == []
    thinking = message.content[0]
    assert (thinking.type, thinking.thinking, thinking.signature) == ("thinking", "I should run it.", "sig-1")
    assert message.content[-1].text == "Both ran: two"
    for request in fake.chat_requests:
        assert request["thinking"] == THINKING
    for request in fake.chat_requests[1:]:
        opening = next(m for m in request["messages"] if m["role"] == "assistant")
        assert reasoning_parts(opening)[0]["summary"][0] == {
            "type": "summary_text",
            "text": "I should run it.",
            "signature": "sig-1",
        }

    # The follow-up sends the whole assistant turn back; the reasoning goes back with it, signed.
    fake.reset([Turn.text("You're welcome.")])
    follow_up = create(
        sdk,
        stream,
        thinking=THINKING,
        tools=CODE_EXECUTION,
        container=message.container.id,
        messages=[
            question,
            {"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in message.content]},
            {"role": "user", "content": "thanks"},
        ],
    )
    assert follow_up.content[0].text == "You're welcome."
    (request,) = fake.chat_requests
    sent = [p["summary"][0]["signature"] for m in request["messages"] for p in reasoning_parts(m)]
    assert sent == ["sig-1"]


def test_thinking_is_refused_where_the_upstream_cannot_take_it(sdk, fake):
    with pytest.raises(anthropic.BadRequestError) as caught:
        sdk.messages.create(
            model="databricks-meta-llama-3-3-70b-instruct",
            max_tokens=4096,
            thinking=THINKING,
            messages=[{"role": "user", "content": "think"}],
        )
    error = caught.value.body["error"]
    assert error["type"] == "invalid_request_error" and error["message"].startswith("thinking: ")
    assert fake.chat_requests == []


def test_reasoning_comes_back_as_thinking_without_asking(sdk, fake):
    """A model that reasons on its own (gpt-oss) shows it as a thinking block; nothing was requested."""
    fake.reset([Turn.reasoning("Let me see.", "Fine.", signature=None, reasoning_style="reasoning_content")])
    message = sdk.messages.create(
        model="databricks-gpt-oss-120b", max_tokens=512, messages=[{"role": "user", "content": "hi"}]
    )
    assert [(b.type, getattr(b, "thinking", None)) for b in message.content] == [
        ("thinking", "Let me see."),
        ("text", None),
    ]
    assert "thinking" not in fake.chat_requests[0]


# ---------------------------------------------------------------- disable_parallel_tool_use


@both
def test_disable_parallel_tool_use_returns_one_client_call(sdk, fake, stream):
    fake.reset([Turn.tool_calls(("get_weather", '{"city": "Paris"}'), ("get_weather", '{"city": "Rome"}'))])
    message = create(
        sdk,
        stream,
        tools=[WEATHER],
        tool_choice={"type": "auto", "disable_parallel_tool_use": True},
        messages=[{"role": "user", "content": "Paris and Rome?"}],
    )
    assert [(b.type, b.input) for b in message.content] == [("tool_use", {"city": "Paris"})]
    assert message.stop_reason == "tool_use"


def test_disable_parallel_tool_use_runs_one_server_call(sdk, fake):
    fake.reset(
        [
            Turn.tool_calls(
                ("bash_code_execution", '{"command": "echo one"}'), ("bash_code_execution", '{"command": "echo two"}')
            ),
            lambda req: Turn.text(f"Ran {len(tool_results(req))}: {last_tool_result(req).split('stdout:')[1].strip()}"),
        ]
    )
    message = sdk.messages.create(
        model=CLAUDE,
        max_tokens=512,
        tools=CODE_EXECUTION,
        tool_choice={"type": "any", "disable_parallel_tool_use": True},
        messages=[{"role": "user", "content": "run"}],
    )
    assert [b.type for b in message.content] == ["server_tool_use", "bash_code_execution_tool_result", "text"]
    assert message.content[-1].text == "Ran 1: one"


def test_parallel_tool_calls_false_goes_where_it_is_taken(generic):
    url, upstream = generic
    upstream.reset([Turn.tool_calls(("get_weather", '{"city": "Paris"}'), ("get_weather", '{"city": "Rome"}'))])
    message = sdk_client(url, CLIENT_KEY).messages.create(
        model="parallel-model",
        max_tokens=64,
        tools=[WEATHER],
        tool_choice={"type": "auto", "disable_parallel_tool_use": True},
        messages=[{"role": "user", "content": "Paris and Rome?"}],
    )
    assert len(message.content) == 1
    assert upstream.chat_requests[0]["parallel_tool_calls"] is False


# ---------------------------------------------------------------- conversation checks


TOOL_USE = {"type": "tool_use", "id": "toolu_01A", "name": "get_weather", "input": {"city": "Paris"}}


@pytest.mark.parametrize(
    ("messages", "message"),
    [
        (
            [
                {"role": "user", "content": "weather?"},
                {"role": "assistant", "content": [TOOL_USE]},
                {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_01B", "content": "15C"}]},
            ],
            "messages.2.content.0: unexpected `tool_use_id` found in `tool_result` blocks: toolu_01B. Each "
            "`tool_result` block must have a corresponding `tool_use` block in the previous message.",
        ),
        (
            [
                {"role": "user", "content": "weather?"},
                {"role": "assistant", "content": [TOOL_USE]},
                {"role": "user", "content": "and tomorrow?"},
            ],
            "messages.1: `tool_use` ids were found without `tool_result` blocks immediately after: toolu_01A. Each "
            "`tool_use` block must have a corresponding `tool_result` block in the next message.",
        ),
        (
            [{"role": "user", "content": [{"type": "text", "text": "hi"}, {"type": "text", "text": ""}]}],
            "messages.0.content.1: text content blocks must be non-empty",
        ),
    ],
    ids=["unknown tool_use_id", "unanswered tool_use", "empty text block"],
)
def test_conversation_faults_are_named_at_the_clients_indexes(sdk, fake, messages, message):
    with pytest.raises(anthropic.BadRequestError) as caught:
        sdk.messages.create(model=CLAUDE, max_tokens=64, tools=[WEATHER], messages=messages)
    assert caught.value.body["error"] == {"type": "invalid_request_error", "message": message}
    assert fake.chat_requests == []  # refused before any upstream was asked


# ---------------------------------------------------------------- system messages


def test_system_messages_join_the_system_prompt(sdk, fake):
    fake.reset([Turn.text("Bonjour.")])
    message = sdk.messages.create(
        model=CLAUDE,
        max_tokens=64,
        system="Be brief.",
        messages=[
            {"role": "system", "content": "Answer in French."},  # type: ignore[misc,list-item]
            {"role": "user", "content": "hi"},
        ],
    )
    assert message.content[0].text == "Bonjour."
    (request,) = fake.chat_requests
    assert request["messages"] == [
        {"role": "system", "content": "Be brief.\n\nAnswer in French."},
        {"role": "user", "content": "hi"},
    ]


# ---------------------------------------------------------------- ids


ID = re.compile(r"[a-zA-Z0-9_]+")


def test_every_id_the_gateway_makes_fits_the_id_alphabet(sdk, fake):
    fake.reset(
        [
            Turn.tool_call("bash_code_execution", command='echo hi > "$OUTPUT_DIR/out.txt"'),
            Turn.tool_call("get_weather", city="Paris"),
        ]
    )
    raw = sdk.messages.with_raw_response.create(
        model=CLAUDE,
        max_tokens=512,
        tools=[*CODE_EXECUTION, WEATHER],
        messages=[{"role": "user", "content": "write a file, then ask for the weather"}],
    )
    message = raw.parse()
    server_call, result, client_call = message.content
    (output,) = result.content.content
    made = [
        message.id,
        server_call.id,
        client_call.id,
        message.container.id,
        output.file_id,
        raw.headers["request-id"],
    ]
    assert [i.split("_")[0] for i in made] == ["msg", "srvtoolu", "toolu", "container", "file", "req"]
    assert all(ID.fullmatch(i) for i in made), made
    with pytest.raises(anthropic.NotFoundError) as caught:
        sdk.files.retrieve_metadata("file_nope")
    assert ID.fullmatch(caught.value.body["request_id"])
