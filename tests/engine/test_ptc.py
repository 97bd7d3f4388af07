"""Which suspended cell a continuation answers, and what the model sees of programmatic calls (pure)."""

from __future__ import annotations

import pytest

from execbridge.engine.history import for_upstream
from execbridge.engine.ptc import find_answers, reply_text
from execbridge.errors import InvalidRequest
from execbridge.types import Image, Message, Text, ToolCall, ToolResult

CELL = ToolCall("srvtoolu_1", "code_execution", {"code": "await q({})"}, server=True)
LATER = ToolCall("srvtoolu_2", "bash_code_execution", {"command": "ls"}, server=True)
CALL_A = ToolCall("toolu_a", "q", {"k": 1}, caller="srvtoolu_1")
CALL_B = ToolCall("toolu_b", "q", {"k": 2}, caller="srvtoolu_1")


def result(tool_use_id: str, *content: Text | Image, is_error: bool = False) -> ToolResult:
    return ToolResult(tool_use_id, content, is_error)


def conversation(*answers: object) -> tuple[Message, ...]:
    return (
        Message("user", (Text("go"),)),
        Message("assistant", (Text("I'll query."), CELL, CALL_A, CALL_B, LATER)),
        Message("user", tuple(answers)),  # type: ignore[arg-type]
    )


def test_the_answers_name_their_cell_and_the_server_calls_deferred_after_it() -> None:
    found = find_answers(conversation(result("toolu_a", Text("x"), Text("y")), result("toolu_b", is_error=True)))
    assert found is not None
    assert (found.cell_id, dict(found.replies), found.deferred) == (
        "srvtoolu_1",
        {"toolu_a": "xy", "toolu_b": ""},
        (LATER,),
    )


def test_a_later_pause_finds_its_cell_in_an_earlier_turn() -> None:
    messages = (
        *conversation(result("toolu_a", Text("1")), result("toolu_b", Text("2"))),
        Message("assistant", (ToolCall("toolu_c", "q", {}, caller="srvtoolu_1"),)),
        Message("user", (result("toolu_c", Text("3")),)),
    )
    found = find_answers(messages)
    assert found is not None and found.cell_id == "srvtoolu_1" and dict(found.replies) == {"toolu_c": "3"}
    assert found.deferred == (LATER,)


def test_plain_conversations_answer_no_cell() -> None:
    direct = ToolCall("toolu_d", "lookup", {})
    assert find_answers((Message("assistant", (direct,)), Message("user", (result("toolu_d", Text("r")),)))) is None
    assert find_answers((Message("user", (Text("hi"),)),)) is None


@pytest.mark.parametrize(
    ("answers", "message"),
    [
        ((result("toolu_a", Text("1")), Text("and also")), "may hold only tool_result blocks"),
        ((result("toolu_a", Image("image/png", "AAAA")),), "must be text"),
    ],
)
def test_answers_anthropic_refuses(answers: tuple[object, ...], message: str) -> None:
    with pytest.raises(InvalidRequest, match=message):
        find_answers(conversation(*answers))


def test_reply_text_joins_text_blocks() -> None:
    assert reply_text(result("t", Text("a"), Text("b"))) == "ab"


def test_the_model_never_sees_programmatic_calls_or_their_results() -> None:
    messages = (
        *conversation(result("toolu_a", Text("1")), result("toolu_b", Text("2"))),
        Message("assistant", (ToolCall("toolu_c", "q", {}, caller="srvtoolu_1"),)),
        Message("user", (result("toolu_c", Text("3")),)),
    )
    assert for_upstream(messages) == [
        Message("user", (Text("go"),)),
        Message("assistant", (Text("I'll query."), CELL, LATER)),
    ]
