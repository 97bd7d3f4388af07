"""``POST /v1/messages`` end to end: the official SDK → execbridge serve → fake Databricks + real sandbox."""

from __future__ import annotations

import anthropic
import httpx
import orjson
import pytest
from anthropic.types import (
    BashCodeExecutionResultBlock,
    BashCodeExecutionToolResultBlock,
    ServerToolUseBlock,
    TextBlock,
    ToolUseBlock,
)
from anthropic.types.beta import (
    BetaBashCodeExecutionResultBlock,
    BetaBashCodeExecutionToolResultBlock,
    BetaServerToolUseBlock,
    BetaTextBlock,
)

from execbridge.testing import Turn, last_tool_result

from .conftest import CLIENT_KEY, OTHER_KEY, Gateway, sdk_client

PRIME_SCRIPT = (
    "python3 -c 'n = [p for p in range(2, 8000) if all(p % d for d in range(2, int(p**.5) + 1))]; print(n[999])'"
)
CODE_EXECUTION = [{"type": "code_execution_20250825", "name": "code_execution"}]
SEED = "What is the 1000th prime? Compute it."


def client(gateway: Gateway, key: str = CLIENT_KEY) -> anthropic.Anthropic:
    return sdk_client(gateway.url, key)


def prime_script() -> list:
    return [
        Turn.text("I'll compute it.").call("bash_code_execution", command=PRIME_SCRIPT),
        lambda req: Turn.text(f"The 1000th prime is {last_tool_result(req).split('stdout:')[1].strip()}."),
    ]


def test_seed_case_beta_sync(gateway: Gateway, fake):
    fake.reset(prime_script())
    message = client(gateway).beta.messages.create(
        model="databricks-claude-sonnet-4-5",
        max_tokens=4096,
        betas=["code-execution-2025-08-25"],
        tools=CODE_EXECUTION,
        messages=[{"role": "user", "content": SEED}],
    )
    intro, call, result, answer = message.content
    assert isinstance(intro, BetaTextBlock) and intro.text == "I'll compute it."
    assert isinstance(call, BetaServerToolUseBlock) and call.name == "bash_code_execution"
    assert call.id.startswith("srvtoolu_") and call.input == {"command": PRIME_SCRIPT}
    assert isinstance(result, BetaBashCodeExecutionToolResultBlock) and result.tool_use_id == call.id
    assert isinstance(result.content, BetaBashCodeExecutionResultBlock)
    assert result.content.stdout == "7919\n" and result.content.return_code == 0 and result.content.content == []
    assert isinstance(answer, BetaTextBlock) and answer.text == "The 1000th prime is 7919."
    assert message.stop_reason == "end_turn"
    assert message.container is not None and message.container.id.startswith("container_")
    assert message.usage.input_tokens > 0 and message.usage.output_tokens > 0
    assert message.usage.server_tool_use.model_extra["code_execution_requests"] == 1
    assert message._request_id and message._request_id.startswith("req_")

    # Upstream saw only plain function tools, the client's own token, and the command's output.
    first, second = fake.chat_requests
    assert {t["type"] for t in first["tools"]} == {"function"}
    assert {t["function"]["name"] for t in first["tools"]} == {"bash_code_execution", "text_editor_code_execution"}
    assert fake.requests[0].headers["authorization"] == f"Bearer {CLIENT_KEY}"
    assert second["messages"][-1]["role"] == "tool" and "7919" in second["messages"][-1]["content"]


def test_seed_case_raw_json_over_http(gateway: Gateway, fake):
    fake.reset(prime_script())
    body = {
        "model": "databricks-claude-sonnet-4-5",
        "max_tokens": 4096,
        "tools": CODE_EXECUTION,
        "messages": [{"role": "user", "content": SEED}],
    }
    headers = {
        "x-api-key": CLIENT_KEY,
        "anthropic-version": "2023-06-01",
        "anthropic-beta": "code-execution-2025-08-25",
        "content-type": "application/json",
    }
    response = httpx.post(f"{gateway.url}/v1/messages?beta=true", content=orjson.dumps(body), headers=headers)
    assert response.status_code == 200, response.text
    assert response.headers["request-id"].startswith("req_")
    message = response.json()
    assert set(message) >= {"id", "type", "role", "model", "content", "stop_reason", "stop_sequence", "usage"}
    assert message["type"] == "message" and message["role"] == "assistant"
    assert message["model"] == "databricks-claude-sonnet-4-5"
    assert [b["type"] for b in message["content"]] == [
        "text",
        "server_tool_use",
        "bash_code_execution_tool_result",
        "text",
    ]
    result = message["content"][2]
    assert result["content"] == {
        "type": "bash_code_execution_result",
        "stdout": "7919\n",
        "stderr": "",
        "return_code": 0,
        "content": [],
    }
    assert message["container"]["id"].startswith("container_") and message["container"]["expires_at"].endswith("Z")


async def test_async_client_ga_namespace(gateway: Gateway, fake):
    fake.reset(
        [
            Turn.tool_call("bash_code_execution", command="echo $((6*7)); echo oops >&2; exit 3"),
            Turn.text("It failed with 3."),
        ]
    )
    async with anthropic.AsyncAnthropic(base_url=gateway.url, api_key=CLIENT_KEY, max_retries=0) as aclient:
        message = await aclient.messages.create(
            model="m", max_tokens=512, tools=CODE_EXECUTION, messages=[{"role": "user", "content": "go"}]
        )
    call, result, text = message.content
    assert isinstance(call, ServerToolUseBlock) and isinstance(result, BashCodeExecutionToolResultBlock)
    assert isinstance(result.content, BashCodeExecutionResultBlock)
    assert (result.content.stdout, result.content.stderr, result.content.return_code) == ("42\n", "oops\n", 3)
    assert isinstance(text, TextBlock)


def test_streaming_get_final_message_matches_json(gateway: Gateway, fake):
    fake.reset(prime_script())
    with client(gateway).messages.stream(
        model="m", max_tokens=4096, tools=CODE_EXECUTION, messages=[{"role": "user", "content": SEED}]
    ) as stream:
        event_types = [event.type for event in stream]
        final = stream.get_final_message()
    assert event_types[0] == "message_start" and event_types[-1] == "message_stop"
    _intro, call, result, answer = final.content
    assert isinstance(call, ServerToolUseBlock) and call.input == {"command": PRIME_SCRIPT}
    assert isinstance(result, BashCodeExecutionToolResultBlock) and result.content.stdout == "7919\n"
    assert isinstance(answer, TextBlock) and answer.text == "The 1000th prime is 7919."
    assert final.stop_reason == "end_turn" and final.container is not None
    assert final.usage.output_tokens > 0
    assert fake.chat_requests[0]["stream"] is True


def test_raw_sse_has_event_lines(gateway: Gateway, fake):
    fake.reset([Turn.text("hello there")])
    body = {"model": "m", "max_tokens": 50, "stream": True, "messages": [{"role": "user", "content": "hi"}]}
    headers = {"x-api-key": CLIENT_KEY, "anthropic-version": "2023-06-01"}
    with httpx.stream("POST", f"{gateway.url}/v1/messages", json=body, headers=headers) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        raw = response.read().decode()
    frames = [f for f in raw.split("\n\n") if f.strip()]
    names = [f.split("\n")[0] for f in frames]
    assert names[0] == "event: message_start" and names[-1] == "event: message_stop"
    for frame in frames:
        event_line, data_line = frame.split("\n")
        assert orjson.loads(data_line.removeprefix("data: "))["type"] == event_line.removeprefix("event: ")


def test_container_reuse_keeps_files_and_other_key_is_refused(gateway: Gateway, fake):
    fake.reset(
        [
            Turn.tool_call("text_editor_code_execution", command="create", path="notes.txt", file_text="kept\n"),
            Turn.text("saved"),
            Turn.tool_call("bash_code_execution", command="cat notes.txt"),
            Turn.text("read"),
        ]
    )
    sdk = client(gateway)
    first = sdk.messages.create(
        model="m", max_tokens=100, tools=CODE_EXECUTION, messages=[{"role": "user", "content": "save"}]
    )
    assert first.content[1].content.type == "text_editor_code_execution_create_result"
    second = sdk.messages.create(
        model="m",
        max_tokens=100,
        tools=CODE_EXECUTION,
        container=first.container.id,
        messages=[{"role": "user", "content": "read"}],
    )
    assert second.container.id == first.container.id
    assert second.content[1].content.stdout == "kept\n"

    with pytest.raises(anthropic.NotFoundError) as refused:
        client(gateway, OTHER_KEY).messages.create(
            model="m",
            max_tokens=100,
            tools=CODE_EXECUTION,
            container=first.container.id,
            messages=[{"role": "user", "content": "steal"}],
        )
    assert refused.value.body["error"]["type"] == "not_found_error"
    with pytest.raises(anthropic.NotFoundError):
        sdk.messages.create(
            model="m",
            max_tokens=100,
            tools=CODE_EXECUTION,
            container="container_011CdoesNotExist",
            messages=[{"role": "user", "content": "x"}],
        )


def test_client_tool_comes_back_as_tool_use(gateway: Gateway, fake):
    fake.reset([Turn.tool_call("get_weather", city="Paris")])
    message = client(gateway).messages.create(
        model="m",
        max_tokens=100,
        tools=[
            *CODE_EXECUTION,
            {"name": "get_weather", "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}}},
        ],
        messages=[{"role": "user", "content": "weather?"}],
    )
    (call,) = message.content
    assert isinstance(call, ToolUseBlock) and call.input == {"city": "Paris"}
    assert message.stop_reason == "tool_use"


def test_iteration_cap_pauses_and_continuation_finishes(gateway: Gateway, fake):
    fake.reset([Turn.tool_call("bash_code_execution", command=f"echo {i}") for i in range(3)] + [Turn.text("all done")])
    sdk = client(gateway)
    messages = [{"role": "user", "content": "loop"}]
    paused = sdk.messages.create(model="m", max_tokens=100, tools=CODE_EXECUTION, messages=messages)
    assert paused.stop_reason == "pause_turn"
    assert [b.content.stdout for b in paused.content if b.type == "bash_code_execution_tool_result"] == [
        "0\n",
        "1\n",
        "2\n",
    ]
    resumed = sdk.messages.create(
        model="m",
        max_tokens=100,
        tools=CODE_EXECUTION,
        container=paused.container.id,
        messages=[*messages, {"role": "assistant", "content": [b.to_dict() for b in paused.content]}],
    )
    assert resumed.stop_reason == "end_turn" and resumed.content[-1].text == "all done"


def test_unsupported_server_tool_is_a_clear_400(gateway: Gateway, fake):
    with pytest.raises(anthropic.BadRequestError) as error:
        client(gateway).messages.create(
            model="m",
            max_tokens=100,
            tools=[{"type": "web_search_20250305", "name": "web_search"}],
            messages=[{"role": "user", "content": "x"}],
        )
    assert error.value.body["error"]["type"] == "invalid_request_error"
    assert "web_search_20250305" in error.value.body["error"]["message"]


def test_upstream_errors_keep_their_message_and_429_is_retried(gateway: Gateway, fake):
    fake.reset([Turn.error(429, "slow down", retry_after=0.05), Turn.text("after retry")])
    message = client(gateway).messages.create(model="m", max_tokens=10, messages=[{"role": "user", "content": "x"}])
    assert message.content[0].text == "after retry"

    fake.reset([Turn.error(400, "Input is too long for requested model.", code="INVALID_PARAMETER_VALUE")])
    with pytest.raises(anthropic.BadRequestError) as error:
        client(gateway).messages.create(model="m", max_tokens=10, messages=[{"role": "user", "content": "x"}])
    assert "Input is too long for requested model." in error.value.body["error"]["message"]


def test_missing_key_is_authentication_error(gateway: Gateway, fake):
    response = httpx.post(
        f"{gateway.url}/v1/messages",
        json={"model": "m", "max_tokens": 1, "messages": [{"role": "user", "content": "x"}]},
        headers={"anthropic-version": "2023-06-01"},
    )
    assert response.status_code == 401
    assert response.json()["error"]["type"] == "authentication_error"
    assert response.json()["request_id"] == response.headers["request-id"]


def test_mixed_batch_defers_the_server_call_until_the_client_answers(gateway: Gateway, fake):
    weather = {"name": "get_weather", "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}}}
    tools = [*CODE_EXECUTION, weather]
    fake.reset(
        [
            Turn.tool_calls(
                ("bash_code_execution", '{"command": "echo deferred"}'), ("get_weather", '{"city": "Oslo"}')
            ),
            Turn.text("Oslo is cold and the command ran."),
        ]
    )
    sdk = client(gateway)
    messages = [{"role": "user", "content": "weather and a command"}]
    first = sdk.messages.create(model="m", max_tokens=100, tools=tools, messages=messages)
    assert first.stop_reason == "tool_use"
    server_call, client_call = first.content
    assert isinstance(server_call, ServerToolUseBlock) and isinstance(client_call, ToolUseBlock)

    second = sdk.messages.create(
        model="m",
        max_tokens=100,
        tools=tools,
        container=first.container.id,
        messages=[
            *messages,
            {"role": "assistant", "content": [b.to_dict() for b in first.content]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": client_call.id, "content": "-3C"}]},
        ],
    )
    result, answer = second.content
    assert isinstance(result, BashCodeExecutionToolResultBlock) and result.tool_use_id == server_call.id
    assert result.content.stdout == "deferred\n"
    assert isinstance(answer, TextBlock) and second.stop_reason == "end_turn"
    tool_messages = [m for m in fake.chat_requests[-1]["messages"] if m["role"] == "tool"]
    assert [m["tool_call_id"] for m in tool_messages] == [server_call.id, client_call.id]


def test_streaming_upstream_refusal_before_output_is_a_real_http_error(gateway: Gateway, fake):
    fake.reset([Turn.error(400, "Bad tool schema", code="INVALID_PARAMETER_VALUE")])
    with (
        pytest.raises(anthropic.BadRequestError) as error,
        client(gateway).messages.stream(model="m", max_tokens=10, messages=[{"role": "user", "content": "x"}]) as s,
    ):
        s.get_final_message()
    assert "Bad tool schema" in error.value.body["error"]["message"]


def test_streaming_error_after_output_is_an_error_event(gateway: Gateway, fake):
    fake.reset([Turn.text("partial answer").but(stream_error={"error": {"message": "boom", "code": 500}})])
    with (
        pytest.raises(anthropic.APIStatusError) as error,
        client(gateway).messages.stream(model="m", max_tokens=10, messages=[{"role": "user", "content": "x"}]) as s,
    ):
        s.get_final_message()
    assert "boom" in str(error.value)


def test_streamed_invalid_arguments_never_break_the_sdk(gateway: Gateway, fake):
    fake.reset(
        [
            Turn.tool_call("bash_code_execution", '{"command": "echo hi", oops}').but(chunk_chars=4),
            Turn.text("let me fix that"),
        ]
    )
    with client(gateway).messages.stream(
        model="m", max_tokens=100, tools=CODE_EXECUTION, messages=[{"role": "user", "content": "go"}]
    ) as stream:
        final = stream.get_final_message()  # the SDK parses every input_json_delta; none may be invalid
    call, result, text = final.content
    assert isinstance(call, ServerToolUseBlock)
    assert result.content.type == "bash_code_execution_tool_result_error"
    assert result.content.error_code == "invalid_tool_input"
    assert text.text == "let me fix that"
