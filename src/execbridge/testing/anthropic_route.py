"""The fake's Anthropic Messages route: Claude as Databricks serves it at ``/serving-endpoints/anthropic``.

Job: check a ``POST …/v1/messages`` body the way that route does (``check_messages_request``) and
render a script ``Reply`` as an Anthropic ``Message`` or its server-sent events (``message_json``,
``message_sse``). ``FakeApp`` (``testing/upstream.py``) serves both on every path ending in
``/v1/messages``, beside its Chat Completions route, from the same script.

The rules, Databricks' where they are known (docs/protocol.md, "Anthropic-native upstreams"), else
Anthropic's own:
- server tools are refused (any tool with a ``type`` other than ``custom``);
- a trailing assistant message ("prefill") is refused: 400 "This model does not support assistant
  message prefill";
- roles alternate from ``user``; no empty or whitespace-only text; every ``tool_use`` is answered by a
  ``tool_result`` in the next message, and every ``tool_result`` answers a call of the message before;
- thinking blocks the fake signed must come back with their signature (an HMAC of the text, so a lost
  or altered signature, or altered thinking, is refused as Anthropic refuses it), redacted thinking
  with its data unchanged; with thinking on, the last assistant message of a tool loop must start
  with a thinking block, and ``tool_choice`` may not force a tool.
``count_tokens`` is answered 404 by default, as Databricks does.

Must not: be used outside tests and benchmarks.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import re
import secrets
from collections.abc import AsyncIterator, Iterable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Final

import orjson
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from execbridge.testing.script import ErrorReply, Reply

if TYPE_CHECKING:
    from execbridge.testing.upstream import FakeApp

__all__ = [
    "PREFILL_REFUSED",
    "answer_count_tokens",
    "answer_messages",
    "check_messages_request",
    "instant_bodies",
    "message_json",
    "message_sse",
    "redacted_data",
    "sign_thinking",
    "valid_redacted",
    "valid_signature",
]

JSON = dict[str, Any]
PREFILL_REFUSED: Final = "This model does not support assistant message prefill"
_KEY: Final = b"execbridge-fake-anthropic-signing-key"
_ID: Final = re.compile(r"^[a-zA-Z0-9_-]+$")
_NAME: Final = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")


def sign_thinking(thinking: str) -> str:
    """The fake's signature of a thinking text."""
    return base64.b64encode(hmac.digest(_KEY, thinking.encode(), hashlib.sha256)).decode()


def valid_signature(thinking: str, signature: str) -> bool:
    return hmac.compare_digest(sign_thinking(thinking), signature)


def redacted_data() -> str:
    nonce = secrets.token_hex(8)
    return f"{nonce}.{sign_thinking('redacted:' + nonce)}"


def valid_redacted(data: str) -> bool:
    nonce, _, mac = data.partition(".")
    return bool(nonce) and valid_signature("redacted:" + nonce, mac)


class _Refused(Exception):
    def __init__(self, message: str, status: int = 400, code: str = "BAD_REQUEST") -> None:
        super().__init__(message)
        self.message, self.status, self.code = message, status, code


def check_messages_request(body: Any, *, databricks: bool = True) -> tuple[int, JSON] | None:
    """``None`` when the route would accept ``body``, else ``(status, error envelope)``."""
    try:
        _check(body, databricks)
    except _Refused as exc:
        if databricks:
            return exc.status, {"error_code": exc.code, "message": exc.message}
        return exc.status, {"type": "error", "error": {"type": "invalid_request_error", "message": exc.message}}
    return None


def _check(body: Any, databricks: bool) -> None:
    if not isinstance(body, dict) or not isinstance(body.get("model"), str):
        raise _Refused("model: Field required")
    if type(body.get("max_tokens")) is not int:
        raise _Refused("max_tokens: Field required")
    for i, tool in enumerate(body.get("tools") or ()):
        if not isinstance(tool, dict):
            raise _Refused(f"tools.{i}: Input should be an object")
        kind = tool.get("type")
        if kind not in (None, "custom"):
            if databricks:
                raise _Refused(f"tools.{i}: server tools are not supported on this endpoint (type {kind!r})")
            continue
        if not _NAME.match(str(tool.get("name"))) or not isinstance(tool.get("input_schema"), dict):
            raise _Refused(f"tools.{i}: a custom tool needs a valid name and an input_schema object")
    thinking = body.get("thinking")
    thinking_on = isinstance(thinking, dict) and thinking.get("type") in ("enabled", "adaptive")
    choice = body.get("tool_choice")
    if thinking_on and isinstance(choice, dict) and choice.get("type") in ("any", "tool"):
        raise _Refused("Thinking may not be enabled when tool_choice forces tool use.")
    _check_system(body.get("system"))
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise _Refused("messages: at least one message is required")
    _check_messages(messages, databricks, thinking_on)


def _check_system(system: Any) -> None:
    if system is None or isinstance(system, str):
        return
    if not isinstance(system, list):
        raise _Refused("system: Input should be a valid string or list")
    for i, block in enumerate(system):
        if not isinstance(block, dict) or block.get("type") != "text" or not str(block.get("text", "")).strip():
            raise _Refused(f"system.{i}: text content blocks must contain non-whitespace text")


def _blocks(message: JSON, path: str) -> list[JSON]:
    content = message.get("content")
    if isinstance(content, str):
        if not content.strip():
            raise _Refused(f"{path}.content: text content blocks must contain non-whitespace text")
        return [{"type": "text", "text": content}]
    if not isinstance(content, list) or not content:
        raise _Refused(f"{path}.content: messages must have non-empty content")
    return content


def _check_messages(messages: list[Any], databricks: bool, thinking_on: bool) -> None:
    previous_role = None
    pending_calls: set[str] = set()  # tool_use ids of the previous assistant message
    last_assistant: list[JSON] = []
    for i, message in enumerate(messages):
        path = f"messages.{i}"
        if not isinstance(message, dict) or message.get("role") not in ("user", "assistant"):
            raise _Refused(f"{path}.role: Input should be 'user' or 'assistant'")
        role = message["role"]
        if previous_role is None and role != "user":
            raise _Refused(f"{path}: the first message must use the user role")
        if role == previous_role:
            raise _Refused(f"{path}: roles must alternate between user and assistant")
        blocks = _blocks(message, path)
        if role == "user":
            answered = _check_user(blocks, path, pending_calls)
            if pending_calls - answered:
                missing = sorted(pending_calls - answered)[0]
                raise _Refused(
                    f"{path}: tool_use ids were found without tool_result blocks immediately after: {missing}"
                )
            pending_calls = set()
        else:
            if pending_calls:
                raise _Refused(f"{path}: tool_use ids were found without tool_result blocks immediately after")
            pending_calls = _check_assistant(blocks, path)
            last_assistant = blocks
        previous_role = role
    if previous_role == "assistant":
        if databricks:
            raise _Refused(PREFILL_REFUSED)
        return
    last_user = _blocks(messages[-1], f"messages.{len(messages) - 1}")
    in_tool_loop = any(b.get("type") == "tool_result" for b in last_user)
    if thinking_on and in_tool_loop and last_assistant:
        first = last_assistant[0].get("type")
        if first not in ("thinking", "redacted_thinking"):
            raise _Refused(
                f"messages.{len(messages) - 2}.content.0.type: Expected `thinking` or `redacted_thinking`, but found "
                f"`{first}`. When `thinking` is enabled, a final `assistant` message must start with a thinking block."
            )


def _text_ok(block: JSON, path: str) -> None:
    if not isinstance(block.get("text"), str) or not block["text"].strip():
        raise _Refused(f"{path}: text content blocks must contain non-whitespace text")


def _check_user(blocks: list[Any], path: str, calls: set[str]) -> set[str]:
    answered: set[str] = set()
    for j, block in enumerate(blocks):
        bpath = f"{path}.content.{j}"
        kind = block.get("type") if isinstance(block, dict) else None
        if kind == "tool_result":
            tool_use_id = block.get("tool_use_id")
            if tool_use_id not in calls:
                raise _Refused(
                    f"{bpath}: unexpected `tool_use_id` found in `tool_result` blocks: {tool_use_id}. Each "
                    "`tool_result` block must have a corresponding `tool_use` block in the previous message."
                )
            answered.add(tool_use_id)
            for k, item in enumerate(block.get("content") or ()):
                if isinstance(item, dict) and item.get("type") == "text":
                    _text_ok(item, f"{bpath}.content.{k}")
        elif kind == "text":
            _text_ok(block, bpath)
        elif kind in ("image", "document"):
            if not isinstance(block.get("source"), dict):
                raise _Refused(f"{bpath}.source: Field required")
        else:
            raise _Refused(f"{bpath}.type: unexpected block type {kind!r} in a user message")
    return answered


def _check_assistant(blocks: list[Any], path: str) -> set[str]:
    calls: set[str] = set()
    for j, block in enumerate(blocks):
        bpath = f"{path}.content.{j}"
        kind = block.get("type") if isinstance(block, dict) else None
        if kind == "thinking":
            if not valid_signature(str(block.get("thinking")), str(block.get("signature"))):
                raise _Refused(f"{bpath}: Invalid `signature` in `thinking` block")
        elif kind == "redacted_thinking":
            if not valid_redacted(str(block.get("data"))):
                raise _Refused(f"{bpath}: Invalid `data` in `redacted_thinking` block")
        elif kind == "text":
            _text_ok(block, bpath)
        elif kind == "tool_use":
            if not _ID.match(str(block.get("id"))) or not isinstance(block.get("input"), dict):
                raise _Refused(f"{bpath}: a tool_use block needs an id matching ^[a-zA-Z0-9_-]+$ and an input object")
            calls.add(block["id"])
        else:
            raise _Refused(f"{bpath}.type: unexpected block type {kind!r} in an assistant message")
    return calls


# ---------------------------------------------------------------- rendering a reply

_STOP: Final = {"stop": "end_turn", "length": "max_tokens", "tool_calls": "tool_use", "content_filter": "refusal"}


def _stop_reason(turn: Reply) -> str:
    if turn.finish_reason is not None:
        return _STOP.get(turn.finish_reason, turn.finish_reason)
    if turn.tool_calls:
        return "tool_use"
    return "stop_sequence" if turn.stop_sequence else "end_turn"


def _blocks_of(turn: Reply, call_ids: Sequence[str]) -> list[JSON]:
    blocks: list[JSON] = []
    if turn.reasoning:
        blocks.append({"type": "thinking", "thinking": turn.reasoning, "signature": sign_thinking(turn.reasoning)})
    if turn.redacted_thinking:
        blocks.append({"type": "redacted_thinking", "data": redacted_data()})
    if turn.text:
        text: JSON = {"type": "text", "text": turn.text}
        if turn.citations:
            text["citations"] = [dict(c) for c in turn.citations]
        blocks.append(text)
    for call, call_id in zip(turn.tool_calls, call_ids, strict=True):
        blocks.append({"type": "tool_use", "id": call_id, "name": call.name, "input": orjson.loads(call.arguments)})
    return blocks


def _usage(turn: Reply, request_size: int) -> JSON:
    produced = len(turn.text) + len(turn.reasoning) + sum(len(c.arguments) for c in turn.tool_calls)
    return {
        "input_tokens": turn.prompt_tokens if turn.prompt_tokens is not None else max(1, request_size // 4),
        "output_tokens": turn.completion_tokens if turn.completion_tokens is not None else produced // 4 + 1,
        "cache_creation_input_tokens": turn.cache_creation_tokens or 0,
        "cache_read_input_tokens": turn.cached_tokens or 0,
    }


def message_json(turn: Reply, model: str, message_id: str, call_ids: Sequence[str], request_size: int) -> JSON:
    """The whole ``Message`` for a non-streaming request."""
    return {
        "id": message_id,
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": _blocks_of(turn, call_ids),
        "stop_reason": _stop_reason(turn),
        "stop_sequence": turn.stop_sequence,
        "usage": _usage(turn, request_size),
    }


def _event(data: Mapping[str, Any]) -> bytes:
    return b"event: " + str(data["type"]).encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"


def _pieces(text: str, size: int) -> list[str]:
    return [text[i : i + size] for i in range(0, len(text), max(1, size))]


def message_sse(
    turn: Reply, model: str, message_id: str, call_ids: Sequence[str], request_size: int
) -> Iterator[bytes]:
    """The stream of a streaming request: Anthropic's event sequence, text and thinking in pieces,
    the signature as its own delta at the end of its block, tool inputs in three pieces."""
    usage = _usage(turn, request_size)
    start = {**message_json(turn, model, message_id, call_ids, request_size), "content": []}
    start.update(stop_reason=None, stop_sequence=None, usage={**usage, "output_tokens": 1})
    yield _event({"type": "message_start", "message": start})
    yield _event({"type": "ping"})
    for index, block in enumerate(_blocks_of(turn, call_ids)):
        kind = block["type"]
        if kind == "thinking":
            yield _event(
                {
                    "type": "content_block_start",
                    "index": index,
                    "content_block": {"type": "thinking", "thinking": "", "signature": ""},
                }
            )
            for piece in _pieces(block["thinking"], turn.chunk_chars):
                yield _delta(index, {"type": "thinking_delta", "thinking": piece})
            yield _delta(index, {"type": "signature_delta", "signature": block["signature"]})
        elif kind == "redacted_thinking":
            yield _event({"type": "content_block_start", "index": index, "content_block": block})
        elif kind == "text":
            yield _event({"type": "content_block_start", "index": index, "content_block": {"type": "text", "text": ""}})
            for citation in block.get("citations", ()):
                yield _delta(index, {"type": "citations_delta", "citation": citation})
            for piece in _pieces(block["text"], turn.chunk_chars):
                yield _delta(index, {"type": "text_delta", "text": piece})
        else:
            shell = {**block, "input": {}}
            yield _event({"type": "content_block_start", "index": index, "content_block": shell})
            arguments = orjson.dumps(block["input"]).decode()
            for piece in _pieces(arguments, max(1, -(-len(arguments) // 3))):
                yield _delta(index, {"type": "input_json_delta", "partial_json": piece})
        yield _event({"type": "content_block_stop", "index": index})
    delta = {"stop_reason": _stop_reason(turn), "stop_sequence": turn.stop_sequence}
    yield _event({"type": "message_delta", "delta": delta, "usage": {"output_tokens": usage["output_tokens"]}})
    yield _event({"type": "message_stop"})


def _delta(index: int, delta: JSON) -> bytes:
    return _event({"type": "content_block_delta", "index": index, "delta": delta})


def instant_bodies(text: str, model: str) -> tuple[bytes, list[bytes]]:
    """A canned reply, whole and streamed, rendered once (for benchmarks: no work per request)."""
    turn = Reply(text=text, prompt_tokens=12, completion_tokens=16, chunk_chars=12)
    body = orjson.dumps(message_json(turn, model, "msg_instant", (), 0))
    return body, list(message_sse(turn, model, "msg_instant", (), 0))


# ---------------------------------------------------------------- the routes, on a FakeApp


def _json(status: int, body: Any, headers: Mapping[str, str] | None = None) -> Response:
    return Response(orjson.dumps(body), status, dict(headers or {}), media_type="application/json")


async def _read(app: FakeApp, request: Request) -> tuple[bytes, Any]:
    raw = await request.body()
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        body = None
    app._record(request, raw, body)
    return raw, body


async def answer_messages(app: FakeApp, request: Request) -> Response:
    """``POST …/v1/messages``: the app's credential check, this route's rules, then the next script turn."""
    raw, body = await _read(app, request)
    refused = app._refuse_credentials(request)
    if refused is not None:
        return refused
    model = str(body.get("model")) if isinstance(body, dict) else ""
    if app.anthropic_models is not None and model not in app.anthropic_models:
        message = f"The endpoint '{model}' does not support the Anthropic Messages API."
        return app._reject(404, {"error_code": "ENDPOINT_NOT_FOUND", "message": message})
    rejected = check_messages_request(body, databricks=app.anthropic_rules == "databricks")
    if rejected is not None:
        return app._reject(*rejected)
    turn = app._next_turn(body, raw)
    if turn.delay:
        await asyncio.sleep(turn.delay)
    if isinstance(turn, ErrorReply):
        return Response(turn.body, turn.status, dict(turn.headers), media_type="application/json")
    message_id = f"msg_fake{next(app._ids)}"
    call_ids = [call.id or f"toolu_fake{next(app._call_numbers):04d}" for call in turn.tool_calls]
    if body.get("stream"):
        events = message_sse(turn, model, message_id, call_ids, len(raw))
        return StreamingResponse(_paced(app, events, turn), headers=dict(turn.headers), media_type="text/event-stream")
    return _json(200, message_json(turn, model, message_id, call_ids, len(raw)))


async def _paced(app: FakeApp, events: Iterable[bytes], turn: Reply) -> AsyncIterator[bytes]:
    delay = app.chunk_delay if turn.chunk_delay is None else turn.chunk_delay
    finished = False
    try:
        for sent, event in enumerate(events):
            if turn.abort_after is not None and sent >= turn.abort_after:
                raise ConnectionAbortedError("fake upstream: scripted abort")
            if sent and delay:
                await asyncio.sleep(delay)
            yield event
        finished = True
    finally:
        if finished:
            app.completed_streams += 1
        else:
            app.disconnects += 1


async def answer_count_tokens(app: FakeApp, request: Request) -> Response:
    """``POST …/v1/messages/count_tokens``: 404 as on Databricks, unless the app serves counts."""
    raw, _ = await _read(app, request)
    refused = app._refuse_credentials(request)
    if refused is not None:
        return refused
    if not app.serve_count_tokens:
        return app._reject(404, {"error_code": "ENDPOINT_NOT_FOUND", "message": "Not Found"})
    return _json(200, {"input_tokens": max(1, len(raw) // 4)})
