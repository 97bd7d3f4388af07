"""Which API a request speaks: Anthropic's or OpenAI's, both under one ``/v1``.

Job: decide, from the path and the headers alone, whose wire format a request gets back (objects, ids,
pagination, error envelope), so every layer that answers (the routes, the auth gate, the app's edge)
answers a client in its own words.

The rule (docs/protocol.md, "One /v1, two APIs"): paths only OpenAI has (``/v1/responses``,
``/v1/containers``) are OpenAI's; paths both APIs have (``/v1/files``, ``/v1/models``) are Anthropic's
when the request carries an ``anthropic-version`` header, which every Anthropic SDK sends and no OpenAI
SDK does, and OpenAI's otherwise; every other path is Anthropic's.
"""

from __future__ import annotations

from typing import Final, Literal

from starlette.datastructures import Headers
from starlette.types import Scope

from execbridge.api import errors, openai_errors

__all__ = ["Dialect", "dialect_of", "error_response_for"]

Dialect = Literal["anthropic", "openai"]

_OPENAI_ONLY: Final = ("/v1/responses", "/v1/containers")
_SHARED: Final = ("/v1/files", "/v1/models")


def _under(path: str, prefixes: tuple[str, ...]) -> bool:
    return any(path == prefix or path.startswith(prefix + "/") for prefix in prefixes)


def dialect_of(scope: Scope) -> Dialect:
    path: str = scope.get("path", "")
    if _under(path, _OPENAI_ONLY):
        return "openai"
    if _under(path, _SHARED):
        return "anthropic" if "anthropic-version" in Headers(scope=scope) else "openai"
    return "anthropic"


def error_response_for(scope: Scope, exc: BaseException, request_id: str) -> tuple[int, bytes, dict[str, str]]:
    """``(status, JSON body, headers)`` of the error answer for ``exc``, in the envelope of the request's API."""
    if dialect_of(scope) == "openai":
        return openai_errors.openai_error_response(exc, request_id)
    return errors.error_response(exc, request_id)
