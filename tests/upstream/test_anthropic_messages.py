"""AnthropicMessagesUpstream and RoutedUpstream against the fake server over real HTTP on 127.0.0.1."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from typing import Any

import pytest

from execbridge.errors import UpstreamError
from execbridge.testing import FakeUpstream, Turn
from execbridge.types import FunctionDef, Message, Text, Thinking, ThinkingConfig, ToolCall, ToolResult
from execbridge.upstream.anthropic_messages import AnthropicMessagesUpstream
from execbridge.upstream.base import ChatTurn, Finished, ReasoningDelta, TextDelta
from execbridge.upstream.openai_chat import OpenAIChatUpstream
from execbridge.upstream.routes import RoutedUpstream, not_served_natively

BASH = FunctionDef(
    "bash_code_execution", "Run bash.", {"type": "object", "properties": {"command": {"type": "string"}}}
)
TURN = ChatTurn(model="claude-x", messages=(Message("user", (Text("hi"),)),), max_tokens=256, functions=(BASH,))


@pytest.fixture(scope="module")
def fake() -> Any:
    with FakeUpstream(anthropic_rules="anthropic") as server:
        yield server


@pytest.fixture(params=["fast", "httpx"])
async def make(
    fake: FakeUpstream, request: pytest.FixtureRequest
) -> AsyncIterator[Callable[..., AnthropicMessagesUpstream]]:
    fake.reset()
    clients: list[AnthropicMessagesUpstream] = []

    def factory(**options: Any) -> AnthropicMessagesUpstream:
        options.setdefault("http", request.param)
        options.setdefault("trust_env", False)
        options.setdefault("backoff_base_s", 0.001)
        client = AnthropicMessagesUpstream(
            options.pop("base_url", fake.url), options.pop("api_key", "key-1"), **options
        )
        clients.append(client)
        return client

    yield factory
    for client in clients:
        await client.aclose()


async def collect(upstream: Any, turn: ChatTurn = TURN) -> list[Any]:
    async with contextlib.aclosing(upstream.stream_turn(turn)) as events:
        return [event async for event in events]


@pytest.mark.parametrize("stream", [True, False])
async def test_a_turn_with_thinking_streamed_or_whole(make, fake, stream: bool) -> None:
    fake.add(Turn.reasoning("weigh it", "Done."))
    turn = replace(
        TURN, stream=stream, thinking=ThinkingConfig("enabled", 1024), betas=("interleaved-thinking-2025-05-14",)
    )
    events = await collect(make(), turn)
    assert "".join(e.text for e in events if isinstance(e, TextDelta)) == "Done."
    assert [e.signature for e in events if isinstance(e, ReasoningDelta) and e.signature]
    assert events[-1] == Finished("stop")
    sent = fake.requests[-1]
    assert sent.path == "/v1/messages" and sent.headers["x-api-key"] == "key-1"
    assert sent.headers["anthropic-version"] == "2023-06-01"
    assert sent.headers["anthropic-beta"] == "interleaved-thinking-2025-05-14"
    assert (
        sent.json["thinking"] == {"type": "enabled", "budget_tokens": 1024} and bool(sent.json.get("stream")) == stream
    )


async def test_keys_as_bearer_and_the_clients_own_key(make, fake) -> None:
    fake.add(Turn.text("one"), Turn.text("two"))
    upstream = make(auth_header="authorization", base_url=f"{fake.url}/serving-endpoints/anthropic/v1/messages")
    await collect(upstream)
    await collect(upstream, replace(TURN, api_key="client-key"))
    first, second = fake.requests
    assert first.path == "/serving-endpoints/anthropic/v1/messages"
    assert first.headers["authorization"] == "Bearer key-1" and second.headers["authorization"] == "Bearer client-key"


async def test_refused_betas_are_dropped_and_remembered_for_the_model(make, fake) -> None:
    refusal = "Unexpected value(s) `made-up-2099-01-01` for the `anthropic-beta` header."
    fake.add(Turn.error(400, refusal), Turn.text("without"), Turn.text("still without"))
    upstream = make()
    turn = replace(TURN, betas=("made-up-2099-01-01",))
    assert "without" in "".join(e.text for e in await collect(upstream, turn) if isinstance(e, TextDelta))
    await collect(upstream, turn)
    assert [r.headers.get("anthropic-beta") for r in fake.requests] == ["made-up-2099-01-01", None, None]


async def test_overloaded_is_retried_before_any_output(make, fake) -> None:
    fake.add(Turn.error(529, "Overloaded", retry_after=0), Turn.text("after"))
    events = await collect(make())
    assert "".join(e.text for e in events if isinstance(e, TextDelta)) == "after" and len(fake.requests) == 2


async def test_the_upstreams_own_refusal_is_an_upstream_error(make, fake) -> None:
    history = (
        Message("user", (Text("hi"),)),
        Message("assistant", (Thinking("made up", "not-a-signature"), Text("ok"))),
        Message("user", (Text("and?"),)),
    )
    with pytest.raises(UpstreamError) as caught:
        await collect(make(), replace(TURN, messages=history))
    assert caught.value.status == 400 and "Invalid `signature`" in caught.value.message


async def test_count_tokens_served_or_not(make, fake) -> None:
    upstream = make()
    fake.app.serve_count_tokens = True
    try:
        assert (await upstream.count_tokens(TURN) or 0) > 0
    finally:
        fake.app.serve_count_tokens = False
    counted = fake.requests[-1].json
    assert "max_tokens" not in counted and counted["tools"][0]["name"] == "bash_code_execution"
    other = replace(TURN, model="claude-y")
    assert await upstream.count_tokens(other) is None
    assert await upstream.count_tokens(other) is None  # the 404 is remembered: asked once
    assert len(fake.requests) == 2


async def test_listing_models(make, fake) -> None:
    models = await make().list_models()
    assert [m.id for m in models] == ["fake-model"] and models[0].created


async def test_a_routed_model_the_native_route_does_not_serve_falls_back_to_chat(fake) -> None:
    fake.reset([Turn.text("native"), Turn.text("chat"), Turn.text("chat again"), Turn.text("gpt")])
    fake.app.anthropic_models = frozenset({"claude-served"})
    native = AnthropicMessagesUpstream(fake.url, "k", trust_env=False)
    chat = OpenAIChatUpstream(fake.base_url, "k", trust_env=False)
    routed = RoutedUpstream(native, chat)
    try:
        texts = []
        for model in ("claude-served", "claude-provisioned", "claude-provisioned", "gpt-oss"):
            events = await collect(routed, replace(TURN, model=model))
            texts.append("".join(e.text for e in events if isinstance(e, TextDelta)))
        assert (routed.route("claude-served"), routed.route("claude-provisioned")) == ("anthropic", "chat")
    finally:
        fake.app.anthropic_models = None
        await routed.aclose()
    assert texts == ["native", "chat", "chat again", "gpt"]
    assert [r.path for r in fake.requests] == [
        "/v1/messages",
        "/v1/messages",  # 404: that model is not served there
        "/v1/chat/completions",
        "/v1/chat/completions",
        "/v1/chat/completions",
    ]


@pytest.mark.parametrize(
    ("status", "message", "falls_back"),
    [
        (404, "ENDPOINT_NOT_FOUND", True),
        (400, "The endpoint does not support the Anthropic Messages API", True),
        (400, "This model does not support assistant message prefill", False),
        (400, "messages.0.content: Field required", False),
        (429, "not supported on this endpoint", False),
    ],
)
def test_what_counts_as_not_served_natively(status: int, message: str, falls_back: bool) -> None:
    assert not_served_natively(UpstreamError(message, status=status)) is falls_back


async def test_history_shapes_the_route_accepts(make, fake) -> None:
    """The gateway's own loop history (results inline after their calls) is valid Anthropic."""
    fake.add(Turn.text("ok"))
    call = ToolCall("srvtoolu_1", "bash_code_execution", {"command": "ls"}, server=True)
    history = (
        Message("user", (Text("go"),)),
        Message("assistant", (Text("running"), call, ToolResult("srvtoolu_1", (Text("a"),)))),
    )
    await collect(make(), replace(TURN, messages=history))
    assert fake.rejections == [] and fake.messages_requests[-1]["messages"][-1]["role"] == "user"
