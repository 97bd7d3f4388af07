"""``GET /v1/models`` and ``GET /v1/models/{model_id}`` in OpenAI's shape, for requests that speak
OpenAI's API (``api/dialect.py``): ``{"object": "list", "data": [{"id", "object": "model", "created",
"owned_by"}]}``, one page with every model (OpenAI's model list has no paging).

The catalogue and the name mapping are the Anthropic route's (``api/model_list.py``).
"""

from __future__ import annotations

from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

from execbridge.api.model_list import catalog_of, find_model, newest_first
from execbridge.errors import NotFound
from execbridge.upstream.base import ModelInfo

__all__ = ["get_model", "list_models", "model_object"]

OWNED_BY = "execbridge"  # the upstream does not say who owns a model; the gateway serves it


def model_object(model: ModelInfo) -> dict[str, Any]:
    return {"id": model.id, "object": "model", "created": model.created or 0, "owned_by": OWNED_BY}


async def list_models(request: Request) -> Response:
    catalog, api_key = catalog_of(request)
    models = newest_first(await catalog.list_models(api_key))
    body = {"object": "list", "data": [model_object(m) for m in models]}
    return Response(orjson.dumps(body), media_type="application/json")


async def get_model(request: Request) -> Response:
    catalog, api_key = catalog_of(request)
    wanted = request.path_params["model_id"]
    found = find_model(catalog, await catalog.list_models(api_key), wanted)
    if found is None:
        raise NotFound(f"The model '{wanted}' does not exist", code="model_not_found", param="model")
    return Response(orjson.dumps(model_object(found)), media_type="application/json")
