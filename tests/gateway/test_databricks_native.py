"""Claude on Databricks through the Anthropic-native route, end to end with the official SDK.

A real ``execbridge serve --provider databricks`` (default ``--upstream-format auto``) in front of a fake
workspace whose ``/serving-endpoints/anthropic/v1/messages`` behaves like Databricks': it refuses
server tools and a trailing assistant message ("prefill"), answers ``count_tokens`` with 404, and signs
its thinking blocks and checks every signature it gets back, so a thinking block the gateway lost,
reordered or altered fails the request (``execbridge.testing.anthropic_route``).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import anthropic
import httpx
import pytest

from execbridge.testing import FakeDatabricks, Turn, last_tool_result
from execbridge.testing.anthropic_route import PREFILL_REFUSED, sign_thinking, valid_redacted

from .conftest import sdk_client, serve_process

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")  # the 4.5 names are Databricks'

PAT = "dapi-native-tests"
MODEL = "claude-sonnet-4-5"
CODE_EXECUTION = [{"type": "code_execution_20250825", "name": "code_execution"}]
THINKING = {"type": "enabled", "budget_tokens": 2048}
WEATHER = {
    "name": "get_weather",
    "description": "Weather in a city",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}
PRIME = "python3 -c 'n = [p for p in range(2, 8000) if all(p % d for d in range(2, int(p**.5) + 1))]; print(n[999])'"
SEED = "What is the 1000th prime? Compute it."


@pytest.fixture(scope="module")
def workspace() -> Iterator[FakeDatabricks]:
    with FakeDatabricks(pat=PAT) as ws:
        yield ws


@pytest.fixture(scope="module")
def gateway_url(workspace: FakeDatabricks, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    data_dir = tmp_path_factory.mktemp("databricks-native")
    base = {k: v for k, v in os.environ.items() if not k.startswith(("DATABRICKS_", "EXECBRIDGE_"))}
    env = {
        **base,
        "EXECBRIDGE_DATA_DIR": str(data_dir),
        "DATABRICKS_CONFIG_FILE": str(data_dir / "no-databrickscfg"),
        "DATABRICKS_HOST": workspace.url,
        "DATABRICKS_TOKEN": PAT,
        "EXECBRIDGE_MAX_ITERATIONS": "3",
        "EXECBRIDGE_SANDBOX__MEMORY_MB": "512",
        "EXECBRIDGE_SANDBOX__DISK_MB": "64",
        "EXECBRIDGE_SANDBOX__PIDS": "128",
        "EXECBRIDGE_SANDBOX__COMMAND_TIMEOUT_S": "20",
        "EXECBRIDGE_SANDBOX__SPARE_CONTAINERS": "1",
    }
    with serve_process(env, data_dir, "--provider", "databricks") as url:
        yield url


@pytest.fixture
def ws(workspace: FakeDatabricks) -> Iterator[FakeDatabricks]:
    workspace.reset()
    yield workspace
    assert workspace.remaining == 0, "the test left scripted turns unused"


@pytest.fixture
def sdk(gateway_url: str) -> anthropic.Anthropic:
    return sdk_client(gateway_url, "any-key-on-loopback")


def dumped(message: Any) -> list[dict[str, Any]]:
    """An assistant turn sent back as the SDK user would: every block as the gateway gave it."""
    return [block.model_dump(exclude_none=True) for block in message.content]


def assistant_messages(request: dict[str, Any]) -> list[list[dict[str, Any]]]:
    return [m["content"] for m in request["messages"] if m["role"] == "assistant"]


def test_seed_code_execution_with_thinking(ws: FakeDatabricks, sdk: anthropic.Anthropic) -> None:
    ws.add(
        Turn.reasoning("The user wants the 1000th prime; compute it.", "I'll compute it.").call(
            "bash_code_execution", command=PRIME
        ),
        lambda req: Turn.reasoning(
            "The output is the answer.", f"The 1000th prime is {last_tool_result(req).split('stdout:')[1].strip()}."
        ),
    )
    message = sdk.messages.create(
        model=MODEL,
        max_tokens=4096,
        thinking=THINKING,
        tools=CODE_EXECUTION,
        messages=[{"role": "user", "content": SEED}],
    )
    assert [b.type for b in message.content] == [
        "thinking",
        "text",
        "server_tool_use",
        "bash_code_execution_tool_result",
        "thinking",
        "text",
    ]
    first_thinking, _, call, result, second_thinking, answer = message.content
    assert first_thinking.signature == sign_thinking(first_thinking.thinking)  # unchanged from the upstream
    assert second_thinking.signature == sign_thinking(second_thinking.thinking)
    assert call.id.startswith("srvtoolu_") and call.input == {"command": PRIME}
    assert result.content.stdout == "7919\n"
    assert answer.text == "The 1000th prime is 7919."
    assert message.stop_reason == "end_turn"
    assert message.usage.server_tool_use.model_extra["code_execution_requests"] == 1

    assert ws.chat_requests == [] and ws.rejections == []
    first, second = ws.messages_requests
    assert first["model"] == "databricks-claude-sonnet-4-5" and first["thinking"] == THINKING
    assert {t["name"] for t in first["tools"]} == {"bash_code_execution", "text_editor_code_execution"}
    assert all("type" not in t for t in first["tools"])  # custom tools, never the server tool
    assert "code execution" in first["system"].lower()  # the gateway's note
    # The gateway's own loop sends the turn back starting with the thinking the model produced.
    assert second["messages"][-2]["content"][0] == {
        "type": "thinking",
        "thinking": first_thinking.thinking,
        "signature": first_thinking.signature,
    }
    assert second["messages"][-1]["content"][0]["type"] == "tool_result"
    sent = ws.requests[0]
    assert sent.path == "/serving-endpoints/anthropic/v1/messages"
    assert sent.headers["authorization"] == f"Bearer {PAT}" and sent.headers["anthropic-version"] == "2023-06-01"


def test_thinking_signatures_survive_rounds_and_a_follow_up(ws: FakeDatabricks, sdk: anthropic.Anthropic) -> None:
    ws.add(
        Turn.reasoning("first, list files").call("bash_code_execution", command="echo one"),
        Turn.reasoning("then count").call("bash_code_execution", command="echo two"),
        Turn.reasoning("done", "Both ran.").but(redacted_thinking=True),
        Turn.reasoning("a follow-up", "Still here."),
    )
    first = sdk.messages.create(
        model=MODEL,
        max_tokens=4096,
        thinking=THINKING,
        tools=CODE_EXECUTION,
        messages=[{"role": "user", "content": "go"}],
    )
    assert [b.type for b in first.content] == [
        "thinking",
        "server_tool_use",
        "bash_code_execution_tool_result",
        "thinking",
        "server_tool_use",
        "bash_code_execution_tool_result",
        "thinking",
        "redacted_thinking",
        "text",
    ]
    assert valid_redacted(first.content[7].data)
    follow_up = sdk.messages.create(
        model=MODEL,
        max_tokens=4096,
        thinking=THINKING,
        tools=CODE_EXECUTION,
        container=first.container.id,
        messages=[
            {"role": "user", "content": "go"},
            {"role": "assistant", "content": dumped(first)},
            {"role": "user", "content": "and now?"},
        ],
    )
    assert follow_up.content[-1].text == "Still here."
    assert ws.rejections == []  # every signature the fake made came back intact, in its turn
    last = ws.messages_requests[-1]
    # The client's one assistant message is the three model turns it was made of.
    turns = assistant_messages(last)
    assert [t[0]["type"] for t in turns] == ["thinking", "thinking", "thinking"]
    assert turns[2][1]["type"] == "redacted_thinking"
    assert [m["role"] for m in last["messages"]] == [
        "user",
        "assistant",
        "user",
        "assistant",
        "user",
        "assistant",
        "user",
    ]


def test_an_altered_signature_is_the_upstreams_400_in_anthropics_envelope(
    ws: FakeDatabricks, sdk: anthropic.Anthropic
) -> None:
    history = [
        {"role": "user", "content": "go"},
        {
            "role": "assistant",
            "content": [{"type": "thinking", "thinking": "hmm", "signature": "forged"}, {"type": "text", "text": "ok"}],
        },
        {"role": "user", "content": "again"},
    ]
    with pytest.raises(anthropic.BadRequestError) as caught:
        sdk.messages.create(model=MODEL, max_tokens=2048, thinking=THINKING, messages=history)
    assert caught.value.body["type"] == "error"
    assert caught.value.body["error"]["type"] == "invalid_request_error"
    assert "Invalid `signature` in `thinking` block" in caught.value.body["error"]["message"]


def test_cache_control_reaches_the_upstream_and_cache_usage_is_summed(
    ws: FakeDatabricks, sdk: anthropic.Anthropic
) -> None:
    ws.add(
        Turn.tool_call("bash_code_execution", command="echo hi").but(
            prompt_tokens=10, completion_tokens=5, cached_tokens=0, cache_creation_tokens=900
        ),
        Turn.text("hi").but(prompt_tokens=12, completion_tokens=3, cached_tokens=900, cache_creation_tokens=40),
    )
    message = sdk.messages.create(
        model=MODEL,
        max_tokens=1024,
        system=[{"type": "text", "text": "You are terse.", "cache_control": {"type": "ephemeral", "ttl": "1h"}}],
        tools=[
            {**CODE_EXECUTION[0], "cache_control": {"type": "ephemeral"}},
            {**WEATHER, "cache_control": {"type": "ephemeral"}},
        ],
        messages=[
            {
                "role": "user",
                "content": [
                    {
                        "type": "document",
                        "source": {"type": "text", "media_type": "text/plain", "data": "A long manual."},
                        "title": "Manual",
                        "citations": {"enabled": True},
                        "cache_control": {"type": "ephemeral"},
                    },
                    {"type": "text", "text": "run it", "cache_control": {"type": "ephemeral"}},
                ],
            }
        ],
    )
    usage = message.usage
    assert (usage.input_tokens, usage.output_tokens) == (22, 8)
    assert (usage.cache_creation_input_tokens, usage.cache_read_input_tokens) == (940, 900)
    first = ws.messages_requests[0]
    system = first["system"]
    assert system[-1] == {"type": "text", "text": "You are terse.", "cache_control": {"type": "ephemeral", "ttl": "1h"}}
    assert system[0]["text"] and "cache_control" not in system[0]  # the gateway's note, covered by the client's
    by_name = {t["name"]: t for t in first["tools"]}
    assert by_name["text_editor_code_execution"]["cache_control"] == {"type": "ephemeral"}  # the last sub-tool
    assert by_name["get_weather"]["cache_control"] == {"type": "ephemeral"}
    document, text = first["messages"][0]["content"]
    assert document["cache_control"] == {"type": "ephemeral"} and document["citations"] == {"enabled": True}
    assert document["source"] == {"type": "text", "media_type": "text/plain", "data": "A long manual."}
    assert text == {"type": "text", "text": "run it", "cache_control": {"type": "ephemeral"}}


def test_streaming_passes_thinking_and_signature_deltas(ws: FakeDatabricks, sdk: anthropic.Anthropic) -> None:
    ws.add(
        Turn.reasoning("Streaming thoughts, long enough to arrive in several pieces.").call(
            "bash_code_execution", command="echo streamed"
        ),
        Turn.reasoning("It printed streamed.", "It printed: streamed."),
    )
    deltas: list[str] = []
    with sdk.messages.stream(
        model=MODEL,
        max_tokens=4096,
        thinking=THINKING,
        tools=CODE_EXECUTION,
        messages=[{"role": "user", "content": "go"}],
    ) as stream:
        for event in stream:
            if event.type == "content_block_delta":
                deltas.append(event.delta.type)
        final = stream.get_final_message()
    assert deltas.count("signature_delta") == 2 and deltas.count("thinking_delta") > 2
    assert deltas.index("signature_delta") > deltas.index("thinking_delta")
    thinking = [b for b in final.content if b.type == "thinking"]
    assert [b.signature for b in thinking] == [sign_thinking(b.thinking) for b in thinking]
    assert final.content[-1].text == "It printed: streamed."
    assert all(r.get("stream") for r in ws.messages_requests) and ws.rejections == []


def test_pause_turn_continues_without_a_trailing_assistant_message(
    ws: FakeDatabricks, sdk: anthropic.Anthropic
) -> None:
    ws.add(*(Turn.reasoning(f"round {n}").call("bash_code_execution", command=f"echo {n}") for n in range(3)))
    paused = sdk.messages.create(
        model=MODEL,
        max_tokens=4096,
        thinking=THINKING,
        tools=CODE_EXECUTION,
        messages=[{"role": "user", "content": "loop"}],
    )
    assert paused.stop_reason == "pause_turn"
    ws.add(Turn.reasoning("finished", "All three ran."))
    resumed = sdk.messages.create(
        model=MODEL,
        max_tokens=4096,
        thinking=THINKING,
        tools=CODE_EXECUTION,
        container=paused.container.id,
        messages=[{"role": "user", "content": "loop"}, {"role": "assistant", "content": dumped(paused)}],
    )
    assert resumed.content[-1].text == "All three ran." and resumed.stop_reason == "end_turn"
    assert ws.rejections == []  # no prefill: the continuation ended with the results
    continuation = ws.messages_requests[-1]["messages"]
    assert continuation[-1]["role"] == "user" and continuation[-1]["content"][0]["type"] == "tool_result"


def test_a_client_prefill_gets_databricks_refusal(ws: FakeDatabricks, sdk: anthropic.Anthropic) -> None:
    with pytest.raises(anthropic.BadRequestError) as caught:
        sdk.messages.create(
            model=MODEL,
            max_tokens=256,
            messages=[{"role": "user", "content": "hi"}, {"role": "assistant", "content": "Sure,"}],
        )
    assert caught.value.body["error"]["message"] == f"upstream: {PREFILL_REFUSED}"


def test_client_tools_mixed_with_deferred_server_calls(ws: FakeDatabricks, sdk: anthropic.Anthropic) -> None:
    ws.add(Turn.reasoning("both").call("bash_code_execution", command="echo srv").call("get_weather", city="Paris"))
    first = sdk.messages.create(
        model=MODEL,
        max_tokens=4096,
        thinking=THINKING,
        tools=[*CODE_EXECUTION, WEATHER],
        messages=[{"role": "user", "content": "weather and a command"}],
    )
    assert first.stop_reason == "tool_use"
    client_call = next(b for b in first.content if b.type == "tool_use")
    ws.add(lambda req: Turn.reasoning("got both", f"Results: {' | '.join(last_tool_result_all(req))}"))
    second = sdk.messages.create(
        model=MODEL,
        max_tokens=4096,
        thinking=THINKING,
        tools=[*CODE_EXECUTION, WEATHER],
        container=first.container.id,
        messages=[
            {"role": "user", "content": "weather and a command"},
            {"role": "assistant", "content": dumped(first)},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": client_call.id, "content": "15C"}]},
        ],
    )
    assert second.content[0].type == "bash_code_execution_tool_result"  # the deferred call ran first
    assert "srv" in second.content[-1].text and "15C" in second.content[-1].text
    assert ws.rejections == []
    last = ws.messages_requests[-1]["messages"]
    assert [b["type"] for b in last[-1]["content"]] == ["tool_result", "tool_result"]


def last_tool_result_all(request: dict[str, Any]) -> list[str]:
    return [
        "".join(p.get("text", "") for p in b.get("content") or ())
        for b in request["messages"][-1]["content"]
        if b["type"] == "tool_result"
    ]


def test_stop_sequence_and_citations_are_exact(ws: FakeDatabricks, sdk: anthropic.Anthropic) -> None:
    citation = {
        "type": "char_location",
        "cited_text": "A long manual.",
        "document_index": 0,
        "document_title": "Manual",
        "start_char_index": 0,
        "end_char_index": 14,
    }
    ws.add(Turn.text("The manual is long").but(stop_sequence="###", citations=(citation,)))
    message = sdk.messages.create(
        model=MODEL, max_tokens=256, stop_sequences=["###"], messages=[{"role": "user", "content": "cite"}]
    )
    assert (message.stop_reason, message.stop_sequence) == ("stop_sequence", "###")
    assert message.content[0].citations[0].cited_text == "A long manual."
    assert ws.messages_requests[0]["stop_sequences"] == ["###"]


def test_count_tokens_estimates_where_databricks_answers_404(
    ws: FakeDatabricks, sdk: anthropic.Anthropic, gateway_url: str
) -> None:
    messages = [{"role": "user", "content": SEED}]
    plain = sdk.messages.with_raw_response.count_tokens(model=MODEL, messages=messages)
    assert plain.headers["execbridge-token-count"] == "estimate"
    with_tools = sdk.messages.with_raw_response.count_tokens(model=MODEL, messages=messages, tools=CODE_EXECUTION)
    assert with_tools.headers["execbridge-token-count"] == "estimate"
    # The sub-tools, the tool-use prompt and the gateway's note are what the model would really read.
    assert with_tools.parse().input_tokens > plain.parse().input_tokens + 346
    assert [r.path for r in ws.requests] == ["/serving-endpoints/anthropic/v1/messages/count_tokens"]  # asked once

    ws.app.serve_count_tokens = True  # an upstream that counts: its count, of what the model will see
    try:
        counted = sdk.messages.with_raw_response.count_tokens(
            model="claude-opus-4-5", messages=messages, tools=CODE_EXECUTION
        )
    finally:
        ws.app.serve_count_tokens = False
    assert counted.headers["execbridge-token-count"] == "upstream"
    sent = ws.requests[-1].json
    assert sent["model"] == "databricks-claude-opus-4-5" and "max_tokens" not in sent
    assert {t["name"] for t in sent["tools"]} == {"bash_code_execution", "text_editor_code_execution"}
    assert counted.parse().input_tokens == max(1, len(ws.requests[-1].body) // 4)

    missing = httpx.post(f"{gateway_url}/v1/messages/count_tokens", json={"model": MODEL}, headers={"x-api-key": "k"})
    assert missing.status_code == 400 and missing.json()["error"]["message"].startswith("messages")


def test_upstream_errors_keep_their_status_in_anthropics_envelope(ws: FakeDatabricks, sdk: anthropic.Anthropic) -> None:
    ws.add(Turn.error(429, "Rate limit exceeded", retry_after=60))
    with pytest.raises(anthropic.RateLimitError) as caught:
        sdk.messages.create(model=MODEL, max_tokens=64, messages=[{"role": "user", "content": "hi"}])
    assert caught.value.body["error"]["type"] == "rate_limit_error"
    with pytest.raises(anthropic.BadRequestError) as refused:
        sdk.messages.create(
            model=MODEL,
            max_tokens=64,
            thinking=THINKING,
            tool_choice={"type": "any"},
            tools=[WEATHER],
            messages=[{"role": "user", "content": "hi"}],
        )
    assert "Thinking may not be enabled when tool_choice forces tool use" in refused.value.body["error"]["message"]


def test_models_the_anthropic_route_does_not_serve_fall_back_to_chat(
    ws: FakeDatabricks, sdk: anthropic.Anthropic
) -> None:
    ws.app.anthropic_models = frozenset({"databricks-claude-sonnet-4-5", "databricks-claude-opus-4-5"})
    try:
        ws.add(Turn.text("via chat"), Turn.text("via chat again"))
        first = sdk.messages.create(
            model="claude-haiku-4-5", max_tokens=64, messages=[{"role": "user", "content": "hi"}]
        )
        second = sdk.messages.create(
            model="claude-haiku-4-5", max_tokens=64, messages=[{"role": "user", "content": "hi"}]
        )
    finally:
        ws.app.anthropic_models = None
    assert (first.content[0].text, second.content[0].text) == ("via chat", "via chat again")
    # Asked natively once; the workspace's 404 sent that model to Chat Completions from then on.
    assert [r.path.rsplit("/", 2)[-2:] for r in ws.requests] == [
        ["v1", "messages"],
        ["chat", "completions"],
        ["chat", "completions"],
    ]
    ws.add(Turn.text("gpt on chat"))
    sdk.messages.create(model="databricks-gpt-oss-120b", max_tokens=64, messages=[{"role": "user", "content": "hi"}])
    assert ws.requests[-1].path.endswith("/chat/completions")  # only Claude models take the native route
