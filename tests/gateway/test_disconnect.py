"""A client that goes away cancels the upstream call and kills the command it started."""

from __future__ import annotations

import time

import httpx
import orjson

from execbridge.testing import Turn

from .conftest import CLIENT_KEY, Gateway

HEADERS = {"x-api-key": CLIENT_KEY, "anthropic-version": "2023-06-01"}
TOOLS = [{"type": "code_execution_20250825", "name": "code_execution"}]


def _events_until(response: httpx.Response, predicate) -> list[dict]:
    seen: list[dict] = []
    for line in response.iter_lines():
        if line.startswith("data: "):
            seen.append(orjson.loads(line[6:]))
            if predicate(seen[-1]):
                return seen
    raise AssertionError(f"stream ended before the expected event: {seen}")


def _wait_until(check, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.05)


def test_disconnect_during_upstream_stream_closes_the_upstream(gateway: Gateway, fake):
    fake.reset([Turn.text("word " * 400).but(chunk_chars=5, chunk_delay=0.01)])
    before = fake.disconnects
    body = {"model": "m", "max_tokens": 100, "stream": True, "messages": [{"role": "user", "content": "talk"}]}
    with httpx.stream("POST", f"{gateway.url}/v1/messages", json=body, headers=HEADERS) as response:
        _events_until(response, lambda e: e.get("delta", {}).get("type") == "text_delta")
    _wait_until(lambda: fake.disconnects > before)


def test_disconnect_during_a_command_kills_it(gateway: Gateway, fake):
    fake.reset([Turn.tool_call("bash_code_execution", command="sleep 300 & echo started; sleep 300")])
    body = {
        "model": "m",
        "max_tokens": 100,
        "stream": True,
        "tools": TOOLS,
        "messages": [{"role": "user", "content": "x"}],
    }
    with httpx.stream("POST", f"{gateway.url}/v1/messages", json=body, headers=HEADERS) as response:
        events = _events_until(response, lambda e: e["type"] == "content_block_stop")
        container_id = events[0]["message"]["container"]["id"]
        time.sleep(0.5)  # let the command start
    # The same container answers again promptly, and nothing of the old command is running.
    fake.reset([Turn.tool_call("bash_code_execution", command="ps -eo args"), Turn.text("ok")])
    started = time.monotonic()
    message = httpx.post(
        f"{gateway.url}/v1/messages",
        json={**body, "stream": False, "container": container_id},
        headers=HEADERS,
        timeout=30,
    ).json()
    assert time.monotonic() - started < 10
    processes = message["content"][1]["content"]["stdout"]
    assert "sleep" not in processes, processes


def test_long_command_sends_pings_then_the_whole_result(gateway: Gateway, fake):
    fake.reset([Turn.tool_call("bash_code_execution", command="sleep 6; echo woke"), Turn.text("done")])
    body = {
        "model": "m",
        "max_tokens": 100,
        "stream": True,
        "tools": TOOLS,
        "messages": [{"role": "user", "content": "x"}],
    }
    with httpx.stream("POST", f"{gateway.url}/v1/messages", json=body, headers=HEADERS, timeout=60) as response:
        events = _events_until(response, lambda e: e["type"] == "message_stop")
    types = [e["type"] for e in events]
    stop_of_call = types.index("content_block_stop")
    assert "ping" in types[stop_of_call:]
    result = next(e for e in events if e.get("content_block", {}).get("type") == "bash_code_execution_tool_result")
    assert result["content_block"]["content"]["stdout"] == "woke\n"
