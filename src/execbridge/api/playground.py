"""``GET /playground``: a chat page in the browser, for people trying the gateway without writing code.

Job: serve the page's static files (``api/playground_static/``: one HTML page, a stylesheet and a few
ES modules, shipped in the package, no build step) and tell the page whether it must ask for an API key
(``GET /playground/session``). Everything else the page does goes through the public API with the
key the person typed (``/v1/models``, ``/v1/messages``, ``/v1/files``), exactly like any other client.

Must not: hand out anything a stranger could use (the page and the session answer carry no secret, so
they need no key), or serve any file but the known assets. The page holds the user's key on the
gateway's origin and shows what models and their code produce, so every answer here carries a strict
Content-Security-Policy: scripts and styles only from this origin, no inline script or style, images
only from this origin or ``blob:`` (the page's own verified copies of output files), no frames, no
plugins, no form posts elsewhere. The page renders all untrusted text with ``textContent``.

Off (``playground = false`` / ``--no-playground``), every route here is a 404 like an unknown path.
"""

from __future__ import annotations

import functools
from importlib import resources
from typing import Final

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from execbridge.errors import NotFound
from execbridge.wiring import Services

__all__ = ["CONTENT_SECURITY_POLICY", "routes"]

CONTENT_SECURITY_POLICY: Final = "; ".join(
    (
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' blob:",  # blob: the page's copies of raster output files, checked before shown
        "connect-src 'self'",
        "object-src 'none'",
        "frame-src 'none'",
        "frame-ancestors 'none'",  # nobody frames the page that holds the key (clickjacking)
        "base-uri 'none'",
        "form-action 'none'",
    )
)

_HEADERS: Final = {
    "content-security-policy": CONTENT_SECURITY_POLICY,
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "x-frame-options": "DENY",  # for browsers that predate frame-ancestors
    # Revalidated on every load, so a gateway upgrade never meets a stale script.
    "cache-control": "no-cache",
}

_ASSETS: Final = {
    "playground.css": "text/css; charset=utf-8",
    "api.js": "text/javascript; charset=utf-8",
    "blocks.js": "text/javascript; charset=utf-8",
    "dom.js": "text/javascript; charset=utf-8",
    "files.js": "text/javascript; charset=utf-8",
    "main.js": "text/javascript; charset=utf-8",
    "markdown.js": "text/javascript; charset=utf-8",
    "partial_json.js": "text/javascript; charset=utf-8",
    "sse.js": "text/javascript; charset=utf-8",
}
"""The only files served from ``/playground/static/``, with their media types."""


@functools.cache
def _asset(name: str) -> bytes:
    return (resources.files(__package__) / "playground_static" / name).read_bytes()


def _services(request: Request) -> Services:
    services: Services = request.app.state.services
    if not services.settings.playground:
        raise NotFound(f"no route for {request.method} {request.url.path}")
    return services


async def page(request: Request) -> Response:
    _services(request)
    return Response(_asset("index.html"), media_type="text/html; charset=utf-8", headers=_HEADERS)


async def asset(request: Request) -> Response:
    _services(request)
    name = request.path_params["name"]
    media_type = _ASSETS.get(name)
    if media_type is None:
        raise NotFound(f"no route for {request.method} {request.url.path}")
    return Response(_asset(name), media_type=media_type, headers=_HEADERS)


async def session(request: Request) -> Response:
    """Whether the page must ask for a key: not on a loopback gateway that holds the upstream credential
    and has never had a key of its own (``keys.KeyGate`` admits every request there)."""
    gate = _services(request).key_gate
    # Pass-through (no gate): the client's own upstream key is what the gateway sends on, so always.
    key_required = gate is None or not gate.open_without_keys or await gate.keys.any_ever()
    body = orjson.dumps({"key_required": key_required})
    return Response(body, media_type="application/json", headers={**_HEADERS, "cache-control": "no-store"})


def routes() -> list[BaseRoute]:
    return [
        Route("/playground", page, methods=["GET"]),
        Route("/playground/session", session, methods=["GET"]),
        Route("/playground/static/{name}", asset, methods=["GET"]),
    ]
