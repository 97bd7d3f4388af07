"""The scripted fake upstream: Databricks' rules, recording, the script DSL and the docs/protocol.md §4.5 chunking."""

from __future__ import annotations

from typing import Any

import httpx
import orjson
import pytest

from execbridge.testing import FakeUpstream, Turn, check_request, last_tool_result, tool_results

FN = {"type": "function", "function": {"name": "f", "parameters": {"type": "object", "properties": {}}}}
CALL_A = {"id": "A", "type": "function", "function": {"name": "f", "arguments": "{}"}}
CALL_B = {"id": "B", "type": "function", "function": {"name": "f", "arguments": '{"x":1}'}}
USER = {"role": "user", "content": "hi"}


def body(*messages: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"model": "m", "messages": list(messages), **extra}


# (id, body, options, expected (status, error_code, message fragment) or None)
RULES: list[tuple[str, Any, dict[str, Any], tuple[int, str, str] | None]] = [
    ("plain chat passes", body(USER), {}, None),
    ("tools with parameters pass", body(USER, tools=[FN], tool_choice="auto"), {}, None),
    (
        "flat Responses-style tool",
        body(USER, tools=[{"type": "function", "name": "f", "parameters": {}}]),
        {},
        (400, "INVALID_PARAMETER_VALUE", "Missing 'function' in the tool specification."),
    ),
    (
        "tool without parameters",
        body(USER, tools=[{"type": "function", "function": {"name": "f"}}]),
        {},
        (400, "INVALID_PARAMETER_VALUE", '"parameters" is a required property'),
    ),
    (
        "bad function name",
        body(USER, tools=[{"type": "function", "function": {"name": "a b", "parameters": {}}}]),
        {},
        (400, "INVALID_PARAMETER_VALUE", "Invalid function name"),
    ),
    ("tool_choice without tools", body(USER, tool_choice="auto"), {}, (400, "BAD_REQUEST", "only allowed when")),
    ("empty string content", body({"role": "user", "content": ""}), {}, (400, "BAD_REQUEST", "non-whitespace")),
    (
        "whitespace text part",
        body({"role": "user", "content": [{"type": "text", "text": " "}]}),
        {},
        (400, "BAD_REQUEST", "non-whitespace"),
    ),
    ("empty parts list", body({"role": "user", "content": []}), {}, (400, "BAD_REQUEST", "non-empty")),
    (
        "assistant with empty text beside tool calls",
        body(
            USER,
            {"role": "assistant", "content": "", "tool_calls": [CALL_A]},
            {"role": "tool", "tool_call_id": "A", "content": "ok"},
        ),
        {},
        (400, "BAD_REQUEST", "non-whitespace"),
    ),
    (
        "tool message answering nothing",
        body(USER, {"role": "tool", "tool_call_id": "X", "content": "ok"}),
        {},
        (400, "BAD_REQUEST", "must be a response to a preceding message"),
    ),
    (
        "tool message with an unknown id",
        body(
            USER, {"role": "assistant", "tool_calls": [CALL_A]}, {"role": "tool", "tool_call_id": "B", "content": "ok"}
        ),
        {},
        (400, "BAD_REQUEST", "unknown tool_call_id 'B'"),
    ),
    (
        "unanswered call",
        body(
            USER,
            {"role": "assistant", "tool_calls": [CALL_A, CALL_B]},
            {"role": "tool", "tool_call_id": "A", "content": "ok"},
        ),
        {},
        (400, "BAD_REQUEST", "did not have response messages: B"),
    ),
    (
        "unanswered call allowed when not required",
        body(USER, {"role": "assistant", "tool_calls": [CALL_A]}),
        {"require_tool_results": False},
        None,
    ),
    (
        "parallel history passes by default",
        body(
            USER,
            {"role": "assistant", "tool_calls": [CALL_A, CALL_B]},
            {"role": "tool", "tool_call_id": "A", "content": "a"},
            {"role": "tool", "tool_call_id": "B", "content": "b"},
        ),
        {},
        None,
    ),
    (
        "gpt-oss rejects multi-call history",
        body(
            USER,
            {"role": "assistant", "tool_calls": [CALL_A, CALL_B]},
            {"role": "tool", "tool_call_id": "A", "content": "a"},
            {"role": "tool", "tool_call_id": "B", "content": "b"},
        ),
        {"reject_multiple_tool_calls": True},
        (400, "BAD_REQUEST", "Multiple tool calls are not supported.\n"),
    ),
    (
        "image in a tool message",
        body(
            USER,
            {"role": "assistant", "tool_calls": [CALL_A]},
            {"role": "tool", "tool_call_id": "A", "content": [{"type": "image_url", "image_url": {"url": "data:x"}}]},
        ),
        {},
        (400, "BAD_REQUEST", "not allowed for role 'tool'"),
    ),
    (
        "invalid JSON arguments in history",
        body(
            USER,
            {
                "role": "assistant",
                "tool_calls": [{"id": "A", "type": "function", "function": {"name": "f", "arguments": "{"}}],
            },
            {"role": "tool", "tool_call_id": "A", "content": "a"},
        ),
        {},
        (400, "INVALID_PARAMETER_VALUE", "JSON object"),
    ),
    ("unknown model when enforced", body(USER), {"models": ["other"]}, (404, "ENDPOINT_NOT_FOUND", "does not exist")),
    ("no messages", body(), {}, (400, "BAD_REQUEST", "non-empty list")),
    (
        "stream_options without stream",
        body(USER, stream_options={"include_usage": True}),
        {},
        (400, "BAD_REQUEST", "only allowed when 'stream'"),
    ),
]


@pytest.mark.parametrize(("request_body", "options", "expected"), [r[1:] for r in RULES], ids=[r[0] for r in RULES])
def test_rules(request_body, options, expected):
    got = check_request(request_body, **options)
    if expected is None:
        assert got is None
        return
    assert got is not None
    status, envelope = got
    assert (status, envelope["error_code"]) == expected[:2]
    assert expected[2] in envelope["message"]


@pytest.fixture(scope="module")
def fake():
    with FakeUpstream() as server:
        yield server


@pytest.fixture
def http(fake):
    fake.reset()
    with httpx.Client(base_url=fake.base_url, trust_env=False) as client:
        yield client


def chat(http: httpx.Client, **extra: Any) -> httpx.Response:
    return http.post("/chat/completions", json=body(USER, **extra))


def sse(response: httpx.Response) -> list[Any]:
    lines = [line for line in response.text.split("\n\n") if line]
    assert all(line.startswith("data: ") for line in lines)
    return [line[6:] if line[6:] == "[DONE]" else orjson.loads(line[6:]) for line in lines]


def test_violations_get_databricks_envelope_and_consume_no_turn(fake, http):
    fake.add(Turn.text("hello"))
    bad = http.post("/chat/completions", json=body(USER, tools=[{"type": "function", "name": "f"}]))
    assert bad.status_code == 400
    assert bad.json() == {
        "error_code": "INVALID_PARAMETER_VALUE",
        "message": "Missing 'function' in the tool specification.",
    }
    assert fake.remaining == 1
    ok = chat(http)
    assert ok.json()["choices"][0]["message"]["content"] == "hello"
    assert len(fake.rejections) == 1
    assert len(fake.chat_requests) == 2


def test_records_body_and_headers(fake, http):
    fake.add(Turn.text("hi"))
    http.post("/chat/completions", json=body(USER), headers={"Authorization": "Bearer k1", "X-Extra": "1"})
    recorded = fake.requests[-1]
    assert recorded.json == body(USER)
    assert recorded.headers["authorization"] == "Bearer k1"
    assert recorded.headers["x-extra"] == "1"
    assert recorded.path == "/v1/chat/completions"


def test_non_streaming_reply_shape(fake, http):
    fake.add(Turn.text("Let me look.").call("bash_code_execution", command="ls").but(prompt_tokens=7, cached_tokens=3))
    data = chat(http).json()
    choice = data["choices"][0]
    assert data["object"] == "chat.completion"
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"]["content"] == "Let me look."
    assert choice["message"]["tool_calls"] == [
        {
            "id": "call_0001",
            "type": "function",
            "function": {"name": "bash_code_execution", "arguments": '{"command":"ls"}'},
        }
    ]
    assert data["usage"]["prompt_tokens"] == 7
    assert data["usage"]["prompt_tokens_details"] == {"cached_tokens": 3}


def test_streaming_chunks_follow_the_reference(fake, http):
    fake.add(Turn.text("Hello there, world").call("f", '{"code": "print(2**100)"}'))
    chunks = sse(chat(http, stream=True, stream_options={"include_usage": True}))
    assert chunks[-1] == "[DONE]"
    usage_chunk = chunks[-2]
    assert usage_chunk["choices"] == [] and usage_chunk["usage"]["total_tokens"] > 0
    deltas = [c["choices"][0]["delta"] for c in chunks[:-2]]
    assert deltas[0] == {"role": "assistant", "content": ""}
    assert "".join(d.get("content") or "" for d in deltas) == "Hello there, world"
    assert sum(1 for d in deltas if "content" in d) >= 3  # text arrives in pieces
    calls = [d["tool_calls"][0] for d in deltas if "tool_calls" in d]
    assert calls[0] == {"index": 0, "id": "call_0001", "type": "function", "function": {"name": "f", "arguments": ""}}
    pieces = [c["function"]["arguments"] for c in calls[1:]]
    assert len(pieces) >= 2 and "".join(pieces) == '{"code": "print(2**100)"}'
    assert all("id" not in c for c in calls[1:])
    assert chunks[-3]["choices"][0] == {"index": 0, "delta": {}, "finish_reason": "tool_calls"}
    assert {c["id"] for c in chunks[:-1]} == {chunks[0]["id"]}


def test_usage_chunk_only_when_asked(fake, http):
    fake.add(Turn.text("hi"))
    chunks = sse(chat(http, stream=True))
    assert chunks[-1] == "[DONE]"
    assert all(c["choices"] for c in chunks[:-1])


def test_content_parts_and_reasoning(fake, http):
    fake.add(Turn.reasoning("thinking hard", "answer", signature="s1").but(content_parts=True))
    fake.add(Turn.reasoning("thinking hard", "answer", signature="s1").but(content_parts=True))
    message = chat(http).json()["choices"][0]["message"]
    assert message["content"] == [
        {"type": "reasoning", "summary": [{"type": "summary_text", "text": "thinking hard", "signature": "s1"}]},
        {"type": "text", "text": "answer"},
    ]
    deltas = [c["choices"][0]["delta"] for c in sse(chat(http, stream=True))[:-1]]
    assert deltas[0] == {"role": "assistant"}
    assert all(isinstance(d["content"], list) for d in deltas[1:-1])


def test_callable_turns_see_the_request(fake, http):
    fake.add(lambda req: Turn.text(f"you said {req['messages'][-1]['content']}"), lambda req: "plain string")
    assert chat(http).json()["choices"][0]["message"]["content"] == "you said hi"
    assert chat(http).json()["choices"][0]["message"]["content"] == "plain string"


def test_tool_result_helpers():
    request = body(
        USER,
        {"role": "assistant", "tool_calls": [CALL_A, CALL_B]},
        {"role": "tool", "tool_call_id": "A", "content": "a"},
        {"role": "tool", "tool_call_id": "B", "content": [{"type": "text", "text": "b"}]},
    )
    assert tool_results(request) == ["a", "b"]
    assert last_tool_result(request) == "b"


def test_exhausted_script_and_failing_callable_say_so(fake, http):
    def broken(req):
        raise KeyError("nope")

    fake.add(broken)
    failed = chat(http)
    assert failed.status_code == 418 and "KeyError" in failed.json()["message"]
    exhausted = chat(http)
    assert exhausted.status_code == 418
    assert exhausted.json()["error_code"] == "FAKE_SCRIPT_EXHAUSTED"


def test_error_turns(fake, http):
    fake.add(Turn.error(429, "slow down", retry_after=2), Turn.error(400, "bad", envelope="openai", code="invalid_x"))
    limited = chat(http)
    assert limited.status_code == 429
    assert limited.headers["retry-after"] == "2"
    assert limited.json() == {"error_code": "REQUEST_LIMIT_EXCEEDED", "message": "slow down"}
    openai_style = chat(http)
    assert openai_style.json()["error"]["message"] == "bad"


def test_models_listing(fake, http):
    for path in (f"{fake.base_url}/models", f"{fake.databricks_url}/models", f"{fake.url}/models"):
        assert [m["id"] for m in http.get(path).json()["data"]] == ["fake-model"]


def test_databricks_base_url_routes_too(fake, http):
    fake.add(Turn.text("db"))
    response = http.post(f"{fake.databricks_url}/chat/completions", json=body(USER))
    assert response.json()["choices"][0]["message"]["content"] == "db"


def test_require_api_key_and_multiple_calls_options():
    options = {"require_api_key": "sekret", "reject_multiple_tool_calls": True}
    with (
        FakeUpstream([Turn.text("ok")], **options) as fake,
        httpx.Client(base_url=fake.base_url, trust_env=False) as http,
    ):
        denied = chat(http)
        assert denied.status_code == 401
        assert denied.json()["error_code"] == "UNAUTHENTICATED"
        multi = http.post(
            "/chat/completions",
            headers={"Authorization": "Bearer sekret"},
            json=body(
                USER,
                {"role": "assistant", "tool_calls": [CALL_A, CALL_B]},
                {"role": "tool", "tool_call_id": "A", "content": "a"},
                {"role": "tool", "tool_call_id": "B", "content": "b"},
            ),
        )
        assert multi.json() == {"error_code": "BAD_REQUEST", "message": "Multiple tool calls are not supported.\n"}
        ok = http.post("/chat/completions", headers={"Authorization": "Bearer sekret"}, json=body(USER))
        assert ok.status_code == 200


def test_instant_mode():
    with (
        FakeUpstream(instant=True, instant_text="canned") as fake,
        httpx.Client(base_url=fake.base_url, trust_env=False) as http,
    ):
        plain = chat(http).json()
        assert plain["choices"][0]["message"]["content"] == "canned"
        chunks = sse(http.post("/chat/completions", content=b'{"model": "m", "stream": true, "messages": []}'))
        assert "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks[:-2]) == "canned"
        assert chunks[-2]["usage"]["completion_tokens"] == 16
        assert fake.requests == []  # instant mode does no bookkeeping


async def test_async_context_manager():
    async with (
        FakeUpstream([Turn.text("async")]) as fake,
        httpx.AsyncClient(base_url=fake.base_url, trust_env=False) as http,
    ):
        response = await http.post("/chat/completions", json=body(USER))
    assert response.json()["choices"][0]["message"]["content"] == "async"
