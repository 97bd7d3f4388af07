"""Table-driven tests of the pure ChatTurn → Chat Completions translation."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from execbridge.errors import InvalidRequest
from execbridge.testing import check_request
from execbridge.types import (
    ContainerUpload,
    Document,
    FunctionDef,
    Image,
    Message,
    Sampling,
    ServerToolResult,
    Text,
    Thinking,
    ThinkingConfig,
    ToolCall,
    ToolFailure,
    ToolResult,
)
from execbridge.upstream.base import ChatTurn, FunctionChoice
from execbridge.upstream.dialects import (
    AZURE,
    DATABRICKS,
    DATABRICKS_CLAUDE,
    DATABRICKS_GPT_OSS,
    GENERIC,
    LITELLM,
    LLAMA_CPP,
    OLLAMA,
    OPENAI,
    VLLM,
    Dialect,
    dialect_for,
)
from execbridge.upstream.translate import build_payload, to_chat_messages

SPLIT = Dialect(one_tool_call_per_message=True)


def user(*parts: Any) -> Message:
    return Message("user", tuple(parts))


def assistant(*parts: Any) -> Message:
    return Message("assistant", tuple(parts))


def call(id: str, name: str = "bash_code_execution", **input: Any) -> ToolCall:
    return ToolCall(id, name, input or {"command": "ls"}, server=True)


def result(id: str, *content: Text | Image, error: bool = False) -> ToolResult:
    return ToolResult(id, tuple(content), is_error=error)


def tc(id: str, arguments: str = '{"command":"ls"}', name: str = "bash_code_execution") -> dict[str, Any]:
    return {"id": id, "type": "function", "function": {"name": name, "arguments": arguments}}


def tool(id: str, content: str) -> dict[str, Any]:
    return {"role": "tool", "tool_call_id": id, "content": content}


PNG = Image(media_type="image/png", data="iVBORw0KGgo=")
PNG_PART = {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}

# (id, system, messages, dialect, expected chat messages)
MESSAGE_CASES: list[tuple[str, str | None, list[Message], Dialect, list[dict[str, Any]]]] = [
    (
        "system first, text-only user as a plain string",
        "Be brief.",
        [user(Text("hi"))],
        GENERIC,
        [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"}],
    ),
    ("blank system dropped", "  ", [user(Text("hi"))], GENERIC, [{"role": "user", "content": "hi"}]),
    (
        "several texts join into one string, blank ones dropped",
        None,
        [user(Text("a"), Text(""), Text(" "), Text("b"))],
        GENERIC,
        [{"role": "user", "content": "a\n\nb"}],
    ),
    (
        "base64 and url images",
        None,
        [user(Text("look"), PNG, Image(url="https://x/y.jpg"))],
        GENERIC,
        [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "look"},
                    PNG_PART,
                    {"type": "image_url", "image_url": {"url": "https://x/y.jpg"}},
                ],
            }
        ],
    ),
    (
        "text documents become a text part with a title line",
        None,
        [user(Document(media_type="text/plain", text="body", title="notes.txt"), Text("sum up"))],
        GENERIC,
        [{"role": "user", "content": "Document: notes.txt\nbody\n\nsum up"}],
    ),
    (
        "base64 text document is decoded",
        None,
        [user(Document(media_type="text/plain", data="aGVsbG8=", title="t", context="from mail"))],
        GENERIC,
        [{"role": "user", "content": "Document: t\nContext: from mail\nhello"}],
    ),
    (
        "base64 pdf becomes a file part",
        None,
        [user(Document(media_type="application/pdf", data="JVBERi0=", title="r.pdf"), Text("read"))],
        GENERIC,
        [
            {
                "role": "user",
                "content": [
                    {
                        "type": "file",
                        "file": {"filename": "r.pdf", "file_data": "data:application/pdf;base64,JVBERi0="},
                    },
                    {"type": "text", "text": "read"},
                ],
            }
        ],
    ),
    (
        "a pdf where file parts are refused becomes a sentence naming it",
        None,
        [user(Document(media_type="application/pdf", data="JVBERi0=", title="r.pdf"), Text("read"))],
        replace(GENERIC, file_parts=False),
        [
            {
                "role": "user",
                "content": "Document: r.pdf\n(application/pdf without a text layer, not readable through this "
                "model's API)\n\nread",
            }
        ],
    ),
    (
        "url document becomes a text line naming the url",
        None,
        [user(Document(url="https://x/a.pdf"))],
        GENERIC,
        [{"role": "user", "content": "Document:\nThe document is at https://x/a.pdf"}],
    ),
    (
        "user message with nothing sendable is dropped",
        None,
        [user(Text("hi")), assistant(Text("yo")), user(ContainerUpload("file_1"), Text(""))],
        GENERIC,
        [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}],
    ),
    (
        "assistant text and a client call; result in the next user message",
        None,
        [
            user(Text("weather?")),
            assistant(Thinking("hmm", "sig"), Text("Checking."), ToolCall("t1", "get_weather", {"city": "Oslo"})),
            user(result("t1", Text("sunny")), Text("thanks")),
        ],
        GENERIC,
        [
            {"role": "user", "content": "weather?"},
            {"role": "assistant", "content": "Checking.", "tool_calls": [tc("t1", '{"city":"Oslo"}', "get_weather")]},
            tool("t1", "sunny"),
            {"role": "user", "content": "thanks"},
        ],
    ),
    (
        "server results inline split the assistant message",
        None,
        [
            user(Text("go")),
            assistant(
                Text("First."),
                call("A"),
                result("A", Text("out A")),
                call("B"),
                result("B", Text("out B")),
                Text("Done."),
            ),
        ],
        GENERIC,
        [
            {"role": "user", "content": "go"},
            {"role": "assistant", "content": "First.", "tool_calls": [tc("A")]},
            tool("A", "out A"),
            {"role": "assistant", "content": "", "tool_calls": [tc("B")]},
            tool("B", "out B"),
            {"role": "assistant", "content": "Done."},
        ],
    ),
    (
        "parallel server calls keep one assistant message by default",
        None,
        [user(Text("go")), assistant(call("A"), call("B"), result("A", Text("a")), result("B", Text("b")))],
        GENERIC,
        [
            {"role": "user", "content": "go"},
            {"role": "assistant", "content": "", "tool_calls": [tc("A"), tc("B")]},
            tool("A", "a"),
            tool("B", "b"),
        ],
    ),
    (
        "one call per message: parallel server calls split into pairs",
        None,
        [
            user(Text("go")),
            assistant(Text("Both."), call("A"), call("B"), result("B", Text("b")), result("A", Text("a"))),
        ],
        SPLIT,
        [
            {"role": "user", "content": "go"},
            {"role": "assistant", "content": "Both.", "tool_calls": [tc("A")]},
            tool("A", "a"),
            {"role": "assistant", "content": "", "tool_calls": [tc("B")]},
            tool("B", "b"),
        ],
    ),
    (
        "one call per message: client results from the next user message",
        None,
        [
            user(Text("go")),
            assistant(ToolCall("A", "f", {}), ToolCall("B", "g", {"x": 1})),
            user(result("A", Text("a")), result("B", Text("b")), Text("more")),
        ],
        SPLIT,
        [
            {"role": "user", "content": "go"},
            {"role": "assistant", "content": "", "tool_calls": [tc("A", "{}", "f")]},
            tool("A", "a"),
            {"role": "assistant", "content": "", "tool_calls": [tc("B", '{"x":1}', "g")]},
            tool("B", "b"),
            {"role": "user", "content": "more"},
        ],
    ),
    (
        "tool result images follow in a user message after the tool run",
        None,
        [user(Text("plot")), assistant(call("A"), call("B"), result("A", Text("saved"), PNG), result("B"))],
        GENERIC,
        [
            {"role": "user", "content": "plot"},
            {"role": "assistant", "content": "", "tool_calls": [tc("A"), tc("B")]},
            tool("A", "saved\n(1 image attached in the next message)"),
            tool("B", "(no output)"),
            {"role": "user", "content": [{"type": "text", "text": "Image output of tool call A:"}, PNG_PART]},
        ],
    ),
    (
        "errors are marked, empty results get a placeholder",
        None,
        [user(Text("x")), assistant(call("A"), call("B")), user(result("A", Text("boom"), error=True), result("B"))],
        GENERIC,
        [
            {"role": "user", "content": "x"},
            {"role": "assistant", "content": "", "tool_calls": [tc("A"), tc("B")]},
            tool("A", "Error: boom"),
            tool("B", "(no output)"),
        ],
    ),
    (
        "Databricks: call-only assistant messages have null content, split or not",
        None,
        [user(Text("go")), assistant(call("A"), call("B"), result("A", Text("a")), result("B", Text("b")))],
        DATABRICKS_GPT_OSS,
        [
            {"role": "user", "content": "go"},
            {"role": "assistant", "content": None, "tool_calls": [tc("A")]},
            tool("A", "a"),
            {"role": "assistant", "content": None, "tool_calls": [tc("B")]},
            tool("B", "b"),
        ],
    ),
    (
        "assistant with only thinking or blank text is dropped",
        None,
        [user(Text("x")), assistant(Thinking("t"), Text("  ")), user(Text("y"))],
        GENERIC,
        [{"role": "user", "content": "x"}, {"role": "user", "content": "y"}],
    ),
]


@pytest.mark.parametrize(
    ("system", "messages", "dialect", "expected"), [c[1:] for c in MESSAGE_CASES], ids=[c[0] for c in MESSAGE_CASES]
)
def test_messages(system, messages, dialect, expected):
    got = to_chat_messages(messages, system, dialect)
    assert got == expected
    # Whatever we send Databricks (in its empty-content form) must pass the rules the fake enforces.
    sent = to_chat_messages(messages, system, replace(dialect, empty_call_content=DATABRICKS.empty_call_content))
    body = {"model": "m", "messages": sent}
    assert check_request(body, reject_multiple_tool_calls=dialect.one_tool_call_per_message) is None


def test_server_tool_result_must_be_rendered_first():
    outcome = ServerToolResult("A", "bash_code_execution", ToolFailure("unavailable"))
    with pytest.raises(TypeError, match="ServerToolResult"):
        to_chat_messages([assistant(call("A"), outcome)])


BASE = ChatTurn(model="m", messages=(user(Text("hi")),), max_tokens=100, stream=False)
FN = FunctionDef("bash_code_execution", "Run bash.", {"type": "object", "properties": {"command": {"type": "string"}}})
NOARG = FunctionDef("ping", "", {})
MSGS = [{"role": "user", "content": "hi"}]

# (id, turn, dialect, expected payload)
PAYLOAD_CASES: list[tuple[str, ChatTurn, Dialect, dict[str, Any]]] = [
    ("minimal", BASE, GENERIC, {"model": "m", "messages": MSGS, "max_tokens": 100}),
    ("openai uses max_completion_tokens", BASE, OPENAI, {"model": "m", "messages": MSGS, "max_completion_tokens": 100}),
    (
        "functions always carry parameters; empty description omitted",
        replace(BASE, functions=(FN, NOARG)),
        GENERIC,
        {
            "model": "m",
            "messages": MSGS,
            "max_tokens": 100,
            "tools": [
                {
                    "type": "function",
                    "function": {"name": FN.name, "description": "Run bash.", "parameters": dict(FN.parameters)},
                },
                {"type": "function", "function": {"name": "ping", "parameters": {"type": "object", "properties": {}}}},
            ],
        },
    ),
    *[
        (
            f"tool_choice {mode}",
            replace(BASE, functions=(NOARG,), function_choice=FunctionChoice(mode, name)),
            GENERIC,
            {
                "model": "m",
                "messages": MSGS,
                "max_tokens": 100,
                "tools": [
                    {
                        "type": "function",
                        "function": {"name": "ping", "parameters": {"type": "object", "properties": {}}},
                    }
                ],
                "tool_choice": wire,
            },
        )
        for mode, name, wire in [
            ("auto", None, "auto"),
            ("required", None, "required"),
            ("none", None, "none"),
            ("function", "ping", {"type": "function", "function": {"name": "ping"}}),
        ]
    ],
    *[
        (
            f"tool_choice required without the form: {label}",
            replace(BASE, functions=functions, function_choice=FunctionChoice("required")),
            LLAMA_CPP,
            {
                "model": "m",
                "messages": MSGS,
                "max_tokens": 100,
                "tools": [
                    {
                        "type": "function",
                        "function": {"name": f.name, "parameters": {"type": "object", "properties": {}}},
                    }
                    for f in functions
                ],
                "tool_choice": wire,
            },
        )
        for label, functions, wire in [
            ("one function is named", (NOARG,), {"type": "function", "function": {"name": "ping"}}),
            ("several become auto", (NOARG, replace(NOARG, name="pong")), "auto"),
        ]
    ],
    *[
        (
            f"streaming where chosen calls cannot stream: {mode}",
            replace(BASE, functions=(NOARG,), function_choice=FunctionChoice(mode, name), stream=True),
            replace(GENERIC, stream_chosen_calls=False),
            {
                "model": "m",
                "messages": MSGS,
                "max_tokens": 100,
                "tools": [
                    {
                        "type": "function",
                        "function": {"name": "ping", "parameters": {"type": "object", "properties": {}}},
                    }
                ],
                "tool_choice": wire,
                **({"stream": True, "stream_options": {"include_usage": True}} if streamed else {}),
            },
        )
        for mode, name, wire, streamed in [
            ("auto", None, "auto", False),
            ("required", None, "required", False),
            ("function", "ping", {"type": "function", "function": {"name": "ping"}}, True),
            ("none", None, "none", True),
        ]
    ],
    (
        "parallel_calls=False",
        replace(BASE, functions=(NOARG,), parallel_calls=False),
        GENERIC,
        {
            "model": "m",
            "messages": MSGS,
            "max_tokens": 100,
            "tools": [
                {"type": "function", "function": {"name": "ping", "parameters": {"type": "object", "properties": {}}}}
            ],
            "parallel_tool_calls": False,
        },
    ),
    (
        "parallel_tool_calls not sent where the dialect says not to",
        replace(BASE, functions=(NOARG,), parallel_calls=False),
        DATABRICKS,
        {
            "model": "m",
            "messages": MSGS,
            "max_tokens": 100,
            "tools": [
                {"type": "function", "function": {"name": "ping", "parameters": {"type": "object", "properties": {}}}}
            ],
        },
    ),
    (
        "choice and parallel flag need functions",
        replace(BASE, function_choice=FunctionChoice("auto"), parallel_calls=False),
        GENERIC,
        {"model": "m", "messages": MSGS, "max_tokens": 100},
    ),
    (
        "sampling, user; top_k dropped; stop sequences matched by the gateway, not sent",
        replace(BASE, stop=("END",), sampling=Sampling(0.2, 0.9, 40), user="u1"),
        GENERIC,
        {
            "model": "m",
            "messages": MSGS,
            "max_tokens": 100,
            "temperature": 0.2,
            "top_p": 0.9,
            "user": "u1",
        },
    ),
    (
        "top_k kept where allowed",
        replace(BASE, sampling=Sampling(top_k=40)),
        VLLM,
        {"model": "m", "messages": MSGS, "max_tokens": 100, "top_k": 40},
    ),
    (
        "reasoning effort sent where taken",
        replace(BASE, sampling=Sampling(reasoning_effort="low")),
        GENERIC,
        {"model": "m", "messages": MSGS, "max_tokens": 100, "reasoning_effort": "low"},
    ),
    (
        "reasoning effort left out where refused",
        replace(BASE, sampling=Sampling(reasoning_effort="low")),
        Dialect(reasoning_effort=False),
        {"model": "m", "messages": MSGS, "max_tokens": 100},
    ),
    (
        "streaming asks for usage",
        replace(BASE, stream=True),
        GENERIC,
        {"model": "m", "messages": MSGS, "max_tokens": 100, "stream": True, "stream_options": {"include_usage": True}},
    ),
    (
        "streaming without stream_options support",
        replace(BASE, stream=True),
        Dialect(stream_options_supported=False),
        {"model": "m", "messages": MSGS, "max_tokens": 100, "stream": True},
    ),
    (
        "system goes first",
        replace(BASE, system="sys"),
        GENERIC,
        {"model": "m", "messages": [{"role": "system", "content": "sys"}, *MSGS], "max_tokens": 100},
    ),
]


@pytest.mark.parametrize(
    ("turn", "dialect", "expected"), [c[1:] for c in PAYLOAD_CASES], ids=[c[0] for c in PAYLOAD_CASES]
)
def test_payload(turn, dialect, expected):
    payload = build_payload(turn, dialect)
    assert payload == expected
    assert check_request(payload) is None


@pytest.mark.parametrize(
    ("base_url", "model", "dialect"),
    [
        ("https://adb-1.azuredatabricks.net/serving-endpoints", "databricks-claude-sonnet-4-5", DATABRICKS_CLAUDE),
        ("https://adb-1.azuredatabricks.net/serving-endpoints", "databricks-gpt-oss-120b", DATABRICKS_GPT_OSS),
        ("https://api.openai.com/v1", "gpt-4.1", OPENAI),
        ("http://127.0.0.1:8000/v1", "Qwen/Qwen3-8B", VLLM),
        ("http://localhost:11434/v1", "llama3.2", OLLAMA),
        ("http://ollama.internal/v1", "qwen3", OLLAMA),
        ("http://litellm:4000", "claude-sonnet-4-5", LITELLM),
        ("https://acme.openai.azure.com/openai/v1", "gpt-4.1", AZURE),
        ("http://gpu-box:9000/v1", "some-model", GENERIC),
        # OpenAI reasoning models want max_completion_tokens wherever they are served OpenAI-style…
        ("http://litellm:4000", "o3-mini", replace(LITELLM, max_tokens_field="max_completion_tokens")),
        ("http://gpu-box:9000/v1", "openai/gpt-5", replace(GENERIC, max_tokens_field="max_completion_tokens")),
        # …but not on Databricks, whose endpoints take max_tokens.
        ("https://adb-1.azuredatabricks.net/serving-endpoints", "databricks-gpt-5", DATABRICKS),
        ("http://gpu-box:9000/v1", "gpt-oss-20b", GENERIC),
    ],
)
def test_dialect_for(base_url, model, dialect):
    assert dialect_for(base_url, model) == dialect


def test_function_choice_needs_name():
    turn = replace(BASE, functions=(NOARG,), function_choice=FunctionChoice("function"))
    with pytest.raises(ValueError, match="needs a name"):
        build_payload(turn)


# ---------------------------------------------------------------- thinking (docs/protocol.md §4.10)

THINKING_HISTORY = (
    user(Text("run it")),
    assistant(Thinking("plan", "sig-1"), Text("Running."), ToolCall("srvtoolu_1", "bash_code_execution", {"c": 1})),
    user(ToolResult("srvtoolu_1", (Text("ok"),))),
    assistant(Thinking("", "sig-2"), ToolCall("srvtoolu_2", "bash_code_execution", {})),
    user(ToolResult("srvtoolu_2", (Text("ok"),))),
)


def test_thinking_goes_to_databricks_claude_with_signed_reasoning_first():
    turn = replace(BASE, messages=THINKING_HISTORY, thinking=ThinkingConfig("enabled", 2048))
    payload = build_payload(turn, DATABRICKS_CLAUDE)
    assert payload["thinking"] == {"type": "enabled", "budget_tokens": 2048}
    first, second = [m for m in payload["messages"] if m["role"] == "assistant"]
    assert first["content"] == [
        {"type": "reasoning", "summary": [{"type": "summary_text", "text": "plan", "signature": "sig-1"}]},
        {"type": "text", "text": "Running."},
    ]
    assert second["content"] == [
        {"type": "reasoning", "summary": [{"type": "summary_text", "text": "", "signature": "sig-2"}]}
    ]
    assert check_request(payload) is None


def test_without_thinking_asked_reasoning_stays_home():
    for config in (None, ThinkingConfig("disabled")):
        payload = build_payload(replace(BASE, messages=THINKING_HISTORY, thinking=config), DATABRICKS_CLAUDE)
        assert "thinking" not in payload
        assert all(isinstance(m.get("content"), str | None) for m in payload["messages"])


@pytest.mark.parametrize("dialect", [GENERIC, OPENAI, VLLM, LLAMA_CPP, DATABRICKS, DATABRICKS_GPT_OSS])
def test_thinking_is_refused_where_it_cannot_go(dialect):
    with pytest.raises(InvalidRequest, match=r"^thinking: "):
        build_payload(replace(BASE, thinking=ThinkingConfig("adaptive")), dialect)
