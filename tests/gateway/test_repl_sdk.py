"""The persistent Python REPL of code_execution_20260120/20260521, end to end: the official SDK →
``execbridge serve`` (privilege split: the cells run in the sandbox host's containers) → the scripted
upstream. The per-cell limit is shortened to 2 s for this module's gateway.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import anthropic
import pytest
from anthropic.types import CodeExecutionToolResultBlock, ServerToolUseBlock

from execbridge.testing import FakeUpstream, Turn

from .conftest import CLIENT_KEY, Gateway, sdk_client, serve

CELL_LIMIT_S = 2


@pytest.fixture(scope="module")
def repl_gateway(fake_upstream: FakeUpstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    data: Path = tmp_path_factory.mktemp("repl-gateway-data")
    with serve(fake_upstream, data, EXECBRIDGE_SANDBOX__REPL_CELL_TIMEOUT_S=str(CELL_LIMIT_S)) as running:
        yield running


@pytest.fixture
def fake(repl_gateway: Gateway) -> Iterator[FakeUpstream]:
    repl_gateway.fake.reset()
    yield repl_gateway.fake
    assert repl_gateway.fake.remaining == 0, "the test left scripted turns unused"


def ask(
    gateway: Gateway, version: str, content: str, container: str | None = None, *, stream: bool = False
) -> anthropic.types.Message:
    sdk = sdk_client(gateway.url, CLIENT_KEY)
    request = {
        "model": "m",
        "max_tokens": 200,
        "tools": [{"type": f"code_execution_{version}", "name": "code_execution"}],
        "messages": [{"role": "user", "content": content}],
        **({"container": container} if container else {}),
    }
    if not stream:
        return sdk.messages.create(**request)  # type: ignore[arg-type]
    with sdk.messages.stream(**request) as events:  # type: ignore[arg-type]
        for _ in events:
            pass
        return events.get_final_message()


def cell_result(message: anthropic.types.Message) -> CodeExecutionToolResultBlock:
    call, result = message.content[0], message.content[1]
    assert isinstance(call, ServerToolUseBlock) and call.name == "code_execution"
    assert isinstance(result, CodeExecutionToolResultBlock) and result.tool_use_id == call.id
    assert result.content.type == "code_execution_result", result.content
    return result


def cell(code: str, answer: str = "done") -> list:
    return [Turn.tool_call("code_execution", code=code), Turn.text(answer)]


@pytest.mark.parametrize("stream", [False, True], ids=["json", "sse"])
@pytest.mark.parametrize("version", ["20260120", "20260521"])
def test_state_set_in_one_request_is_read_in_a_later_one(repl_gateway: Gateway, fake, version: str, stream: bool):
    fake.reset(
        cell("import json\ntotals = {'west': 45, 'east': 38}\nprint('set')")
        + cell("print(max(totals, key=totals.get), json.dumps(totals))")
    )
    first = ask(repl_gateway, version, "set it", stream=stream)
    assert cell_result(first).content.stdout == "set\n"
    assert first.container is not None
    second = ask(repl_gateway, version, "read it", first.container.id, stream=stream)
    result = cell_result(second).content
    assert (result.stdout, result.stderr, result.return_code) == ('west {"west": 45, "east": 38}\n', "", 0)
    # The model was told the cells share one interpreter, and how long each may run.
    functions = {f["function"]["name"]: f["function"] for f in fake.chat_requests[0]["tools"]}
    assert "persist between calls" in functions["code_execution"]["description"]
    system = fake.chat_requests[0]["messages"][0]["content"]
    assert f"at most {CELL_LIMIT_S} seconds of wall-clock time" in system


@pytest.mark.parametrize("stream", [False, True], ids=["json", "sse"])
def test_top_level_await(repl_gateway: Gateway, fake, stream: bool):
    code = (
        "import asyncio\nasync def double(v):\n    await asyncio.sleep(0)\n    return 2 * v\n"
        "print(await asyncio.gather(double(1), double(20)))"
    )
    fake.reset(cell(code))
    message = ask(repl_gateway, "20260120", "await", stream=stream)
    assert cell_result(message).content.stdout == "[2, 40]\n"


def test_a_cell_past_the_shortened_limit_is_detection_timeout_and_the_state_stays(repl_gateway: Gateway, fake):
    fake.reset(cell("progress = 'started'\nimport time\ntime.sleep(600)") + cell("print(progress)"))
    first = ask(repl_gateway, "20260521", "slow")
    timed_out = cell_result(first).content  # a normal result, not an error block
    assert timed_out.return_code == 1
    assert f"detection_timeout: the cell exceeded its {CELL_LIMIT_S}-second wall-clock limit" in timed_out.stderr
    assert first.container is not None
    second = ask(repl_gateway, "20260521", "again", first.container.id)
    assert cell_result(second).content.stdout == "started\n"


@pytest.mark.parametrize("stream", [False, True], ids=["json", "sse"])
def test_a_crashed_repl_restarts_with_a_note_in_the_next_result(repl_gateway: Gateway, fake, stream: bool):
    fake.reset(cell("x = 1") + cell("import os\nos._exit(9)") + cell("print('x' in globals())"))
    first = ask(repl_gateway, "20260120", "a", stream=stream)
    assert first.container is not None
    container = first.container.id
    crashed = cell_result(ask(repl_gateway, "20260120", "b", container, stream=stream)).content
    assert crashed.return_code == 9 and "the Python REPL ended during this cell" in crashed.stderr
    fresh = cell_result(ask(repl_gateway, "20260120", "c", container, stream=stream)).content
    assert fresh.stdout == "False\n" and fresh.return_code == 0
    assert "a fresh Python REPL was started for this cell" in fresh.stderr


def test_bash_beside_the_repl_and_the_older_version_keeps_fresh_processes(repl_gateway: Gateway, fake):
    fake.reset(
        [
            Turn.tool_call("code_execution", code="kept = 5\nopen('cell.txt', 'w').write('from the cell')"),
            Turn.tool_call("bash_code_execution", command="cat cell.txt"),
            Turn.tool_call("code_execution", code="print(kept)"),
            Turn.text("done"),
        ]
    )
    message = ask(repl_gateway, "20260120", "mix")
    blocks = [b for b in message.content if b.type.endswith("tool_result")]
    assert blocks[1].content.stdout == "from the cell"
    assert blocks[2].content.stdout == "5\n"
    # 20250522's Python tool is still a fresh process per call.
    fake.reset(cell("kept = 5") + cell("print('kept' in globals())"))
    first = ask(repl_gateway, "20250522", "old")
    assert first.container is not None
    second = ask(repl_gateway, "20250522", "old again", first.container.id)
    assert cell_result(second).content.stdout == "False\n"
