"""The ASGI application: routes, the request id, and the one place exceptions become responses.

Every response carries ``request-id``; every failure, including unknown routes and unexpected
exceptions, is answered in Anthropic's error envelope (``api/errors.py``) and never with a traceback.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from execbridge import ids
from execbridge.api import files, model_list
from execbridge.api.auth import GatewayKeyMiddleware
from execbridge.api.errors import error_response
from execbridge.api.messages import create_message
from execbridge.errors import ExecbridgeError, InvalidRequest, NotFound
from execbridge.wiring import Services

log = logging.getLogger(__name__)


class RequestIdMiddleware:
    """Gives each request an id (``request.state.request_id``) and echoes it as ``request-id``."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = ids.request_id()
        scope.setdefault("state", {})["request_id"] = request_id
        header = (b"request-id", request_id.encode())

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                if not any(name.lower() == b"request-id" for name, _ in headers):
                    headers.append(header)
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, send_with_id)


def _error(request: Request, exc: BaseException) -> Response:
    request_id = getattr(request.state, "request_id", None) or ids.request_id()
    status, body, headers = error_response(exc, request_id)
    return Response(body, status_code=status, headers=headers, media_type="application/json")


async def _execbridge_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ExecbridgeError)
    log.info("request failed: %s %s", type(exc).__name__, exc.message)
    return _error(request, exc)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if exc.status_code == 404:
        return _error(request, NotFound(f"no route for {request.method} {request.url.path}"))
    if exc.status_code == 405:
        return _error(request, InvalidRequest(f"method {request.method} is not allowed on {request.url.path}"))
    return _error(request, InvalidRequest(exc.detail))


async def _unexpected(request: Request, exc: Exception) -> Response:
    log.exception("unexpected error", exc_info=exc)  # boundary: log everything, tell the client little
    return _error(request, exc)


def create_app(
    services_factory: Callable[[], AbstractAsyncContextManager[Services]],
) -> Starlette:
    """Build the app; ``services_factory`` opens the gateway's resources for the server's lifetime."""

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with services_factory() as services:
            app.state.services = services
            yield

    routes = [
        Route("/v1/messages", create_message, methods=["POST"]),
        # Files API (docs/protocol.md §2.10); same path, one route per method, so a wrong method is a 405.
        Route("/v1/files", files.upload_file, methods=["POST"]),
        Route("/v1/files", files.list_files, methods=["GET"]),
        Route("/v1/files/{file_id}", files.get_file, methods=["GET"]),
        Route("/v1/files/{file_id}", files.delete_file, methods=["DELETE"]),
        Route("/v1/files/{file_id}/content", files.download_file, methods=["GET"]),
        Route("/v1/models", model_list.list_models, methods=["GET"]),
        Route("/v1/models/{model_id:path}", model_list.get_model, methods=["GET"]),
    ]
    app = Starlette(
        routes=routes,
        lifespan=lifespan,
        exception_handlers={
            ExecbridgeError: _execbridge_error,
            HTTPException: _http_error,
            Exception: _unexpected,
        },
    )
    app.add_middleware(GatewayKeyMiddleware)  # added first, so it runs inside RequestIdMiddleware
    app.add_middleware(RequestIdMiddleware)
    return app
