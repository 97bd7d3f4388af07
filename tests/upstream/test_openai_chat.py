"""OpenAIChatUpstream against the fake server over real HTTP on 127.0.0.1 (and a mock transport for
byte-level SSE framing and transport failures)."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

import httpx
import orjson
import pytest

from execbridge.config import Settings
from execbridge.errors import (
    AuthenticationFailed,
    UpstreamError,
    UpstreamOverloaded,
    UpstreamRateLimited,
    UpstreamTimeout,
)
from execbridge.testing import FakeUpstream, Reply, Turn, last_tool_result
from execbridge.types import FunctionDef, Message, Text, ToolCall, ToolResult
from execbridge.upstream.base import ChatTurn, Finished, ReasoningDelta, TextDelta, TokenUsage, ToolCallDelta
from execbridge.upstream.error_envelopes import parse_retry_after
from execbridge.upstream.openai_chat import OpenAIChatUpstream

BASH = FunctionDef(
    "bash_code_execution", "Run a bash command.", {"type": "object", "properties": {"command": {"type": "string"}}}
)
TURN = ChatTurn(model="fake-model", messages=(Message("user", (Text("hi"),)),), max_tokens=256, functions=(BASH,))


@pytest.fixture(scope="module")
def fake():
    with FakeUpstream() as server:
        yield server


@pytest.fixture(params=["fast", "httpx"])
async def make(fake, request) -> AsyncIterator[Callable[..., OpenAIChatUpstream]]:
    """Clients on both HTTP paths: the default asyncio+httptools one and the httpx fallback."""
    fake.reset()
    clients: list[OpenAIChatUpstream] = []

    def factory(**options: Any) -> OpenAIChatUpstream:
        options.setdefault("http", request.param)
        options.setdefault("trust_env", False)
        options.setdefault("backoff_base_s", 0.001)
        options.setdefault("backoff_max_s", 0.01)
        client = OpenAIChatUpstream(options.pop("base_url", fake.base_url), options.pop("api_key", "key-1"), **options)
        clients.append(client)
        return client

    yield factory
    for client in clients:
        await client.aclose()


async def collect(upstream: OpenAIChatUpstream, turn: ChatTurn = TURN) -> list[Any]:
    async with contextlib.aclosing(upstream.stream_turn(turn)) as events:
        return [event async for event in events]


def fold(events: list[Any]) -> dict[str, Any]:
    """Events reassembled the way the engine will: text, reasoning, calls by index."""
    calls: dict[int, dict[str, Any]] = {}
    for e in events:
        if isinstance(e, ToolCallDelta):
            call = calls.setdefault(e.index, {"id": e.id, "name": e.name, "arguments": ""})
            call["arguments"] += e.arguments
    assert isinstance(events[-1], Finished)
    return {
        "text": "".join(e.text for e in events if isinstance(e, TextDelta)),
        "reasoning": "".join(e.text for e in events if isinstance(e, ReasoningDelta)),
        "signatures": [e.signature for e in events if isinstance(e, ReasoningDelta) and e.signature],
        "calls": [calls[i] for i in sorted(calls)],
        "usage": next((e for e in events if isinstance(e, TokenUsage)), None),
        "finish": events[-1].reason,
    }


both_modes = pytest.mark.parametrize("stream", [True, False], ids=["stream", "json"])


@both_modes
async def test_text_reply(fake, make, stream):
    fake.add(Turn.text("Hello there, this is a longer answer.").but(prompt_tokens=11, completion_tokens=5))
    events = await collect(make(), replace(TURN, stream=stream))
    assert fold(events) == {
        "text": "Hello there, this is a longer answer.",
        "reasoning": "",
        "signatures": [],
        "calls": [],
        "usage": TokenUsage(11, 5, 0),
        "finish": "stop",
    }
    assert isinstance(events[-2], TokenUsage)  # usage right before Finished
    sent = fake.chat_requests[0]
    assert sent["stream"] is stream if stream else "stream" not in sent
    assert fake.requests[0].headers["authorization"] == "Bearer key-1"


@both_modes
async def test_tool_calls_reassembled(fake, make, stream):
    fake.add(
        Turn.text("Running both.")
        .call("bash_code_execution", command="echo 'a long enough command'")
        .call("bash_code_execution", command="ls -la /tmp")
    )
    events = await collect(make(), replace(TURN, stream=stream))
    folded = fold(events)
    assert folded["finish"] == "tool_calls"
    assert folded["calls"] == [
        {"id": "call_0001", "name": "bash_code_execution", "arguments": '{"command":"echo \'a long enough command\'"}'},
        {"id": "call_0002", "name": "bash_code_execution", "arguments": '{"command":"ls -la /tmp"}'},
    ]
    deltas = [e for e in events if isinstance(e, ToolCallDelta)]
    firsts = {}
    for d in deltas:
        if d.index not in firsts:
            firsts[d.index] = d
            assert d.id and d.name
        else:
            assert d.id is None and d.name is None
    # pieces of one call never interleave with another's
    indexes = [d.index for d in deltas]
    assert indexes == sorted(indexes)
    if stream:
        assert len(deltas) > 2


@both_modes
async def test_content_as_parts_with_reasoning(fake, make, stream):
    fake.add(
        Turn.reasoning("Let me think about this carefully.", "The answer is 4.", signature="sig-1").but(
            content_parts=True
        )
    )
    folded = fold(await collect(make(), replace(TURN, stream=stream)))
    assert folded["reasoning"] == "Let me think about this carefully."
    assert folded["signatures"] == ["sig-1"]
    assert folded["text"] == "The answer is 4."


@both_modes
async def test_reasoning_content_field(fake, make, stream):
    fake.add(Turn.reasoning("pondering", "done").but(reasoning_style="reasoning_content"))
    folded = fold(await collect(make(), replace(TURN, stream=stream)))
    assert (folded["reasoning"], folded["text"]) == ("pondering", "done")


@both_modes
async def test_usage_with_cached_tokens(fake, make, stream):
    fake.add(Turn.text("hi").but(prompt_tokens=100, completion_tokens=3, cached_tokens=64))
    assert fold(await collect(make(), replace(TURN, stream=stream)))["usage"] == TokenUsage(100, 3, 64)


@pytest.mark.parametrize(
    ("reply", "finish"),
    [
        (Turn.text("cut").but(finish_reason="length"), "length"),
        (Turn.text("hidden").but(finish_reason="content_filter"), "content_filter"),
        (Turn.tool_call("bash_code_execution", command="ls").but(finish_reason="stop"), "tool_calls"),
        (Turn.text("x").but(finish_reason="end_turn"), "stop"),
    ],
)
async def test_finish_reason_mapping(fake, make, reply, finish):
    fake.add(reply)
    assert fold(await collect(make()))["finish"] == finish


async def test_history_round_trip_through_the_rules(fake, make):
    fake.add(lambda req: Turn.text(f"saw {last_tool_result(req)}"))
    messages = (
        Message("user", (Text("run it"),)),
        Message(
            "assistant",
            (
                Text("Sure."),
                ToolCall("call_1", "bash_code_execution", {"command": "echo hi"}, server=True),
                ToolResult("call_1", (Text("hi\n"),)),
                ToolCall("call_2", "bash_code_execution", {"command": "echo ho"}, server=True),
                ToolResult("call_2", (Text("ho\n"),)),
            ),
        ),
    )
    # Databricks' dialect: its rules refuse the empty content other servers take for call-only messages.
    events = await collect(make(base_url=fake.databricks_url), replace(TURN, messages=messages, system="sys"))
    assert fold(events)["text"] == "saw ho\n"
    assert fake.rejections == []


async def test_turn_api_key_overrides_configured_key(fake, make):
    fake.add(Turn.text("a"), Turn.text("b"))
    client = make(api_key=None)
    await collect(client)
    await collect(client, replace(TURN, api_key="client-key"))
    assert "authorization" not in fake.requests[0].headers
    assert fake.requests[1].headers["authorization"] == "Bearer client-key"


@both_modes
async def test_connection_goes_back_to_the_pool(fake, make, stream):
    fake.add(*[Turn.text("pooled answer")] * 3)
    client = make(http="fast")
    for _ in range(3):
        await collect(client, replace(TURN, stream=stream))
    assert client._fast is not None
    assert len(client._fast._idle) == 1


@pytest.mark.parametrize("key", ["k\r\nx-injected: 1", "k\x00", "ключ"])
async def test_keys_that_could_forge_headers_are_refused(fake, make, key):
    with pytest.raises(AuthenticationFailed):
        await collect(make(), replace(TURN, api_key=key))
    assert fake.requests == []


# ---------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("error", "cls", "status", "code", "message"),
    [
        (
            Turn.error(400, "Missing 'function' in the tool specification.", code="INVALID_PARAMETER_VALUE"),
            UpstreamError,
            400,
            "INVALID_PARAMETER_VALUE",
            "Missing 'function' in the tool specification.",
        ),
        (
            Turn.error(404, "The model `x` does not exist", envelope="openai", code="model_not_found"),
            UpstreamError,
            404,
            "model_not_found",
            "The model `x` does not exist",
        ),
        (Turn.raw_error(422, "Unprocessable: bad field"), UpstreamError, 422, None, "Unprocessable: bad field"),
        (Turn.raw_error(400, {"detail": "fastapi says no"}), UpstreamError, 400, None, "fastapi says no"),
        (Turn.raw_error(400, {"error": "ollama says no"}), UpstreamError, 400, None, "ollama says no"),
        (
            Turn.error(429, "QPS limit exceeded"),
            UpstreamRateLimited,
            429,
            "REQUEST_LIMIT_EXCEEDED",
            "QPS limit exceeded",
        ),
        (Turn.error(503, "busy"), UpstreamOverloaded, 503, "TEMPORARILY_UNAVAILABLE", "busy"),
        (
            Turn.error(529, "Overloaded", envelope="openai", code="overloaded_error"),
            UpstreamOverloaded,
            529,
            "overloaded_error",
            "Overloaded",
        ),
        (Turn.error(500, "kaboom"), UpstreamError, 500, "INTERNAL_ERROR", "kaboom"),
        (Turn.error(504, "gateway timeout"), UpstreamTimeout, 504, "INTERNAL_ERROR", "gateway timeout"),
    ],
)
async def test_error_envelopes_mapped_with_message_kept(fake, make, error, cls, status, code, message):
    fake.add(error)
    with pytest.raises(UpstreamError) as caught:
        await collect(make(max_retries=0))
    assert type(caught.value) is cls
    assert (caught.value.status, caught.value.code, caught.value.message) == (status, code, message)


@pytest.mark.parametrize(
    ("error", "status", "code", "message"),
    [
        (Turn.error(401, "Invalid access token."), 401, "UNAUTHENTICATED", "Invalid access token."),
        (Turn.error(403, "Forbidden"), 403, "PERMISSION_DENIED", "Forbidden"),
    ],
)
async def test_client_key_refused_keeps_the_upstream_status(fake, make, error, status, code, message):
    """Pass-through: the client's own key was refused, which is the client's authentication error."""
    fake.add(error)
    with pytest.raises(UpstreamError) as caught:
        await collect(make(max_retries=0), replace(TURN, api_key="client-key"))
    assert (caught.value.status, caught.value.code, caught.value.message) == (status, code, message)


@pytest.mark.parametrize("status", [401, 403])
async def test_gateway_key_refused_is_a_bad_gateway(fake, make, status):
    """The gateway's own key was refused: the operator must fix it, the client cannot (502, not 401)."""
    fake.add(Turn.error(status, "Invalid access token."))
    with pytest.raises(UpstreamError) as caught:
        await collect(make(max_retries=0))
    assert caught.value.status is None and caught.value.code == "upstream_credential_refused"
    expected = f"the upstream refused the gateway's credential (HTTP {status}): Invalid access token."
    assert caught.value.message == expected


async def test_error_inside_stream_before_output_is_retried_by_its_code(fake, make):
    fake.add(
        Reply(stream_error={"error": {"message": "rate limited", "type": "rate_limit_error", "code": 429}}),
        Turn.text("ok"),
    )
    assert fold(await collect(make()))["text"] == "ok"
    assert len(fake.chat_requests) == 2


async def test_error_inside_stream_after_output_is_not_retried(fake, make):
    fake.add(
        Turn.text("partial answer").but(stream_error={"error": {"message": "model crashed", "code": 500}}),
        Turn.text("never"),
    )
    seen: list[Any] = []
    with pytest.raises(UpstreamError, match="model crashed") as caught:
        async for event in make().stream_turn(TURN):
            seen.append(event)
    assert caught.value.status == 500
    assert "".join(e.text for e in seen) == "partial answer"
    assert len(fake.chat_requests) == 1


async def test_dropped_stream_after_output_is_not_retried(fake, make):
    fake.add(Turn.text("some text that streams").but(abort_after=3), Turn.text("never"))
    seen: list[Any] = []
    with pytest.raises(UpstreamError):
        async for event in make().stream_turn(TURN):
            seen.append(event)
    assert seen and all(isinstance(e, TextDelta) for e in seen)
    assert len(fake.chat_requests) == 1


# ---------------------------------------------------------------- retries


def waits_of(client: OpenAIChatUpstream) -> list[float | None]:
    """Record the delay the client decides on before each retry (``None``: it gives up), so tests check
    the decision itself instead of timing the wait on a machine that may be busy."""
    decided: list[float | None] = []
    decide = client._retry_delay

    def recording(attempt: int, retry_after: float | None) -> float | None:
        decided.append(decide(attempt, retry_after))
        return decided[-1]

    client._retry_delay = recording  # type: ignore[method-assign]
    return decided


async def test_retry_after_seconds_is_honoured(fake, make):
    fake.add(Turn.error(429, "slow down", retry_after=0.2), Turn.text("ok"))
    client = make()
    waits = waits_of(client)
    started = time.monotonic()
    assert fold(await collect(client))["text"] == "ok"
    assert waits == [0.2]
    assert time.monotonic() - started >= 0.2  # and it did wait (a lower bound holds on any machine)
    assert len(fake.chat_requests) == 2


async def test_retry_after_ms_is_honoured(fake, make):
    fake.add(Turn.error(503, "busy", retry_after_ms=150, retry_after=30), Turn.text("ok"))
    client = make()
    waits = waits_of(client)
    assert fold(await collect(client))["text"] == "ok"
    assert waits == [0.15]  # the milliseconds win over the 30 s of ``retry-after``


@pytest.mark.parametrize("status", [429, 500, 502, 503, 504, 529])
async def test_retryable_statuses(fake, make, status):
    fake.add(Turn.error(status, "transient"), Turn.error(status, "transient"), Turn.text("ok"))
    assert fold(await collect(make(max_retries=2)))["text"] == "ok"
    assert len(fake.chat_requests) == 3


async def test_retries_are_bounded(fake, make):
    fake.add(*[Turn.error(529, "Overloaded")] * 3, Turn.text("never"))
    with pytest.raises(UpstreamOverloaded):
        await collect(make(max_retries=2))
    assert len(fake.chat_requests) == 3


@pytest.mark.parametrize("status", [400, 401, 403, 404, 422])
async def test_client_errors_are_not_retried(fake, make, status):
    fake.add(Turn.error(status, "no"), Turn.text("never"))
    with pytest.raises(UpstreamError):
        await collect(make())
    assert len(fake.chat_requests) == 1


async def test_retry_after_beyond_cap_gives_up_at_once(fake, make):
    fake.add(Turn.error(429, "come back in a minute", retry_after=60), Turn.text("never"))
    client = make(retry_after_max_s=5)
    waits = waits_of(client)
    with pytest.raises(UpstreamRateLimited) as caught:
        await collect(client)
    assert caught.value.retry_after == 60
    assert waits == [None]  # gave up at once, without sleeping
    assert len(fake.chat_requests) == 1


def test_parse_retry_after():
    later = format_datetime(datetime.now(UTC) + timedelta(seconds=30), usegmt=True)
    assert parse_retry_after({"retry-after": "2.5"}) == 2.5
    assert parse_retry_after({"retry-after-ms": "250", "retry-after": "9"}) == 0.25
    assert 28 < (parse_retry_after({"retry-after": later}) or 0) <= 30
    assert parse_retry_after({"retry-after": "soon"}) is None
    assert parse_retry_after({}) is None


# ---------------------------------------------------------------- cancellation and timeouts


async def wait_for(predicate: Callable[[], bool], timeout: float = 3.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.01)


async def test_closing_the_iteration_closes_the_connection(fake, make):
    fake.add(Turn.text("x" * 400).but(chunk_chars=4, chunk_delay=0.02))
    events = make().stream_turn(TURN)
    first = await anext(events)
    assert isinstance(first, TextDelta)
    await events.aclose()
    await wait_for(lambda: fake.disconnects == 1)
    assert fake.completed_streams == 0


async def test_cancelling_the_task_closes_the_connection(fake, make):
    fake.add(Turn.text("x" * 400).but(chunk_chars=4, chunk_delay=0.02))
    client = make()
    got_one = asyncio.Event()

    async def consume() -> None:
        async with contextlib.aclosing(client.stream_turn(TURN)) as events:
            async for _ in events:
                got_one.set()

    task = asyncio.create_task(consume())
    await asyncio.wait_for(got_one.wait(), 30)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await wait_for(lambda: fake.disconnects == 1)


async def test_read_timeout(fake, make):
    # A late answer would arrive whole (no exception), so the raise is what proves the timeout fired.
    fake.add(Turn.text("late").but(delay=30.0), Turn.text("never"))
    with pytest.raises(UpstreamTimeout):
        await collect(make(read_timeout_s=0.1))
    assert len(fake.chat_requests) == 1  # a slow model is not retried


async def test_total_timeout_mid_stream(fake, make):
    fake.add(Turn.text("y" * 200).but(chunk_chars=2, chunk_delay=0.02))
    seen: list[Any] = []
    with pytest.raises(UpstreamTimeout, match="total timeout"):
        async for event in make(total_timeout_s=0.2, read_timeout_s=5).stream_turn(TURN):
            seen.append(event)
    assert seen


async def test_connection_refused_names_the_url(make):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"http://127.0.0.1:{port}/v1"
    with pytest.raises(UpstreamError) as caught:
        await collect(make(base_url=url, max_retries=1))
    assert f"{url}/chat/completions" in caught.value.message
    assert caught.value.code == "connect_error"


# ---------------------------------------------------------------- byte-level framing (mock transport)


def sse_body(*events: Any, done: bool = True, eol: bytes = b"\n") -> bytes:
    lines = [b"data: " + (e if isinstance(e, bytes) else orjson.dumps(e)) + eol + eol for e in events]
    return b"".join(lines) + (b"data: [DONE]" + eol + eol if done else b"")


def chunk(delta: dict[str, Any] | None = None, finish: str | None = None, **extra: Any) -> dict[str, Any]:
    choices = [] if delta is None else [{"index": 0, "delta": delta, "finish_reason": finish, **extra}]
    return {"id": "c", "object": "chat.completion.chunk", "choices": choices}


async def mocked(body: bytes, piece: int = 7, content_type: str = "text/event-stream", **options: Any) -> list[Any]:
    """Run one turn against a canned body delivered in ``piece``-byte reads."""

    async def pieces() -> AsyncIterator[bytes]:
        for i in range(0, len(body), piece):
            yield body[i : i + piece]

    transport = httpx.MockTransport(
        lambda request: httpx.Response(200, headers={"content-type": content_type}, content=pieces())
    )
    client = OpenAIChatUpstream("http://upstream.invalid/v1", "k", transport=transport, trust_env=False, **options)
    try:
        return await collect(client)
    finally:
        await client.aclose()


@pytest.mark.parametrize("eol", [b"\n", b"\r\n"], ids=["lf", "crlf"])
@pytest.mark.parametrize("piece", [1, 7, 4096])
async def test_sse_framing_any_read_size(eol, piece):
    body = (
        b": keep-alive comment"
        + eol
        + b"event: ignored"
        + eol
        + sse_body(
            chunk({"role": "assistant", "content": ""}),
            chunk({"content": "héllo "}),
            chunk({"content": [{"type": "text", "text": "wörld"}]}),
            chunk({}, "stop"),
            chunk(None, usage={"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5})
            | {"usage": {"prompt_tokens": 3, "completion_tokens": 2}},
            eol=eol,
        )
    )
    folded = fold(await mocked(body, piece))
    assert folded["text"] == "héllo wörld"
    assert folded["usage"] == TokenUsage(3, 2, 0)


async def test_multi_line_data_field():
    body = (
        b'data: {"choices":[{"index":0,\n'
        b'data: "delta":{"content":"joined"},"finish_reason":"stop"}]}\n\n'
        b"data: [DONE]\n\n"
    )
    assert fold(await mocked(body))["text"] == "joined"


async def test_databricks_empty_object_argument_placeholder():
    tc = lambda **kw: chunk({"tool_calls": [kw]})  # noqa: E731
    body = sse_body(
        tc(index=0, id="t1", type="function", function={"name": "f", "arguments": "{}"}),
        tc(index=0, function={"arguments": '{"a":'}),
        tc(index=0, function={"arguments": "1}"}),
        tc(index=1, id="t2", type="function", function={"name": "g", "arguments": "{}"}),
        chunk({}, "tool_calls"),
    )
    folded = fold(await mocked(body))
    assert folded["calls"] == [
        {"id": "t1", "name": "f", "arguments": '{"a":1}'},
        {"id": "t2", "name": "g", "arguments": "{}"},
    ]


async def test_tool_calls_without_index_or_with_reused_index():
    body = sse_body(
        chunk({"tool_calls": [{"id": "a", "function": {"name": "f", "arguments": '{"x":1}'}}]}),
        chunk({"tool_calls": [{"index": 0, "id": "b", "function": {"name": "g", "arguments": "{"}}]}),
        chunk({"tool_calls": [{"index": 0, "id": "b", "function": {"arguments": "}"}}]}),
        chunk({}, "tool_calls"),
    )
    folded = fold(await mocked(body))
    assert folded["calls"] == [
        {"id": "a", "name": "f", "arguments": '{"x":1}'},
        {"id": "b", "name": "g", "arguments": "{}"},
    ]


async def test_stream_without_done_but_finished_is_accepted():
    body = sse_body(chunk({"content": "ok"}), chunk({}, "stop", stop_reason="END"), done=False)
    events = await mocked(body)
    assert events[-1] == Finished("stop", "END")


async def test_truncated_stream_is_an_error():
    with pytest.raises(UpstreamError, match="ended before the turn finished"):
        await mocked(sse_body(chunk({"content": "ok"}), done=False))


async def test_invalid_json_chunk_is_an_error():
    with pytest.raises(UpstreamError, match="invalid JSON"):
        await mocked(sse_body(b"{not json"))


async def test_json_answer_to_a_stream_request():
    completion = {
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "whole"}, "finish_reason": "stop"}]
    }
    assert fold(await mocked(orjson.dumps(completion), content_type="application/json"))["text"] == "whole"


async def test_connect_errors_are_retried():
    calls = 0

    def handler(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise httpx.ConnectError("refused", request=request)
        completion = {"choices": [{"index": 0, "message": {"content": "second try"}, "finish_reason": "stop"}]}
        return httpx.Response(200, json=completion)

    client = OpenAIChatUpstream(
        "http://upstream.invalid/v1", transport=httpx.MockTransport(handler), backoff_base_s=0.001, trust_env=False
    )
    try:
        assert fold(await collect(client))["text"] == "second try"
    finally:
        await client.aclose()
    assert calls == 2


# ---------------------------------------------------------------- construction


def test_http_path_selection(monkeypatch):
    for name in (
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "ALL_PROXY",
        "NO_PROXY",
        "http_proxy",
        "https_proxy",
        "all_proxy",
        "no_proxy",
    ):
        monkeypatch.delenv(name, raising=False)
    assert OpenAIChatUpstream("http://127.0.0.1:9/v1")._fast is not None
    mock = httpx.MockTransport(lambda request: httpx.Response(200))
    assert OpenAIChatUpstream("http://127.0.0.1:9/v1", transport=mock)._fast is None
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.internal:3128")
    monkeypatch.setenv("NO_PROXY", "localhost")
    assert OpenAIChatUpstream("https://adb-1.azuredatabricks.net/serving-endpoints")._fast is None
    assert OpenAIChatUpstream("https://adb-1.azuredatabricks.net/serving-endpoints", trust_env=False)._fast is not None
    assert OpenAIChatUpstream("http://localhost:8000/v1")._fast is not None


async def test_from_settings_and_list_models(fake):
    settings = Settings(upstream_url=fake.databricks_url, upstream_api_key="dapi-x", upstream_max_retries=1)
    client = OpenAIChatUpstream.from_settings(settings, trust_env=False)
    try:
        assert client.base_url == fake.databricks_url
        assert client.dialect("databricks-gpt-oss-120b").one_tool_call_per_message
        assert [m.id for m in await client.list_models()] == ["fake-model"]
        assert fake.requests[-1].path == "/api/2.0/serving-endpoints"  # Databricks lists its endpoints
        assert fake.requests[-1].headers["authorization"] == "Bearer dapi-x"
    finally:
        await client.aclose()
