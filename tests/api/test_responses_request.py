"""``POST /v1/responses`` bodies: what is accepted, what it means for the engine, and errors that name
the field (OpenAI's ``param``)."""

from __future__ import annotations

import pytest

from execbridge.api.responses_items import to_conversation
from execbridge.api.responses_request import (
    DEFAULT_MAX_OUTPUT_TOKENS,
    ContainerChoice,
    generation_request,
    parse_responses_request,
)
from execbridge.errors import InvalidRequest
from execbridge.types import CodeExecutionTool, Text, ToolChoice

CI = {"type": "code_interpreter", "container": {"type": "auto", "file_ids": ["file-a"], "memory_limit": "4g"}}
FN = {"type": "function", "name": "f", "parameters": {"type": "object", "properties": {}}}


def test_a_full_request_becomes_the_engine_request():
    parsed = parse_responses_request(
        {
            "model": "gpt-5",
            "input": "hi",
            "instructions": "Be brief.",
            "tools": [CI, {"type": "shell"}, FN],
            "tool_choice": "required",
            "parallel_tool_calls": False,
            "temperature": 0.5,
            "top_p": 0.9,
            "max_output_tokens": 300,
            "reasoning": {"effort": "low"},
            "include": ["code_interpreter_call.outputs"],
            "store": False,
            "metadata": {"k": "v"},
        }
    )
    assert parsed.container == ContainerChoice(None, ("file-a",), "4g")
    assert parsed.include_outputs and not parsed.store
    request = generation_request(parsed, to_conversation(parsed.input_items), "container_1", placed=["/mnt/data/x"])
    assert request.system == "Be brief." and request.max_tokens == 300 and request.container_id == "container_1"
    assert request.tools[0] == CodeExecutionTool("openai_python_shell") and request.client_tools[0].name == "f"
    assert request.tool_choice == ToolChoice("any", disable_parallel_tool_use=True)
    assert (request.sampling.temperature, request.sampling.top_p, request.sampling.reasoning_effort) == (
        0.5,
        0.9,
        "low",
    )
    (message,) = request.messages
    assert message.parts == (Text("[Files the user provided, in the container: /mnt/data/x]"), Text("hi"))


def test_defaults():
    parsed = parse_responses_request({"model": "m", "input": "hi"})
    request = generation_request(parsed, to_conversation(parsed.input_items), None)
    assert request.max_tokens == DEFAULT_MAX_OUTPUT_TOKENS and request.tools == () and request.tool_choice is None
    assert parsed.store and not parsed.stream and parsed.parallel_tool_calls and parsed.tool_choice_echo == "auto"


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"input": "hi"}, "model"),
        ({"model": "m"}, "input"),
        ({"model": "m", "input": "hi", "frequency": 1}, "frequency"),
        ({"model": "m", "input": "hi", "temperature": 2.5}, "temperature"),
        ({"model": "m", "input": "hi", "tools": [{"type": "web_search"}]}, "tools.0.type"),
        (
            {"model": "m", "input": "hi", "tools": [{"type": "shell", "environment": {"type": "local"}}]},
            "tools.0.environment",
        ),
        ({"model": "m", "input": "hi", "tools": [{"type": "code_interpreter"}]}, "tools.0.container"),
        (
            {"model": "m", "input": "hi", "tools": [{**CI, "container": {"type": "auto", "memory_limit": "2g"}}]},
            "tools.0.container.memory_limit",
        ),
        ({"model": "m", "input": "hi", "tools": [FN, FN]}, "tools"),
        ({"model": "m", "input": "hi", "tools": [{**FN, "name": "code_execution"}]}, "tools"),
        ({"model": "m", "input": "hi", "tool_choice": {"type": "function", "name": "g"}}, "tool_choice.name"),
        ({"model": "m", "input": "hi", "tool_choice": {"type": "code_interpreter"}}, "tool_choice"),
        ({"model": "m", "input": "hi", "include": ["everything"]}, "include.0"),
        ({"model": "m", "input": "hi", "text": {"format": {"type": "json_schema"}}}, "text.format"),
        ({"model": "m", "input": "hi", "background": True}, "background"),
        ({"model": "m", "input": "hi", "reasoning": {"effort": "huge"}}, "reasoning.effort"),
        ({"model": "m", "input": "hi", "max_output_tokens": 0}, "max_output_tokens"),
    ],
)
def test_errors_name_the_field(body, param):
    with pytest.raises(InvalidRequest) as refused:
        parse_responses_request(body)
    assert refused.value.param == param, refused.value.message


def test_tools_must_share_one_container():
    body = {
        "model": "m",
        "input": "hi",
        "tools": [
            {"type": "code_interpreter", "container": "cntr_a"},
            {"type": "shell", "environment": {"type": "container_reference", "container_id": "cntr_b"}},
        ],
    }
    with pytest.raises(InvalidRequest, match="same container"):
        parse_responses_request(body)


def test_input_may_be_left_out_when_continuing():
    parsed = parse_responses_request({"model": "m", "previous_response_id": "resp_1"})
    assert parsed.input_items == [] and parsed.previous_response_id == "resp_1"
