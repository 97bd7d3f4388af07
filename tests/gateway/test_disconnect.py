"""A client that goes away cancels the upstream call and kills the command it started."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import orjson

from execbridge.testing import Turn

from .conftest import CLIENT_KEY, Gateway

HEADERS = {"x-api-key": CLIENT_KEY, "anthropic-version": "2023-06-01"}
TOOLS = [{"type": "code_execution_20250825", "name": "code_execution"}]


def _events_until(lines: Iterator[str], predicate) -> list[dict]:
    """Read events from ``lines`` until one matches. Callers keep one iterator per response: an abandoned
    ``iter_lines`` generator closes the connection when it is collected, which is a disconnect."""
    seen: list[dict] = []
    for line in lines:
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


def _sleeping(marker: str) -> int:
    """How many processes on the host run ``sleep <marker>``."""
    count = 0
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        with contextlib.suppress(OSError):
            count += cmdline.read_bytes() == f"sleep\0{marker}\0".encode()
    return count


def test_disconnect_during_upstream_stream_closes_the_upstream(gateway: Gateway, fake):
    fake.reset([Turn.text("word " * 400).but(chunk_chars=5, chunk_delay=0.01)])
    before = fake.disconnects
    body = {"model": "m", "max_tokens": 100, "stream": True, "messages": [{"role": "user", "content": "talk"}]}
    with httpx.stream("POST", f"{gateway.url}/v1/messages", json=body, headers=HEADERS) as response:
        lines = response.iter_lines()
        _events_until(lines, lambda e: e.get("delta", {}).get("type") == "text_delta")
        # Still connected here (``lines`` is alive): the upstream has not been told to stop yet.
        assert fake.disconnects == before
    _wait_until(lambda: fake.disconnects > before)


def test_disconnect_during_a_command_kills_it(gateway: Gateway, fake):
    marker = "299.7531"  # an unusual duration, so the command's processes can be told apart on the host
    fake.reset([Turn.tool_call("bash_code_execution", command=f"sleep {marker} & echo started; sleep {marker}")])
    body = {
        "model": "m",
        "max_tokens": 100,
        "stream": True,
        "tools": TOOLS,
        "messages": [{"role": "user", "content": "x"}],
    }
    with httpx.stream("POST", f"{gateway.url}/v1/messages", json=body, headers=HEADERS) as response:
        lines = response.iter_lines()
        events = _events_until(lines, lambda e: e["type"] == "content_block_stop")
        container_id = events[0]["message"]["container"]["id"]
        _wait_until(lambda: _sleeping(marker) == 2, timeout=60)  # the command runs; then the client leaves
    # The same container answers again promptly, and nothing of the old command is running.
    fake.reset([Turn.tool_call("bash_code_execution", command="ps -eo args"), Turn.text("ok")])
    # Had the old command kept its lease, this would wait 300 s and time out.
    message = httpx.post(
        f"{gateway.url}/v1/messages",
        json={**body, "stream": False, "container": container_id},
        headers=HEADERS,
        timeout=30,
    ).json()
    processes = message["content"][1]["content"]["stdout"]
    assert "sleep" not in processes, processes
    assert _sleeping(marker) == 0  # nor anywhere on the host


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
        events = _events_until(response.iter_lines(), lambda e: e["type"] == "message_stop")
    types = [e["type"] for e in events]
    stop_of_call = types.index("content_block_stop")
    assert "ping" in types[stop_of_call:]
    result = next(e for e in events if e.get("content_block", {}).get("type") == "bash_code_execution_tool_result")
    assert result["content_block"]["content"]["stdout"] == "woke\n"
