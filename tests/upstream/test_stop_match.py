"""``StopMatcher``: stop sequences found in streamed text however it is split, and nowhere else."""

from __future__ import annotations

import pytest

from execbridge.upstream.base import Finished, ReasoningDelta, TextDelta, TokenUsage, ToolCallDelta, UpstreamEvent
from execbridge.upstream.stop_match import StopMatcher


def run(stops: tuple[str, ...], events: list[UpstreamEvent]) -> tuple[list[UpstreamEvent], bool]:
    matcher = StopMatcher(stops)
    out: list[UpstreamEvent] = []
    for event in events:
        out += matcher.feed(event)
    return out, matcher.done


def texts(pieces: list[str]) -> list[UpstreamEvent]:
    return [TextDelta(p) for p in pieces]


def joined(events: list[UpstreamEvent]) -> str:
    return "".join(e.text for e in events if isinstance(e, TextDelta))


@pytest.mark.parametrize(
    ("stops", "pieces", "text", "matched"),
    [
        (("END",), ["Hello END world"], "Hello ", "END"),
        (("END",), ["Hello E", "N", "D world"], "Hello ", "END"),  # split over three pieces
        (("END",), ["ENDING"], "", "END"),  # at the very start: no text at all
        (("END",), ["Hello EN", "TER"], "Hello ENTER", None),  # a partial match that fails is released
        (("</a>", "</"), ["x </a> y"], "x ", "</"),  # the match complete first wins, as the model stops there
        (("b", "abc"), ["xxabc"], "xxa", "b"),
        (("a>", "</a>"), ["x </a>"], "x ", "</a>"),  # complete at one place: the longest
        (("\n\n",), ["line\n", "\nnext"], "line", "\n\n"),
        (("",), ["empty stops are ignored"], "empty stops are ignored", None),
    ],
)
def test_matches_across_pieces(stops, pieces, text, matched):
    out, done = run(stops, [*texts(pieces), Finished("stop")])
    assert joined(out) == text
    assert out[-1] == Finished("stop", matched)
    assert done is (matched is not None)


def test_nothing_passes_after_a_match():
    out, done = run(("END",), [TextDelta("a END b"), TextDelta("more"), ToolCallDelta(0, "c", "f", "{}")])
    assert done and out == [TextDelta("a "), Finished("stop", "END")]


def test_held_text_is_released_before_anything_that_is_not_text():
    """A stop sequence spans text only: a call or reasoning ends the run that could hold one."""
    events = [TextDelta("ab E"), ToolCallDelta(0, "c", "f", '{"x": "END"}'), TextDelta("ND"), Finished("tool_calls")]
    out, done = run(("END",), events)
    assert not done
    assert out == [TextDelta("ab "), TextDelta("E"), events[1], TextDelta("ND"), Finished("tool_calls")]


def test_reasoning_and_usage_pass_unchanged():
    events = [ReasoningDelta("think END"), TextDelta("fine"), TokenUsage(3, 4), Finished("stop")]
    out, done = run(("END",), events)
    assert not done and joined(out) == "fine" and events[0] in out and events[2] in out
