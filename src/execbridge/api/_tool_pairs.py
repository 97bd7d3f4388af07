"""Anthropic's pairing rules for client tool calls, checked on the client's own ``messages`` list.

Job: refuse, as Anthropic does and in its words, a ``tool_result`` that answers no ``tool_use`` of the
turn before it, a ``tool_use`` left without its ``tool_result`` in the next turn, and a ``tool_use`` id
used twice. The paths are the client's own (``messages.4.content.1``); an upstream would otherwise refuse
the translated request in its own words, at the indexes of messages the client never sent.

Must not: build the neutral model (``wire`` does, in the same request) or look at server tools'
pairing: a ``server_tool_use`` may rightly stay unanswered (a ``pause_turn`` continuation, or a call
deferred beside a client call; docs/protocol.md §2.12).

Invariant: it runs after ``wire`` has parsed every message, so the shapes read here are known good.
Consecutive messages of one role are one turn, as everywhere else; ``system`` messages are no turn.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from execbridge.api._checks import fail

__all__ = ["check_tool_pairs"]


@dataclass(slots=True)
class _Turn:
    role: str
    first_index: int  # the index of the turn's first message, in the client's list
    calls: dict[str, int] = field(default_factory=dict)  # client tool_use id → index of its message
    results: list[tuple[str, str]] = field(default_factory=list)  # (tool_use_id, path of the block)


def check_tool_pairs(messages: Sequence[Any]) -> None:
    """Raise ``InvalidRequest`` on the first pairing fault of ``messages`` (already parsed by ``wire``)."""
    turns = _turns(messages)
    for n, turn in enumerate(turns):
        if turn.role != "user":
            continue
        before = turns[n - 1] if n > 0 else None
        asked = before.calls if before is not None and before.role == "assistant" else {}
        for tool_use_id, path in turn.results:
            if tool_use_id not in asked:
                fail(
                    path,
                    f"unexpected `tool_use_id` found in `tool_result` blocks: {tool_use_id}. Each `tool_result` "
                    "block must have a corresponding `tool_use` block in the previous message.",
                )
    for n, turn in enumerate(turns):
        if turn.role != "assistant" or not turn.calls:
            continue
        after = turns[n + 1] if n + 1 < len(turns) else None
        answered = {tool_use_id for tool_use_id, _ in after.results} if after is not None else set()
        missing = [tool_use_id for tool_use_id in turn.calls if tool_use_id not in answered]
        if missing:
            fail(
                f"messages.{turn.calls[missing[0]]}",
                f"`tool_use` ids were found without `tool_result` blocks immediately after: {', '.join(missing)}. "
                "Each `tool_use` block must have a corresponding `tool_result` block in the next message.",
            )


def _turns(messages: Sequence[Any]) -> list[_Turn]:
    turns: list[_Turn] = []
    seen: set[str] = set()
    for i, message in enumerate(messages):
        role = message["role"]
        if role == "system":
            continue
        if not turns or turns[-1].role != role:
            turns.append(_Turn(role, i))
        content = message["content"]
        if type(content) is not list:
            continue
        turn = turns[-1]
        for j, block in enumerate(content):
            kind = block["type"]
            if kind == "tool_use" or kind == "server_tool_use":
                tool_use_id = block["id"]
                if tool_use_id in seen:
                    fail(f"messages.{i}.content.{j}", f"`tool_use` ids must be unique; {tool_use_id} is used twice")
                seen.add(tool_use_id)
                if kind == "tool_use":
                    turn.calls[tool_use_id] = i
            elif kind == "tool_result":
                turn.results.append((block["tool_use_id"], f"messages.{i}.content.{j}"))
    return turns
