"""Assemble one upstream model turn into engine events and final content blocks.

Upstream deltas are forwarded live while they can be: text, thinking and the first tool call stream
as the model produces them. Once a tool call is complete, later blocks of the same turn are held back,
because server calls run after the turn and each result must follow its own call (call A, result A,
call B, result B). ``TurnAssembler.finish`` returns the held-back blocks in order for the loop to
emit around the results.

Must not: run tools or know about containers. Invariant: every ``BlockStarted`` it emits is matched by
a ``BlockFinished`` once ``finish`` has been called.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import orjson

from execbridge import ids
from execbridge.engine.events import (
    BlockFinished,
    BlockStarted,
    CitationsDelta,
    EngineEvent,
    InputJsonDelta,
    TextDelta,
    ThinkingDelta,
)
from execbridge.engine.json_prefix import JsonPrefix
from execbridge.types import MAX_NESTING, StopReason, Text, Thinking, ToolCall, Usage, nests_deeper_than
from execbridge.upstream import base as up


@dataclass(slots=True)
class _OpenCall:
    id: str
    name: str
    server: bool
    fragments: list[str] = field(default_factory=list)
    # What has been forwarded must stay a valid JSON prefix (the SDK parses it after every delta).
    forwarded: JsonPrefix = field(default_factory=JsonPrefix)


@dataclass(frozen=True, slots=True)
class TurnOutcome:
    blocks: tuple[Text | Thinking | ToolCall, ...]  # every block of the turn, in order
    held_back: tuple[Text | Thinking | ToolCall, ...]  # the tail not yet emitted
    stop_reason: StopReason
    stop_sequence: str | None
    usage: Usage
    invalid_inputs: frozenset[str]  # ids of calls whose arguments were not a JSON object


def parse_arguments(raw: str) -> dict[str, Any] | None:
    """The call's arguments as a dict, or ``None`` when they are not a JSON object (or nest deeper
    than ``MAX_NESTING``: no encoder downstream could write them back)."""
    if not raw.strip():
        return {}
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    return value if isinstance(value, dict) and not nests_deeper_than(value, MAX_NESTING) else None


_STOP_REASONS: dict[str, StopReason] = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "content_filter": "refusal",
}


class TurnAssembler:
    """Folds one upstream turn into engine events.

    ``single_call``: the client set ``disable_parallel_tool_use``; the first call is the turn's only one,
    whatever the upstream sent (not every upstream takes ``parallel_tool_calls: false``, and some that
    take it ignore it), so later calls are dropped unseen.
    """

    def __init__(self, is_server_tool: Callable[[str], bool], *, single_call: bool = False) -> None:
        self._is_server_tool = is_server_tool
        self._single_call = single_call
        self._dropped: set[int] = set()  # upstream indexes of calls dropped for ``single_call``
        self._blocks: list[Text | Thinking | ToolCall] = []
        self._held: list[Text | Thinking | ToolCall] = []
        self._live = True
        self._text: list[str] | None = None
        self._citations: list[Any] = []
        self._thinking: list[str] | None = None
        self._signature = ""
        self._calls: dict[int, _OpenCall] = {}
        self._current_call: int | None = None
        self._invalid: set[str] = set()
        self._finish: up.Finished | None = None
        self._usage = Usage()

    def feed(self, event: up.UpstreamEvent) -> Iterator[EngineEvent]:
        match event:
            case up.TextDelta(text=text):
                if not text:
                    return
                if self._text is None:
                    yield from self._close_open()
                    self._text = []
                    yield from self._live_only(BlockStarted(Text("")))
                self._text.append(text)
                yield from self._live_only(TextDelta(text))
            case up.ReasoningDelta(text=text, signature=signature):
                if self._thinking is None:
                    yield from self._close_open()
                    self._thinking = []
                    yield from self._live_only(BlockStarted(Thinking("")))
                if text:
                    self._thinking.append(text)
                    yield from self._live_only(ThinkingDelta(text))
                if signature:
                    self._signature = signature
            case up.RedactedReasoning(data=data):
                yield from self._close_open()
                block = Thinking("", data=data)
                yield from self._live_only(BlockStarted(block))
                yield from self._finish_block(block)
            case up.CitationDelta(citation=citation):
                if self._text is None:  # a citation before any text: the block opens with it
                    yield from self._close_open()
                    self._text = []
                    yield from self._live_only(BlockStarted(Text("")))
                self._citations.append(citation)
                yield from self._live_only(CitationsDelta(citation))
            case up.BlockEnd():
                yield from self._close_open()
            case up.ToolCallDelta():
                yield from self._feed_call(event)
            case up.Finished():
                self._finish = event
            case up.TokenUsage(prompt_tokens=prompt, completion_tokens=completion, cached_tokens=cached):
                self._usage = Usage(
                    input_tokens=prompt,
                    output_tokens=completion,
                    cache_read_input_tokens=cached,
                    cache_creation_input_tokens=event.cache_creation_tokens,
                )

    def _feed_call(self, delta: up.ToolCallDelta) -> Iterator[EngineEvent]:
        call = self._calls.get(delta.index)
        if call is None and self._single_call and (self._calls or delta.index in self._dropped):
            self._dropped.add(delta.index)
            return
        if call is None:
            yield from self._close_open()
            name = delta.name or ""
            server = self._is_server_tool(name)
            call = _OpenCall(ids.server_tool_use_id() if server else ids.tool_use_id(), name, server)
            self._calls[delta.index] = call
            self._current_call = delta.index
            yield from self._live_only(BlockStarted(ToolCall(call.id, call.name, {}, call.server)))
        elif delta.name and not call.name:
            call.name = delta.name
        piece = delta.arguments
        if not piece:
            return
        call.fragments.append(piece)
        if call.forwarded.valid and call.forwarded.feed(piece):
            yield from self._live_only(InputJsonDelta(piece))
        # Past the first invalid piece nothing more is forwarded; the call becomes invalid_tool_input.

    def _live_only(self, event: EngineEvent) -> Iterator[EngineEvent]:
        if self._live:
            yield event

    def _close_open(self) -> Iterator[EngineEvent]:
        if self._text is not None:
            block: Text | Thinking | ToolCall = Text("".join(self._text), citations=tuple(self._citations))
            self._text = None
            self._citations = []
            yield from self._finish_block(block)
        if self._thinking is not None:
            block = Thinking("".join(self._thinking), self._signature)
            self._thinking = None
            self._signature = ""
            yield from self._finish_block(block)
        if self._current_call is not None:
            call = self._calls[self._current_call]
            self._current_call = None
            raw = "".join(call.fragments)
            arguments = parse_arguments(raw)
            if arguments is None:
                self._invalid.add(call.id)
                arguments = {}
            yield from self._finish_block(ToolCall(call.id, call.name, arguments, call.server))
            self._live = False  # from here on, blocks wait for the results of the calls before them

    def _finish_block(self, block: Text | Thinking | ToolCall) -> Iterator[EngineEvent]:
        self._blocks.append(block)
        if self._live:
            yield BlockFinished(block)
        else:
            self._held.append(block)

    def finish(self) -> tuple[list[EngineEvent], TurnOutcome]:
        closing = list(self._close_open())
        finish = self._finish or up.Finished("stop")
        has_calls = any(isinstance(b, ToolCall) for b in self._blocks)
        if finish.stop_sequence is not None:
            stop_reason: StopReason = "stop_sequence"
        elif has_calls and finish.reason != "length":
            stop_reason = "tool_use"
        else:
            stop_reason = _STOP_REASONS[finish.reason]
            if stop_reason == "tool_use":  # the upstream said tool_calls but sent none
                stop_reason = "end_turn"
        outcome = TurnOutcome(
            blocks=tuple(self._blocks),
            held_back=tuple(self._held),
            stop_reason=stop_reason,
            stop_sequence=finish.stop_sequence,
            usage=self._usage,
            invalid_inputs=frozenset(self._invalid),
        )
        return closing, outcome


def replay(block: Text | Thinking | ToolCall) -> Iterator[EngineEvent]:
    """The events of a held-back block, emitted whole."""
    match block:
        case Text(text=text, citations=citations):
            yield BlockStarted(Text(""))
            for citation in citations:
                yield CitationsDelta(citation)
            if text:
                yield TextDelta(text)
        case Thinking(data=data) if data is not None:
            yield BlockStarted(block)
        case Thinking(text=text):
            yield BlockStarted(Thinking(""))
            if text:
                yield ThinkingDelta(text)
        case ToolCall():
            yield BlockStarted(ToolCall(block.id, block.name, {}, block.server, caller=block.caller))
            yield InputJsonDelta(orjson.dumps(dict(block.input)).decode())
    yield BlockFinished(block)
