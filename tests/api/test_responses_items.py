"""Responses items ↔ the neutral conversation: ids map both ways without a table, input is brought to one
stored form, and a conversation of items becomes the messages the engine runs."""

from __future__ import annotations

import pytest

from execbridge.api.responses_items import (
    call_id_of,
    check_answered,
    ci_id_of,
    item_id,
    normalize_input,
    server_id_of,
    to_conversation,
    tool_id_of_call,
)
from execbridge.errors import InvalidRequest
from execbridge.types import CommandOutcome, Image, Message, ServerToolResult, Text, ToolCall, ToolResult


def test_ids_map_both_ways():
    server, client = "srvtoolu_011CabcDEF", "toolu_011Cxyz"
    assert ci_id_of(server) == "ci_011CabcDEF" and server_id_of(ci_id_of(server)) == server
    assert call_id_of(server) == "call_011CabcDEF" and server_id_of(call_id_of(server)) == server
    assert call_id_of(client) == "call_011Cxyz" and tool_id_of_call(call_id_of(client)) == client
    assert item_id("fc", client) == "fc_011Cxyz" and item_id("sho", server) == "sho_011CabcDEF"
    # Ids from elsewhere (a client replaying another provider's items) pass through unchanged.
    assert tool_id_of_call("fn-42") == "fn-42" and server_id_of("other") == "other"


def test_a_string_input_is_one_user_message():
    (item,) = normalize_input("hello")
    assert item["type"] == "message" and item["role"] == "user" and item["id"].startswith("msg_")
    assert item["content"] == [{"type": "input_text", "text": "hello"}]


def test_items_get_ids_and_one_content_form():
    items = normalize_input(
        [
            {"role": "developer", "content": "Be brief."},
            {"role": "assistant", "content": "Earlier answer."},
            {"type": "function_call", "call_id": "call_1", "name": "f", "arguments": "{}"},
            {"type": "function_call_output", "call_id": "call_1", "output": "done"},
            {"role": "user", "content": [{"type": "input_image", "image_url": "data:image/png;base64,AAAA"}]},
        ]
    )
    assert [i["id"][:3] for i in items] == ["msg", "msg", "fc_", "fco", "msg"]
    assert items[1]["content"] == [{"type": "output_text", "text": "Earlier answer."}]
    assert items[2]["id"] == "fc_1"  # derived from the call id, as the gateway's own are
    assert items[4]["content"][0]["detail"] == "auto"


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (42, "input: expected a string or an array of items, got number"),
        ([{"type": "web_search_call"}], "input.0.type: item type 'web_search_call' is not supported"),
        ([{"role": "robot", "content": "x"}], "input.0.role: expected one of"),
        ([{"type": "function_call", "name": "f", "arguments": "{}"}], "input.0.call_id: expected a string"),
        ([{"role": "user", "content": [{"type": "input_file", "file_id": "f"}]}], "input.0.content.0.type"),
        ([{"role": "user", "content": [{"type": "input_image", "file_id": "f"}]}], "input.0.content.0.image_url"),
    ],
)
def test_bad_input_names_the_field(value, message):
    with pytest.raises(InvalidRequest) as refused:
        normalize_input(value)
    assert refused.value.message.startswith(message)


def test_a_conversation_of_items_becomes_messages():
    items = [
        *normalize_input([{"role": "system", "content": "Use metric units."}, {"role": "user", "content": "Go."}]),
        {
            "type": "code_interpreter_call",
            "id": "ci_A",
            "status": "completed",
            "code": "print(1)",
            "container_id": "cntr_1",
            "outputs": [{"type": "image", "url": "data:…"}, {"type": "logs", "logs": "1\n"}],
        },
        {
            "type": "shell_call",
            "id": "sh_B",
            "call_id": "call_B",
            "status": "completed",
            "action": {"commands": ["ls", "pwd"]},
            "environment": {"type": "container_reference", "container_id": "cntr_2"},
        },
        {
            "type": "shell_call_output",
            "id": "sho_B",
            "call_id": "call_B",
            "output": [
                {"stdout": "a\n", "stderr": "", "outcome": {"type": "exit", "exit_code": 0}},
                {"stdout": "/mnt/data\n", "stderr": "", "outcome": {"type": "exit", "exit_code": 2}},
            ],
        },
        {"type": "function_call", "id": "fc_C", "call_id": "call_C", "name": "f", "arguments": '{"x": 1}'},
        {"type": "function_call_output", "id": "fco_1", "call_id": "call_C", "output": "ok"},
    ]
    conversation = to_conversation(items)
    assert conversation.system == ["Use metric units."]
    assert conversation.container_id == "cntr_2"  # the latest call's
    user, assistant, results = conversation.messages
    assert user == Message("user", (Text("Go."),))
    assert assistant.parts == (
        ToolCall("srvtoolu_A", "code_execution", {"code": "print(1)"}, server=True),
        ServerToolResult("srvtoolu_A", "code_execution", CommandOutcome("1\n", "", 0)),
        ToolCall("srvtoolu_B", "bash_code_execution", {"command": "ls\npwd"}, server=True),
        ServerToolResult("srvtoolu_B", "bash_code_execution", CommandOutcome("a\n/mnt/data\n", "", 2)),
        ToolCall("toolu_C", "f", {"x": 1}),
    )
    assert results == Message("user", (ToolResult("toolu_C", (Text("ok"),)),))


def test_a_replayed_call_without_outputs_is_not_run_again_but_a_deferred_one_is():
    ran = {"type": "code_interpreter_call", "id": "ci_A", "status": "completed", "code": "x", "container_id": "c"}
    deferred = {**ran, "id": "ci_B", "status": "incomplete", "outputs": None}
    (message,) = to_conversation([{**ran, "outputs": None}, deferred]).messages
    first_result = message.parts[1]
    assert isinstance(first_result, ServerToolResult) and "not included" in first_result.outcome.stdout
    assert message.parts[2] == ToolCall("srvtoolu_B", "code_execution", {"code": "x"}, server=True)
    assert len(message.parts) == 3  # no result for the deferred call: the engine runs it first


def test_images_by_url_and_by_value():
    items = normalize_input(
        [
            {
                "role": "user",
                "content": [
                    {"type": "input_image", "image_url": "https://example.com/a.png"},
                    {"type": "input_image", "image_url": "data:image/png;base64,iVBOR"},
                ],
            }
        ]
    )
    (message,) = to_conversation(items).messages
    assert message.parts == (Image(url="https://example.com/a.png"), Image(media_type="image/png", data="iVBOR"))


def test_a_function_call_without_its_output_is_refused():
    call = {"type": "function_call", "id": "fc_1", "call_id": "call_1", "name": "f", "arguments": "{}"}
    with pytest.raises(InvalidRequest) as refused:
        check_answered([call, *normalize_input("and now?")])
    assert refused.value.message == "No tool output found for function call call_1." and refused.value.param == "input"
    check_answered([call, {"type": "function_call_output", "call_id": "call_1", "output": "x"}])
