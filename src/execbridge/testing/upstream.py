"""A scripted fake Chat Completions server: ``FakeApp`` (ASGI) and ``FakeUpstream`` (on a socket).

Job: answer ``POST …/chat/completions`` from a script of turns (``testing/script.py``), record every
request, and hold requests to Databricks' rules (``testing/databricks_rules.py``); answer ``POST
…/v1/messages`` from the same script as Claude's Anthropic route on Databricks does, with its refusals
and signed thinking (``testing/anthropic_route.py``; ``count_tokens`` is a 404 unless
``serve_count_tokens``)::

    with FakeUpstream(script) as fake:
        ...  # point an OpenAIChatUpstream at fake.base_url
        assert fake.chat_requests[0]["tools"][0]["type"] == "function"

    app = FakeApp(script)  # no socket, no thread: in-process, like httpx's MockTransport
    upstream = OpenAIChatUpstream("http://fake/v1", "k", transport=httpx.ASGITransport(app))

Each chat request that passes the rules consumes one turn; requests that break a rule get Databricks'
400 envelope and consume nothing. Options make it behave like particular servers: one call per
assistant message (gpt-oss on Databricks), parameters it refuses (``reject_params``: an o-series
model refusing ``max_tokens``, a server refusing ``stream_options``), a required key or any
``authorize`` check (tokens that expire), extra routes (an OAuth server on the same host, see
``testing/databricks.py``). Models are listed at ``GET …/models`` and, Databricks-style, at
``GET /api/2.0/serving-endpoints``. Streaming follows the chunking of docs/protocol.md §4.5. ``instant=True``
answers every chat request with a canned completion without parsing it (for benchmarks);
``python -m execbridge.testing --instant`` runs that in its own process.

``FakeUpstream`` is for what needs a real socket: the production HTTP path (``upstream/_http11.py``),
a gateway process, the Databricks SDK, benchmarks. Everything else can drive ``FakeApp`` in-process.

Must not: listen on anything but 127.0.0.1, or silence a script mistake (an exhausted script or a
failing callable answers with an error naming the cause).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import re
import socket
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import orjson
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import BaseRoute, Route
from starlette.types import Receive, Scope, Send

from execbridge.testing import anthropic_route
from execbridge.testing.databricks_rules import check_request
from execbridge.testing.script import ErrorReply, Reply, ScriptTurn, Turn

__all__ = ["FakeApp", "FakeUpstream", "RecordedRequest", "main"]

JSON = dict[str, Any]


@dataclass(frozen=True, slots=True)
class RecordedRequest:
    method: str
    path: str
    headers: Mapping[str, str]
    body: bytes
    json: Any


_INSTANT_TEXT = "Hello! This is a canned answer from the instant fake upstream."
_STREAM_TRUE = re.compile(rb'"stream"\s*:\s*true')


class FakeApp:
    """The ASGI application; usable on its own (e.g. with ``httpx.ASGITransport``) or via ``FakeUpstream``."""

    def __init__(
        self,
        script: Iterable[ScriptTurn] = (),
        *,
        models: Sequence[str] = ("fake-model",),
        enforce_models: bool = False,
        require_api_key: str | None = None,
        authorize: Callable[[str], bool] | None = None,
        reject_multiple_tool_calls: bool = False,
        reject_params: Collection[str] = (),
        error_envelope: Literal["databricks", "openai"] = "databricks",
        require_tool_results: bool = True,
        file_parts: bool = True,
        chunk_delay: float = 0.0,
        instant: bool = False,
        instant_text: str = _INSTANT_TEXT,
        extra_routes: Sequence[BaseRoute] = (),
        anthropic_rules: Literal["databricks", "anthropic"] = "databricks",
        serve_count_tokens: bool = False,
        anthropic_models: Collection[str] | None = None,
        respond: Callable[[JSON], Reply | ErrorReply | str] | None = None,
    ) -> None:
        self.models = tuple(models)
        self.enforce_models = enforce_models
        self.require_api_key = require_api_key
        self.authorize = authorize  # called with the Authorization header's value (may be "")
        self.reject_params = frozenset(reject_params)
        self.error_envelope = error_envelope
        self.reject_multiple_tool_calls = reject_multiple_tool_calls
        self.require_tool_results = require_tool_results
        self.file_parts = file_parts  # False: ``file`` parts are refused, as on Databricks
        self.chunk_delay = chunk_delay
        self.instant = instant
        self.anthropic_rules = anthropic_rules  # whose rules the /v1/messages route holds requests to
        self.serve_count_tokens = serve_count_tokens  # else count_tokens answers 404, as on Databricks
        # Models the /v1/messages route serves (None: all); others get Databricks' 404.
        self.anthropic_models = None if anthropic_models is None else frozenset(anthropic_models)
        self.respond = respond  # answers every request once the script is used up (soak runs)
        self.requests: list[RecordedRequest] = []
        self.rejections: list[tuple[int, JSON]] = []
        self.disconnects = 0  # streams the client closed before the end
        self.completed_streams = 0
        self._script: deque[ScriptTurn] = deque(script)
        self._turns_served = 0
        self._ids = itertools.count(1)
        self._call_numbers = itertools.count(1)
        self._lock = threading.Lock()
        self._instant_json, self._instant_stream = _instant_bodies(instant_text, self.models[0])
        self._instant_message, self._instant_message_stream = anthropic_route.instant_bodies(
            instant_text, self.models[0]
        )
        self._router = Starlette(
            routes=[
                *extra_routes,
                Route("/api/2.0/serving-endpoints", self._endpoints, methods=["GET"]),
                Route("/chat/completions", self._chat, methods=["POST"]),
                Route("/v1/messages", self._messages, methods=["POST"]),
                Route("/{prefix:path}/v1/messages", self._messages, methods=["POST"]),
                Route("/v1/messages/count_tokens", self._count_tokens, methods=["POST"]),
                Route("/{prefix:path}/v1/messages/count_tokens", self._count_tokens, methods=["POST"]),
                Route("/{prefix:path}/chat/completions", self._chat, methods=["POST"]),
                Route("/models", self._models, methods=["GET"]),
                Route("/{prefix:path}/models", self._models, methods=["GET"]),
            ]
        )

    # -- script control

    def add(self, *turns: ScriptTurn) -> None:
        with self._lock:
            self._script.extend(turns)

    def reset(self, script: Iterable[ScriptTurn] = ()) -> None:
        with self._lock:
            self._script = deque(script)
            self.requests.clear()
            self.rejections.clear()
            self.disconnects = self.completed_streams = self._turns_served = 0
            self._call_numbers = itertools.count(1)

    @property
    def remaining(self) -> int:
        return len(self._script)

    @property
    def chat_requests(self) -> list[Any]:
        return [r.json for r in self.requests if r.path.endswith("/chat/completions")]

    @property
    def messages_requests(self) -> list[Any]:
        """The bodies sent to the Anthropic Messages route (``…/v1/messages``), in order."""
        return [r.json for r in self.requests if r.path.endswith("/v1/messages")]

    # -- ASGI

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.instant and scope["type"] == "http" and scope["path"].endswith("/chat/completions"):
            await self._instant(receive, send, self._instant_json, self._instant_stream)
        elif self.instant and scope["type"] == "http" and scope["path"].endswith("/v1/messages"):
            await self._instant(receive, send, self._instant_message, self._instant_message_stream)
        else:
            await self._router(scope, receive, send)

    async def _instant(self, receive: Receive, send: Send, whole: bytes, stream: list[bytes]) -> None:
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        if _STREAM_TRUE.search(body):
            await send({"type": "http.response.start", "status": 200, "headers": _SSE_HEADERS})
            for piece in stream:
                await send({"type": "http.response.body", "body": piece, "more_body": True})
            await send({"type": "http.response.body", "body": b""})
        else:
            headers = [*_JSON_HEADERS, (b"content-length", str(len(whole)).encode())]
            await send({"type": "http.response.start", "status": 200, "headers": headers})
            await send({"type": "http.response.body", "body": whole})

    async def _models(self, request: Request) -> Response:
        self._record(request, b"", None)
        refused = self._refuse_credentials(request)
        if refused is not None:
            return refused
        data = [
            {"id": m, "object": "model", "created": _MODELS_CREATED + i, "owned_by": "execbridge-fake"}
            for i, m in enumerate(self.models)
        ]
        return _json_response(200, {"object": "list", "data": data})

    async def _endpoints(self, request: Request) -> Response:
        """Databricks' ``GET /api/2.0/serving-endpoints`` (creation times in milliseconds)."""
        self._record(request, b"", None)
        refused = self._refuse_credentials(request)
        if refused is not None:
            return refused
        endpoints = [
            {
                "name": m,
                "creator": "fake@example.com",
                "creation_timestamp": (_MODELS_CREATED + i) * 1000,
                "task": "llm/v1/chat",
                "state": {"ready": "READY", "config_update": "NOT_UPDATING"},
            }
            for i, m in enumerate(self.models)
        ]
        endpoints.append({"name": "fake-embeddings", "creation_timestamp": 0, "task": "llm/v1/embeddings"})
        return _json_response(200, {"endpoints": endpoints})

    def _refuse_credentials(self, request: Request) -> Response | None:
        auth = request.headers.get("authorization", "")
        if not auth and request.headers.get("x-api-key"):  # Anthropic-style clients send their key so
            auth = f"Bearer {request.headers['x-api-key']}"
        if self.require_api_key is not None and auth != f"Bearer {self.require_api_key}":
            return self._reject(401, {"error_code": "UNAUTHENTICATED", "message": _BAD_CREDENTIALS})
        if self.authorize is not None and not self.authorize(auth):
            return self._reject(401, {"error_code": "UNAUTHENTICATED", "message": _BAD_CREDENTIALS})
        return None

    def _refuse_params(self, body: Any) -> Response | None:
        """400 for the first refused parameter present, worded as OpenAI and others word it."""
        if not isinstance(body, dict):
            return None
        for param in sorted(self.reject_params & body.keys()):
            message = f"Unsupported parameter: '{param}' is not supported with this model."
            if param == "max_tokens":
                message += " Use 'max_completion_tokens' instead."
            if self.error_envelope == "openai":
                error = {"message": message, "type": "invalid_request_error", "param": param}
                return self._reject(400, {"error": {**error, "code": "unsupported_parameter"}})
            return self._reject(400, {"error_code": "BAD_REQUEST", "message": message})
        return None

    async def _chat(self, request: Request) -> Response:
        raw = await request.body()
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError:
            body = None
        self._record(request, raw, body)
        refused = self._refuse_credentials(request) or self._refuse_params(body)
        if refused is not None:
            return refused
        rejected = check_request(
            body,
            reject_multiple_tool_calls=self.reject_multiple_tool_calls,
            require_tool_results=self.require_tool_results,
            models=self.models if self.enforce_models else None,
            file_parts=self.file_parts,
        )
        if rejected is not None:
            return self._reject(*rejected)
        turn = self._next_turn(body, raw)
        if isinstance(turn, ErrorReply):
            if turn.delay:
                await asyncio.sleep(turn.delay)
            return Response(turn.body, turn.status, dict(turn.headers), media_type="application/json")
        if turn.delay:
            await asyncio.sleep(turn.delay)
        model = body["model"]
        if body.get("stream"):
            include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
            chunks = self._chunks(turn, model, include_usage, len(raw))
            return StreamingResponse(chunks, headers=dict(turn.headers), media_type="text/event-stream")
        return _json_response(200, self._completion(turn, model, len(raw)), turn.headers)

    async def _messages(self, request: Request) -> Response:
        return await anthropic_route.answer_messages(self, request)

    async def _count_tokens(self, request: Request) -> Response:
        return await anthropic_route.answer_count_tokens(self, request)

    def _record(self, request: Request, raw: bytes, body: Any) -> None:
        self.requests.append(RecordedRequest(request.method, request.url.path, dict(request.headers), raw, body))

    def _reject(self, status: int, envelope: JSON) -> Response:
        self.rejections.append((status, envelope))
        return _json_response(status, envelope)

    def _next_turn(self, body: JSON, raw: bytes) -> Reply | ErrorReply:
        with self._lock:
            if not self._script and self.respond is not None:
                self._script.append(self.respond)
            if not self._script:
                served = self._turns_served
                # 418: not retryable, and unmistakably the fake's own complaint.
                message = f"fake upstream: the script is exhausted after {served} turns"
                return Turn.error(418, message, code="FAKE_SCRIPT_EXHAUSTED")
            turn = self._script.popleft()
            self._turns_served += 1
        if not callable(turn):
            return turn
        try:
            computed = turn(body)
        except Exception as exc:  # a boundary: a failing test callable must show up, not hang
            return Turn.error(418, f"fake upstream: script callable failed: {exc!r}", code="FAKE_SCRIPT_ERROR")
        return Reply(text=computed) if isinstance(computed, str) else computed

    def _call_ids(self, turn: Reply) -> list[str]:
        return [call.id or f"call_{next(self._call_numbers):04d}" for call in turn.tool_calls]

    def _completion(self, turn: Reply, model: str, request_size: int) -> JSON:
        completion_id = f"chatcmpl-fake{next(self._ids)}"
        return _completion(turn, self._call_ids(turn), completion_id, model, request_size)

    async def _chunks(self, turn: Reply, model: str, include_usage: bool, request_size: int) -> AsyncIterator[bytes]:
        head = {"id": f"chatcmpl-fake{next(self._ids)}", "object": "chat.completion.chunk", "created": int(time.time())}
        head["model"] = model
        delay = self.chunk_delay if turn.chunk_delay is None else turn.chunk_delay
        sent = 0
        finished = False
        try:
            for delta, finish in _deltas(turn, self._call_ids(turn)):
                if turn.abort_after is not None and sent >= turn.abort_after:
                    raise ConnectionAbortedError("fake upstream: scripted abort")
                if sent and delay:
                    await asyncio.sleep(delay)
                yield _sse({**head, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})
                sent += 1
            if turn.stream_error is not None:
                yield _sse(dict(turn.stream_error))
                finished = True
                return
            if include_usage:
                yield _sse({**head, "choices": [], "usage": _usage(turn, request_size)})
            yield b"data: [DONE]\n\n"
            finished = True
        finally:
            if finished:
                self.completed_streams += 1
            else:
                self.disconnects += 1


# ---------------------------------------------------------------- rendering replies


def _completion(turn: Reply, call_ids: Sequence[str], completion_id: str, model: str, request_size: int) -> JSON:
    message: JSON = {"role": "assistant"}
    if turn.content_parts:
        parts: list[JSON] = []
        if turn.reasoning:
            parts.append({"type": "reasoning", "summary": [_summary(turn.reasoning, turn.reasoning_signature)]})
        if turn.text:
            parts.append({"type": "text", "text": turn.text})
        message["content"] = parts or None
    else:
        message["content"] = turn.text or None
        if turn.reasoning:
            message["reasoning_content"] = turn.reasoning
    if turn.tool_calls:
        message["tool_calls"] = [
            {"id": call_id, "type": "function", "function": {"name": call.name, "arguments": call.arguments}}
            for call, call_id in zip(turn.tool_calls, call_ids, strict=True)
        ]
    return {
        "id": completion_id,
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "message": message, "finish_reason": _finish(turn), "logprobs": None}],
        "usage": _usage(turn, request_size),
    }


def _deltas(turn: Reply, call_ids: Sequence[str]) -> Iterable[tuple[JSON, str | None]]:
    """The chunk deltas of §4.5: role, reasoning, text pieces, tool-call pieces, then finish."""
    yield ({"role": "assistant"} if turn.content_parts else {"role": "assistant", "content": ""}), None
    if turn.reasoning:
        pieces = _pieces(turn.reasoning, turn.chunk_chars)
        for n, piece in enumerate(pieces):
            last = n == len(pieces) - 1
            if turn.reasoning_style == "reasoning_content":
                yield {"reasoning_content": piece}, None
            else:
                summary = _summary(piece, turn.reasoning_signature if last else None)
                yield {"content": [{"type": "reasoning", "summary": [summary]}]}, None
    for piece in _pieces(turn.text, turn.chunk_chars):
        yield ({"content": [{"type": "text", "text": piece}]} if turn.content_parts else {"content": piece}), None
    for index, (call, call_id) in enumerate(zip(turn.tool_calls, call_ids, strict=True)):
        fn = {"name": call.name, "arguments": ""}
        yield {"tool_calls": [{"index": index, "id": call_id, "type": "function", "function": fn}]}, None
        size = max(1, -(-len(call.arguments) // 3))  # three pieces, split mid-token like real servers
        for piece in _pieces(call.arguments, size):
            yield {"tool_calls": [{"index": index, "function": {"arguments": piece}}]}, None
    if turn.stream_error is None:
        yield {}, _finish(turn)


_BAD_CREDENTIALS = "Credential was not sent or was of an unsupported type for this API."
_MODELS_CREATED = 1_735_689_600  # 2025-01-01T00:00:00Z, then one second per listed model
_SSE_HEADERS = [(b"content-type", b"text/event-stream; charset=utf-8"), (b"cache-control", b"no-cache")]
_JSON_HEADERS = [(b"content-type", b"application/json")]


def _json_response(status: int, body: Any, headers: Mapping[str, str] | None = None) -> Response:
    return Response(orjson.dumps(body), status, dict(headers or {}), media_type="application/json")


def _sse(obj: Any) -> bytes:
    return b"data: " + orjson.dumps(obj) + b"\n\n"


def _pieces(text: str, size: int) -> list[str]:
    return [text[i : i + size] for i in range(0, len(text), max(1, size))]


def _summary(text: str, signature: str | None) -> JSON:
    summary: JSON = {"type": "summary_text", "text": text}
    if signature:
        summary["signature"] = signature
    return summary


def _finish(turn: Reply) -> str:
    return turn.finish_reason or ("tool_calls" if turn.tool_calls else "stop")


def _usage(turn: Reply, request_size: int) -> JSON:
    produced = len(turn.text) + len(turn.reasoning) + sum(len(c.arguments) for c in turn.tool_calls)
    prompt = turn.prompt_tokens if turn.prompt_tokens is not None else max(1, request_size // 4)
    completion = turn.completion_tokens if turn.completion_tokens is not None else produced // 4 + 1
    usage: JSON = {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}
    if turn.cached_tokens is not None:
        usage["prompt_tokens_details"] = {"cached_tokens": turn.cached_tokens}
    return usage


def _instant_bodies(text: str, model: str) -> tuple[bytes, list[bytes]]:
    """The canned non-streaming body and the stream's pre-rendered events (no work per request)."""
    turn = Reply(text=text, prompt_tokens=12, completion_tokens=16)
    body = orjson.dumps(_completion(turn, (), "chatcmpl-instant", model, 0))
    head = {"id": "chatcmpl-instant", "object": "chat.completion.chunk", "created": 0, "model": model}
    events = [_sse({**head, "choices": [{"index": 0, "delta": d, "finish_reason": f}]}) for d, f in _deltas(turn, ())]
    events.append(_sse({**head, "choices": [], "usage": _usage(turn, 0)}))
    events.append(b"data: [DONE]\n\n")
    return body, events


# ---------------------------------------------------------------- running it


class FakeUpstream:
    """Runs a ``FakeApp`` with uvicorn on 127.0.0.1 (a free port) in a background thread.

    ``with FakeUpstream(script) as fake:`` or ``async with …``; ``fake.base_url`` ends in ``/v1``,
    ``fake.databricks_url`` in ``/serving-endpoints`` (both route to the same app). The app's
    recording and script control (``requests``, ``chat_requests``, ``add``, ``reset``, …) are
    available on this object.
    """

    def __init__(self, script: Iterable[ScriptTurn] = (), *, port: int = 0, **options: Any) -> None:
        self.app = FakeApp(script, **options)
        self._port = port
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def base_url(self) -> str:
        return f"{self.url}/v1"

    @property
    def databricks_url(self) -> str:
        return f"{self.url}/serving-endpoints"

    # Recording and script control live on the app; these make tests read ``fake.requests``.

    @property
    def requests(self) -> list[RecordedRequest]:
        return self.app.requests

    @property
    def chat_requests(self) -> list[Any]:
        return self.app.chat_requests

    @property
    def messages_requests(self) -> list[Any]:
        return self.app.messages_requests

    @property
    def rejections(self) -> list[tuple[int, JSON]]:
        return self.app.rejections

    @property
    def disconnects(self) -> int:
        return self.app.disconnects

    @property
    def completed_streams(self) -> int:
        return self.app.completed_streams

    @property
    def remaining(self) -> int:
        return self.app.remaining

    def add(self, *turns: ScriptTurn) -> None:
        self.app.add(*turns)

    def reset(self, script: Iterable[ScriptTurn] = ()) -> None:
        self.app.reset(script)

    def start(self) -> FakeUpstream:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", self._port))
        self.port = sock.getsockname()[1]
        config = uvicorn.Config(
            self.app,
            log_config=None,
            access_log=False,
            lifespan="off",
            ws="none",
            timeout_graceful_shutdown=1,
            backlog=1024,
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [sock]}, name="fake-upstream", daemon=True
        )
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the fake upstream did not start")
            time.sleep(0.001)
        return self

    def stop(self) -> None:
        if self._server is not None and self._thread is not None:
            self._server.should_exit = True
            self._thread.join(timeout=10)
        self._server = self._thread = None

    def __enter__(self) -> FakeUpstream:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    async def __aenter__(self) -> FakeUpstream:
        return await asyncio.to_thread(self.start)

    async def __aexit__(self, *exc: object) -> None:
        await asyncio.to_thread(self.stop)


def main(argv: Sequence[str] | None = None) -> None:
    """``python -m execbridge.testing --instant``: a canned upstream in its own process."""
    parser = argparse.ArgumentParser(prog="python -m execbridge.testing", description=main.__doc__)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--instant", action="store_true", help="answer every request with a canned completion")
    parser.add_argument("--text", default=_INSTANT_TEXT)
    parser.add_argument("--model", action="append", dest="models")
    args = parser.parse_args(argv)
    fake = FakeUpstream(
        port=args.port, instant=args.instant, instant_text=args.text, models=tuple(args.models or ("fake-model",))
    )
    with fake, contextlib.suppress(KeyboardInterrupt):
        print(fake.base_url, flush=True)
        threading.Event().wait()
