"""Upstream faults against a real ``execbridge serve``: whatever the upstream does on the turn after a
command ran (refuses, resets, stalls, sends garbage, rate-limits), the client gets Anthropic's error
shape (an HTTP status before the stream starts, ``event: error`` after), and the container, with what
the command wrote, serves the next request."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import anthropic
import pytest

from execbridge.testing import Turn

from .conftest import CLIENT_KEY, Gateway, _free_port, sdk_client, serve, serve_process

CODE_EXECUTION = [{"type": "code_execution_20250825", "name": "code_execution"}]
RETRIES = 1  # the gateway's own retries of a retryable failure: each fault is scripted 1 + RETRIES times

SSE = {"content-type": "text/event-stream"}
JSON = {"content-type": "application/json"}
FAULTS: dict[str, tuple[Any, int, str]] = {
    # name: (the upstream's answer to the model turn after the command, the client's status, error type)
    "429 with retry-after": (Turn.error(429, "slow down", retry_after=0), 429, "rate_limit_error"),
    "429 without retry-after": (Turn.error(429, "slow down"), 429, "rate_limit_error"),
    "503 with retry-after": (Turn.error(503, "busy", retry_after=0), 529, "overloaded_error"),
    "503 without retry-after": (Turn.error(503, "busy"), 529, "overloaded_error"),
    "500": (Turn.error(500, "boom"), 502, "api_error"),
    "200 with invalid JSON": (Turn.raw_error(200, b'{"choices": [', JSON), 502, "api_error"),
    "garbage SSE": (Turn.raw_error(200, b"data: {not json\n\n", SSE), 502, "api_error"),
    "SSE of the wrong shape": (Turn.raw_error(200, b'data: {"choices": [null]}\n\n', SSE), 502, "api_error"),
    "stalled before answering": (Turn.text("late").but(delay=30), 504, "timeout_error"),
}
# Faults of a streamed answer: the gateway streams from the upstream when its client streams.
STREAM_FAULTS: dict[str, tuple[Any, int, str]] = {
    "reset mid-stream": (Turn.text("a partial answer that never ends").but(abort_after=1), 502, "api_error"),
    "stalled mid-stream": (Turn.text("slow words").but(chunk_delay=30), 504, "timeout_error"),
}
CASES = [(fault, False) for fault in FAULTS] + [(fault, True) for fault in [*FAULTS, *STREAM_FAULTS]]


@pytest.fixture(scope="module")
def faulty(fake_upstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    env = {"EXECBRIDGE_UPSTREAM_READ_TIMEOUT_S": "1", "EXECBRIDGE_UPSTREAM_MAX_RETRIES": str(RETRIES)}
    with serve(fake_upstream, tmp_path_factory.mktemp("faults"), **env) as running:
        yield running


def _request(container: str | None) -> dict[str, Any]:
    return {
        "model": "databricks-claude-sonnet-4-5",
        "max_tokens": 256,
        "betas": ["code-execution-2025-08-25"],
        "tools": CODE_EXECUTION,
        "container": container,
        "messages": [{"role": "user", "content": "run it"}],
    }


def _run(client: anthropic.Anthropic, gateway: Gateway, command: str, container: str | None) -> tuple[str, str]:
    gateway.fake.reset([Turn.text("Running.").call("bash_code_execution", command=command), Turn.text("Done.")])
    message = client.beta.messages.create(**_request(container))
    results = [b for b in message.content if b.type == "bash_code_execution_tool_result"]
    assert message.container is not None and len(results) == 1, message.content
    return results[0].content.stdout, message.container.id


@pytest.mark.parametrize(("fault", "stream"), CASES, ids=[f"{f}-{'stream' if s else 'json'}" for f, s in CASES])
def test_an_upstream_fault_after_a_command_is_a_clean_error_and_the_container_lives_on(
    faulty: Gateway, fault: str, stream: bool
) -> None:
    answer, status, error_type = {**FAULTS, **STREAM_FAULTS}[fault]
    client = sdk_client(faulty.url, CLIENT_KEY)
    _, container = _run(client, faulty, "echo before > kept.txt", None)

    first = Turn.text("Writing.").call("bash_code_execution", command="echo during >> kept.txt")
    faulty.fake.reset([first, *[answer] * (1 + RETRIES)])
    with pytest.raises(anthropic.APIStatusError) as error:
        if stream:
            with client.beta.messages.stream(**_request(container)) as events:
                for _ in events:
                    pass
        else:
            client.beta.messages.create(**_request(container))
    body = error.value.body
    assert isinstance(body, dict) and body["type"] == "error", body
    assert body["error"]["type"] == error_type, body
    assert body["error"]["message"] and "Traceback" not in body["error"]["message"]
    if not stream:  # a started stream carries the error as an SSE event after its 200
        assert error.value.status_code == status

    # The command of the failed request ran; the container serves the next request with its files.
    assert _run(client, faulty, "cat kept.txt", container) == ("before\nduring\n", container)


def test_an_upstream_that_refuses_connections_is_a_502_with_the_envelope(tmp_path) -> None:
    closed = f"http://127.0.0.1:{_free_port()}/v1"  # nothing listens there
    env = {**os.environ, "EXECBRIDGE_DATA_DIR": str(tmp_path), "EXECBRIDGE_UPSTREAM_MAX_RETRIES": "1"}
    with serve_process(env, tmp_path, "--upstream", closed) as url:
        client = sdk_client(url, CLIENT_KEY)
        for stream in (False, True):
            with pytest.raises(anthropic.APIStatusError) as error:
                if stream:
                    with client.beta.messages.stream(**_request(None)) as events:
                        for _ in events:
                            pass
                else:
                    client.beta.messages.create(**_request(None))
            # Nothing was generated yet, so even a stream answers with a real status first.
            assert error.value.status_code == 502
            assert error.value.body["error"]["type"] == "api_error"
            assert "127.0.0.1" in error.value.body["error"]["message"]
