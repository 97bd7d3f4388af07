"""The Responses request parser and the item conversion, fuzzed: whatever arrives, the answer is a
request the engine can run or a 400 naming the field (``InvalidRequest``), never another exception
(which the app would answer 500)."""

from __future__ import annotations

from typing import Any

import orjson
from hypothesis import given
from hypothesis import strategies as st

from execbridge.api.responses_items import check_answered, to_conversation
from execbridge.api.responses_request import generation_request, parse_responses_request
from execbridge.errors import InvalidRequest
from execbridge.types import GenerationRequest

from .strategies import ANY

ITEM_TYPES = [
    "message", "function_call", "function_call_output", "code_interpreter_call", "shell_call",
    "shell_call_output", "reasoning", "item_reference", "nonsense",
]  # fmt: skip
ITEM_KEYS = ["role", "content", "id", "call_id", "name", "arguments", "output", "code", "container_id", "outputs",
             "status", "action", "environment", "summary"]  # fmt: skip
SHAPED = ("content", "action", "output", "outputs")
PART = st.fixed_dictionaries(
    {"type": st.sampled_from(["input_text", "output_text", "input_image", "input_file", "refusal"]) | ANY},
    optional={"text": st.text(max_size=8) | ANY, "image_url": st.text(max_size=12) | ANY, "refusal": ANY},
)
ITEM = st.fixed_dictionaries(
    {},
    optional={
        "type": st.sampled_from(ITEM_TYPES) | ANY,
        "role": st.sampled_from(["user", "assistant", "system", "developer", "tool"]) | ANY,
        "content": st.text(max_size=8) | st.lists(PART, max_size=3) | ANY,
        "action": st.fixed_dictionaries({"commands": st.lists(st.text(max_size=6), max_size=2) | ANY}) | ANY,
        "output": st.text(max_size=6) | st.lists(ANY, max_size=2) | ANY,
        "outputs": st.none() | st.lists(ANY, max_size=2) | ANY,
        **{key: st.text(max_size=8) | ANY for key in ITEM_KEYS if key not in SHAPED},
    },
)
TOOL = st.fixed_dictionaries(
    {"type": st.sampled_from(["function", "code_interpreter", "shell", "web_search"]) | ANY},
    optional={
        "name": st.text(max_size=8) | ANY,
        "parameters": ANY,
        "container": st.sampled_from([{"type": "auto"}, "cntr_x", {"type": "auto", "file_ids": ["f"]}]) | ANY,
        "environment": st.sampled_from([None, {"type": "container_auto"}, {"type": "local"}]) | ANY,
    },
)
REQUEST = st.fixed_dictionaries(
    {"model": st.text(max_size=6) | ANY},
    optional={
        "input": st.text(max_size=8) | st.lists(ITEM, max_size=4) | ANY,
        "tools": st.lists(TOOL, max_size=3) | ANY,
        "tool_choice": st.sampled_from(["auto", "none", "required", {"type": "shell"}, {"type": "function"}]) | ANY,
        "include": st.lists(st.sampled_from(["code_interpreter_call.outputs", "x"]), max_size=2) | ANY,
        "instructions": ANY,
        "previous_response_id": ANY,
        "max_output_tokens": ANY,
        "temperature": ANY,
        "top_p": ANY,
        "reasoning": ANY,
        "text": ANY,
        "metadata": ANY,
        "parallel_tool_calls": ANY,
        "store": ANY,
        "stream": ANY,
    },
)


def _parse(body: Any) -> None:
    try:
        body = orjson.loads(orjson.dumps(body))
    except orjson.JSONEncodeError:
        return
    try:
        parsed = parse_responses_request(body)
        check_answered(parsed.input_items)
        request = generation_request(parsed, to_conversation(parsed.input_items), None)
        assert isinstance(request, GenerationRequest)
        orjson.dumps(parsed.input_items)  # what the store keeps
    except InvalidRequest as exc:
        assert exc.message


@given(ANY)
def test_any_json_is_parsed_or_refused_with_a_400(body: Any) -> None:
    _parse(body)


@given(REQUEST)
def test_almost_right_requests_are_parsed_or_refused_with_a_400(body: dict[str, Any]) -> None:
    _parse(body)
