"""Graceful shutdown of a real ``execbridge serve``: on SIGTERM a request in flight finishes within
``shutdown_grace_s``; one that outlives it ends with a clean ``overloaded_error``, its container kept for
the next start."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator

import anthropic
import httpx
import pytest

from execbridge.api.app import create_app
from execbridge.testing import Turn

from .conftest import CLIENT_KEY, Gateway, sdk_client, serve

# Asked to stop, the privilege split's supervisor (serve run as root) exits 0; a lone gateway ends as uvicorn
# does, by the signal it stopped on.
STOPPED = 0 if os.geteuid() == 0 else -signal.SIGTERM
CODE_EXECUTION = [{"type": "code_execution_20250825", "name": "code_execution"}]


def _stream(gateway: Gateway, command: str, container: str | None = None):
    gateway.fake.reset(
        [Turn.text("Running.").call("bash_code_execution", command=command), lambda r: Turn.text("Done.")]
    )
    return sdk_client(gateway.url, CLIENT_KEY).beta.messages.stream(
        model="databricks-claude-sonnet-4-5",
        max_tokens=256,
        betas=["code-execution-2025-08-25"],
        tools=CODE_EXECUTION,
        container=container,
        messages=[{"role": "user", "content": "run it"}],
    )


def _until_the_command_is_called(stream: anthropic.lib.streaming.BetaMessageStream) -> str:
    """Reads the stream up to the end of the model's call; returns the container id."""
    container = ""
    for event in stream:
        if event.type == "message_start" and event.message.container is not None:
            container = event.message.container.id
        if event.type == "content_block_stop" and stream.current_message_snapshot.content[event.index].type == (
            "server_tool_use"
        ):
            return container
    raise AssertionError("the stream ended before the command was called")


@pytest.fixture
def data_dir(tmp_path_factory: pytest.TempPathFactory):
    return tmp_path_factory.mktemp("shutdown")


def test_a_request_in_flight_finishes_within_the_grace_period(fake_upstream, data_dir) -> None:
    with serve(fake_upstream, data_dir, EXECBRIDGE_SHUTDOWN_GRACE_S="60") as gateway:
        with _stream(gateway, "sleep 2; echo finished") as stream:
            _until_the_command_is_called(stream)
            gateway.process.send_signal(signal.SIGTERM)
            message = stream.get_final_message()
        assert gateway.process.wait(timeout=120) == STOPPED
    assert message.stop_reason == "end_turn"
    results = [b for b in message.content if b.type == "bash_code_execution_tool_result"]
    assert results[0].content.stdout == "finished\n"
    assert "draining: in-flight requests have 60 s to finish" in gateway.log.read_text()


def test_a_request_past_the_grace_period_ends_with_an_error_and_keeps_its_container(fake_upstream, data_dir) -> None:
    with serve(fake_upstream, data_dir, EXECBRIDGE_SHUTDOWN_GRACE_S="1") as gateway:
        with _stream(gateway, "echo kept > note.txt; sleep 600") as stream:
            container = _until_the_command_is_called(stream)
            gateway.process.send_signal(signal.SIGTERM)
            with pytest.raises(anthropic.APIStatusError) as error:
                stream.get_final_message()
        assert gateway.process.wait(timeout=120) == STOPPED
    assert error.value.body["error"]["type"] == "overloaded_error"
    assert "shutting down" in error.value.body["error"]["message"]
    # The next start serves the same container, with what the stopped command wrote.
    with serve(fake_upstream, data_dir) as gateway, _stream(gateway, "cat note.txt", container) as stream:
        message = stream.get_final_message()
    results = [b for b in message.content if b.type == "bash_code_execution_tool_result"]
    assert message.container.id == container and results[0].content.stdout == "kept\n"


@pytest.fixture
def draining_app() -> Iterator[object]:
    yield create_app(lambda: None)  # type: ignore[arg-type,return-value]  # no lifespan is run here


async def test_new_work_while_draining_is_a_503_the_sdk_retries(draining_app) -> None:
    draining_app.state.drain.begin(30)
    transport = httpx.ASGITransport(app=draining_app)
    async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as client:
        message = await client.post("/v1/messages", json={"model": "m", "max_tokens": 1, "messages": []})
        upload = await client.post(
            "/v1/files", files={"file": ("a.txt", b"a")}, headers={"anthropic-version": "2023-06-01"}
        )
    for response in (message, upload):
        assert response.status_code == 503
        assert response.json()["error"] == {
            "type": "overloaded_error",
            "message": "the gateway is shutting down; retry the request",
        }
        assert response.headers["retry-after"] == "1"
        assert "x-should-retry" not in response.headers
