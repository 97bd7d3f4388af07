"""``GET /metrics``: the gateway's Prometheus metrics (``observability/metrics.py``), in the text format.

Outside ``/v1/``, so no key is needed, as Prometheus scrapes; no label names a key or an owner. With
``settings.metrics`` off the route answers 404 like any unknown one.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from execbridge.errors import NotFound
from execbridge.observability.metrics import CONTENT_TYPE
from execbridge.wiring import Services


async def metrics(request: Request) -> Response:
    services: Services = request.app.state.services
    if services.metrics is None:
        raise NotFound(f"no route for {request.method} {request.url.path} (metrics are off)")
    return Response(await services.metrics.render(), media_type=CONTENT_TYPE, headers={"cache-control": "no-store"})
