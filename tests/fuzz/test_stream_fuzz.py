"""The Chat Completions decoders, fuzzed: whatever an upstream sends (garbage, truncation, odd chunk
shapes, any split of the bytes into reads), the engine gets events whose invariants hold, or an
``UpstreamError`` (a clean 502 / SSE error for the client), never another exception, and never a hang."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from execbridge.errors import UpstreamError
from execbridge.upstream.base import Finished, ToolCallDelta, UpstreamEvent
from execbridge.upstream.stream import events_from_completion, sse_events

from .strategies import ANY

FINISH = st.sampled_from(["stop", "length", "tool_calls", "content_filter", "end_turn", "weird", None])
TOOL_CALL = st.fixed_dictionaries(
    {},
    optional={
        "index": st.integers(min_value=-2, max_value=3) | ANY,
        "id": st.sampled_from(["call_1", "call_2", ""]) | ANY,
        "type": st.just("function") | ANY,
        "function": st.fixed_dictionaries(
            {},
            optional={
                "name": st.sampled_from(["bash_code_execution", "f"]) | ANY,
                "arguments": st.sampled_from(["{}", '{"command":', '"ls"}', ""]) | ANY,
            },
        )
        | ANY,
    },
)
DELTA = st.fixed_dictionaries(
    {},
    optional={
        "role": st.just("assistant") | ANY,
        "content": st.text(max_size=8) | st.lists(st.fixed_dictionaries({"type": st.just("text"), "text": ANY})) | ANY,
        "reasoning_content": st.text(max_size=8) | ANY,
        "tool_calls": st.lists(TOOL_CALL, max_size=3) | ANY,
    },
)
CHUNK = st.fixed_dictionaries(
    {},
    optional={
        "id": st.just("chatcmpl-1"),
        "choices": st.lists(
            st.fixed_dictionaries({}, optional={"index": ANY, "delta": DELTA | ANY, "finish_reason": FINISH | ANY}),
            max_size=2,
        )
        | ANY,
        "usage": st.fixed_dictionaries(
            {}, optional={"prompt_tokens": ANY, "completion_tokens": ANY, "prompt_tokens_details": ANY}
        )
        | ANY,
        "error": st.fixed_dictionaries({}, optional={"message": ANY, "code": ANY, "type": ANY}) | ANY,
    },
)


def _sse(chunks: list[Any], done: bool, line_end: bytes) -> bytes:
    # The standard library's encoder: it writes integers past 64 bits too, as an upstream may.
    body = b"".join(b"data: " + json.dumps(chunk).encode() + line_end + line_end for chunk in chunks)
    return body + (b"data: [DONE]" + line_end + line_end if done else b"")


def _split(body: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(body) + 1) for c in cuts})
    return [body[a:b] for a, b in zip([0, *points], [*points, len(body)], strict=True) if body[a:b]]


async def _reads(pieces: list[bytes]) -> AsyncIterator[bytes]:
    for piece in pieces:
        yield piece


def _check_invariants(events: list[UpstreamEvent]) -> None:
    assert events and isinstance(events[-1], Finished)
    assert sum(isinstance(e, Finished) for e in events) == 1
    seen: set[int] = set()
    for event in events:
        if isinstance(event, ToolCallDelta) and event.index not in seen:
            assert event.id and event.name is not None, event  # a call's first piece names it
            seen.add(event.index)


async def _decode(pieces: list[bytes]) -> None:
    events: list[UpstreamEvent] = []
    try:
        async for event in sse_events(_reads(pieces)):
            events.append(event)
    except UpstreamError as exc:
        assert exc.message
        return
    _check_invariants(events)


@given(st.lists(CHUNK, max_size=6), st.booleans(), st.sampled_from([b"\n", b"\r\n"]), st.lists(st.integers(0, 10**6)))
async def test_any_chunks_split_anywhere_decode_or_fail_cleanly(
    chunks: list[Any], done: bool, line_end: bytes, cuts: list[int]
) -> None:
    await _decode(_split(_sse(chunks, done, line_end), cuts))


@given(st.lists(st.binary(max_size=40), max_size=6))
async def test_garbage_bytes_fail_cleanly(pieces: list[bytes]) -> None:
    await _decode(pieces)


@given(
    st.lists(
        st.sampled_from([b"data: ", b"data:", b"{", b"}", b"\n", b"\r\n", b"[DONE]", b"event: x", b":"]), max_size=12
    )
)
async def test_sse_framing_fragments_fail_cleanly(pieces: list[bytes]) -> None:
    await _decode(pieces)


@given(CHUNK | ANY)
def test_any_whole_completion_decodes_or_fails_cleanly(completion: Any) -> None:
    if not isinstance(completion, dict):
        return  # the transport refuses a body that is not an object before this is reached
    try:
        events = events_from_completion(completion)
    except UpstreamError as exc:
        assert exc.message
        return
    _check_invariants(events)
