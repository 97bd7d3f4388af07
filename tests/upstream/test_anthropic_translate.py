"""Neutral turns → Anthropic Messages bodies: table-driven, no I/O."""

from __future__ import annotations

from typing import Any

import pytest

from execbridge.types import (
    CacheControl,
    Document,
    FunctionDef,
    Image,
    Message,
    Sampling,
    Text,
    Thinking,
    ThinkingConfig,
    ToolCall,
    ToolResult,
)
from execbridge.upstream.anthropic_translate import build_messages_payload, has_call_only_turn, to_messages
from execbridge.upstream.base import ChatTurn, FunctionChoice

THINK_A = Thinking("plan A", "sig-a")
THINK_B = Thinking("plan B", "sig-b")
CALL_A = ToolCall("srvtoolu_a", "bash_code_execution", {"command": "ls"}, server=True)
CALL_B = ToolCall("srvtoolu_b", "bash_code_execution", {"command": "pwd"}, server=True)
RESULT_A = ToolResult("srvtoolu_a", (Text("a.txt"),))
RESULT_B = ToolResult("srvtoolu_b", (Text("/workspace"),))


def user(*parts: Any) -> Message:
    return Message("user", parts)


def assistant(*parts: Any) -> Message:
    return Message("assistant", parts)


def roles(messages: list[dict[str, Any]]) -> list[str]:
    return [m["role"] for m in messages]


CASES = [
    (
        "the gateway's split turn becomes one assistant message per model turn, each with its thinking",
        [
            user(Text("go")),
            assistant(THINK_A, CALL_A, RESULT_A, THINK_B, CALL_B, RESULT_B, Thinking("end", "s"), Text("done")),
        ],
        [
            {"role": "user", "content": [{"type": "text", "text": "go"}]},
            {
                "role": "assistant",
                "content": [
                    {"type": "thinking", "thinking": "plan A", "signature": "sig-a"},
                    {"type": "tool_use", "id": "srvtoolu_a", "name": "bash_code_execution", "input": {"command": "ls"}},
                ],
            },
            {
                "role": "user",
                "content": [
                    {"type": "tool_result", "tool_use_id": "srvtoolu_a", "content": [{"type": "text", "text": "a.txt"}]}
                ],
            },
            {
                "role": "assistant",
                "content": [
                    {"type": "thinking", "thinking": "plan B", "signature": "sig-b"},
                    {
                        "type": "tool_use",
                        "id": "srvtoolu_b",
                        "name": "bash_code_execution",
                        "input": {"command": "pwd"},
                    },
                ],
            },
            {
                "role": "user",
                "content": [
                    {
                        "type": "tool_result",
                        "tool_use_id": "srvtoolu_b",
                        "content": [{"type": "text", "text": "/workspace"}],
                    }
                ],
            },
            {
                "role": "assistant",
                "content": [
                    {"type": "thinking", "thinking": "end", "signature": "s"},
                    {"type": "text", "text": "done"},
                ],
            },
        ],
    ),
    (
        "parallel calls of one turn keep their turn; results move after it, in order",
        [user(Text("go")), assistant(THINK_A, CALL_A, RESULT_A, CALL_B, RESULT_B)],
        [
            {"role": "user", "content": [{"type": "text", "text": "go"}]},
            {
                "role": "assistant",
                "content": [
                    {"type": "thinking", "thinking": "plan A", "signature": "sig-a"},
                    {"type": "tool_use", "id": "srvtoolu_a", "name": "bash_code_execution", "input": {"command": "ls"}},
                    {
                        "type": "tool_use",
                        "id": "srvtoolu_b",
                        "name": "bash_code_execution",
                        "input": {"command": "pwd"},
                    },
                ],
            },
            {
                "role": "user",
                "content": [
                    {
                        "type": "tool_result",
                        "tool_use_id": "srvtoolu_a",
                        "content": [{"type": "text", "text": "a.txt"}],
                    },
                    {
                        "type": "tool_result",
                        "tool_use_id": "srvtoolu_b",
                        "content": [{"type": "text", "text": "/workspace"}],
                    },
                ],
            },
        ],
    ),
    (
        "deferred server results join the client's own, results first, then its text",
        [
            user(Text("go")),
            assistant(Thinking("", data="opaque"), CALL_A, ToolCall("toolu_w", "weather", {"city": "Oslo"})),
            user(RESULT_A, Text("and?"), ToolResult("toolu_w", (Text("rain"),), is_error=True)),
        ],
        [
            {"role": "user", "content": [{"type": "text", "text": "go"}]},
            {
                "role": "assistant",
                "content": [
                    {"type": "redacted_thinking", "data": "opaque"},
                    {"type": "tool_use", "id": "srvtoolu_a", "name": "bash_code_execution", "input": {"command": "ls"}},
                    {"type": "tool_use", "id": "toolu_w", "name": "weather", "input": {"city": "Oslo"}},
                ],
            },
            {
                "role": "user",
                "content": [
                    {
                        "type": "tool_result",
                        "tool_use_id": "srvtoolu_a",
                        "content": [{"type": "text", "text": "a.txt"}],
                    },
                    {
                        "type": "tool_result",
                        "tool_use_id": "toolu_w",
                        "content": [{"type": "text", "text": "rain"}],
                        "is_error": True,
                    },
                    {"type": "text", "text": "and?"},
                ],
            },
        ],
    ),
    (
        "a continuation ends with the results, never with an assistant message",
        [user(Text("go")), assistant(CALL_A, RESULT_A, Text("next")), user(Text("more"))],
        [
            {"role": "user", "content": [{"type": "text", "text": "go"}]},
            {
                "role": "assistant",
                "content": [
                    {"type": "tool_use", "id": "srvtoolu_a", "name": "bash_code_execution", "input": {"command": "ls"}},
                    {"type": "text", "text": "next"},
                ],
            },
            {
                "role": "user",
                "content": [
                    {
                        "type": "tool_result",
                        "tool_use_id": "srvtoolu_a",
                        "content": [{"type": "text", "text": "a.txt"}],
                    },
                    {"type": "text", "text": "more"},
                ],
            },
        ],
    ),
    (
        "cache breakpoints, citations, images and documents are carried; blank text is not",
        [
            user(
                Text("q", CacheControl("ephemeral", "1h")),
                Text("  "),
                Image("image/png", "iVBOR", cache_control=CacheControl()),
                Image(url="https://x/i.png"),
                Document("application/pdf", data="JVBER", title="T", context="C", citations=True),
                Document(text="plain", cache_control=CacheControl()),
                Document(url="https://x/d.pdf"),
            ),
            assistant(Text("cited", citations=({"type": "char_location", "cited_text": "p"},))),
            user(ToolResult("toolu_1", (Text("r"),), cache_control=CacheControl())),
        ],
        [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "q", "cache_control": {"type": "ephemeral", "ttl": "1h"}},
                    {
                        "type": "image",
                        "source": {"type": "base64", "media_type": "image/png", "data": "iVBOR"},
                        "cache_control": {"type": "ephemeral"},
                    },
                    {"type": "image", "source": {"type": "url", "url": "https://x/i.png"}},
                    {
                        "type": "document",
                        "source": {"type": "base64", "media_type": "application/pdf", "data": "JVBER"},
                        "title": "T",
                        "context": "C",
                        "citations": {"enabled": True},
                    },
                    {
                        "type": "document",
                        "source": {"type": "text", "media_type": "text/plain", "data": "plain"},
                        "cache_control": {"type": "ephemeral"},
                    },
                    {"type": "document", "source": {"type": "url", "url": "https://x/d.pdf"}},
                ],
            },
            {
                "role": "assistant",
                "content": [
                    {"type": "text", "text": "cited", "citations": [{"type": "char_location", "cited_text": "p"}]}
                ],
            },
            {
                "role": "user",
                "content": [
                    {
                        "type": "tool_result",
                        "tool_use_id": "toolu_1",
                        "content": [{"type": "text", "text": "r"}],
                        "cache_control": {"type": "ephemeral"},
                    }
                ],
            },
        ],
    ),
]


@pytest.mark.parametrize(("messages", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_messages(messages: list[Message], expected: list[dict[str, Any]]) -> None:
    assert to_messages(messages) == expected


def test_the_whole_payload_carries_the_request() -> None:
    turn = ChatTurn(
        model="databricks-claude-sonnet-4-5",
        messages=(user(Text("hi")),),
        max_tokens=900,
        system="note\n\nclient",
        system_blocks=(Text("note"), Text("client", CacheControl())),
        functions=(FunctionDef("bash", "Run bash.", {}, CacheControl()),),
        function_choice=FunctionChoice("function", "bash"),
        parallel_calls=False,
        stop=("###",),
        sampling=Sampling(0.5, 0.9, 40),
        user="user-1",
        thinking=ThinkingConfig("enabled", 2048),
        service_tier="standard_only",
        stream=True,
    )
    assert build_messages_payload(turn) == {
        "model": "databricks-claude-sonnet-4-5",
        "max_tokens": 900,
        "messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}],
        "system": [
            {"type": "text", "text": "note"},
            {"type": "text", "text": "client", "cache_control": {"type": "ephemeral"}},
        ],
        "tools": [
            {
                "name": "bash",
                "description": "Run bash.",
                "input_schema": {"type": "object", "properties": {}},
                "cache_control": {"type": "ephemeral"},
            }
        ],
        "tool_choice": {"type": "tool", "name": "bash", "disable_parallel_tool_use": True},
        "stop_sequences": ["###"],
        "temperature": 0.5,
        "top_p": 0.9,
        "top_k": 40,
        "metadata": {"user_id": "user-1"},
        "thinking": {"type": "enabled", "budget_tokens": 2048},
        "service_tier": "standard_only",
        "stream": True,
    }


@pytest.mark.parametrize(
    ("choice", "parallel", "expected"),
    [
        (None, None, None),
        (None, False, {"type": "auto", "disable_parallel_tool_use": True}),
        (FunctionChoice("required"), None, {"type": "any"}),
        (FunctionChoice("none"), False, {"type": "none"}),
        (FunctionChoice("auto"), None, {"type": "auto"}),
    ],
)
def test_tool_choice(choice: FunctionChoice | None, parallel: bool | None, expected: dict[str, Any] | None) -> None:
    turn = ChatTurn("m", (user(Text("hi")),), 10, functions=(FunctionDef("f", "", {}),), function_choice=choice)
    payload = build_messages_payload(ChatTurn(**{**_fields(turn), "parallel_calls": parallel}))
    assert payload.get("tool_choice") == expected


def _fields(turn: ChatTurn) -> dict[str, Any]:
    return {name: getattr(turn, name) for name in turn.__dataclass_fields__}


def test_system_without_breakpoints_is_one_string() -> None:
    turn = ChatTurn("m", (user(Text("hi")),), 10, system="a\n\nb", system_blocks=(Text("a"), Text("b")), stream=False)
    payload = build_messages_payload(turn)
    assert payload["system"] == "a\n\nb" and "stream" not in payload


def test_call_only_turns_get_empty_text_only_when_asked() -> None:
    turn = ChatTurn("m", (user(Text("go")), assistant(THINK_A, CALL_A, RESULT_A)), 10)
    plain = build_messages_payload(turn)
    assert has_call_only_turn(plain)
    adapted = build_messages_payload(turn, text_in_call_turns=True)
    assert [b["type"] for b in adapted["messages"][1]["content"]] == ["thinking", "text", "tool_use"]
    assert not has_call_only_turn(adapted)
    assert roles(adapted["messages"]) == ["user", "assistant", "user"]
