"""``POST /v1/messages``: parse, run the engine, answer as one JSON message or as SSE.

For streams, the engine's first event is awaited before any byte is sent. The engine starts the
message only with the upstream's first output, so errors found before generation starts (bad
container id, an upstream refusing or overloaded on its first call) are ordinary JSON error responses
with the right status; errors after that are SSE ``error`` events.
"""

from __future__ import annotations

from contextlib import aclosing
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from execbridge.api import request_log
from execbridge.api.auth import caller_for
from execbridge.api.drain import Drain
from execbridge.api.render_json import render_message
from execbridge.api.render_sse import render_stream
from execbridge.api.threads import PendingTurn, Threads
from execbridge.api.wire import parse_messages_request
from execbridge.errors import InvalidRequest, RequestTooLarge
from execbridge.wiring import Services

SSE_HEADERS = {"cache-control": "no-cache", "x-accel-buffering": "no"}


async def read_json(request: Request, limit: int) -> dict[str, Any]:
    """The body as a JSON object, read as it arrives and refused (413) as soon as it passes ``limit``,
    whether it declares a ``content-length`` or is chunked. What is left of a refused body is read by
    the app's edge before the answer (``app.RequestIdMiddleware``), so the client sees the 413."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise RequestTooLarge(f"request body is larger than {limit} bytes")
    encoding = request.headers.get("content-encoding", "identity").strip().lower()
    if encoding not in ("", "identity"):
        raise InvalidRequest(f"content-encoding {encoding!r} is not supported; send the body uncompressed")
    chunks: list[bytes] = []
    size = 0
    async with aclosing(request.stream()) as stream:
        async for chunk in stream:
            size += len(chunk)
            if size > limit:
                raise RequestTooLarge(f"request body is larger than {limit} bytes")
            chunks.append(chunk)
    try:
        value = orjson.loads(b"".join(chunks))
    except orjson.JSONDecodeError as error:
        if "depth limit" in str(error):  # orjson parses at most 1024 levels
            raise InvalidRequest("request body nests objects and arrays more than 1024 levels deep") from None
        raise InvalidRequest(f"request body is not valid JSON: {error}") from None
    if not isinstance(value, dict):
        raise InvalidRequest("request body must be a JSON object")
    return value


def _threads(services: Services) -> Threads:
    settings = services.settings
    return Threads(
        services.threads,
        retention_s=settings.thread_retention_s,
        enabled=settings.threads,
        max_bytes=settings.max_request_bytes,
    )


async def create_message(request: Request) -> Response:
    drain: Drain = request.app.state.drain
    drain.refuse_new()
    services: Services = request.app.state.services
    body = await read_json(request, services.settings.max_request_bytes)
    pending: PendingTurn | None = None
    threads: Threads | None = None
    if body.get("thread") is not None:
        caller = caller_for(request.headers, services.settings)
        threads = _threads(services)
        body, pending = await threads.open(body, caller.owner, size=int(request.headers.get("content-length") or 0))
    try:
        generation = parse_messages_request(body, request.headers)
        caller = caller_for(request.headers, services.settings)
    except BaseException:
        if threads is not None:
            await threads.abandon(pending)
        raise
    events = services.engine.run(generation, caller)
    if threads is not None and pending is not None:
        events = threads.recording(events, pending)
    events = request_log.noting(drain.guard(events))
    request_log.note(model=generation.model, stream=generation.stream)
    if not generation.stream:
        message = await render_message(events)
        return Response(orjson.dumps(message), media_type="application/json")

    # The message starts with the model's first output, so awaiting it before committing to a 200 lets
    # an upstream that refuses the request, or is overloaded, answer with its real status (and the SDK's
    # own retries apply). Once the stream has started, errors become SSE ``error`` events.
    first = await anext(events)
    return StreamingResponse(
        render_stream(events, request.state.request_id, first=first),
        media_type="text/event-stream",
        headers=SSE_HEADERS,
    )
