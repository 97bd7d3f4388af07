"""OpenAI's Responses API: ``POST /v1/responses`` (JSON or SSE), ``GET``/``DELETE /v1/responses/{id}`` and
``GET /v1/responses/{id}/input_items`` (docs/protocol.md §5.2, "The Responses API").

A request is parsed (``responses_request``), its conversation is the stored chain of
``previous_response_id`` (inputs and outputs, oldest first) and its own input (``responses_items``),
the one engine loop runs it, and ``responses_render`` renders the events, streamed or folded. A stored
response keeps its input items and the Response with every tool output, scoped to the caller's owner.

As for ``/v1/messages``, the engine's first event is awaited before a stream commits to a 200, so an
upstream that refuses the request answers with its real status; after that, an error ends the stream
with ``response.failed``.

Must not: run the loop itself or render Anthropic shapes.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncGenerator, AsyncIterator, Sequence
from datetime import UTC, datetime
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from execbridge.api import request_log
from execbridge.api.auth import caller_for
from execbridge.api.drain import Drain
from execbridge.api.errors import classify
from execbridge.api.messages import SSE_HEADERS, read_json
from execbridge.api.responses_files import ContainerArtifacts
from execbridge.api.responses_items import JSON, check_answered, to_conversation
from execbridge.api.responses_render import KEEP_ALIVE, ResponseRenderer, client_view
from execbridge.api.responses_request import (
    INCLUDE_OUTPUTS,
    ResponsesRequest,
    generation_request,
    parse_responses_request,
)
from execbridge.engine.openai_containers import DEFAULT_MEMORY_LIMIT, AutoContainer, LiveContainer
from execbridge.errors import ExecbridgeError, InvalidRequest, NotFound
from execbridge.store.base import ResponseStore, StoredResponse
from execbridge.types import Caller, ToolCall
from execbridge.wiring import Services

log = logging.getLogger(__name__)


def _store(services: Services) -> ResponseStore:
    if services.responses is None:
        raise InvalidRequest("this gateway keeps no responses")
    return services.responses


async def _history(services: Services, previous_id: str | None, owner: str) -> list[JSON]:
    """The items of the conversation before this request: each stored response's input, then output."""
    if previous_id is None:
        return []
    chain = await _store(services).chain(previous_id, owner)
    if not chain:
        raise InvalidRequest(
            f"Previous response with id '{previous_id}' not found.", code="previous_response_not_found"
        )
    items: list[JSON] = []
    for record in chain:
        items += orjson.loads(record.input_items)
        items += orjson.loads(record.response)["output"]
    return items


async def _container(
    services: Services, request: ResponsesRequest, latest: str | None, caller: Caller
) -> LiveContainer | None:
    """The OpenAI container the hosted tools run in: the one named; else (``auto``) the conversation's
    latest while it runs, else a new one with the ``file_ids`` in it. Made before the model runs, so the
    response can name it from its first event (docs/protocol.md §5.2, "The Responses API")."""
    choice = request.container
    if choice is None:
        return None
    containers = services.openai_containers
    if containers is None:
        raise InvalidRequest("tools: this gateway runs no containers for OpenAI's hosted tools", param="tools")
    if choice.container_id is not None:
        return await containers.resolve(caller, choice.container_id)
    if latest is not None:
        try:
            live = await containers.resolve(caller, latest)
        except (NotFound, InvalidRequest):
            pass  # deleted or expired: a new one, as OpenAI's auto mode does
        else:
            for file_id in choice.file_ids:  # put in again: the path is the file's, so the same one
                added = await containers.add_file_id(caller, live.id, file_id)
                live.placed[file_id] = added.path
            return live
    return await containers.resolve(caller, AutoContainer(choice.file_ids, choice.memory_limit or DEFAULT_MEMORY_LIMIT))


async def create_response(request: Request) -> Response:
    drain: Drain = request.app.state.drain
    drain.refuse_new()
    services: Services = request.app.state.services
    body = await read_json(request, services.settings.max_request_bytes)
    parsed = parse_responses_request(body)
    caller = caller_for(request.headers, services.settings)
    history = await _history(services, parsed.previous_response_id, caller.owner)
    items = [*history, *parsed.input_items]
    check_answered(items)
    conversation = to_conversation(items)
    live = await _container(services, parsed, conversation.container_id, caller)
    generation = generation_request(
        parsed, conversation, live.sandbox_id if live else None, placed=tuple(live.placed.values()) if live else ()
    )
    calls = {p.id: p for m in conversation.messages for p in m.parts if isinstance(p, ToolCall)}
    renderer = ResponseRenderer(parsed, container_id=live.id if live else None, calls=calls)
    if live is not None and services.openai_containers is not None:
        renderer.artifacts = ContainerArtifacts(services.openai_containers.files)
    events = request_log.noting(drain.guard(services.engine.run(generation, caller)))
    request_log.note(model=parsed.model, stream=parsed.stream, surface="responses")
    rendered = renderer.render(events)
    if not parsed.stream:
        async for _ in rendered:
            pass
        await _keep(services, parsed, renderer, caller)
        return Response(
            orjson.dumps(client_view(renderer.response, include_outputs=parsed.include_outputs)),
            media_type="application/json",
        )
    first = await anext(rendered)  # response.created: the upstream has answered (see the module docstring)
    return StreamingResponse(
        _sse_stream(rendered, first, renderer, parsed, services, caller),
        media_type="text/event-stream",
        headers=SSE_HEADERS,
    )


async def _keep(services: Services, parsed: ResponsesRequest, renderer: ResponseRenderer, caller: Caller) -> None:
    if not parsed.store or services.responses is None:
        return
    record = StoredResponse(
        id=renderer.response_id,
        owner=caller.owner,
        previous_id=parsed.previous_response_id,
        input_items=orjson.dumps(parsed.input_items),
        response=orjson.dumps(renderer.response),
        created_at=datetime.fromtimestamp(renderer.created_at, UTC),
    )
    await services.responses.insert(record)


async def _sse_stream(
    rendered: AsyncGenerator[Sequence[JSON], None],
    first: Sequence[JSON],
    renderer: ResponseRenderer,
    parsed: ResponsesRequest,
    services: Services,
    caller: Caller,
) -> AsyncIterator[bytes]:
    """The events as SSE; an error after the start ends the stream with ``response.failed``. The
    response is stored once its final event is out."""
    view = _Viewer(parsed.include_outputs)
    try:
        yield view.encode(first)
        async for events in rendered:
            yield view.encode(events)
    except Exception as exc:
        info = classify(exc)
        if isinstance(exc, ExecbridgeError):
            log.info("response stream ended with %s: %s", type(exc).__name__, exc.message)
        else:
            log.exception("response stream failed with an unexpected error")
        yield view.encode(
            [renderer.failed(info.message, "rate_limit_exceeded" if info.status == 429 else "server_error")]
        )
    finally:
        await rendered.aclose()
    await _keep(services, parsed, renderer, caller)


class _Viewer:
    """Encodes stream events as SSE, leaving code interpreter outputs out of the items and responses
    they carry unless the client asked for them (``include``)."""

    __slots__ = ("_outputs",)

    def __init__(self, include_outputs: bool) -> None:
        self._outputs = include_outputs

    def encode(self, events: Sequence[JSON]) -> bytes:
        """Events as one chunk of SSE (one write for all the events of one engine event)."""
        return b"".join(self._one(e) for e in events)

    def _one(self, event: JSON) -> bytes:
        if event is KEEP_ALIVE:
            return b": keep-alive\n\n"
        if not self._outputs:
            if "response" in event:
                event = {**event, "response": client_view(event["response"], include_outputs=False)}
            item = event.get("item")
            if item is not None and item.get("type") == "code_interpreter_call" and event["type"].endswith(".done"):
                event = {**event, "item": {**item, "outputs": None}}
        kind: str = event["type"]
        return b"event: " + kind.encode() + b"\ndata: " + orjson.dumps(event) + b"\n\n"


# ---------------------------------------------------------------- stored responses


def _includes(request: Request) -> bool:
    values = request.query_params.getlist("include") + request.query_params.getlist("include[]")
    return INCLUDE_OUTPUTS in values


async def _stored(request: Request) -> tuple[Services, StoredResponse]:
    services: Services = request.app.state.services
    caller = caller_for(request.headers, services.settings)
    response_id = request.path_params["response_id"]
    record = await _store(services).get(response_id, caller.owner)
    if record is None:
        raise NotFound(f"No response found with id '{response_id}'.")
    return services, record


async def get_response(request: Request) -> Response:
    if request.query_params.get("stream") in ("true", "1"):
        raise InvalidRequest("stream: replaying a stored response as a stream is not supported by this gateway")
    _, record = await _stored(request)
    body = client_view(orjson.loads(record.response), include_outputs=_includes(request))
    return Response(orjson.dumps(body), media_type="application/json")


async def delete_response(request: Request) -> Response:
    services, record = await _stored(request)
    await _store(services).delete(record.id, record.owner)
    return Response(
        orjson.dumps({"id": record.id, "object": "response", "deleted": True}), media_type="application/json"
    )


def _limit(raw: str | None) -> int:
    if raw is None:
        return 20
    if not raw.isdigit() or not 1 <= int(raw) <= 100:
        raise InvalidRequest("limit: expected an integer between 1 and 100")
    return int(raw)


async def list_input_items(request: Request) -> Response:
    _, record = await _stored(request)
    params = request.query_params
    order = params.get("order", "desc")
    if order not in ("asc", "desc"):
        raise InvalidRequest("order: expected 'asc' or 'desc'")
    limit = _limit(params.get("limit"))
    items: list[dict[str, Any]] = orjson.loads(record.input_items)
    if order == "desc":
        items.reverse()
    after = params.get("after")
    if after is not None:
        position = next((i for i, item in enumerate(items) if item.get("id") == after), None)
        if position is None:
            raise InvalidRequest(f"after: no input item with id '{after}' in this response")
        items = items[position + 1 :]
    page = items[:limit]
    body = {
        "object": "list",
        "data": page,
        "first_id": page[0]["id"] if page else None,
        "last_id": page[-1]["id"] if page else None,
        "has_more": len(items) > limit,
    }
    return Response(orjson.dumps(body), media_type="application/json")
