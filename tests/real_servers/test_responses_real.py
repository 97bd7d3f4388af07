"""OpenAI's Responses API against a real upstream: the official ``openai`` SDK → a real ``execbridge
serve`` → llama-cpp-python's server (SmolLM2-135M), directly and through LiteLLM's proxy.

As for the Messages tests beside it, the model is tiny: assertions are about the protocol (the SDK
parses everything, items of the right types, calls that really ran, conversations that continue), never
about answers.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import openai
import pytest
from openai.types.responses import Response

from .conftest import MODEL, Gateway

pytestmark = pytest.mark.real_server

CODE_INTERPRETER = [{"type": "code_interpreter", "container": {"type": "auto"}}]
MAX_OUTPUT_TOKENS = 48
both = pytest.mark.parametrize("stream", [False, True], ids=["json", "sse"])


@pytest.fixture
def client(gateway: Gateway) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=f"{gateway.url}/v1", api_key="sk-local", max_retries=0, timeout=300) as sdk:
        yield sdk


def create(sdk: openai.OpenAI, stream: bool, **request: Any) -> Response:
    request = {"model": MODEL, "max_output_tokens": MAX_OUTPUT_TOKENS, **request}
    if not stream:
        return sdk.responses.create(**request)
    with sdk.responses.stream(**request) as stream:
        events = list(stream)
        assert events[0].type == "response.created"
        if events[-1].type == "response.completed":
            return stream.get_final_response()
    # The SDK's helper wants response.completed; a response cut by max_output_tokens ends incomplete.
    assert events[-1].type == "response.incomplete"
    return events[-1].response


@both
def test_forced_code_interpreter_call_runs_and_the_conversation_continues(client, stream):
    first = create(
        client,
        stream,
        input="Print the sum of 2 and 3 with Python.",
        tools=CODE_INTERPRETER,
        tool_choice={"type": "code_interpreter"},
        include=["code_interpreter_call.outputs"],
    )
    call = first.output[0]
    assert call.type == "code_interpreter_call" and call.container_id.startswith("cntr_")
    assert call.status in ("completed", "failed") and call.outputs is not None
    assert first.status in ("completed", "incomplete") and first.usage is not None  # streamed: what the server counts
    second = create(client, stream, previous_response_id=first.id, input="Thanks. Say done.", tools=CODE_INTERPRETER)
    assert second.previous_response_id == first.id and second.status in ("completed", "incomplete")
    assert client.responses.retrieve(second.id).id == second.id


@both
def test_forced_function_call_ends_the_response(client, stream):
    weather = {
        "type": "function",
        "name": "get_weather",
        "description": "The weather in a city.",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    }
    response = create(
        client,
        stream,
        input="What is the weather in Paris?",
        tools=[weather],
        tool_choice={"type": "function", "name": "get_weather"},
    )
    (call,) = [item for item in response.output if item.type == "function_call"]
    assert call.name == "get_weather" and call.call_id.startswith("call_")
    answered = create(
        client,
        stream,
        previous_response_id=response.id,
        input=[{"type": "function_call_output", "call_id": call.call_id, "output": "sunny"}],
        tools=[weather],
    )
    assert answered.status in ("completed", "incomplete")
