"""Message threads through the official SDK against a real ``execbridge serve``: ``tool_runner`` with
its defaults (threads on) runs a code-execution and client-tool conversation to the end while the
upstream sees the whole history every turn; each thread error is the one the SDK recovers from."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from typing import Any

import anthropic
import httpx
import httpx2
import pytest
from anthropic import beta_tool
from anthropic.types import (
    ThreadAlreadyContinuedError,
    ThreadContinueInFlightError,
    ThreadFingerprintMismatchError,
    ThreadNotFoundError,
    ThreadUnsupportedRequestError,
)

from execbridge.testing import Turn, last_tool_result

from .conftest import CLIENT_KEY, OTHER_KEY, Gateway, sdk_client, serve_process

MODEL = "databricks-claude-sonnet-4-5"
CODE_EXECUTION = {"type": "code_execution_20250825", "name": "code_execution"}
BETAS = ["code-execution-2025-08-25", "message-threads-2026-08-12"]


class Recorder:
    """An SDK client whose request bodies to the gateway are kept, to see what it really sent."""

    def __init__(self, gateway: Gateway, key: str = CLIENT_KEY) -> None:
        self.bodies: list[dict[str, Any]] = []
        http = httpx2.Client(event_hooks={"request": [self._keep]})
        self.client = anthropic.Anthropic(base_url=gateway.url, api_key=key, max_retries=0, http_client=http)

    def _keep(self, request: httpx2.Request) -> None:
        if request.url.path.endswith("/v1/messages"):
            self.bodies.append(json.loads(request.read()))


@pytest.fixture
def recorder(gateway: Gateway, fake) -> Iterator[Recorder]:
    recorder = Recorder(gateway)
    yield recorder
    recorder.client.close()


@beta_tool
def lookup_population(city: str) -> str:
    """How many people live in a city.

    Args:
        city: the city's name
    """
    return {"Paris": "2102650"}.get(city, "unknown")


def _user_texts(request: dict[str, Any]) -> list[str]:
    return [m["content"] for m in request["messages"] if m["role"] == "user" and isinstance(m["content"], str)]


def test_the_tool_runner_with_threads_runs_code_and_client_tools_to_the_end(
    gateway: Gateway, fake, recorder: Recorder
) -> None:
    question = "How many people live in Paris, and what is that times two?"
    fake.reset(
        [
            Turn.text("Looking it up.").call("lookup_population", city="Paris"),
            lambda req: Turn.text("Computing.").call(
                "bash_code_execution", command=f"echo $(( {last_tool_result(req)} * 2 ))"
            ),
            lambda req: Turn.text(f"Paris has 2102650 people; twice that is {last_tool_result(req).split()[-1]}."),
        ]
    )
    runner = recorder.client.beta.messages.tool_runner(
        model=MODEL,
        max_tokens=1024,
        betas=["code-execution-2025-08-25"],
        tools=[CODE_EXECUTION, lookup_population],
        messages=[{"role": "user", "content": question}],
    )
    replies = list(runner)
    assert replies[-1].stop_reason == "end_turn"
    assert replies[-1].content[-1].text == "Paris has 2102650 people; twice that is 4205300."

    # The SDK sent the conversation once, then only what was new, as a continue of the last reply.
    first, second = recorder.bodies
    assert first["thread"] == {"type": "create"} and _user_texts(first) == [question]
    assert second["thread"] == {"type": "continue", "previous_message_id": replies[0].id}
    assert [m["role"] for m in second["messages"]] == ["user"] and "tools" not in second
    assert second["messages"][0]["content"][0]["type"] == "tool_result"
    # Every model turn upstream saw the whole conversation, the question first.
    for request in fake.chat_requests:
        assert _user_texts(request)[0] == question
    last = fake.chat_requests[-1]
    assert any(m["role"] == "tool" and "2102650" in str(m["content"]) for m in last["messages"])
    assert last["tools"], "the thread's tools reach the upstream on a continue"


def test_a_pause_turn_is_continued_from_an_empty_message_list(gateway: Gateway, fake, recorder: Recorder) -> None:
    """The gateway's iteration limit (3 here) ends a reply with pause_turn; the SDK continues the thread
    with no new messages and the gateway resumes where it stopped."""
    fake.reset(
        [
            *(Turn.text(f"Step {i}.").call("bash_code_execution", command=f"echo {i}") for i in range(4)),
            Turn.text("All done."),
        ]
    )
    runner = recorder.client.beta.messages.tool_runner(
        model=MODEL,
        max_tokens=1024,
        betas=["code-execution-2025-08-25"],
        tools=[CODE_EXECUTION, lookup_population],
        messages=[{"role": "user", "content": "Count to four."}],
    )
    replies = list(runner)
    assert [r.stop_reason for r in replies] == ["pause_turn", "end_turn"]
    assert recorder.bodies[1]["thread"]["type"] == "continue" and recorder.bodies[1]["messages"] == []
    assert replies[-1].container.id == replies[0].container.id


def _create(client: anthropic.Anthropic, fake, thread: dict[str, Any], messages: list[Any], **extra: Any):
    fake.reset([Turn.text("ok")])
    return client.beta.messages.create(
        model=extra.pop("model", MODEL),
        max_tokens=256,
        betas=BETAS,
        tools=[CODE_EXECUTION],
        messages=messages,
        extra_body={"thread": thread, **extra.pop("extra_body", {})},
        **extra,
    )


def _continue(previous: str) -> dict[str, str]:
    return {"type": "continue", "previous_message_id": previous}


def test_each_thread_error_is_the_one_the_sdk_recovers_from(gateway: Gateway, fake) -> None:
    client = sdk_client(gateway.url, CLIENT_KEY)
    hello = [{"role": "user", "content": "hello"}]
    first = _create(client, fake, {"type": "create"}, hello)

    with pytest.raises(ThreadNotFoundError) as missing:
        _create(client, fake, _continue("msg_011CNoSuchMessage"), [{"role": "user", "content": "more"}])
    assert missing.value.status_code == 404 and missing.value.body["error"]["type"] == "not_found_error"

    with pytest.raises(ThreadNotFoundError):  # another key's thread is no thread of yours
        _create(sdk_client(gateway.url, OTHER_KEY), fake, _continue(first.id), [{"role": "user", "content": "x"}])

    with pytest.raises(ThreadFingerprintMismatchError) as mismatch:
        _create(client, fake, _continue(first.id), [{"role": "user", "content": "x"}], system="another prompt")
    assert "`system`" in mismatch.value.body["error"]["message"]

    with pytest.raises(ThreadUnsupportedRequestError) as unsupported:
        _create(client, fake, {"type": "create"}, hello, extra_body={"context_management": {"edits": []}})
    assert unsupported.value.body["error"]["details"]["unsupported"] == ["context_management"]

    second = _create(client, fake, _continue(first.id), [{"role": "user", "content": "again"}])
    assert _user_texts(fake.chat_requests[-1]) == ["hello", "again"]
    with pytest.raises(ThreadAlreadyContinuedError):
        _create(client, fake, _continue(first.id), [{"role": "user", "content": "fork"}])
    third = _create(client, fake, _continue(second.id), [{"role": "user", "content": "and again"}])
    assert _user_texts(fake.chat_requests[-1]) == ["hello", "again", "and again"]
    assert third.container.id == first.container.id  # the thread's container, without naming it

    with pytest.raises(anthropic.BadRequestError) as malformed:
        _create(client, fake, {"type": "continue", "previous_message_id": "nope"}, hello)
    assert "thread.previous_message_id" in malformed.value.body["error"]["message"]
    fake.reset()  # the refused requests never reached the upstream


def test_a_continue_in_flight_blocks_a_second_one_and_a_dropped_one_can_be_sent_again(gateway: Gateway, fake) -> None:
    client = sdk_client(gateway.url, CLIENT_KEY)
    first = _create(client, fake, {"type": "create"}, [{"role": "user", "content": "hello"}])
    # A continue whose answer streams slowly (30 s): it holds its claim while we try another.
    fake.reset([Turn.text("slow " * 30).but(chunk_chars=5, chunk_delay=1.0)])
    body = {
        "model": MODEL, "max_tokens": 256, "stream": True, "tools": [CODE_EXECUTION],
        "thread": _continue(first.id), "messages": [{"role": "user", "content": "slowly"}],
    }  # fmt: skip
    headers = {"x-api-key": CLIENT_KEY, "anthropic-version": "2023-06-01", "anthropic-beta": ",".join(BETAS)}
    with httpx.stream("POST", f"{gateway.url}/v1/messages", json=body, headers=headers, timeout=60) as slow:
        assert slow.status_code == 200
        # Kept in a variable: a discarded line iterator closes the response, which drops the stream.
        lines = slow.iter_lines()
        assert next(lines) == "event: message_start"  # the claim is held from here on
        with pytest.raises(ThreadContinueInFlightError):
            client.beta.messages.create(
                model=MODEL, max_tokens=256, betas=BETAS, messages=[{"role": "user", "content": "too"}],
                extra_body={"thread": _continue(first.id)},
            )  # fmt: skip
    # The slow one was dropped mid-way: its claim comes back, so the same continue can be sent again.
    fake.reset([Turn.text("done")])
    for _ in range(200):
        try:
            again = client.beta.messages.create(
                model=MODEL, max_tokens=256, betas=BETAS, messages=[{"role": "user", "content": "slowly"}],
                extra_body={"thread": _continue(first.id)},
            )  # fmt: skip
            break
        except ThreadContinueInFlightError:
            fake.reset([Turn.text("done")])  # the gateway has not seen the disconnect yet
    assert again.content[0].text == "done"


def test_a_second_gateway_on_the_same_data_directory_continues_the_thread(gateway: Gateway, fake) -> None:
    client = sdk_client(gateway.url, CLIENT_KEY)
    first = _create(client, fake, {"type": "create"}, [{"role": "user", "content": "remember 7"}])
    socket = re.search(r"(/run/execbridge/[0-9a-f]+/sandbox\.sock)", gateway.log.read_text())
    args = ["--upstream", fake.databricks_url]
    as_user = None
    if socket is not None:  # beside the first one's sandbox host, as the same unprivileged user
        args += ["--sandbox-host", f"unix:{socket.group(1)}"]
        as_user = "execbridge"
    env = {**os.environ, "EXECBRIDGE_DATA_DIR": str(gateway.data_dir)}
    with serve_process(env, gateway.data_dir, *args, as_user=as_user) as second_url:
        other = sdk_client(second_url, CLIENT_KEY)
        reply = _create(other, fake, _continue(first.id), [{"role": "user", "content": "what was it?"}])
    assert _user_texts(fake.chat_requests[-1]) == ["remember 7", "what was it?"]
    assert reply.container.id == first.container.id


def test_threads_turned_off_make_the_sdk_send_whole_conversations(fake_upstream, tmp_path) -> None:
    from .conftest import serve

    with serve(fake_upstream, tmp_path, EXECBRIDGE_THREADS="false") as gateway:
        recorder = Recorder(gateway)
        fake_upstream.reset(
            [Turn.text("Looking.").call("lookup_population", city="Paris"), Turn.text("About two million.")]
        )
        replies = list(
            recorder.client.beta.messages.tool_runner(
                model=MODEL,
                max_tokens=256,
                tools=[lookup_population],
                messages=[{"role": "user", "content": "Paris?"}],
            )
        )
        recorder.client.close()
    assert replies[-1].content[-1].text == "About two million."
    threaded, *unthreaded = recorder.bodies
    assert threaded["thread"] == {"type": "create"}  # refused with thread_unsupported_request
    assert all("thread" not in body for body in unthreaded)
    assert _user_texts(unthreaded[-1]) == ["Paris?"]
