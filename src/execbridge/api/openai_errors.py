"""Errors in OpenAI's envelope, for requests that speak OpenAI's API (``api/dialect.py``).

Job: the same failures as ``api/errors.py`` (one classification, ``errors.classify``), told the way
OpenAI's API tells them: ``{"error": {"message", "type", "param", "code"}}`` with the status the
``openai`` SDK maps to its exception classes (400 ``BadRequestError``, 401 ``AuthenticationError``,
403 ``PermissionDeniedError``, 404 ``NotFoundError``, 429 ``RateLimitError``, ≥ 500
``InternalServerError``; docs/protocol.md, "OpenAI errors").

Invariants: the status is the Anthropic answer's status, except Anthropic's 529 (overloaded), which
OpenAI's API does not use: it becomes 503. ``type`` follows OpenAI's published values; ``code`` is
execbridge's own code when the error has one; ``param`` names the request field at fault when known.
The request id travels as ``x-request-id``, the header the SDK reads (``response._request_id``).
"""

from __future__ import annotations

import math
from typing import Any, Final

import orjson

from execbridge.api.errors import ErrorInfo, classify
from execbridge.errors import ExecbridgeError

__all__ = ["openai_error_body", "openai_error_response"]

# OpenAI's ``error.type`` by HTTP status (its API reference and observed bodies; anything ≥ 500 is a
# ``server_error``).
_TYPE_BY_STATUS: Final[dict[int, str]] = {
    400: "invalid_request_error",
    401: "invalid_request_error",
    403: "permission_error",
    404: "invalid_request_error",
    409: "invalid_request_error",
    413: "invalid_request_error",
    422: "invalid_request_error",
    429: "rate_limit_error",
}
# Codes OpenAI's API gives where execbridge's error has none of its own.
_DEFAULT_CODE: Final[dict[int, str]] = {401: "invalid_api_key", 429: "rate_limit_exceeded"}


def _status(info: ErrorInfo) -> int:
    return 503 if info.status == 529 else info.status


def openai_error_body(info: ErrorInfo, param: str | None = None) -> dict[str, Any]:
    status = _status(info)
    error_type = _TYPE_BY_STATUS.get(status, "server_error" if status >= 500 else "invalid_request_error")
    code = info.code if info.code is not None else _DEFAULT_CODE.get(status)
    return {"error": {"message": info.message, "type": error_type, "param": param, "code": code}}


def openai_error_response(exc: BaseException, request_id: str) -> tuple[int, bytes, dict[str, str]]:
    """``(status, JSON body, headers)`` of the OpenAI-style error answer for ``exc``."""
    info = classify(exc)
    param = exc.param if isinstance(exc, ExecbridgeError) else None
    status = _status(info)
    headers = {"content-type": "application/json", "request-id": request_id, "x-request-id": request_id}
    if 400 <= status < 500 and status != 429:
        headers["x-should-retry"] = "false"
    if info.retry_after is not None and info.retry_after >= 0:
        headers["retry-after"] = str(math.ceil(info.retry_after))
        headers["retry-after-ms"] = str(math.ceil(info.retry_after * 1000))
    return status, orjson.dumps(openai_error_body(info, param)), headers
