"""execbridge's Python API: what a program may import from ``execbridge`` and rely on.

Everything below is re-exported from the module that owns it; anything not listed here (every
submodule's own names included) is internal and may change without notice. The list is pinned by
``tests/test_public_api.py``.

Use the gateway from a program or a notebook, with the official SDKs and no server::

    with execbridge.open(upstream="http://127.0.0.1:8000/v1", data_dir="./eb") as gateway:
        client = anthropic.Anthropic(api_key=key, base_url=gateway.base_url, http_client=gateway.http_client())

Run the gateway in-process under any ASGI server::

    settings = execbridge.load_settings(upstream_url="http://127.0.0.1:8000/v1")
    app = execbridge.create_app(lambda: execbridge.open_services(settings))   # any ASGI server

or drive the engine directly::

    async with execbridge.open_services(settings) as services:
        request = execbridge.parse_messages_request(anthropic_json, {"anthropic-version": "2023-06-01"})
        async for event in services.engine.run(request, execbridge.Caller(owner="me")):
            ...   # MessageStarted, BlockStarted, TextDelta, …, MessageFinished

Test doubles (scripted upstreams, fake containers) live in ``execbridge.testing``, which is opt-in.
"""

from __future__ import annotations

import importlib
from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from execbridge.api.app import (
        create_app,
    )
    from execbridge.api.wire import (
        parse_messages_request,
    )
    from execbridge.config import (
        SandboxSettings,
        Settings,
        load_settings,
    )
    from execbridge.engine.events import (
        BlockFinished,
        BlockStarted,
        CitationsDelta,
        EngineEvent,
        Heartbeat,
        InputJsonDelta,
        MessageFinished,
        MessageStarted,
        ServerToolResultReady,
        TextDelta,
        ThinkingDelta,
    )
    from execbridge.engine.loop import (
        Engine,
    )
    from execbridge.errors import (
        AuthenticationFailed,
        ConfigurationError,
        ExecbridgeError,
        InvalidRequest,
        NotFound,
        PermissionDenied,
        QuotaExceeded,
        RequestTooLarge,
        SandboxError,
        SandboxUnavailable,
        StorageError,
        UpstreamError,
        UpstreamOverloaded,
        UpstreamRateLimited,
        UpstreamTimeout,
    )
    from execbridge.library.gateway import (
        LocalGateway,
        open,
    )
    from execbridge.types import (
        Caller,
        GenerationRequest,
    )
    from execbridge.wiring import (
        Services,
        open_services,
    )

try:
    __version__ = version("execbridge")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0+unknown"

# Name → the module that owns it. Imported on first use (PEP 562): ``import execbridge.types`` (or the
# CLI's ``keys ls``) must not pay for Starlette, the engine and the sandbox.
_OWNERS: dict[str, str] = {
    "create_app": "execbridge.api.app",
    "parse_messages_request": "execbridge.api.wire",
    "SandboxSettings": "execbridge.config",
    "Settings": "execbridge.config",
    "load_settings": "execbridge.config",
    "BlockFinished": "execbridge.engine.events",
    "BlockStarted": "execbridge.engine.events",
    "CitationsDelta": "execbridge.engine.events",
    "EngineEvent": "execbridge.engine.events",
    "Heartbeat": "execbridge.engine.events",
    "InputJsonDelta": "execbridge.engine.events",
    "MessageFinished": "execbridge.engine.events",
    "MessageStarted": "execbridge.engine.events",
    "ServerToolResultReady": "execbridge.engine.events",
    "TextDelta": "execbridge.engine.events",
    "ThinkingDelta": "execbridge.engine.events",
    "Engine": "execbridge.engine.loop",
    "AuthenticationFailed": "execbridge.errors",
    "ConfigurationError": "execbridge.errors",
    "ExecbridgeError": "execbridge.errors",
    "InvalidRequest": "execbridge.errors",
    "NotFound": "execbridge.errors",
    "PermissionDenied": "execbridge.errors",
    "QuotaExceeded": "execbridge.errors",
    "RequestTooLarge": "execbridge.errors",
    "SandboxError": "execbridge.errors",
    "SandboxUnavailable": "execbridge.errors",
    "StorageError": "execbridge.errors",
    "UpstreamError": "execbridge.errors",
    "UpstreamOverloaded": "execbridge.errors",
    "UpstreamRateLimited": "execbridge.errors",
    "UpstreamTimeout": "execbridge.errors",
    "LocalGateway": "execbridge.library.gateway",
    "open": "execbridge.library.gateway",
    "Caller": "execbridge.types",
    "GenerationRequest": "execbridge.types",
    "Services": "execbridge.wiring",
    "open_services": "execbridge.wiring",
}


def __getattr__(name: str) -> Any:
    owner = _OWNERS.get(name)
    if owner is None:
        raise AttributeError(f"module 'execbridge' has no attribute {name!r}")
    value = getattr(importlib.import_module(owner), name)
    globals()[name] = value  # the next lookup is an ordinary attribute
    return value


def __dir__() -> list[str]:
    return sorted(__all__)


__all__ = [
    "AuthenticationFailed",
    "BlockFinished",
    "BlockStarted",
    "Caller",
    "CitationsDelta",
    "ConfigurationError",
    "Engine",
    "EngineEvent",
    "ExecbridgeError",
    "GenerationRequest",
    "Heartbeat",
    "InputJsonDelta",
    "InvalidRequest",
    "LocalGateway",
    "MessageFinished",
    "MessageStarted",
    "NotFound",
    "PermissionDenied",
    "QuotaExceeded",
    "RequestTooLarge",
    "SandboxError",
    "SandboxSettings",
    "SandboxUnavailable",
    "ServerToolResultReady",
    "Services",
    "Settings",
    "StorageError",
    "TextDelta",
    "ThinkingDelta",
    "UpstreamError",
    "UpstreamOverloaded",
    "UpstreamRateLimited",
    "UpstreamTimeout",
    "__version__",
    "create_app",
    "load_settings",
    "open",
    "open_services",
    "parse_messages_request",
]
