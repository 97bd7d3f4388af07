"""Helpers that push rendered bytes through the official ``anthropic`` SDK (its real HTTP client,
response parsing and stream accumulator) using an in-process ``httpx2.MockTransport`` (SDK 2.x ships on httpx2)."""

from __future__ import annotations

from typing import Any

import anthropic
import httpx2

REQUEST: dict[str, Any] = {
    "model": "test-model",
    "max_tokens": 1024,
    "messages": [{"role": "user", "content": "hi"}],
}


def client_returning(
    status: int, body: bytes, content_type: str, headers: dict[str, str] | None = None
) -> anthropic.Anthropic:
    def handler(request: httpx2.Request) -> httpx2.Response:
        return httpx2.Response(status, headers={"content-type": content_type, **(headers or {})}, content=body)

    return anthropic.Anthropic(
        api_key="sk-test",
        base_url="http://execbridge.test",
        max_retries=0,
        http_client=httpx2.Client(transport=httpx2.MockTransport(handler)),
    )


def sse_client(sse: bytes) -> anthropic.Anthropic:
    return client_returning(200, sse, "text/event-stream")


def json_client(body: bytes) -> anthropic.Anthropic:
    return client_returning(200, body, "application/json")


def capture_requests(reply: bytes) -> tuple[anthropic.Anthropic, list[httpx2.Request]]:
    """A client that records what the SDK sends and answers every request with ``reply`` (JSON)."""
    seen: list[httpx2.Request] = []

    def handler(request: httpx2.Request) -> httpx2.Response:
        seen.append(request)
        return httpx2.Response(200, headers={"content-type": "application/json"}, content=reply)

    client = anthropic.Anthropic(
        api_key="sk-test",
        base_url="http://execbridge.test",
        max_retries=0,
        http_client=httpx2.Client(transport=httpx2.MockTransport(handler)),
    )
    return client, seen
