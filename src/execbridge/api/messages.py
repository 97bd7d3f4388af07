"""``POST /v1/messages``: parse, run the engine, answer as one JSON message or as SSE.

For streams, the engine's first two events (message start, then the model's first output) are
awaited before any byte is sent, so errors found before generation starts (bad container id, an
upstream refusing or overloaded on its first call) are ordinary JSON error responses with the right
status; errors after that are SSE ``error`` events.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import suppress

import orjson
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from execbridge.api.auth import caller_for
from execbridge.api.render_json import render_message
from execbridge.api.render_sse import render_stream
from execbridge.api.services import Services
from execbridge.api.wire import parse_messages_request
from execbridge.engine.events import EngineEvent
from execbridge.errors import InvalidRequest, RequestTooLarge

SSE_HEADERS = {"cache-control": "no-cache", "x-accel-buffering": "no"}


async def read_json(request: Request, limit: int) -> dict:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise RequestTooLarge(f"request body is larger than {limit} bytes")
    body = await request.body()
    if len(body) > limit:
        raise RequestTooLarge(f"request body is larger than {limit} bytes")
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError as error:
        raise InvalidRequest(f"request body is not valid JSON: {error}") from None
    if not isinstance(value, dict):
        raise InvalidRequest("request body must be a JSON object")
    return value


async def create_message(request: Request) -> Response:
    services: Services = request.app.state.services
    body = await read_json(request, services.settings.max_request_bytes)
    generation = parse_messages_request(body, request.headers)
    caller = caller_for(request.headers, services.settings)
    events = services.engine.run(generation, caller)
    if not generation.stream:
        message = await render_message(events)
        return Response(orjson.dumps(message), media_type="application/json")

    # Wait for the model's first output (or first tool result) before committing to a 200: an upstream
    # that refuses the request, or is overloaded, then answers with its real status, and the SDK's own
    # retry logic applies. Once the stream has started, errors become SSE ``error`` events.
    head = [await anext(events)]
    with suppress(StopAsyncIteration):
        head.append(await anext(events))
    return StreamingResponse(
        render_stream(_chained(head, events), request.state.request_id),
        media_type="text/event-stream",
        headers=SSE_HEADERS,
    )


async def _chained(head: list[EngineEvent], rest: AsyncGenerator[EngineEvent, None]) -> AsyncIterator[EngineEvent]:
    try:
        for event in head:
            yield event
        async for event in rest:
            yield event
    finally:
        await rest.aclose()  # a client that went away cancels the loop and the command it runs
