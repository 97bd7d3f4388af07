"""The ASGI application: routes, the request id, and the one place exceptions become responses.

Every response carries ``request-id``; every failure, including unknown routes and unexpected
exceptions, is answered in the error envelope of the API the request speaks (``api/dialect.py``:
Anthropic's, ``api/errors.py``, or OpenAI's, ``api/openai_errors.py``) and never with a traceback.
An error answered before the request body has arrived in full waits for the rest of it first, so a
client still sending reads the answer instead of a connection reset (``_Body``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Final

from starlette.applications import Starlette
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from execbridge import ids
from execbridge.api import (
    containers,
    count_tokens,
    files,
    health,
    metrics,
    model_list,
    openai_files,
    openai_models,
    openapi,
    playground,
    request_log,
    responses,
)
from execbridge.api.auth import GatewayKeyMiddleware
from execbridge.api.dialect import dialect_of, error_response_for
from execbridge.api.drain import Drain
from execbridge.api.messages import create_message
from execbridge.errors import ExecbridgeError, InvalidRequest, NotFound, UpstreamError
from execbridge.telemetry import OFF, RequestReport, Telemetry
from execbridge.wiring import Services

log = logging.getLogger(__name__)


DRAIN_SECONDS: Final = 10.0
"""How long an early answer waits for the rest of a request body it will not use."""


class _Body:
    """Watches a request's body go by, so an answer given before its end can first read the rest.

    A client that writes its whole body before reading (httpx, the SDK, urllib) and meets a server
    that answers and closes mid-body gets a TCP reset instead of the answer. So an early error answer
    is held until the body has been read to its end (and dropped), for at most ``DRAIN_SECONDS``, and
    closes the connection after itself; a client waiting for ``100 Continue`` has sent nothing and is
    answered at once.
    """

    def __init__(self, scope: Scope, receive: Receive) -> None:
        headers = Headers(scope=scope)
        declared = headers.get("content-length", "0").strip()
        chunked = "chunked" in headers.get("transfer-encoding", "").lower()
        self.ended = not chunked and declared in ("", "0")
        self.awaiting_continue = headers.get("expect", "").lower() == "100-continue"
        self._receive = receive

    async def receive(self) -> Message:
        message = await self._receive()
        self.awaiting_continue = False
        if message["type"] != "http.request" or not message.get("more_body", False):
            self.ended = True
        return message

    async def drain(self) -> None:
        if self.awaiting_continue:
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(DRAIN_SECONDS):
                while not self.ended:
                    await self.receive()


class RequestIdMiddleware:
    """The app's edge. Gives each request an id (``request.state.request_id``, echoed as ``request-id``);
    answers an unexpected exception itself, in the envelope, so the connection stays usable (Starlette's
    outermost handler would re-raise it, and uvicorn then closes the connection under the client); and
    lets an error answered before the request body was read to its end first drain it (``_Body``)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = ids.request_id()
        scope.setdefault("state", {})["request_id"] = request_id
        # OpenAI's SDK reads the request id from ``x-request-id``, Anthropic's from ``request-id``.
        id_headers = [b"request-id"] + ([b"x-request-id"] if dialect_of(scope) == "openai" else [])
        telemetry = _telemetry_of(scope)
        handles = telemetry.request_started(request_id, scope["method"], scope["path"]) if telemetry.enabled else ()
        body = _Body(scope, receive)
        started = False
        status: int | None = None
        began = time.perf_counter()
        fields = request_log.begin(request_id, scope["method"], scope["path"])

        async def send_with_id(message: Message) -> None:
            nonlocal started, status
            if message["type"] == "http.response.start":
                started = True
                status = message["status"]
                headers = list(message.get("headers", []))
                present = {name.lower() for name, _ in headers}
                headers.extend((name, request_id.encode()) for name in id_headers if name not in present)
                if message["status"] >= 400 and not body.ended:
                    await body.drain()
                    headers.append((b"connection", b"close"))
                message["headers"] = headers
            await send(message)

        try:
            await self.app(scope, body.receive, send_with_id)
        except Exception as exc:
            if started:
                raise  # mid-response: the connection is closed, which is all a client can be told
            log.exception("unexpected error", exc_info=exc)  # boundary: log everything, tell the client little
            request_log.note(error=type(exc).__name__)
            code, content, headers = error_response_for(scope, exc, request_id)
            response = Response(content, status_code=code, headers=headers, media_type="application/json")
            await response(scope, body.receive, send_with_id)
        finally:
            duration = time.perf_counter() - began
            if telemetry.enabled:
                telemetry.request_finished(handles, _report(scope, request_id, status, duration))
            request_log.end(fields, status, duration)
            if telemetry.enabled:
                await telemetry.flush()


def _telemetry_of(scope: Scope) -> Telemetry:
    app = scope.get("app")
    services = getattr(app.state, "services", None) if app is not None else None
    return services.telemetry if services is not None else OFF


def _report(scope: Scope, request_id: str, status: int | None, duration_s: float) -> RequestReport:
    """The request as telemetry sees it: its route's template (bounded, unlike paths) and what it noted."""
    templates: dict[object, str] = getattr(scope["app"].state, "route_templates", {})
    noted = request_log.current()
    route = templates.get(scope.get("endpoint"), "unmatched")
    return RequestReport(request_id, scope["method"], route, status, duration_s, noted.get("model"), noted.get("owner"))


def _error(request: Request, exc: BaseException) -> Response:
    request_id = getattr(request.state, "request_id", None) or ids.request_id()
    status, body, headers = error_response_for(request.scope, exc, request_id)
    return Response(body, status_code=status, headers=headers, media_type="application/json")


async def _execbridge_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ExecbridgeError)
    log.info("request failed: %s %s", type(exc).__name__, exc.message)
    request_log.note(error=type(exc).__name__)
    if isinstance(exc, UpstreamError) and exc.status is not None:
        request_log.note(upstream_status=exc.status)
    return _error(request, exc)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if exc.status_code == 404:
        return _error(request, NotFound(f"no route for {request.method} {request.url.path}"))
    if exc.status_code == 405:
        return _error(request, InvalidRequest(f"method {request.method} is not allowed on {request.url.path}"))
    return _error(request, InvalidRequest(exc.detail))


Endpoint = Callable[[Request], Awaitable[Response]]


def _by_dialect(anthropic: Endpoint, openai: Endpoint) -> Endpoint:
    """One route on a path both APIs have (``/v1/files``, ``/v1/models``): the request's API answers."""

    async def endpoint(request: Request) -> Response:
        handler = openai if dialect_of(request.scope) == "openai" else anthropic
        return await handler(request)

    return endpoint


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
        Route("/v1/messages/count_tokens", count_tokens.count_tokens, methods=["POST"]),
        # Files API (docs/protocol.md §2.10; OpenAI's on the same paths: "OpenAI Files and Containers");
        # one route per method, so a wrong method is a 405.
        Route("/v1/files", _by_dialect(files.upload_file, openai_files.upload_file), methods=["POST"]),
        Route("/v1/files", _by_dialect(files.list_files, openai_files.list_files), methods=["GET"]),
        Route("/v1/files/{file_id}", _by_dialect(files.get_file, openai_files.get_file), methods=["GET"]),
        Route("/v1/files/{file_id}", _by_dialect(files.delete_file, openai_files.delete_file), methods=["DELETE"]),
        Route(
            "/v1/files/{file_id}/content",
            _by_dialect(files.download_file, openai_files.download_file),
            methods=["GET"],
        ),
        Route("/v1/models", _by_dialect(model_list.list_models, openai_models.list_models), methods=["GET"]),
        Route(
            "/v1/models/{model_id:path}",
            _by_dialect(model_list.get_model, openai_models.get_model),
            methods=["GET"],
        ),
        # OpenAI's Responses API (docs/protocol.md §5.2, "The Responses API").
        Route("/v1/responses", responses.create_response, methods=["POST"]),
        Route("/v1/responses/{response_id}", responses.get_response, methods=["GET"]),
        Route("/v1/responses/{response_id}", responses.delete_response, methods=["DELETE"]),
        Route("/v1/responses/{response_id}/input_items", responses.list_input_items, methods=["GET"]),
        # OpenAI's Containers API.
        Route("/v1/containers", containers.create_container, methods=["POST"]),
        Route("/v1/containers", containers.list_containers, methods=["GET"]),
        Route("/v1/containers/{container_id}", containers.get_container, methods=["GET"]),
        Route("/v1/containers/{container_id}", containers.delete_container, methods=["DELETE"]),
        Route("/v1/containers/{container_id}/files", containers.create_container_file, methods=["POST"]),
        Route("/v1/containers/{container_id}/files", containers.list_container_files, methods=["GET"]),
        Route("/v1/containers/{container_id}/files/{file_id}", containers.get_container_file, methods=["GET"]),
        Route("/v1/containers/{container_id}/files/{file_id}", containers.delete_container_file, methods=["DELETE"]),
        Route(
            "/v1/containers/{container_id}/files/{file_id}/content",
            containers.download_container_file,
            methods=["GET"],
        ),
        # For supervisors and balancers, without a key (outside /v1/).
        Route("/healthz", health.healthz, methods=["GET"]),
        Route("/readyz", health.readyz, methods=["GET"]),
        Route("/openapi.json", openapi.openapi_json, methods=["GET"]),
        *playground.routes(),  # a browser page, without a key (its API calls carry one); off: 404
        Route("/metrics", metrics.metrics, methods=["GET"]),
    ]
    app = Starlette(
        routes=routes,
        lifespan=lifespan,
        # Any other exception is answered by RequestIdMiddleware, which wraps everything else.
        exception_handlers={ExecbridgeError: _execbridge_error, HTTPException: _http_error},
    )
    app.state.drain = Drain()  # cli/serve.py begins it on SIGTERM
    # Routing leaves the matched endpoint in the scope; telemetry labels a request by its route's template.
    app.state.route_templates = {route.endpoint: route.path for route in routes if isinstance(route, Route)}
    app.add_middleware(GatewayKeyMiddleware)  # added first, so it runs inside RequestIdMiddleware
    app.add_middleware(RequestIdMiddleware)
    return app
