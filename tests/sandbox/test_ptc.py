"""Programmatic tool calling in the sandbox (manager → the REPL's sandbox → its supervisor → the
interpreter): a cell that awaits client tools is suspended, resumed with the answers, settled
without them past ``ptc_call_timeout_s``, and kept from eviction while it waits.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import pytest
import pytest_asyncio

from execbridge.errors import InvalidRequest
from execbridge.sandbox.doctor import DoctorReport
from execbridge.sandbox.manager import ContainerManager

from .conftest import container, open_manager, private_dir

pytestmark = pytest.mark.asyncio(loop_scope="module")

CALL_TIMEOUT_S = 3.0


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def m(base_dir: Path, doctor_report: DoctorReport) -> AsyncIterator[ContainerManager]:
    data = private_dir(base_dir, "ptc-")
    async with open_manager(
        data, doctor_report, spare_containers=0, command_timeout_s=20.0, ptc_call_timeout_s=CALL_TIMEOUT_S
    ) as manager:
        yield manager


async def test_a_cell_awaiting_a_tool_is_suspended_and_resumed_with_the_answer(m: ContainerManager) -> None:
    async with container(m) as session:
        paused = await session.run_cell(
            "print('before')\nrows = await query({'sql': 'select 1'})\nprint('got', rows)",
            tools=["query"],
            cell_id="srvtoolu_a",
        )
        assert len(paused.calls) == 1 and paused.stdout == ""
        call = paused.calls[0]
        assert call.id.startswith("toolu_") and call.name == "query" and dict(call.input) == {"sql": "select 1"}
        done = await session.resume_cell("srvtoolu_a", {call.id: "[1]"})
        assert (done.stdout, done.stderr, done.return_code, done.calls) == ("before\ngot [1]\n", "", 0, ())
        # The cell's variables stay in the REPL, and a non-dict argument fails in the code.
        after = await session.run_cell("print(rows)\nawait query('x')", tools=["query"], cell_id="srvtoolu_b")
        assert after.stdout == "[1]\n" and after.return_code == 1
        assert "query() takes a single dict of arguments" in after.stderr


async def test_gathered_calls_pause_together_and_a_later_pause_carries_only_new_calls(m: ContainerManager) -> None:
    async with container(m) as session:
        code = (
            "import asyncio\n"
            "a, b = await asyncio.gather(get({'k': 1}), get({'k': 2}))\n"
            "c = await put({'v': a + b})\n"
            "print(a, b, c)"
        )
        first = await session.run_cell(code, tools=["get", "put"], cell_id="srvtoolu_g")
        assert sorted(dict(c.input)["k"] for c in first.calls) == [1, 2]
        answers = {c.id: f"r{dict(c.input)['k']}" for c in first.calls}
        second = await session.resume_cell("srvtoolu_g", answers)
        assert [(c.name, dict(c.input)) for c in second.calls] == [("put", {"v": "r1r2"})]
        assert not {c.id for c in second.calls} & set(answers)
        with pytest.raises(InvalidRequest, match=second.calls[0].id):
            await session.resume_cell("srvtoolu_g", {})
        done = await session.resume_cell("srvtoolu_g", {second.calls[0].id: "ok"})
        assert (done.stdout, done.return_code) == ("r1 r2 ok\n", 0)


async def test_direct_only_tools_are_not_defined_in_the_cell(m: ContainerManager) -> None:
    async with container(m) as session:
        result = await session.run_cell("await secret({})", tools=["query"], cell_id="srvtoolu_d")
        assert result.calls == () and result.return_code == 1
        assert "NameError: name 'secret' is not defined" in result.stderr
        # A tool of an earlier cell is gone when the next cell does not name it.
        await session.run_cell("pass", tools=["secret"], cell_id="srvtoolu_e")
        again = await session.run_cell("print('secret' in globals())", cell_id="srvtoolu_f")
        assert again.stdout == "False\n"


async def test_an_unanswered_call_times_out_in_the_cell_and_the_container_may_be_evicted_again(
    m: ContainerManager,
) -> None:
    info = await m.create("alice")
    try:
        async with m.lease(info.id, "alice") as session:
            paused = await session.run_cell(
                "try:\n    await query({})\nexcept TimeoutError as e:\n    print('caught', e)\n    raise\n",
                tools=["query"],
                cell_id="srvtoolu_t",
            )
            assert paused.calls
        entry = m._entries[info.id]
        assert entry.waiting is not None and not entry.evictable()  # held while it waits
        # Long idle by the clock, the janitor's pass still leaves it alone while its cell waits.
        entry.record = replace(entry.record, last_used_at=entry.record.last_used_at - timedelta(days=1))
        await m._evict_idle()
        assert entry.repl is not None and entry.repl.alive and entry.waiting is not None
        # Waiting for the deadline is the behaviour under test; the timer then settles the cell.
        timer = entry.waiting.timer
        assert timer is not None
        await timer
        assert entry.waiting is None and entry.evictable()
        async with m.lease(info.id, "alice") as session:
            late = await session.resume_cell("srvtoolu_t", {paused.calls[0].id: "too late"})
        expected = f"Calling tool ['query'] timed out (no response after {CALL_TIMEOUT_S:g}s)."
        assert late.stdout == f"caught {expected}\n" and late.return_code == 1
        assert late.stderr.rstrip().endswith(f"TimeoutError: {expected}")
        entry.record = replace(entry.record, last_used_at=entry.record.last_used_at - timedelta(days=1))
        await m._evict_idle()  # now it goes like any idle container
        assert entry.repl is None and entry.live is None
    finally:
        await m.delete(info.id, "alice")


async def test_a_new_cell_settles_the_waiting_one_and_a_lost_cell_is_a_clear_error(m: ContainerManager) -> None:
    async with container(m) as session:
        paused = await session.run_cell(
            "try:\n    await query({})\nexcept TimeoutError:\n    state = 'settled'\n",
            tools=["query"],
            cell_id="srvtoolu_s",
        )
        assert paused.calls
        nxt = await session.run_cell("print(state)", cell_id="srvtoolu_n")
        assert (nxt.stdout, nxt.return_code) == ("settled\n", 0)
        gone = await session.resume_cell("srvtoolu_unknown", {})
        assert gone.error_code == "unavailable" and "is not waiting for tool results" in gone.stderr


async def test_time_spent_waiting_does_not_count_towards_the_cell_limit(m: ContainerManager) -> None:
    async with container(m) as session:
        paused = await session.run_cell(
            "import time\ntime.sleep(0.05)\nx = await query({})\ntime.sleep(0.05)\nprint(x)",
            tools=["query"],
            cell_id="srvtoolu_l",
            timeout=1.0,
        )
        await asyncio.sleep(1.2)  # the pause: longer than the cell's whole limit (within CALL_TIMEOUT_S)
        done = await session.resume_cell("srvtoolu_l", {paused.calls[0].id: "fine"})
        assert (done.stdout, done.return_code) == ("fine\n", 0), done.stderr


@pytest.mark.parametrize("forged", [b"call 99999999\n", b"call 5\n[1,2]", b"call 2\n[]"])
async def test_a_cell_that_forges_a_call_message_loses_its_interpreter(m: ContainerManager, forged: bytes) -> None:
    async with container(m) as session:
        await session.run_cell("kept = 1", cell_id="srvtoolu_k")
        code = (
            "import os, time\n"
            "for fd in map(int, os.listdir('/proc/self/fd')):\n"
            "    if fd > 2:\n"
            "        try:\n"
            f"            os.write(fd, {forged!r})\n"
            "        except OSError:\n"
            "            pass\n"
            "time.sleep(30)\n"
        )
        result = await session.run_cell(code, tools=["query"], cell_id="srvtoolu_f")
        assert result.calls == () and "the Python REPL ended during this cell" in result.stderr
        after = await session.run_cell("print('kept' in globals())", cell_id="srvtoolu_a")
        assert after.stdout == "False\n" and "a fresh Python REPL was started" in after.stderr
