"""Which upstream ``serve`` builds from ``--upstream`` and ``--upstream-format`` (without Databricks auth;
``tests/gateway/test_databricks_native.py`` runs ``--provider databricks``)."""

from __future__ import annotations

import pytest

from execbridge.config import Settings
from execbridge.testing import FakeUpstream, Turn
from execbridge.types import Message, Text
from execbridge.upstream.anthropic_messages import AnthropicMessagesUpstream
from execbridge.upstream.base import ChatTurn
from execbridge.upstream.openai_chat import OpenAIChatUpstream
from execbridge.wiring import open_upstream, resolve_upstream


@pytest.mark.parametrize(
    ("url", "upstream_format", "expected", "base"),
    [
        ("http://h/v1", "auto", OpenAIChatUpstream, "http://h/v1"),
        ("http://h/serving-endpoints", "auto", OpenAIChatUpstream, "http://h/serving-endpoints"),
        (
            "http://h/serving-endpoints/anthropic",
            "auto",
            AnthropicMessagesUpstream,
            "http://h/serving-endpoints/anthropic",
        ),
        (
            "http://h/ai-gateway/anthropic/v1/messages",
            "auto",
            AnthropicMessagesUpstream,
            "http://h/ai-gateway/anthropic",
        ),
        ("http://h:4000", "anthropic", AnthropicMessagesUpstream, "http://h:4000"),
        ("http://h:4000/v1", "anthropic", AnthropicMessagesUpstream, "http://h:4000"),
        ("http://h/anthropic", "chat", OpenAIChatUpstream, "http://h/anthropic"),
    ],
)
async def test_the_format_picks_the_client(url: str, upstream_format: str, expected: type, base: str) -> None:
    settings = Settings(upstream_url=url, upstream_format=upstream_format)
    async with open_upstream(settings, await resolve_upstream(settings)) as upstream:
        assert type(upstream) is expected and upstream.base_url == base


async def test_keys_go_as_bearer_on_databricks_paths_and_as_x_api_key_elsewhere() -> None:
    with FakeUpstream([Turn.text("a"), Turn.text("b")]) as fake:
        turn = ChatTurn("claude-x", (Message("user", (Text("hi"),)),), 16, api_key="client-key", stream=False)
        for url in (f"{fake.url}/serving-endpoints/anthropic", f"{fake.url}/v1"):
            settings = Settings(upstream_url=url, upstream_format="anthropic")
            async with open_upstream(settings) as upstream:
                assert [e async for e in upstream.stream_turn(turn)]
        databricks, other = fake.requests
    assert databricks.headers["authorization"] == "Bearer client-key" and "x-api-key" not in databricks.headers
    assert other.headers["x-api-key"] == "client-key" and "authorization" not in other.headers
