"""An upstream's failure, however it was said, as the matching ``errors.UpstreamError`` subclass.

Job: read the error envelopes OpenAI-compatible servers use (OpenAI ``{"error":{…}}``, Databricks
``{"error_code","message"}``, FastAPI ``{"detail"}``, a bare ``{"error": "…"}``, or no JSON at all),
pick the class by status and code (rate limited, overloaded, timed out, other), read ``Retry-After``
and ``retry-after-ms``, and name failures below HTTP (no answer, a refused or broken connection).

Must not: decide whether to retry a status (the client's loop does), or lose the upstream's own words:
they become the message, cut to 500 characters only when the body has no envelope we know.

Invariants: every function here returns an error; none raises.
"""

from __future__ import annotations

import email.utils
import re
import time
from collections.abc import Mapping
from typing import Any

import httpx
import orjson

from execbridge.errors import UpstreamError, UpstreamOverloaded, UpstreamRateLimited, UpstreamTimeout

__all__ = ["error_from_body", "error_from_response", "gave_no_reason", "parse_retry_after", "transport_error"]


def error_from_response(status: int, body: bytes, headers: Mapping[str, str]) -> UpstreamError:
    """An HTTP error answer as the matching ``UpstreamError`` subclass, keeping the upstream's words."""
    try:
        parsed: Any = orjson.loads(body) if body else None
    except orjson.JSONDecodeError:
        parsed = None
    if not isinstance(parsed, dict):
        text = body.decode("utf-8", errors="replace").strip()[:500]
        parsed = {"message": text or _no_reason(status)}
    return error_from_body(status, parsed, headers)


def _no_reason(status: int | None) -> str:
    return f"the upstream answered HTTP {status} without saying why"


# LiteLLM's proxy wraps what its backend said: "…Exception - <message>. Received Model Group=…".
_LITELLM_EMPTY = re.compile(r"Exception - \.?\s*Received Model Group=")


def gave_no_reason(error: UpstreamError) -> bool:
    """Whether the upstream's answer had no words at all: an empty body, an envelope's empty message,
    or LiteLLM's proxy passing on its backend's empty message."""
    return error.message == _no_reason(error.status) or _LITELLM_EMPTY.search(error.message) is not None


def error_from_body(status: int | None, body: Mapping[str, Any], headers: Mapping[str, str] | None) -> UpstreamError:
    """An error envelope (from an answer, or from a data line inside a stream when ``status`` is None)."""
    message, code = _envelope(body)
    if not message.strip():
        message = _no_reason(status)
    if status is None:
        # An error inside a stream has no HTTP status; vLLM and others put one in ``code``.
        raw_code = body.get("error", {}).get("code") if isinstance(body.get("error"), dict) else None
        if isinstance(raw_code, int) or (isinstance(raw_code, str) and raw_code.isdigit()):
            status = int(raw_code)
    retry_after = parse_retry_after(headers) if headers is not None else None
    lowered = (code or "").lower()
    cls: type[UpstreamError]
    if status == 429 or "rate_limit" in lowered or lowered == "request_limit_exceeded":
        cls = UpstreamRateLimited
    elif status in (503, 529) or "overloaded" in lowered:
        cls = UpstreamOverloaded
    elif status in (408, 504):
        cls = UpstreamTimeout
    else:
        cls = UpstreamError
    return cls(message, status=status, code=code, retry_after=retry_after)


def _envelope(body: Mapping[str, Any]) -> tuple[str, str | None]:
    """``(message, code)`` from an OpenAI, Databricks, FastAPI or bare error body."""
    error = body.get("error")
    if isinstance(error, dict):
        code = error.get("code") or error.get("type")
        # An empty message is kept empty (llama-cpp-python answers a failed assertion so): no reason.
        message = error.get("message")
        return str(error if message is None else message), None if code is None else str(code)
    if isinstance(error, str) and error:
        return error, None
    if "error_code" in body or "message" in body:
        code = body.get("error_code")
        return str(body.get("message") or code), None if code is None else str(code)
    detail = body.get("detail")
    if detail:
        return str(detail), None
    return orjson.dumps(body).decode()[:500], None


def parse_retry_after(headers: Mapping[str, str]) -> float | None:
    """Seconds to wait from ``retry-after-ms``, or ``retry-after`` as seconds or an HTTP date."""
    value = headers.get("retry-after-ms")
    if value:
        try:
            return float(value) / 1000.0
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return float(value)
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def transport_error(exc: httpx.HTTPError, url: str) -> tuple[UpstreamError, bool]:
    """``(error, retryable)`` for a failure below HTTP: no answer, a refused or broken connection."""
    if isinstance(exc, httpx.ConnectTimeout):
        return UpstreamTimeout(f"connecting to the upstream at {url} timed out", code="connect_timeout"), True
    if isinstance(exc, httpx.TimeoutException):
        return UpstreamTimeout(f"the upstream at {url} did not answer in time ({type(exc).__name__})"), False
    if isinstance(exc, httpx.ConnectError):
        return UpstreamError(f"cannot connect to the upstream at {url}: {exc}", code="connect_error"), True
    if isinstance(exc, httpx.TransportError):
        # Typically a pooled keep-alive connection the server had already closed: safe to retry as
        # long as nothing was yielded (the caller checks that).
        return UpstreamError(f"the connection to the upstream at {url} failed: {exc!r}", code="connection"), True
    return UpstreamError(f"upstream request to {url} failed: {exc}"), False
