"""``POST /v1/messages/count_tokens``: the input tokens of a Messages request, as the model will see it.

The count is of what the gateway really sends upstream: the code execution tool replaced by its
sub-tools, the gateway's system note added, server results rendered. Where the upstream counts tokens
itself (an Anthropic-native upstream that serves ``count_tokens``) the answer is its count; otherwise
(Chat Completions upstreams, Anthropic routes that answer 404 such as Databricks') it is the gateway's
documented estimate (``engine/token_estimate.py``). The ``execbridge-token-count`` response header
says which: ``upstream`` or ``estimate``.
"""

from __future__ import annotations

import orjson
from starlette.requests import Request
from starlette.responses import Response

from execbridge.api import request_log
from execbridge.api.auth import caller_for
from execbridge.api.drain import Drain
from execbridge.api.messages import read_json
from execbridge.api.wire import parse_count_tokens_request
from execbridge.wiring import Services

COUNT_SOURCE_HEADER = "execbridge-token-count"


async def count_tokens(request: Request) -> Response:
    drain: Drain = request.app.state.drain
    drain.refuse_new()
    services: Services = request.app.state.services
    body = await read_json(request, services.settings.max_request_bytes)
    generation = parse_count_tokens_request(body, request.headers)
    caller = caller_for(request.headers, services.settings)
    request_log.note(model=generation.model)
    count = await services.engine.count_tokens(generation, caller)
    return Response(
        orjson.dumps({"input_tokens": count.input_tokens}),
        media_type="application/json",
        headers={COUNT_SOURCE_HEADER: count.source},
    )
