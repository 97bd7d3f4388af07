"""``GET /v1/models`` and ``GET /v1/models/{model_id}``: what the upstream offers, in Anthropic's shape.

The list is ``{"data": [model…], "has_more", "first_id", "last_id"}`` with ``limit`` (1 to 1000, default
20), ``after_id`` and ``before_id`` paging, newest first, so ``client.models.list()`` parses and
auto-paginates. Ids are the upstream's own names (those are what it serves); ``GET /v1/models/{id}``
also accepts a client-side name (``claude-sonnet-4-5``) and answers with the model it maps to.

Must not: cache the list across requests (in pass-through mode each client sees what its own key
may use), or invent capabilities the upstream did not state.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

from execbridge.api.auth import caller_for
from execbridge.errors import InvalidRequest, NotFound
from execbridge.upstream.base import ModelCatalog, ModelInfo
from execbridge.wiring import Services

__all__ = ["get_model", "list_models"]

DEFAULT_LIMIT = 20
MAX_LIMIT = 1000


def catalog_of(request: Request) -> tuple[ModelCatalog, str | None]:
    """The upstream's model catalog and the key to ask it with (both APIs' model routes)."""
    services: Services = request.app.state.services
    if services.models is None:
        raise NotFound("this gateway does not list models")
    return services.models, caller_for(request.headers, services.settings).upstream_api_key


def model_object(model: ModelInfo) -> dict[str, Any]:
    created = datetime.fromtimestamp(model.created or 0, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return {"type": "model", "id": model.id, "display_name": model.id, "created_at": created, "lifecycle": "active"}


def newest_first(models: list[ModelInfo]) -> list[ModelInfo]:
    """Each model once, newest first (ties by id): the order both APIs list models in."""
    unique = {m.id: m for m in models}
    return sorted(unique.values(), key=lambda m: (-(m.created or 0), m.id))


def _limit(raw: str | None) -> int:
    if raw is None:
        return DEFAULT_LIMIT
    if not raw.isdigit() or not 1 <= int(raw) <= MAX_LIMIT:
        raise InvalidRequest(f"limit: must be an integer from 1 to {MAX_LIMIT}")
    return int(raw)


def _index(models: list[ModelInfo], model_id: str, param: str) -> int:
    for i, model in enumerate(models):
        if model.id == model_id:
            return i
    raise InvalidRequest(f"{param}: no model with id {model_id!r}")


async def list_models(request: Request) -> Response:
    catalog, api_key = catalog_of(request)
    params = request.query_params
    limit = _limit(params.get("limit"))
    models = newest_first(await catalog.list_models(api_key))
    after, before = params.get("after_id"), params.get("before_id")
    if after is not None and before is not None:
        raise InvalidRequest("after_id and before_id cannot be used together")
    if before is not None:
        end = _index(models, before, "before_id")
        page = models[max(0, end - limit) : end]
        has_more = end - limit > 0
    else:
        start = _index(models, after, "after_id") + 1 if after is not None else 0
        page = models[start : start + limit]
        has_more = start + limit < len(models)
    body = {
        "data": [model_object(m) for m in page],
        "has_more": has_more,
        "first_id": page[0].id if page else None,
        "last_id": page[-1].id if page else None,
    }
    return Response(orjson.dumps(body), media_type="application/json")


def find_model(catalog: ModelCatalog, models: list[ModelInfo], wanted: str) -> ModelInfo | None:
    """The model a client names, by its own name or by the upstream name it maps to."""
    for name in (wanted, catalog.upstream_model(wanted)):
        found = next((m for m in models if m.id == name), None)
        if found is not None:
            return found
    return None


async def get_model(request: Request) -> Response:
    catalog, api_key = catalog_of(request)
    wanted = request.path_params["model_id"]
    found = find_model(catalog, await catalog.list_models(api_key), wanted)
    if found is None:
        raise NotFound(f"model: {wanted!r} is not offered by the upstream")
    return Response(orjson.dumps(model_object(found)), media_type="application/json")
