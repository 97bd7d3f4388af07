"""Programmatic tool calling end to end: the official SDK → ``execbridge serve`` (privilege split: the
suspended cells wait in the sandbox host) → the scripted upstream. A cell's code awaits the client's
tools; the request ends with their ``tool_use`` blocks; the next request, with the ``tool_result``s
and the container, resumes the cell. The client-call timeout is shortened to ``CALL_TIMEOUT_S`` for
this module's gateway, the cell limit to ``CELL_LIMIT_S``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import pytest

from execbridge.testing import FakeUpstream, Turn

from .conftest import CLIENT_KEY, OTHER_KEY, Gateway, sdk_client, serve

CALL_TIMEOUT_S = 4
CELL_LIMIT_S = 3
CALLER = "code_execution_20260120"

QUERY = {
    "name": "query_database",
    "description": "Run SQL on the sales DB. Returns a JSON array of row objects.",
    "input_schema": {"type": "object", "properties": {"sql": {"type": "string"}}, "required": ["sql"]},
    "allowed_callers": [CALLER],
}
WEATHER = {
    "name": "get_weather",
    "description": "The weather in a city.",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}},
    "allowed_callers": [CALLER],
}
LOOKUP = {  # the default: only the model may call it
    "name": "lookup",
    "description": "Look a word up.",
    "input_schema": {"type": "object", "properties": {"word": {"type": "string"}}},
}


@pytest.fixture(scope="module")
def ptc_gateway(fake_upstream: FakeUpstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    data: Path = tmp_path_factory.mktemp("ptc-gateway-data")
    with serve(
        fake_upstream,
        data,
        EXECBRIDGE_SANDBOX__PTC_CALL_TIMEOUT_S=str(CALL_TIMEOUT_S),
        EXECBRIDGE_SANDBOX__REPL_CELL_TIMEOUT_S=str(CELL_LIMIT_S),
    ) as running:
        yield running


@pytest.fixture
def fake(ptc_gateway: Gateway) -> Iterator[FakeUpstream]:
    ptc_gateway.fake.reset()
    yield ptc_gateway.fake
    assert ptc_gateway.fake.remaining == 0, "the test left scripted turns unused"


class Conversation:
    """One client conversation: what it sent and got, as the SDK's own tool runner would carry it on."""

    def __init__(self, gateway: Gateway, tools: list[dict[str, Any]], *, stream: bool, key: str = CLIENT_KEY) -> None:
        self.sdk = sdk_client(gateway.url, key)
        self.tools = [{"type": "code_execution_20260120", "name": "code_execution"}, *tools]
        self.stream = stream
        self.messages: list[dict[str, Any]] = []
        self.container: str | None = None

    def send(self, content: Any, *, container: bool = True) -> anthropic.types.Message:
        self.messages.append({"role": "user", "content": content})
        request: dict[str, Any] = {"model": "m", "max_tokens": 300, "tools": self.tools, "messages": self.messages}
        if container and self.container is not None:
            request["container"] = self.container
        if self.stream:
            with self.sdk.messages.stream(**request) as events:
                for _ in events:
                    pass
                message = events.get_final_message()
        else:
            message = self.sdk.messages.create(**request)
        self.messages.append(
            {"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in message.content]}
        )
        if message.container is not None:
            self.container = message.container.id
        return message

    def answer(
        self, texts: dict[str, str], *, errors: frozenset[str] = frozenset(), **options: Any
    ) -> anthropic.types.Message:
        results = [
            {"type": "tool_result", "tool_use_id": i, "content": t, **({"is_error": True} if i in errors else {})}
            for i, t in texts.items()
        ]
        return self.send(results, **options)


def calls_of(message: anthropic.types.Message) -> list[Any]:
    return [b for b in message.content if b.type == "tool_use"]


def cell_result(message: anthropic.types.Message) -> Any:
    result = next(b for b in message.content if b.type == "code_execution_tool_result")
    assert result.content.type == "code_execution_result", result.content
    return result


def cell(code: str) -> Any:
    return Turn.tool_call("code_execution", code=code)


@pytest.mark.parametrize("stream", [False, True], ids=["json", "sse"])
def test_a_cell_awaits_a_client_tool_then_prints_the_result(ptc_gateway: Gateway, fake, stream: bool):
    code = (
        "import json\n"
        "rows = json.loads(await query_database({'sql': 'SELECT region, rev FROM sales'}))\n"
        "best = max(rows, key=lambda r: r['rev'])\nprint(best['region'])"
    )
    fake.reset([cell(code), Turn.text("West sold most.")])
    chat = Conversation(ptc_gateway, [QUERY, LOOKUP], stream=stream)
    paused = chat.send("Which region sold most?")
    assert paused.stop_reason == "tool_use" and paused.container is not None
    use, call = paused.content
    assert use.type == "server_tool_use" and use.name == "code_execution" and use.input == {"code": code}
    assert call.type == "tool_use" and call.name == "query_database"
    assert call.input == {"sql": "SELECT region, rev FROM sales"} and call.id.startswith("toolu_")
    assert call.caller.type == CALLER and call.caller.tool_id == use.id
    assert paused.usage.server_tool_use is None or paused.usage.server_tool_use.code_execution_requests == 0

    rows = [{"region": "West", "rev": 45}, {"region": "East", "rev": 38}]
    done = chat.answer({call.id: json.dumps(rows)})
    result = cell_result(done)
    assert result.tool_use_id == use.id
    assert (result.content.stdout, result.content.stderr, result.content.return_code) == ("West\n", "", 0)
    assert done.content[-1].text == "West sold most." and done.stop_reason == "end_turn"
    assert done.container is not None and done.container.id == paused.container.id

    # What the model saw: the REPL's function lists the code-callable tool; that tool is not offered to
    # it directly; the direct one is. The programmatic call and its result never reach it.
    first, second = fake.chat_requests
    functions = {f["function"]["name"]: f["function"] for f in first["tools"]}
    assert "query_database" not in functions and "lookup" in functions
    description = functions["code_execution"]["description"]
    assert "async def query_database(input: dict) -> str" in description and "Returns a JSON array" in description
    assert "lookup" not in description
    seen = json.dumps(second["messages"])
    assert call.id not in seen and '"rev": 45' not in seen
    assert "West" in second["messages"][-1]["content"]  # the cell's output, as the function's result


@pytest.mark.parametrize("stream", [False, True], ids=["json", "sse"])
def test_two_tools_awaited_together_then_a_later_pause_carries_only_its_new_call(
    ptc_gateway: Gateway, fake, stream: bool
):
    code = (
        "import asyncio\n"
        "a, b = await asyncio.gather(get_weather({'city': 'Oslo'}), get_weather({'city': 'Rome'}))\n"
        "total = await query_database({'sql': a + '|' + b})\n"
        "print(total)"
    )
    fake.reset([cell(code), Turn.text("ok")])
    chat = Conversation(ptc_gateway, [QUERY, WEATHER], stream=stream)
    first = chat.send("weather")
    use = first.content[0]
    gathered = calls_of(first)
    assert sorted(c.input["city"] for c in gathered) == ["Oslo", "Rome"]
    assert {c.caller.tool_id for c in gathered} == {use.id}
    second = chat.answer({c.id: f"{c.input['city']}: sunny" for c in gathered})
    # Only the new call: no server_tool_use again, no result yet, and the model was not asked.
    assert [b.type for b in second.content] == ["tool_use"] and second.stop_reason == "tool_use"
    (later,) = calls_of(second)
    assert later.name == "query_database" and later.input == {"sql": "Oslo: sunny|Rome: sunny"}
    assert later.caller.tool_id == use.id
    assert (second.usage.input_tokens, second.usage.output_tokens) == (0, 0)
    assert second.container is not None and second.container.id == chat.container
    assert len(fake.chat_requests) == 1
    done = chat.answer({later.id: "42"})
    assert cell_result(done).content.stdout == "42\n"


def test_an_is_error_result_reaches_the_code_as_text(ptc_gateway: Gateway, fake):
    code = "reply = await query_database({'sql': 'x'})\nprint('got:', reply)"
    fake.reset([cell(code), Turn.text("The DB failed.")])
    chat = Conversation(ptc_gateway, [QUERY], stream=False)
    (call,) = calls_of(chat.send("q"))
    done = chat.answer({call.id: "Error: table lock"}, errors=frozenset({call.id}))
    result = cell_result(done).content
    assert (result.stdout, result.return_code) == ("got: Error: table lock\n", 0)


def test_state_set_by_a_resumed_cell_is_read_in_a_later_request(ptc_gateway: Gateway, fake):
    fake.reset(
        [cell("totals = await query_database({'sql': 's'})"), Turn.text("kept"), cell("print(totals)"), Turn.text("ok")]
    )
    chat = Conversation(ptc_gateway, [QUERY], stream=False)
    (call,) = calls_of(chat.send("load"))
    chat.answer({call.id: "[1, 2, 3]"})
    later = chat.send("show")
    assert cell_result(later).content.stdout == "[1, 2, 3]\n"


def test_a_client_that_never_answers_times_out_in_the_cell_and_frees_the_container(ptc_gateway: Gateway, fake):
    code = "try:\n    await query_database({'sql': 'slow'})\nexcept TimeoutError as e:\n    note = str(e)\n    raise\n"
    fake.reset([cell(code), cell("print(note)"), Turn.text("retried")])
    chat = Conversation(ptc_gateway, [QUERY], stream=False)
    (call,) = calls_of(chat.send("q"))
    expected = f"Calling tool ['query_database'] timed out (no response after {CALL_TIMEOUT_S}s)."
    # While the cell waits, the container takes nothing but the answers.
    with pytest.raises(anthropic.BadRequestError, match="waiting for tool results"):
        sdk_client(ptc_gateway.url, CLIENT_KEY).messages.create(
            model="m",
            max_tokens=10,
            container=chat.container,
            tools=chat.tools,
            messages=[{"role": "user", "content": "something else"}],
        )
    time.sleep(CALL_TIMEOUT_S + 1)  # the behaviour under test is the passing of the timeout itself
    # The timed-out cell ended on its own (the sandbox host settled it) and left its state: the
    # container is free for a new request, whose cell reads what the old one stored.
    fresh = sdk_client(ptc_gateway.url, CLIENT_KEY).messages.create(
        model="m", max_tokens=10, container=chat.container, tools=chat.tools,
        messages=[{"role": "user", "content": "again"}],
    )  # fmt: skip
    assert cell_result(fresh).content.stdout == expected + "\n"
    # The answer that comes too late gets the cell's end: the TimeoutError on stderr.
    fake.reset([Turn.text("noted")])
    late = chat.answer({call.id: "too late"})
    result = cell_result(late).content
    assert result.return_code == 1 and result.stderr.rstrip().endswith(f"TimeoutError: {expected}")


def test_a_continuation_without_container_or_with_missing_results_is_400(ptc_gateway: Gateway, fake):
    code = "import asyncio\nprint(await asyncio.gather(get_weather({'city': 'a'}), get_weather({'city': 'b'})))"
    fake.reset([cell(code), Turn.text("ok")])
    chat = Conversation(ptc_gateway, [WEATHER], stream=False)
    first, second = calls_of(chat.send("w"))
    with pytest.raises(anthropic.BadRequestError) as missing_container:
        chat.answer({first.id: "x", second.id: "y"}, container=False)
    assert missing_container.value.status_code == 400
    assert missing_container.value.body["error"]["type"] == "invalid_request_error"  # type: ignore[index]
    assert missing_container.value.body["error"]["message"] == (  # type: ignore[index]
        "container_id is required when there are pending tool uses generated by code execution with tools."
    )
    chat.messages.pop()
    with pytest.raises(anthropic.BadRequestError, match=second.id):
        chat.answer({first.id: "x"})
    chat.messages.pop()
    # Another key cannot resume the cell (the container is not theirs), and the cell still waits.
    stranger = Conversation(ptc_gateway, [WEATHER], stream=False, key=OTHER_KEY)
    stranger.messages, stranger.container = list(chat.messages), chat.container
    with pytest.raises(anthropic.NotFoundError):
        stranger.answer({first.id: "x", second.id: "y"})
    done = chat.answer({first.id: "x", second.id: "y"})
    assert cell_result(done).content.stdout == "['x', 'y']\n"


def test_direct_tools_are_not_callable_from_code(ptc_gateway: Gateway, fake):
    fake.reset([cell("await lookup({'word': 'x'})"), Turn.text("no")])
    chat = Conversation(ptc_gateway, [QUERY, LOOKUP], stream=False)
    message = chat.send("try")
    result = cell_result(message).content
    assert result.return_code == 1 and "NameError: name 'lookup' is not defined" in result.stderr


@pytest.mark.parametrize("stream", [False, True], ids=["json", "sse"])
def test_a_mixed_batch_with_a_direct_client_call(ptc_gateway: Gateway, fake, stream: bool):
    code = "print(await query_database({'sql': 'q'}))"
    fake.reset(
        [
            Turn.tool_call("code_execution", code=code).call("lookup", word="sales"),
            Turn.text("both done"),
        ]
    )
    chat = Conversation(ptc_gateway, [QUERY, LOOKUP], stream=stream)
    first = chat.send("mixed")
    assert [b.type for b in first.content] == ["server_tool_use", "tool_use"]
    direct = first.content[1]
    assert direct.name == "lookup" and direct.caller.type == "direct"
    # The cell was deferred behind the client's own call; answering it runs the cell, which pauses.
    second = chat.answer({direct.id: "a word for revenue"})
    (programmatic,) = calls_of(second)
    assert programmatic.caller.tool_id == first.content[0].id and second.stop_reason == "tool_use"
    done = chat.answer({programmatic.id: "1234"})
    assert cell_result(done).content.stdout == "1234\n" and done.content[-1].text == "both done"
    # The model saw the direct call and its result, and the cell's output; not the programmatic call.
    seen = json.dumps(fake.chat_requests[-1]["messages"])
    assert "a word for revenue" in seen and programmatic.id not in seen


def test_count_tokens_counts_the_tools_listed_for_code(ptc_gateway: Gateway, fake):
    sdk = sdk_client(ptc_gateway.url, CLIENT_KEY)
    base = [{"type": "code_execution_20260120", "name": "code_execution"}]
    messages = [{"role": "user", "content": "hi"}]
    plain = sdk.messages.count_tokens(model="m", tools=base, messages=messages).input_tokens  # type: ignore[arg-type]
    with_tool = sdk.messages.count_tokens(model="m", tools=[*base, QUERY], messages=messages).input_tokens  # type: ignore[arg-type]
    assert with_tool > plain + len("async def query_database(input: dict) -> str") // 8


def test_a_resumed_cell_past_the_shortened_limit_is_detection_timeout(ptc_gateway: Gateway, fake):
    code = "got = await query_database({'sql': 's'})\nimport time\ntime.sleep(600)"
    fake.reset([cell(code), cell("print(got)"), Turn.text("slow")])
    chat = Conversation(ptc_gateway, [QUERY], stream=False)
    (call,) = calls_of(chat.send("q"))
    done = chat.answer({call.id: "kept"})
    first, second = [b for b in done.content if b.type == "code_execution_tool_result"]
    assert first.content.return_code == 1  # a normal result, not an error block
    assert f"detection_timeout: the cell exceeded its {CELL_LIMIT_S}-second wall-clock limit" in first.content.stderr
    assert second.content.stdout == "kept\n"  # the REPL kept the state the resumed cell set
