"""A REPL cell suspended while the client answers the client tools its code awaits.

Programmatic tool calling (docs/architecture.md, "A cell that calls client tools"): a cell that
awaits client tools stops inside its REPL (the interpreter blocked, SIGSTOPped, its cgroup frozen)
and the request that ran it ends. The container's entry remembers the cell here (``WaitingCell``):
which REPL sandbox holds it, which ``toolu_`` ids the client must answer (mapped to the interpreter's
own numbers for the calls), and until when it waits (``ptc_call_timeout_s``). A later lease resumes
it with the answers (``resume``); past the deadline, or when another cell must run first, it is
*settled*: every await it is blocked on raises ``TimeoutError`` and it runs to its end without the
client, whose result is kept (``ContainerEntry.settled``, the last few) for an answer that comes late.

Must not: wait without a deadline (the REPL sandbox's own backstops bound each resume, the cell's
run time bounds the rounds of a settle); trust what the interpreter said (the calls come checked
from ``protocol.execution_result``; ids given to the client are made here).
Invariant: the caller holds the entry's lock (a lease, or the manager's timer).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from execbridge import ids
from execbridge.errors import InvalidRequest
from execbridge.sandbox.base import ExecutionResult, OutputSpool, ToolRequest
from execbridge.sandbox.live import LiveSandbox

if TYPE_CHECKING:
    from execbridge.sandbox.entry import ContainerEntry

log = logging.getLogger(__name__)

SETTLED_KEPT = 8  # results of cells settled without the client, per container, kept for late answers
_MAX_SETTLE_ROUNDS = 10_000  # pauses a settling cell may make (its run-time limit ends it sooner)


@dataclass(eq=False)
class WaitingCell:
    """A suspended cell: its REPL, the calls it awaits (``toolu_`` id → interpreter number), its deadline."""

    cell_id: str
    repl: LiveSandbox
    seqs: dict[str, int]
    deadline: float  # event-loop time after which its calls have timed out
    cell_timeout: float  # the cell's run-time limit: each resume's answer comes within it
    timer: asyncio.Task[None] | None = field(default=None, repr=False)


def watch(entry: ContainerEntry, call_timeout_s: float, *, on_settled: Callable[[ContainerEntry], None]) -> None:
    """A cell of ``entry`` now waits for its client's tool results: time the wait out. At its deadline
    the timer settles the cell (``settle``) unless a lease resumed it first; ``on_settled`` then marks
    the container used (idle from now on: eviction's clock starts there)."""
    cell = entry.waiting
    if cell is None:
        return
    if cell.timer is not None:
        cell.timer.cancel()
    cell.timer = asyncio.get_running_loop().create_task(
        _time_out(entry, cell, call_timeout_s, on_settled), name=f"execbridge-ptc-timeout-{cell.cell_id}"
    )


async def _time_out(
    entry: ContainerEntry, cell: WaitingCell, call_timeout_s: float, on_settled: Callable[[ContainerEntry], None]
) -> None:
    await asyncio.sleep(max(0.0, cell.deadline - asyncio.get_running_loop().time()))
    try:
        async with entry.lock:
            if entry.waiting is cell:
                await settle(entry, call_timeout_s=call_timeout_s)
                on_settled(entry)
    except Exception as exc:  # boundary: a timer has nobody to report to
        log.error("ending the waiting cell %s of container %s failed: %s", cell.cell_id, entry.record.id, exc)


def suspend(
    entry: ContainerEntry,
    cell_id: str,
    paused: ExecutionResult,
    repl: LiveSandbox,
    *,
    call_timeout_s: float,
    cell_timeout: float,
) -> ExecutionResult:
    """Remember the paused cell on ``entry``; the result with ``toolu_`` ids for its calls."""
    seqs: dict[str, int] = {}
    calls = []
    for call in paused.calls:
        tool_use_id = ids.tool_use_id()
        seqs[tool_use_id] = int(call.id)
        calls.append(ToolRequest(tool_use_id, call.name, call.input))
    deadline = asyncio.get_running_loop().time() + call_timeout_s
    entry.waiting = WaitingCell(cell_id, repl, seqs, deadline, cell_timeout)
    return replace(paused, calls=tuple(calls))


def _forget(entry: ContainerEntry) -> WaitingCell | None:
    waiting, entry.waiting = entry.waiting, None
    if waiting is not None and waiting.timer is not None and waiting.timer is not asyncio.current_task():
        waiting.timer.cancel()
    return waiting


def _gone(reason: str) -> ExecutionResult:
    return ExecutionResult("", reason, -1, 0.0, error_code="unavailable")


async def resume(
    entry: ContainerEntry,
    cell_id: str,
    replies: Mapping[str, str],
    spool: OutputSpool | None,
    *,
    call_timeout_s: float,
) -> ExecutionResult:
    """The suspended cell ``cell_id`` run on with the client's answers (see ``ContainerSession.resume_cell``)."""
    waiting = entry.waiting
    if waiting is None or waiting.cell_id != cell_id:
        kept = entry.settled.get(cell_id)
        if kept is not None:
            return kept
        return _gone(
            f"the code execution cell {cell_id} is not waiting for tool results: it already ended, or its "
            "container was stopped or restarted since (its Python state is gone; files in the workspace are kept)"
        )
    if waiting.repl is not entry.repl or not waiting.repl.alive:
        _forget(entry)
        return _gone(
            f"the Python REPL stopped while the cell {cell_id} waited for tool results "
            f"({waiting.repl.death_reason()}); its variables are gone, files in the workspace are kept"
        )
    if asyncio.get_running_loop().time() >= waiting.deadline:
        await settle(entry, call_timeout_s=call_timeout_s)  # the answers come too late
        return entry.settled.get(cell_id) or _gone(f"the code execution cell {cell_id} ended without its tool results")
    missing = [tool_use_id for tool_use_id in waiting.seqs if tool_use_id not in replies]
    if missing:
        raise InvalidRequest(
            f"the code execution cell {cell_id} is waiting for tool results for these tool_use ids: "
            f"{', '.join(missing)}",
            code="missing_tool_results",
        )
    _forget(entry)
    answers = [{"seq": seq, "text": replies[tool_use_id]} for tool_use_id, seq in waiting.seqs.items()]
    result = await waiting.repl.resume(answers, waiting.cell_timeout, spool)
    if result.calls:
        return suspend(
            entry, cell_id, result, waiting.repl, call_timeout_s=call_timeout_s, cell_timeout=waiting.cell_timeout
        )
    return result


async def settle(entry: ContainerEntry, *, call_timeout_s: float) -> None:
    """Run the waiting cell (if any) to its end without the client: each call it awaits, now and later,
    raises ``TimeoutError``. Its result is kept for an answer that comes late (without its files)."""
    waiting = _forget(entry)
    if waiting is None or waiting.repl is not entry.repl or not waiting.repl.alive:
        return
    log.info("a code execution cell waited %g s for tool results in vain; it runs on without them", call_timeout_s)
    replies: list[dict[str, Any]] = [{"seq": seq, "timeout": call_timeout_s} for seq in waiting.seqs.values()]
    result = await waiting.repl.resume(replies, waiting.cell_timeout)
    for _ in range(_MAX_SETTLE_ROUNDS):
        if not result.calls:
            break
        replies = [{"seq": int(call.id), "timeout": call_timeout_s} for call in result.calls]
        result = await waiting.repl.resume(replies, waiting.cell_timeout)
    if result.calls:  # pragma: no cover - the cell's run-time limit ends it long before
        await waiting.repl.stop()
        result = _gone("the cell kept awaiting client tools without a client; its REPL was stopped")
    entry.settled[waiting.cell_id] = replace(result, files=())
    while len(entry.settled) > SETTLED_KEPT:
        entry.settled.pop(next(iter(entry.settled)))
