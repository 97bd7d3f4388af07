"""``GET /v1/models``: Anthropic's list shape and paging over what the upstream lists, through the
official SDK (which auto-paginates), and the client's own key passed through to list them."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anthropic
import pytest
from starlette.testclient import TestClient

from execbridge.api.app import create_app
from execbridge.config import Settings
from execbridge.upstream.base import ModelInfo
from execbridge.upstream.model_names import ModelNames
from execbridge.wiring import Services

ANTHROPIC = {"x-api-key": "k", "anthropic-version": "2023-06-01"}  # an Anthropic client (api/dialect.py)


class Catalog:
    def __init__(self, count: int) -> None:
        self.models = [ModelInfo(f"model-{i:02d}", 1_700_000_000 + i) for i in range(count)]
        self.keys: list[str | None] = []
        self.names = ModelNames(provider="databricks")

    async def list_models(self, api_key: str | None = None) -> list[ModelInfo]:
        self.keys.append(api_key)
        return list(self.models)

    def upstream_model(self, name: str) -> str:
        return self.names.upstream(name)


@pytest.fixture
def catalog() -> Catalog:
    return Catalog(45)


@pytest.fixture
def http(catalog: Catalog):
    services: Any = Services(settings=Settings(), engine=None, containers=None, files=None, models=catalog)  # type: ignore[arg-type]

    @asynccontextmanager
    async def factory() -> AsyncIterator[Services]:
        yield services

    with TestClient(create_app(factory)) as client:
        yield client


def test_sdk_lists_every_model_newest_first(http, catalog):
    sdk = anthropic.Anthropic(base_url="http://testserver", api_key="dapi-client", http_client=http, max_retries=0)
    ids = [m.id for m in sdk.models.list(limit=20)]
    assert ids == [f"model-{i:02d}" for i in range(44, -1, -1)]  # three pages, followed by the SDK
    assert set(catalog.keys) == {"dapi-client"}  # pass-through: the client's own key lists them


def test_page_shape_and_cursors(http):
    first = http.get("/v1/models", params={"limit": 2}, headers=ANTHROPIC).json()
    assert first == {
        "data": [
            {
                "type": "model",
                "id": "model-44",
                "display_name": "model-44",
                "created_at": "2023-11-14T22:14:04Z",
                "lifecycle": "active",
            },
            {
                "type": "model",
                "id": "model-43",
                "display_name": "model-43",
                "created_at": "2023-11-14T22:14:03Z",
                "lifecycle": "active",
            },
        ],
        "has_more": True,
        "first_id": "model-44",
        "last_id": "model-43",
    }
    back = http.get("/v1/models", params={"before_id": "model-40", "limit": 3}, headers=ANTHROPIC).json()
    assert [m["id"] for m in back["data"]] == ["model-43", "model-42", "model-41"] and back["has_more"]
    tail = http.get("/v1/models", params={"after_id": "model-01"}, headers=ANTHROPIC).json()
    assert [m["id"] for m in tail["data"]] == ["model-00"] and not tail["has_more"]


@pytest.mark.parametrize(
    "params",
    [{"limit": "0"}, {"limit": "1001"}, {"limit": "x"}, {"after_id": "nope"}, {"after_id": "a", "before_id": "b"}],
)
def test_bad_paging_is_a_400(http, params):
    response = http.get("/v1/models", params=params, headers=ANTHROPIC)
    assert response.status_code == 400 and response.json()["error"]["type"] == "invalid_request_error"


def test_retrieve_by_upstream_or_client_name(http, catalog):
    catalog.models.append(ModelInfo("databricks-claude-sonnet-4-5", None))
    assert http.get("/v1/models/model-03", headers=ANTHROPIC).json()["id"] == "model-03"
    mapped = http.get("/v1/models/claude-sonnet-4-5-20250929", headers=ANTHROPIC).json()
    assert mapped["id"] == "databricks-claude-sonnet-4-5" and mapped["created_at"] == "1970-01-01T00:00:00Z"
    missing = http.get("/v1/models/nope", headers=ANTHROPIC)
    assert missing.status_code == 404 and missing.json()["error"]["type"] == "not_found_error"


def test_pass_through_needs_a_key(http):
    response = http.get("/v1/models", headers={"anthropic-version": "2023-06-01"})
    assert response.status_code == 401 and response.json()["error"]["type"] == "authentication_error"
