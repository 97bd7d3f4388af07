"""Clients that do awkward things, against a real ``execbridge serve``: many requests at once on one
container, and a streaming client that reads slowly."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import httpx

from execbridge.testing import Turn, last_tool_result

from .conftest import CLIENT_KEY, Gateway, sdk_client

CODE_EXECUTION = [{"type": "code_execution_20250825", "name": "code_execution"}]
HEADERS = {"x-api-key": CLIENT_KEY, "anthropic-version": "2023-06-01", "anthropic-beta": "code-execution-2025-08-25"}


def _request(container: str | None, text: str) -> dict:
    return {
        "model": "databricks-claude-sonnet-4-5",
        "max_tokens": 256,
        "betas": ["code-execution-2025-08-25"],
        "tools": CODE_EXECUTION,
        "container": container,
        "messages": [{"role": "user", "content": text}],
    }


def test_many_requests_at_once_on_one_container_each_run_their_command(gateway: Gateway, fake) -> None:
    """Eight concurrent requests on one container: every command runs, each request gets its own
    result, and the appends to one file all land (commands in a container do not interleave)."""
    client = sdk_client(gateway.url, CLIENT_KEY)
    fake.reset([Turn.text("Setup.").call("bash_code_execution", command="echo start > log.txt"), Turn.text("ok")])
    container = client.beta.messages.create(**_request(None, "set up")).container.id

    def answer(request: dict) -> Turn:
        user = next(m["content"] for m in request["messages"] if m["role"] == "user")
        if any(m["role"] == "tool" for m in request["messages"]):
            return Turn.text(f"{user}: {last_tool_result(request).split('stdout:')[-1].strip()}")
        return Turn.text("Appending.").call("bash_code_execution", command=f"echo {user} >> log.txt; echo {user}")

    fake.reset([answer] * 16)
    with ThreadPoolExecutor(8) as pool:
        replies = list(pool.map(lambda i: client.beta.messages.create(**_request(container, f"n{i}")), range(8)))
    for i, reply in enumerate(replies):
        assert reply.container.id == container
        assert reply.content[-1].text == f"n{i}: n{i}", reply.content
    fake.reset(
        [Turn.text("Reading.").call("bash_code_execution", command="sort log.txt | tr '\\n' ' '"), Turn.text("ok")]
    )
    final = client.beta.messages.create(**_request(container, "read"))
    listing = next(b for b in final.content if b.type == "bash_code_execution_tool_result").content.stdout
    assert listing.split() == sorted(["start", *(f"n{i}" for i in range(8))])


def test_a_client_that_reads_slowly_gets_the_whole_stream(gateway: Gateway, fake) -> None:
    """A command prints 2 MiB; the client reads the stream 4 KiB at a time with pauses. Nothing is lost
    or reordered, and the request ends normally."""
    command = "python3 -c \"import sys; [sys.stdout.write(f'{i:07d}\\\\n') for i in range(262144)]\" | tail -c 2097152"
    fake.reset([Turn.text("Printing.").call("bash_code_execution", command=command), Turn.text("Printed.")])
    body = {**_request(None, "print a lot"), "stream": True}
    body.pop("betas")
    received = bytearray()
    with httpx.stream("POST", f"{gateway.url}/v1/messages", json=body, headers=HEADERS, timeout=120) as response:
        assert response.status_code == 200
        for chunk in response.iter_raw(4096):
            received += chunk
            if len(received) < 256 << 10:
                time.sleep(0.01)  # slow at first: the gateway must hold the rest without dropping it
    text = received.decode()
    assert text.rstrip().endswith('data: {"type":"message_stop"}'), text[-300:]
    assert '"stop_reason":"end_turn"' in text


def test_requests_on_a_container_that_idle_eviction_keeps_stopping_are_served(fake_upstream, tmp_path) -> None:
    """With idle eviction at 0.2 s (the janitor looks every 50 ms), requests on one container arrive
    just after it was stopped (the test waits for the stop) or while it may be being stopped (at once):
    each one finds the container, revived, with its files."""
    from .conftest import serve

    env = {"EXECBRIDGE_SANDBOX__IDLE_EVICT_S": "0.2", "EXECBRIDGE_LOG_LEVEL": "info"}
    with serve(fake_upstream, tmp_path, **env) as gateway:
        client = sdk_client(gateway.url, CLIENT_KEY)
        gateway.fake.reset([Turn.text("Go.").call("bash_code_execution", command="echo 0 > n.txt"), Turn.text("ok")])
        container = client.beta.messages.create(**_request(None, "start")).container.id
        stopped = f"stopped idle container {container}"
        for i in range(1, 11):
            if i % 2:  # wait until the janitor has stopped it since the last request
                before = gateway.log.read_text().count(stopped)
                deadline = time.monotonic() + 60
                while gateway.log.read_text().count(stopped) == before:
                    assert time.monotonic() < deadline, "the idle container was never stopped"
                    time.sleep(0.02)
            step = Turn.text("Go.").call("bash_code_execution", command=f"echo {i} >> n.txt; wc -l < n.txt")
            gateway.fake.reset([step, lambda r: Turn.text(last_tool_result(r).split("stdout:")[-1].strip())])
            reply = client.beta.messages.create(**_request(container, f"step {i}"))
            assert reply.container.id == container and reply.content[-1].text == str(i + 1), reply.content
        assert gateway.log.read_text().count(stopped) >= 5
