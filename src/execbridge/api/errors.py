"""The one table from execbridge errors to Anthropic error types and HTTP statuses (docs/protocol.md §1.7).

Job: turn any exception into what an Anthropic client expects: a status, an ``error.type``, a message
that is safe to show, and the ``{"type":"error","error":{…},"request_id":…}`` body.

Must not: leak internals. Only ``ExecbridgeError.message`` (written to be shown) reaches a client;
anything else becomes ``500 api_error "Internal server error"``, and so does a ``ConfigurationError``
(its message talks about the operator's settings, not the client's request).

Invariants: ``errors.code`` becomes ``error.details.error_code``; 4xx answers carry
``x-should-retry: false`` except 429, where the SDK's own back-off is the right behaviour; an upstream
``retry_after`` is passed on as ``retry-after`` / ``retry-after-ms``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Final

import orjson

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
    ShuttingDown,
    StorageError,
    StoreBusy,
    UpstreamError,
    UpstreamOverloaded,
    UpstreamRateLimited,
    UpstreamTimeout,
)

__all__ = ["ErrorInfo", "classify", "error_body", "error_response"]

INTERNAL_MESSAGE: Final = "Internal server error"

# Most specific class first: the first ``isinstance`` match wins (RequestTooLarge before
# InvalidRequest, the Upstream* subclasses before UpstreamError).
_TABLE: Final[tuple[tuple[type[ExecbridgeError], int, str], ...]] = (
    (RequestTooLarge, 413, "request_too_large"),
    (InvalidRequest, 400, "invalid_request_error"),
    (AuthenticationFailed, 401, "authentication_error"),
    (PermissionDenied, 403, "permission_error"),
    (NotFound, 404, "not_found_error"),
    (UpstreamRateLimited, 429, "rate_limit_error"),
    (QuotaExceeded, 429, "rate_limit_error"),
    (UpstreamOverloaded, 529, "overloaded_error"),
    (ShuttingDown, 503, "overloaded_error"),
    (UpstreamTimeout, 504, "timeout_error"),
    (SandboxError, 500, "api_error"),
    (StoreBusy, 503, "overloaded_error"),  # before StorageError: a lock held elsewhere passes, a full disk may not
    (StorageError, 500, "api_error"),
)

# A plain ``UpstreamError`` by the upstream's status; anything else is a bad gateway (502).
_UPSTREAM_STATUS: Final[dict[int, tuple[int, str]]] = {
    400: (400, "invalid_request_error"),  # the upstream refused what we sent on the client's behalf
    422: (400, "invalid_request_error"),
    401: (401, "authentication_error"),  # the client's key was passed through and rejected upstream
    403: (401, "authentication_error"),
    404: (404, "not_found_error"),  # e.g. an unknown model/endpoint name
}


@dataclass(frozen=True, slots=True)
class ErrorInfo:
    """What a client is told about one failure."""

    status: int
    error_type: str
    message: str
    code: str | None = None
    retry_after: float | None = None
    details: dict[str, object] | None = None


def _upstream(exc: UpstreamError) -> ErrorInfo:
    """An upstream failure with no more specific class: decided by the upstream's HTTP status. The
    upstream's words are kept (prefixed) because they are what the client needs to fix its request."""
    status, error_type = _UPSTREAM_STATUS.get(exc.status or 0, (502, "api_error"))
    retry_after = exc.retry_after if status >= 500 else None
    return ErrorInfo(status, error_type, f"upstream: {exc.message}", exc.code, retry_after)


def classify(exc: BaseException) -> ErrorInfo:
    """Map any exception to the status, type and client-safe message of the answer."""
    if not isinstance(exc, ExecbridgeError) or isinstance(exc, ConfigurationError):
        return ErrorInfo(500, "api_error", INTERNAL_MESSAGE)
    for cls, status, error_type in _TABLE:
        if isinstance(exc, cls):
            retried = UpstreamError | QuotaExceeded | ShuttingDown | StoreBusy
            retry_after = exc.retry_after if isinstance(exc, retried) else None
            return ErrorInfo(status, error_type, exc.message, exc.code, retry_after, exc.details)
    if isinstance(exc, UpstreamError):
        return _upstream(exc)
    # a deliberate error class with no row yet: its message is safe by contract
    return ErrorInfo(500, "api_error", exc.message, exc.code)


def error_body(info: ErrorInfo, request_id: str | None) -> dict[str, Any]:
    error: dict[str, Any] = {"type": info.error_type, "message": info.message}
    if info.code is not None:
        error["details"] = {"error_code": info.code, **(info.details or {})}
    body: dict[str, Any] = {"type": "error", "error": error}
    if request_id is not None:
        body["request_id"] = request_id
    return body


def error_response(exc: BaseException, request_id: str) -> tuple[int, bytes, dict[str, str]]:
    """``(status, JSON body, headers)`` of the error answer for ``exc``."""
    info = classify(exc)
    headers = {"content-type": "application/json", "request-id": request_id}
    if 400 <= info.status < 500 and info.status != 429:
        headers["x-should-retry"] = "false"
    if info.retry_after is not None and info.retry_after >= 0:
        headers["retry-after"] = str(math.ceil(info.retry_after))
        headers["retry-after-ms"] = str(math.ceil(info.retry_after * 1000))
    return info.status, orjson.dumps(error_body(info, request_id)), headers
