"""The script of a fake Chat Completions upstream: model turns that read like a conversation.

Job: describe what the fake answers, one chat request at a time, and help a script look at what it
was sent::

    script = [
        Turn.text("Let me check.").call("bash_code_execution", command="echo hi"),
        lambda req: Turn.text(f"The command printed {last_tool_result(req)!r}"),
        Turn.error(429, "Too many requests", retry_after=0.01),
        Turn.text("done"),
    ]

A script turn is a ``Reply`` (text, reasoning, tool calls, and how to stream them), an ``ErrorReply``
(an HTTP error in Databricks' or OpenAI's envelope), or a callable ``(request_json) -> Reply |
ErrorReply | str`` that sees the request it answers. ``FakeApp`` (``testing/upstream.py``) renders
them on the wire.

Must not: render replies on the wire (``FakeApp`` does) or keep state: replies are frozen values, so
one script can be used again.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import orjson

__all__ = ["ErrorReply", "FakeToolCall", "Reply", "ScriptTurn", "Turn", "last_tool_result", "tool_results"]

JSON = dict[str, Any]


@dataclass(frozen=True, slots=True)
class FakeToolCall:
    name: str
    arguments: str  # a JSON string, sent as is (so a test can send invalid JSON on purpose)
    id: str | None = None


@dataclass(frozen=True, slots=True)
class Reply:
    """One successful model turn. ``None`` fields are filled in from the request and the content."""

    text: str = ""
    tool_calls: tuple[FakeToolCall, ...] = ()
    reasoning: str = ""
    reasoning_signature: str | None = None
    finish_reason: str | None = None  # default: "tool_calls" when there are calls, else "stop"
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    cached_tokens: int | None = None
    content_parts: bool = False  # Databricks Claude style: content is a list of typed parts
    reasoning_style: Literal["parts", "reasoning_content"] = "parts"
    chunk_chars: int = 12  # how finely text is split across stream chunks
    chunk_delay: float | None = None  # seconds between stream chunks (None: the server's default)
    delay: float = 0.0  # seconds before the response starts
    stream_error: Mapping[str, Any] | None = None  # sent as a data line after the content, no finish
    abort_after: int | None = None  # drop the connection after this many stream chunks
    headers: Mapping[str, str] = field(default_factory=dict)
    # The Anthropic Messages route only (``testing/anthropic_route.py``):
    redacted_thinking: bool = False  # a redacted_thinking block after the thinking
    citations: tuple[Mapping[str, Any], ...] = ()  # on the text block
    stop_sequence: str | None = None  # the stop sequence that "matched" (stop_reason stop_sequence)
    cache_creation_tokens: int | None = None

    def call(self, name: str, arguments: str | Mapping[str, Any] | None = None, /, **input: Any) -> Reply:
        """This reply plus one more tool call (``arguments`` as a JSON string or mapping, or kwargs)."""
        return dataclasses.replace(self, tool_calls=(*self.tool_calls, _tool_call(name, arguments, input)))

    def but(self, **changes: Any) -> Reply:
        """A copy with some fields changed: ``Turn.text("hi").but(finish_reason="length")``."""
        return dataclasses.replace(self, **changes)


@dataclass(frozen=True, slots=True)
class ErrorReply:
    status: int
    body: bytes
    headers: Mapping[str, str] = field(default_factory=dict)
    delay: float = 0.0


ScriptTurn = Reply | ErrorReply | Callable[[JSON], "Reply | ErrorReply | str"]


class Turn:
    """Constructors that make a script read like a conversation."""

    @staticmethod
    def text(text: str, **options: Any) -> Reply:
        return Reply(text=text, **options)

    @staticmethod
    def tool_call(name: str, arguments: str | Mapping[str, Any] | None = None, /, **input: Any) -> Reply:
        return Reply(tool_calls=(_tool_call(name, arguments, input),))

    @staticmethod
    def tool_calls(*calls: tuple[str, str]) -> Reply:
        """Several calls at once, each ``(name, arguments_json)``."""
        return Reply(tool_calls=tuple(FakeToolCall(name, args) for name, args in calls))

    @staticmethod
    def reasoning(reasoning: str, text: str = "", *, signature: str | None = "sig", **options: Any) -> Reply:
        return Reply(text=text, reasoning=reasoning, reasoning_signature=signature, **options)

    @staticmethod
    def error(
        status: int,
        message: str = "fake upstream error",
        *,
        code: str | None = None,
        envelope: Literal["databricks", "openai"] = "databricks",
        retry_after: float | str | None = None,
        retry_after_ms: float | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> ErrorReply:
        """An HTTP error in Databricks' (default) or OpenAI's envelope."""
        if envelope == "databricks":
            body: JSON = {"error_code": code or _DATABRICKS_CODES.get(status, "INTERNAL_ERROR"), "message": message}
        else:
            body = {"error": {"message": message, "type": code or "invalid_request_error", "param": None, "code": code}}
        all_headers = dict(headers or {})
        if retry_after is not None:
            all_headers["retry-after"] = str(retry_after)
        if retry_after_ms is not None:
            all_headers["retry-after-ms"] = str(retry_after_ms)
        return ErrorReply(status, orjson.dumps(body), all_headers)

    @staticmethod
    def raw_error(
        status: int, body: bytes | str | Mapping[str, Any], headers: Mapping[str, str] | None = None
    ) -> ErrorReply:
        raw = body.encode() if isinstance(body, str) else body if isinstance(body, bytes) else orjson.dumps(body)
        return ErrorReply(status, raw, dict(headers or {}))


_DATABRICKS_CODES = {
    400: "BAD_REQUEST",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "ENDPOINT_NOT_FOUND",
    429: "REQUEST_LIMIT_EXCEEDED",
    503: "TEMPORARILY_UNAVAILABLE",
}


def _tool_call(name: str, arguments: str | Mapping[str, Any] | None, input: Mapping[str, Any]) -> FakeToolCall:
    if isinstance(arguments, str):
        return FakeToolCall(name, arguments)
    return FakeToolCall(name, orjson.dumps(dict(arguments or input)).decode())


def tool_results(request: JSON) -> list[str]:
    """The contents of the ``tool`` messages after the last assistant message of a request (on the
    Anthropic route: the ``tool_result`` blocks of its last user message)."""
    messages = request.get("messages") or [{}]
    last = messages[-1]
    if last.get("role") == "user" and isinstance(last.get("content"), list):
        blocks = [b for b in last["content"] if b.get("type") == "tool_result"]
        if blocks:
            return ["".join(p.get("text", "") for p in block.get("content") or ()) for block in blocks]
    results: list[str] = []
    for message in reversed(request.get("messages", [])):
        if message.get("role") == "tool":
            content = message.get("content")
            results.append(content if isinstance(content, str) else "".join(p.get("text", "") for p in content))
        elif message.get("role") == "assistant":
            break
    return results[::-1]


def last_tool_result(request: JSON) -> str:
    results = tool_results(request)
    return results[-1] if results else ""
