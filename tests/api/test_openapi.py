"""``GET /openapi.json`` describes exactly the routes the app serves, as OpenAPI 3.1 that a validator
accepts."""

from __future__ import annotations

import httpx
import schemathesis
from starlette.routing import Route

from execbridge.api.app import create_app
from execbridge.api.openapi import document


def test_every_route_of_the_app_is_described_and_nothing_else() -> None:
    app = create_app(lambda: None)  # type: ignore[arg-type,return-value]  # no lifespan runs here
    served = {
        (route.path.replace(":path}", "}"), method.lower())
        for route in app.routes
        if isinstance(route, Route)
        for method in route.methods or ()
        if method != "HEAD"
    }
    described = {(path, method) for path, item in document()["paths"].items() for method in item}
    assert served == described


async def test_the_document_is_served_without_a_key_and_loads_as_openapi_3_1() -> None:
    app = create_app(lambda: None)  # type: ignore[arg-type,return-value]
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gateway") as client:
        response = await client.get("/openapi.json")
    assert response.status_code == 200 and response.headers["content-type"] == "application/json"
    body = response.json()
    assert body["openapi"] == "3.1.0"
    schema = schemathesis.openapi.from_dict(body)  # validates the document
    assert len([result.ok() for result in schema.get_all_operations()]) == sum(len(v) for v in body["paths"].values())
