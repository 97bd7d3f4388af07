"""The official SDK → a real ``execbridge serve --upstream-format anthropic`` → LiteLLM's real proxy,
through its Anthropic Messages route (``/v1/messages``), → llama-cpp-python's server (SmolLM2-135M).

What is tested is that a real server's ``/v1/messages`` validation accepts every history shape the
native route sends (server calls and results as ``tool_use``/``tool_result``, client tools beside
server ones, deferred calls, a continuation after ``pause_turn``), streamed and not, that its
``count_tokens`` answers through the gateway, and that the upstream's stream is decoded. As in
``test_llama_cpp.py``, the model is tiny: assertions are about the protocol, never about answers.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import pytest
from anthropic.types.beta import BetaMessage

from execbridge.ids import server_tool_use_id

from .conftest import MODEL, Gateway, serve_gateway

pytestmark = pytest.mark.real_server

PYTHON_TOOL = [{"type": "code_execution_20250522", "name": "code_execution"}]
WEATHER = {
    "name": "get_weather",
    "description": "The weather in a city.",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}
MAX_TOKENS = 48
MODEL_OUTCOMES = {"code_execution_result", "execution_time_exceeded", "invalid_tool_input"}
both = pytest.mark.parametrize("stream", [False, True], ids=["json", "sse"])


def anthropic_base(litellm_v1: str) -> str:
    return litellm_v1.removesuffix("/v1")  # the native route's base is the part before /v1/messages


@pytest.fixture(scope="module")
def native_gateway(litellm_proxy: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    data_dir = tmp_path_factory.mktemp("gateway-litellm-native")
    with serve_gateway(anthropic_base(litellm_proxy), data_dir, EXECBRIDGE_UPSTREAM_FORMAT="anthropic") as served:
        yield served


@pytest.fixture
def client(native_gateway: Gateway) -> Iterator[anthropic.Anthropic]:
    with anthropic.Anthropic(base_url=native_gateway.url, api_key="sk-local", max_retries=0, timeout=300) as sdk:
        yield sdk


def create(sdk: anthropic.Anthropic, stream: bool, **request: Any) -> BetaMessage:
    request = {"model": MODEL, "max_tokens": MAX_TOKENS, "betas": ["code-execution-2025-08-25"], **request}
    if not stream:
        return sdk.beta.messages.create(**request)
    with sdk.beta.messages.stream(**request) as events:
        return events.get_final_message()


def history(message: BetaMessage) -> list[dict[str, Any]]:
    return [block.model_dump(mode="json", exclude_none=True) for block in message.content]


def outcomes(message: BetaMessage) -> set[str]:
    """What each call's result was: the sandbox's answer, or the model's own fault (bad arguments)."""
    results = [b.content for b in message.content if b.type == "code_execution_tool_result"]
    return {c.type if c.type == "code_execution_result" else c.error_code for c in results}


@both
def test_forced_python_call_runs_in_the_sandbox(client, stream):
    message = create(
        client,
        stream,
        tools=PYTHON_TOOL,
        tool_choice={"type": "tool", "name": "code_execution"},
        messages=[{"role": "user", "content": "Print the sum of 2 and 3 with Python."}],
    )
    call, result = message.content[0], message.content[1]
    assert call.type == "server_tool_use" and call.name == "code_execution"
    assert result.type == "code_execution_tool_result" and result.tool_use_id == call.id
    assert outcomes(message) <= MODEL_OUTCOMES, message.model_dump_json()
    assert message.stop_reason in ("end_turn", "max_tokens")
    assert message.usage.output_tokens > 0


@both
def test_server_and_client_calls_in_one_batch(client, stream):
    """A deferred server call runs first; LiteLLM then takes both results in one user message."""
    server = {"type": "server_tool_use", "id": server_tool_use_id(), "name": "code_execution"}
    server["input"] = {"code": "print('deferred')"}
    weather = {"type": "tool_use", "id": "toolu_weather1", "name": "get_weather", "input": {"city": "Oslo"}}
    message = create(
        client,
        stream,
        tools=[*PYTHON_TOOL, WEATHER],
        messages=[
            {"role": "user", "content": "Run the code and get the weather."},
            {"role": "assistant", "content": [{"type": "text", "text": "Both at once."}, server, weather]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_weather1", "content": "rain"}]},
        ],
    )
    result = message.content[0]
    assert result.type == "code_execution_tool_result" and result.tool_use_id == server["id"]
    assert result.content.stdout == "deferred\n"
    assert message.stop_reason in ("end_turn", "max_tokens", "tool_use")


@both
def test_continuation_after_pause_turn(litellm_proxy: str, tmp_path: Path, stream: bool) -> None:
    with (
        serve_gateway(
            anthropic_base(litellm_proxy),
            tmp_path,
            EXECBRIDGE_UPSTREAM_FORMAT="anthropic",
            EXECBRIDGE_MAX_ITERATIONS="1",
        ) as gateway,
        anthropic.Anthropic(base_url=gateway.url, api_key="sk-local", max_retries=0, timeout=300) as sdk,
    ):
        question = {"role": "user", "content": "Print 6 times 7 with Python."}
        paused = create(
            sdk, stream, tools=PYTHON_TOOL, tool_choice={"type": "tool", "name": "code_execution"}, messages=[question]
        )
        assert paused.stop_reason == "pause_turn"
        resumed = create(
            sdk,
            stream,
            tools=PYTHON_TOOL,
            container=paused.container.id,
            messages=[question, {"role": "assistant", "content": history(paused)}],
        )
        assert resumed.stop_reason in ("end_turn", "max_tokens", "pause_turn")


def test_count_tokens_is_litellms_own_count(client):
    messages = [{"role": "user", "content": "How many tokens is this?"}]
    counted = client.messages.with_raw_response.count_tokens(model=MODEL, messages=messages, tools=PYTHON_TOOL)
    assert counted.headers["execbridge-token-count"] == "upstream"
    # LiteLLM (1.x) counts the messages only: it leaves out the tools and the system prompt it was sent
    # (docs/protocol.md, "count_tokens").
    assert counted.parse().input_tokens > 0
