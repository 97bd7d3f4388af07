"""Stop sequences matched by the gateway, in the text the upstream streams (docs/protocol.md §1.5).

Job: ``StopMatcher`` sits between an upstream's events and the engine. Text passes through, less a tail
that could still be the start of a stop sequence; at the first match the text before it is let out,
then ``Finished(stop_sequence=…)``, and the turn is over (``done``): the caller stops reading the
upstream. OpenAI-compatible servers cut the text at a stop string without saying which one matched, so
the gateway sends none and matches them itself, as Anthropic's API does: in the model's text only,
never in reasoning or tool-call arguments. The match that is complete first wins, as the model would
have stopped there (the longest of those ending at one place).

Must not: do I/O, or hold text across anything that is not text (a call or reasoning ends the run of
text a stop sequence can span).
"""

from __future__ import annotations

from collections.abc import Sequence

from execbridge.upstream.base import Finished, TextDelta, TokenUsage, UpstreamEvent

__all__ = ["StopMatcher"]


class StopMatcher:
    __slots__ = ("_held", "_keep", "_stops", "done", "output_chars", "usage_seen")

    def __init__(self, stops: Sequence[str]) -> None:
        self._stops = tuple(s for s in stops if s)
        self._keep = max((len(s) for s in self._stops), default=1) - 1  # the longest partial match
        self._held = ""
        self.done = False
        self.output_chars = 0  # what the model wrote before the match: for a usage estimate
        self.usage_seen = False

    def feed(self, event: UpstreamEvent) -> list[UpstreamEvent]:
        """What to pass on for ``event`` (nothing once ``done``)."""
        if self.done:
            return []
        if isinstance(event, TextDelta):
            return self._text(event.text)
        out = self._release()
        if isinstance(event, TokenUsage):
            self.usage_seen = True
        elif not isinstance(event, Finished):
            self.output_chars += _chars(event)
        out.append(event)
        return out

    def _text(self, text: str) -> list[UpstreamEvent]:
        window = self._held + text
        self.output_chars += len(text)
        match = self._first_match(window)
        if match is not None:
            start, stop = match
            self.done = True
            self._held = ""
            before: list[UpstreamEvent] = [TextDelta(window[:start])] if start else []
            return [*before, Finished("stop", stop)]
        cut = max(len(window) - self._keep, 0)
        # Hold only a tail that some stop sequence starts with; anything else can go now.
        while cut < len(window) and not any(s.startswith(window[cut:]) for s in self._stops):
            cut += 1
        self._held = window[cut:]
        return [TextDelta(window[:cut])] if cut else []

    def _first_match(self, window: str) -> tuple[int, str] | None:
        """(start, stop) of the match a model writing ``window`` would have completed first."""
        best: tuple[int, str] | None = None
        best_end = 0
        for stop in self._stops:
            at = window.find(stop)
            if at < 0:
                continue
            end = at + len(stop)
            if best is None or end < best_end or (end == best_end and at < best[0]):
                best, best_end = (at, stop), end
        return best

    def _release(self) -> list[UpstreamEvent]:
        held, self._held = self._held, ""
        return [TextDelta(held)] if held else []


def _chars(event: UpstreamEvent) -> int:
    text = getattr(event, "text", None)
    if isinstance(text, str):
        return len(text)
    arguments = getattr(event, "arguments", None)
    return len(arguments) if isinstance(arguments, str) else 0
