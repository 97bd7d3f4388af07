"""``ScriptedUpstream``: a fake ``Upstream`` at the level of neutral events, for tests of the engine.

Job: answer each ``stream_turn`` with the next turn of a script, each turn a list of
``upstream.base`` events (``TextDelta``, ``ToolCallDelta``, ``Finished``, …), and record every
``ChatTurn`` it was asked (``seen``), so that a test can check what the engine sent::

    upstream = ScriptedUpstream(
        [ToolCallDelta(0, "call_0", "bash_code_execution", '{"command": "ls"}'), Finished("tool_calls")],
        [TextDelta("done"), Finished("stop")],
    )
    engine = Engine(upstream, FakeContainerService(), Settings())

No HTTP and no JSON: the events are given as the engine will see them. To test how Chat Completions
chunks become events, use ``upstream.stream.events_from_chunks`` or ``FakeApp``; to test the HTTP
client, ``FakeApp``/``FakeUpstream``.

Must not: check or change the events (a script may be malformed on purpose), or outlive its script
silently: asking for a turn past the end raises ``IndexError``.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Iterable

from execbridge.upstream.base import ChatTurn, UpstreamEvent

__all__ = ["ScriptedUpstream"]


class ScriptedUpstream:
    """Answers each turn with the next list of neutral events; records what it was asked."""

    def __init__(self, *turns: Iterable[UpstreamEvent]) -> None:
        self.turns = [list(turn) for turn in turns]
        self.seen: list[ChatTurn] = []

    async def stream_turn(self, turn: ChatTurn) -> AsyncGenerator[UpstreamEvent, None]:
        self.seen.append(turn)
        if not self.turns:
            raise IndexError(f"ScriptedUpstream: no turn left for request {len(self.seen)}")
        for event in self.turns.pop(0):
            yield event

    async def aclose(self) -> None:
        pass
