"""Chat Completions bytes and dicts → neutral ``UpstreamEvent``s. No HTTP, no sockets.

Job: split an SSE byte stream into ``data:`` payloads (``sse_events``) and fold each
``chat.completion.chunk`` into events; read a whole ``chat.completion`` as the same events a stream
would give (``events_from_completion``). Content may be a string or a list of parts (Databricks
Claude), reasoning may come as ``reasoning_content``/``reasoning`` or as parts; tool calls are matched
by ``index`` or by ``id`` (servers that reuse index 0 or send none). An error object inside the stream
becomes an ``UpstreamError`` after whatever came before it has been yielded.

Databricks' ``"{}"`` is normalised here, once, for every chunking: an endpoint may send the literal
``"{}"`` as a call's arguments and then the real arguments. A piece that is exactly ``"{}"``, before
any other argument text of its call, is held; if real arguments follow it is dropped, otherwise it is
sent when the call ends (another call, text, reasoning, or the end of the turn). ``"{}"`` glued in
front of the real arguments in one piece (``'{}{"a":1}'``, never valid JSON) loses the ``"{}"``.

Must not: know about HTTP, retries or the engine; allocate per byte (a hand-rolled line splitter and
one ``orjson.loads`` per SSE event, no pydantic: this is the hot path).

Invariants of the events: text, reasoning and tool-call pieces in the order they came; pieces of one
call never interleave with another call's; each call's first piece carries its id and name; then
``TokenUsage`` when the upstream reported it, then exactly one ``Finished``, always last.
"""

from __future__ import annotations

import math
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterable, Mapping
from typing import Any

import orjson

from execbridge.errors import UpstreamError, UpstreamTimeout
from execbridge.ids import random_token
from execbridge.upstream.base import (
    Finished,
    FinishReason,
    ReasoningDelta,
    TextDelta,
    TokenUsage,
    ToolCallDelta,
    UpstreamEvent,
)
from execbridge.upstream.error_envelopes import error_from_body

__all__ = ["events_from_chunks", "events_from_completion", "load_json", "sse_events"]

_FINISH: dict[str, FinishReason] = {
    "stop": "stop",
    "end_turn": "stop",
    "stop_sequence": "stop",
    "eos": "stop",
    "length": "length",
    "max_tokens": "length",
    "model_length": "length",
    "tool_calls": "tool_calls",
    "function_call": "tool_calls",
    "tool_use": "tool_calls",
    "content_filter": "content_filter",
    "refusal": "content_filter",
}
_PLACEHOLDER = "{}"  # Databricks' stand-in for a call's arguments (see the module docstring)


def load_json(raw: bytes) -> Any:
    """``orjson.loads``, with invalid JSON reported as the upstream's fault (``UpstreamError``)."""
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise UpstreamError(f"the upstream sent invalid JSON: {raw[:200]!r}", code="invalid_json") from exc


def events_from_completion(completion: Mapping[str, Any]) -> list[UpstreamEvent]:
    """A whole (non-streamed) ``chat.completion`` as the same events a stream would give."""
    return events_from_chunks((completion,))


def events_from_chunks(chunks: Iterable[Mapping[str, Any]]) -> list[UpstreamEvent]:
    """Parsed chunks (or one whole completion) folded into one turn's events, ``Finished`` last."""
    out: list[UpstreamEvent] = []
    state = _TurnState()
    for chunk in chunks:
        state.feed(chunk, out)
    state.finish_turn(out)
    return out


async def sse_events(
    chunks: AsyncIterator[bytes], deadline: float = math.inf, clock: Callable[[], float] = time.monotonic
) -> AsyncGenerator[UpstreamEvent, None]:
    """Split the SSE byte stream ``chunks`` into ``data:`` payloads and fold each chunk into events.

    Follows the SSE framing rules that matter here: lines end in LF or CRLF, an event is dispatched on
    a blank line, several ``data:`` lines of one event join with LF, other fields are ignored. Past
    ``deadline`` (on ``clock``) the turn fails with ``UpstreamTimeout``.
    """
    state = _TurnState()
    out: list[UpstreamEvent] = []
    pending = b""
    data: list[bytes] = []
    async for chunk in chunks:
        if clock() > deadline:
            raise UpstreamTimeout("the upstream did not finish the turn within the total timeout", status=None)
        lines = (pending + chunk).split(b"\n") if pending else chunk.split(b"\n")
        pending = lines.pop()
        for line in lines:
            if line and line[-1] == 13:  # CR of a CRLF line ending
                line = line[:-1]
            if line:
                if line.startswith(b"data:"):
                    data.append(line[6:] if line[5:6] == b" " else line[5:])
                continue
            if not data:
                continue
            payload = data[0] if len(data) == 1 else b"\n".join(data)
            data.clear()
            if payload.startswith(b"[DONE]"):
                state.finish_turn(out)
                for event in out:
                    yield event
                # Read to the end of the body (normally just the chunked terminator, already buffered)
                # so that httpx returns the connection to the pool instead of closing it.
                async for _ in chunks:
                    pass
                return
            try:
                state.feed(load_json(payload), out)
            except UpstreamError:
                # What the model said before the error still reaches the consumer, however the bytes
                # happened to be split into reads (and then the error is not retried).
                for event in out:
                    yield event
                raise
        if out:
            for event in out:
                yield event
            out.clear()
    # The body ended without [DONE]: accept it if the turn had finished, else it was cut short.
    tail = pending.rstrip(b"\r")
    if tail.startswith(b"data:"):
        data.append(tail[5:].lstrip(b" "))
    if data and not data[0].startswith(b"[DONE]"):
        state.feed(load_json(b"\n".join(data)), out)
    if state.finish is None:
        for event in out:
            yield event
        raise UpstreamError("the upstream stream ended before the turn finished", code="stream_truncated")
    state.finish_turn(out)
    for event in out:
        yield event


class _Call:
    __slots__ = ("fresh", "id", "index", "upstream_index")

    def __init__(self, index: int, id: str, upstream_index: int | None) -> None:
        self.index = index
        self.id = id
        self.upstream_index = upstream_index
        self.fresh = True  # no argument text sent yet, so a "{}" may still be a placeholder


class _TurnState:
    """Folds chunks (or one whole completion: ``message`` is read like a ``delta``) into events."""

    __slots__ = ("_by_index", "_calls", "_current", "_held", "finish", "stop_sequence", "usage")

    def __init__(self) -> None:
        self.finish: str | None = None
        self.stop_sequence: str | None = None
        self.usage: TokenUsage | None = None
        self._calls: list[_Call] = []
        self._by_index: dict[int, _Call] = {}
        self._current: _Call | None = None
        self._held: _Call | None = None  # the call whose "{}" waits to see whether real arguments follow

    def feed(self, chunk: Mapping[str, Any], out: list[UpstreamEvent]) -> None:
        """Fold one chunk into ``out``. A chunk of the wrong shape (a list where an object belongs, a
        number for a call's name) is the upstream's fault: ``UpstreamError`` ``invalid_chunk``, found by
        the fuzz tests (tests/fuzz). The checks are ``isinstance`` calls and one ``try``, which costs
        nothing until something raises."""
        try:
            self._feed(chunk, out)
        except (AttributeError, TypeError, KeyError, IndexError, ValueError) as exc:
            raise UpstreamError(
                f"the upstream sent a chunk of an unexpected shape: {str(chunk)[:200]}", code="invalid_chunk"
            ) from exc

    def _feed(self, chunk: Mapping[str, Any], out: list[UpstreamEvent]) -> None:
        error = chunk.get("error")
        if error:
            raise error_from_body(None, chunk, None)
        usage = chunk.get("usage")
        if usage:
            self.usage = _usage(usage)
        choices = chunk.get("choices")
        if not choices:
            return
        choice = choices[0]
        delta = choice.get("delta") or choice.get("message")
        if delta:
            self._delta(delta, out)
        finish = choice.get("finish_reason")
        if finish:
            if not isinstance(finish, str):
                raise TypeError("finish_reason")
            self.finish = finish
            stop_reason = choice.get("stop_reason")  # vLLM names the stop string that matched
            if isinstance(stop_reason, str):
                self.stop_sequence = stop_reason

    def _delta(self, delta: Mapping[str, Any], out: list[UpstreamEvent]) -> None:
        reasoning = delta.get("reasoning_content") or delta.get("reasoning")
        if reasoning and isinstance(reasoning, str):
            self._release_held(out)
            out.append(ReasoningDelta(reasoning))
        content = delta.get("content")
        if content:
            self._release_held(out)
            if isinstance(content, str):
                out.append(TextDelta(content))
            else:
                _content_parts(content, out)
        refusal = delta.get("refusal")
        if refusal and isinstance(refusal, str):
            self._release_held(out)
            out.append(TextDelta(refusal))
        tool_calls = delta.get("tool_calls")
        if tool_calls:
            for piece in tool_calls:
                self._tool_piece(piece, out)

    def _tool_piece(self, piece: Mapping[str, Any], out: list[UpstreamEvent]) -> None:
        upstream_index = piece.get("index")
        piece_id = piece.get("id") or None
        fn = piece.get("function") or {}
        arguments = fn.get("arguments") or ""
        name = fn.get("name") or ""
        if not (
            (upstream_index is None or type(upstream_index) is int)
            and (piece_id is None or type(piece_id) is str)
            and type(arguments) is str
            and type(name) is str
        ):
            raise TypeError("tool call piece")
        call = self._find_call(upstream_index, piece_id)
        if call is None:
            self._release_held(out)
            call = _Call(len(self._calls), piece_id or f"call_{random_token()}", upstream_index)
            self._calls.append(call)
            if upstream_index is not None:
                self._by_index[upstream_index] = call
            self._current = call
            out.append(ToolCallDelta(call.index, call.id, name, self._arguments(call, arguments)))
            return
        if call is not self._current:
            self._release_held(out)
            self._current = call
        arguments = self._arguments(call, arguments)
        if arguments:
            out.append(ToolCallDelta(call.index, None, None, arguments))

    def _arguments(self, call: _Call, arguments: str) -> str:
        """What to send of one piece of ``call``'s arguments, with Databricks' placeholder taken out."""
        if not call.fresh or not arguments:
            return arguments
        if arguments == _PLACEHOLDER:
            self._held = call  # a second "{}" replaces the first: at most one is ever sent
            return ""
        if arguments.startswith(_PLACEHOLDER) and arguments[2:].lstrip().startswith("{"):
            arguments = arguments[2:].lstrip()  # '{}{"a":1}': the placeholder glued to the arguments
        if self._held is call:
            self._held = None  # real arguments follow: the held "{}" was only a placeholder
        call.fresh = False
        return arguments

    def _find_call(self, upstream_index: int | None, piece_id: str | None) -> _Call | None:
        if upstream_index is not None:
            call = self._by_index.get(upstream_index)
            # Some servers reuse index 0 for every call; a new id then means a new call.
            if call is not None and (piece_id is None or piece_id == call.id):
                return call
            return None
        if piece_id is not None:
            return next((c for c in self._calls if c.id == piece_id), None)
        return self._current

    def _release_held(self, out: list[UpstreamEvent]) -> None:
        """The held call ended with "{}" as its arguments: send them now, before anything else."""
        held = self._held
        if held is not None:
            self._held = None
            held.fresh = False
            out.append(ToolCallDelta(held.index, None, None, _PLACEHOLDER))

    def finish_turn(self, out: list[UpstreamEvent]) -> None:
        self._release_held(out)
        reason = _FINISH.get(self.finish or "", "stop")
        # Some servers (Ollama, vLLM with some parsers) say "stop" after emitting tool calls.
        if self._calls and reason == "stop":
            reason = "tool_calls"
        if self.usage is not None:
            out.append(self.usage)
        out.append(Finished(reason, self.stop_sequence))


def _content_parts(parts: Any, out: list[UpstreamEvent]) -> None:
    """Databricks (Claude endpoints) may send ``content`` as a list of text and reasoning parts."""
    for part in parts:
        kind = part.get("type")
        if kind == "text":
            text = part.get("text")
            if text:
                if type(text) is not str:
                    raise TypeError("text part")
                out.append(TextDelta(text))
        elif kind == "reasoning":
            for summary in part.get("summary") or ():
                text = summary.get("text") or ""
                signature = summary.get("signature") or None
                if type(text) is not str or (signature is not None and type(signature) is not str):
                    raise TypeError("reasoning part")
                if text or signature:
                    out.append(ReasoningDelta(text, signature))


def _usage(usage: Mapping[str, Any]) -> TokenUsage:
    details = usage.get("prompt_tokens_details")
    cached = details.get("cached_tokens") if details else None
    return TokenUsage(_count(usage.get("prompt_tokens")), _count(usage.get("completion_tokens")), _count(cached))


def _count(value: Any) -> int:
    """A token count as reported; anything but a non-negative integer counts as not reported."""
    return value if type(value) is int and value >= 0 else 0
