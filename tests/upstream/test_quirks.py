"""Provider quirks, each against a fake that behaves that way: parameters an endpoint refuses (learnt
and avoided from then on), one tool call per assistant message, Databricks' rules on tools and text,
model names, Azure's key header and query string, and a server that accepts but never answers."""

from __future__ import annotations

import contextlib
import socket
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from typing import Any

import httpx
import pytest

from execbridge.config import Settings
from execbridge.errors import UpstreamError, UpstreamTimeout
from execbridge.testing import FakeApp, Turn
from execbridge.types import FunctionDef, Message, Sampling, Text, ToolCall, ToolResult
from execbridge.upstream.base import ChatTurn, FunctionChoice, ReasoningDelta, TextDelta
from execbridge.upstream.dialects import DATABRICKS_CLAUDE, GENERIC, OPENAI, VLLM
from execbridge.upstream.model_names import ModelNames
from execbridge.upstream.openai_chat import OpenAIChatUpstream

NOARG = FunctionDef("get_time", "", {})
BASH = FunctionDef(
    "bash_code_execution", "Run bash.", {"type": "object", "properties": {"command": {"type": "string"}}}
)
TURN = ChatTurn(model="m", messages=(Message("user", (Text("hi"),)),), max_tokens=100, functions=(BASH,))
TWO_CALLS = (
    Message("user", (Text("run both"),)),
    Message(
        "assistant",
        (
            ToolCall("srvtoolu_a", "bash_code_execution", {"command": "echo a"}, server=True),
            ToolCall("srvtoolu_b", "bash_code_execution", {"command": "echo b"}, server=True),
        ),
    ),
    Message("user", (ToolResult("srvtoolu_a", (Text("a"),)), ToolResult("srvtoolu_b", (Text("b"),)))),
)


# The fake runs in-process (its app is the client's transport): these tests are about what is sent and
# learnt, not about sockets, which test_openai_chat.py and test_http11.py cover.
URL = "http://fake.test"
BASE_URL = f"{URL}/v1"
DATABRICKS_URL = f"{URL}/serving-endpoints"


@pytest.fixture
async def upstream_for() -> AsyncIterator[Callable[..., OpenAIChatUpstream]]:
    clients: list[OpenAIChatUpstream] = []

    def factory(base_url: str, fake: FakeApp | None = None, **options: Any) -> OpenAIChatUpstream:
        if fake is not None:
            options["transport"] = httpx.ASGITransport(fake)
        options.setdefault("trust_env", False)
        options.setdefault("backoff_base_s", 0.001)
        client = OpenAIChatUpstream(base_url, options.pop("api_key", "k"), **options)
        clients.append(client)
        return client

    yield factory
    for client in clients:
        await client.aclose()


async def run(upstream: OpenAIChatUpstream, turn: ChatTurn = TURN) -> list[Any]:
    async with contextlib.aclosing(upstream.stream_turn(turn)) as events:
        return [e async for e in events]


def text(events: list[Any]) -> str:
    return "".join(e.text for e in events if isinstance(e, TextDelta))


# ---------------------------------------------------------------- refused parameters are learnt


@pytest.mark.parametrize("envelope", ["openai", "databricks"])
async def test_max_tokens_refused_switches_to_max_completion_tokens(upstream_for, envelope):
    f = FakeApp([Turn.text("one"), Turn.text("two")], reject_params={"max_tokens"}, error_envelope=envelope)
    upstream = upstream_for(BASE_URL, f, dialect=GENERIC)
    assert text(await run(upstream)) == "one"
    assert text(await run(upstream)) == "two"
    sent = [("max_tokens" in r, r.get("max_completion_tokens")) for r in f.chat_requests]
    # refused once, resent at once with the other field, and the second turn uses it from the start
    assert sent == [(True, None), (False, 100), (False, 100)]
    assert upstream.dialect("m").max_tokens_field == "max_completion_tokens"


async def test_max_completion_tokens_refused_switches_back(upstream_for):
    f = FakeApp([Turn.text("ok")], reject_params={"max_completion_tokens"})
    upstream = upstream_for(BASE_URL, f, dialect=OPENAI)
    assert text(await run(upstream)) == "ok"
    assert [r.get("max_tokens") for r in f.chat_requests] == [None, 100]


async def test_stream_options_only_where_accepted(upstream_for):
    f = FakeApp([Turn.text("s1"), Turn.text("j1"), Turn.text("s2")], reject_params={"stream_options"})
    upstream = upstream_for(BASE_URL, f, dialect=GENERIC)
    assert text(await run(upstream)) == "s1"
    assert text(await run(upstream, replace(TURN, stream=False))) == "j1"  # never sent without stream
    assert text(await run(upstream)) == "s2"
    assert ["stream_options" in r for r in f.chat_requests] == [True, False, False, False]


async def test_parallel_tool_calls_and_top_k_refused(upstream_for):
    turn = replace(TURN, parallel_calls=False, sampling=Sampling(top_k=5))
    f = FakeApp([Turn.text("ok")], reject_params={"parallel_tool_calls", "top_k"})
    upstream = upstream_for(BASE_URL, f, dialect=VLLM)
    assert text(await run(upstream, turn)) == "ok"
    assert len(f.chat_requests) == 3
    assert "parallel_tool_calls" not in f.chat_requests[-1] and "top_k" not in f.chat_requests[-1]


async def test_value_errors_are_not_mistaken_for_unsupported_parameters(upstream_for):
    refusal = Turn.error(400, "max_tokens must be at most 8192, got 100000", envelope="openai")
    f = FakeApp([refusal])
    upstream = upstream_for(BASE_URL, f, dialect=GENERIC, max_retries=0)
    with pytest.raises(UpstreamError, match="at most 8192"):
        await run(upstream)
    assert len(f.chat_requests) == 1 and upstream.dialect("m") == GENERIC


# ---------------------------------------------------------------- one call per assistant message


async def test_multiple_tool_calls_refused_splits_history(upstream_for):
    """A gpt-oss-like endpoint that is not recognised by name: the first 400 teaches the client."""
    f = FakeApp([Turn.text("both ran")], reject_multiple_tool_calls=True)
    upstream = upstream_for(BASE_URL, f, dialect=GENERIC)
    assert text(await run(upstream, replace(TURN, messages=TWO_CALLS))) == "both ran"
    # Two lessons: several calls per message, then (Databricks' rules) no empty content beside calls.
    assert [s for s, _ in f.rejections] == [400, 400]
    roles = [m["role"] for m in f.chat_requests[-1]["messages"]]
    assert roles == ["user", "assistant", "tool", "assistant", "tool"]
    assert upstream.dialect("m").one_tool_call_per_message
    assert upstream.dialect("m").empty_call_content is None


async def test_gpt_oss_on_databricks_is_split_from_the_start(upstream_for):
    f = FakeApp([Turn.text("ok")], reject_multiple_tool_calls=True)
    upstream = upstream_for(DATABRICKS_URL, f)
    turn = replace(TURN, model="databricks-gpt-oss-120b", messages=TWO_CALLS)
    assert text(await run(upstream, turn)) == "ok"
    assert f.rejections == []


# ---------------------------------------------------------------- Databricks' rules


@pytest.mark.parametrize("stream", [True, False])
async def test_databricks_rules_parts_and_reasoning(upstream_for, stream):
    """No-parameter functions get ``parameters``, empty text never goes out, and content parts (text
    and reasoning) come back as events; the fake refuses anything else."""
    history = (
        Message("user", (Text("what time is it"), Text("  "))),
        Message("assistant", (Text(""), ToolCall("toolu_1", "get_time", {}))),
        Message("user", (ToolResult("toolu_1", (Text(""),)),)),
    )
    reply = Turn.reasoning("Checking the result.", "It is noon.", signature="s1").but(content_parts=True)
    f = FakeApp([reply])
    upstream = upstream_for(DATABRICKS_URL, f)
    turn = replace(TURN, model="databricks-claude-sonnet-4-5", messages=history, functions=(NOARG,), stream=stream)
    events = await run(upstream, turn)
    assert f.rejections == []
    assert text(events) == "It is noon."
    assert "".join(e.text for e in events if isinstance(e, ReasoningDelta)) == "Checking the result."
    sent = f.chat_requests[0]
    assert sent["tools"][0]["function"]["parameters"] == {"type": "object", "properties": {}}
    assert "parallel_tool_calls" not in sent
    assert upstream.dialect("databricks-claude-sonnet-4-5") == DATABRICKS_CLAUDE


async def test_databricks_error_envelope_keeps_its_message(upstream_for):
    error = Turn.error(400, "Invalid tool schema for run_python.", code="INVALID_PARAMETER_VALUE")
    f = FakeApp([error])
    with pytest.raises(UpstreamError) as caught:
        await run(upstream_for(DATABRICKS_URL, f, max_retries=0))
    assert (caught.value.status, caught.value.code) == (400, "INVALID_PARAMETER_VALUE")
    assert caught.value.message == "Invalid tool schema for run_python."


# ---------------------------------------------------------------- model names


@pytest.mark.parametrize(
    ("provider", "mapping", "client", "upstream"),
    [
        ("databricks", {}, "claude-sonnet-4-5", "databricks-claude-sonnet-4-5"),
        ("databricks", {}, "claude-sonnet-4-5-20250929", "databricks-claude-sonnet-4-5"),
        ("databricks", {}, "claude-opus-4-5", "databricks-claude-opus-4-5"),
        ("databricks", {}, "claude-haiku-4-5-20251001", "databricks-claude-haiku-4-5"),
        ("databricks", {}, "databricks-claude-sonnet-4-5", "databricks-claude-sonnet-4-5"),
        ("databricks", {}, "databricks-gpt-oss-120b", "databricks-gpt-oss-120b"),
        ("databricks", {"claude-sonnet-4-5": "my-sonnet-endpoint"}, "claude-sonnet-4-5-20250929", "my-sonnet-endpoint"),
        ("openai", {}, "claude-sonnet-4-5", "claude-sonnet-4-5"),
        ("openai", {}, "gpt-4o-2024-08-06", "gpt-4o-2024-08-06"),
        ("openai", {"claude-sonnet-4-5": "qwen3:8b"}, "claude-sonnet-4-5", "qwen3:8b"),
    ],
)
def test_model_names(provider, mapping, client, upstream):
    assert ModelNames(mapping, provider=provider).upstream(client) == upstream


async def test_upstream_receives_the_mapped_name(upstream_for):
    f = FakeApp([Turn.text("hi")], models=("databricks-claude-sonnet-4-5",), enforce_models=True)
    upstream = upstream_for(DATABRICKS_URL, f, model_names=ModelNames(provider="databricks"))
    assert text(await run(upstream, replace(TURN, model="claude-sonnet-4-5-20250929"))) == "hi"
    assert f.chat_requests[0]["model"] == "databricks-claude-sonnet-4-5"


def test_model_map_from_environment_json(monkeypatch):
    monkeypatch.setenv("EXECBRIDGE_MODEL_MAP", '{"claude-sonnet-4-5": "llama3.2"}')
    assert Settings().model_map == {"claude-sonnet-4-5": "llama3.2"}


# ---------------------------------------------------------------- Azure, presets


async def test_azure_key_header_and_api_version_query(upstream_for):
    f = FakeApp([Turn.text("azure")])
    upstream = upstream_for(f"{URL}/openai/v1?api-version=preview", f, api_key="az-key", auth_header="api-key")
    assert text(await run(upstream)) == "azure"
    request = f.requests[0]
    assert request.path == "/openai/v1/chat/completions"
    assert request.headers["api-key"] == "az-key" and "authorization" not in request.headers


def test_azure_host_picks_the_key_header():
    upstream = OpenAIChatUpstream("https://acme.openai.azure.com/openai/v1", "k", trust_env=False)
    assert upstream._auth.for_key("k").headers == {"content-type": "application/json", "api-key": "k"}


def test_forced_preset_from_settings():
    settings = Settings(upstream_url="http://gpu:9000/v1", upstream_dialect="vllm")
    assert OpenAIChatUpstream.from_settings(settings, trust_env=False).dialect("any") == VLLM


# ---------------------------------------------------------------- a server that never answers


@pytest.mark.parametrize("http", ["fast", "httpx"])
async def test_silent_server_read_timeout_is_clear(upstream_for, http):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(8)
        url = f"http://127.0.0.1:{sock.getsockname()[1]}/v1"
        upstream = upstream_for(url, http=http, read_timeout_s=0.5, max_retries=2)
        start = time.monotonic()
        with pytest.raises(UpstreamTimeout, match="did not answer in time"):
            await run(upstream)
        assert time.monotonic() - start >= 0.5  # it waited its read timeout (a lower bound holds anywhere)
        # One attempt only: the request may be half-processed, so it is not sent again. Every attempt is
        # a connection waiting in the backlog (nothing accepts them): count them.
        sock.setblocking(False)
        attempts = []
        with contextlib.suppress(BlockingIOError):
            while True:
                attempts.append(sock.accept()[0])
        for conn in attempts:
            conn.close()
        assert len(attempts) == 1


async def test_stream_options_refused_in_other_words(upstream_for):
    refusal = Turn.error(400, "Invalid parameter: stream_options", code="INVALID_PARAMETER_VALUE")
    f = FakeApp([refusal, Turn.text("ok")])
    upstream = upstream_for(DATABRICKS_URL, f)
    assert text(await run(upstream, replace(TURN, model="databricks-claude-sonnet-4-5"))) == "ok"
    assert ["stream_options" in r for r in f.chat_requests] == [True, False]


# ---------------------------------------------------------------- llama-cpp-python's forms


async def test_bare_500_to_required_names_the_function_instead(upstream_for):
    """llama-cpp-python's chatml-function-calling asserts tool_choice is "auto": a 500 with an empty
    message. That is learnt at once, not retried three times and passed on."""
    bare = {"error": {"message": "", "type": "internal_server_error", "param": None, "code": None}}
    f = FakeApp([Turn.raw_error(500, bare), Turn.text("ok")], error_envelope="openai")
    upstream = upstream_for(BASE_URL, f, dialect=GENERIC, backoff_base_s=30.0)  # a retry would show
    turn = replace(TURN, function_choice=FunctionChoice("required"))
    assert text(await run(upstream, turn)) == "ok"
    assert [r["tool_choice"] for r in f.chat_requests] == [
        "required",
        {"type": "function", "function": {"name": "bash_code_execution"}},
    ]
    assert not upstream.dialect("m").tool_choice_required
