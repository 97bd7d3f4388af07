"""The error table: status, type, message and headers per error, and what the official SDK raises."""

from __future__ import annotations

import anthropic
import orjson
import pytest

from execbridge.api.errors import classify, error_response
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
    StoreBusy,
    UpstreamError,
    UpstreamOverloaded,
    UpstreamRateLimited,
    UpstreamTimeout,
)

from ._sdk import REQUEST, client_returning

# (exception, status, error.type, message shown to the client, SDK exception class)
TABLE: list[tuple[BaseException, int, str, str, type[anthropic.APIStatusError]]] = [
    (
        InvalidRequest("messages: Field required"),
        400,
        "invalid_request_error",
        "messages: Field required",
        anthropic.BadRequestError,
    ),
    (RequestTooLarge("body over 32 MB"), 413, "request_too_large", "body over 32 MB", anthropic.RequestTooLargeError),
    (
        AuthenticationFailed("invalid x-api-key"),
        401,
        "authentication_error",
        "invalid x-api-key",
        anthropic.AuthenticationError,
    ),
    (PermissionDenied("not yours"), 403, "permission_error", "not yours", anthropic.PermissionDeniedError),
    (NotFound("no such container"), 404, "not_found_error", "no such container", anthropic.NotFoundError),
    (UpstreamRateLimited("slow down", status=429), 429, "rate_limit_error", "slow down", anthropic.RateLimitError),
    (QuotaExceeded("all busy", retry_after=5), 429, "rate_limit_error", "all busy", anthropic.RateLimitError),
    (UpstreamOverloaded("Overloaded", status=503), 529, "overloaded_error", "Overloaded", anthropic.OverloadedError),
    (
        UpstreamTimeout("upstream took too long"),
        504,
        "timeout_error",
        "upstream took too long",
        anthropic.GatewayTimeoutError,
    ),
    (
        UpstreamError("bad tool schema", status=400),
        400,
        "invalid_request_error",
        "upstream: bad tool schema",
        anthropic.BadRequestError,
    ),
    (
        UpstreamError("unprocessable", status=422),
        400,
        "invalid_request_error",
        "upstream: unprocessable",
        anthropic.BadRequestError,
    ),
    (
        UpstreamError("Invalid token", status=401),
        401,
        "authentication_error",
        "upstream: Invalid token",
        anthropic.AuthenticationError,
    ),
    (
        UpstreamError("forbidden", status=403),
        401,
        "authentication_error",
        "upstream: forbidden",
        anthropic.AuthenticationError,
    ),
    (
        UpstreamError("endpoint not found", status=404),
        404,
        "not_found_error",
        "upstream: endpoint not found",
        anthropic.NotFoundError,
    ),
    (UpstreamError("boom", status=500), 502, "api_error", "upstream: boom", anthropic.InternalServerError),
    (UpstreamError("connection reset"), 502, "api_error", "upstream: connection reset", anthropic.InternalServerError),
    (
        SandboxError("container failed to start"),
        500,
        "api_error",
        "container failed to start",
        anthropic.InternalServerError,
    ),
    (SandboxUnavailable("seccomp missing"), 500, "api_error", "seccomp missing", anthropic.InternalServerError),
    (
        ConfigurationError("bad /etc/execbridge.toml"),
        500,
        "api_error",
        "Internal server error",
        anthropic.InternalServerError,
    ),
    (ExecbridgeError("something deliberate"), 500, "api_error", "something deliberate", anthropic.InternalServerError),
    (KeyError("/home/secret"), 500, "api_error", "Internal server error", anthropic.InternalServerError),
    (
        RuntimeError("Traceback (most recent call last)"),
        500,
        "api_error",
        "Internal server error",
        anthropic.InternalServerError,
    ),
]
IDS = [f"{type(e).__name__}-{status}" for e, status, *_ in TABLE]


@pytest.mark.parametrize(("exc", "status", "error_type", "message", "_sdk"), TABLE, ids=IDS)
def test_table(exc: BaseException, status: int, error_type: str, message: str, _sdk: type) -> None:
    got_status, raw, headers = error_response(exc, "req_1")
    assert got_status == status
    assert orjson.loads(raw) == {
        "type": "error",
        "error": {"type": error_type, "message": message},
        "request_id": "req_1",
    }
    assert headers["content-type"] == "application/json"
    assert headers["request-id"] == "req_1"
    # 4xx are the client's to fix: tell the SDK not to retry, except rate limits, where its back-off is right
    assert headers.get("x-should-retry") == ("false" if 400 <= status < 500 and status != 429 else None)


@pytest.mark.parametrize(("exc", "status", "error_type", "message", "sdk_error"), TABLE, ids=IDS)
def test_sdk_raises_the_matching_exception(
    exc: BaseException, status: int, error_type: str, message: str, sdk_error: type[anthropic.APIStatusError]
) -> None:
    status, raw, headers = error_response(exc, "req_1")
    client = client_returning(status, raw, "application/json", headers)
    with pytest.raises(sdk_error) as caught:
        client.messages.create(**REQUEST)
    assert type(caught.value) is sdk_error
    assert caught.value.status_code == status
    assert caught.value.request_id == "req_1"
    assert caught.value.body["error"] == {"type": error_type, "message": message}  # type: ignore[index]


def test_error_code_becomes_details() -> None:
    _, raw, _ = error_response(InvalidRequest("file is not downloadable", code="file_not_downloadable"), "req_2")
    assert orjson.loads(raw)["error"] == {
        "type": "invalid_request_error",
        "message": "file is not downloadable",
        "details": {"error_code": "file_not_downloadable"},
    }


def test_retry_after_is_passed_on() -> None:
    _, _, headers = error_response(UpstreamRateLimited("slow down", status=429, retry_after=1.2), "req_3")
    assert headers["retry-after"] == "2"
    assert headers["retry-after-ms"] == "1200"
    assert "x-should-retry" not in headers


def test_a_used_up_budget_says_when_to_come_back() -> None:
    status, _, headers = error_response(QuotaExceeded("every live container is in use", retry_after=5), "req_4")
    assert (status, headers["retry-after"], headers["retry-after-ms"]) == (429, "5", "5000")
    assert "x-should-retry" not in headers  # the SDK's own back-off applies


def test_a_store_locked_elsewhere_is_a_retryable_503() -> None:
    """Not a 500 like a full disk: the request is fine and succeeds once another process lets go."""
    status, raw, headers = error_response(StoreBusy("the store (x.sqlite3) is locked by another process; retry"), "r")
    assert (status, headers["retry-after"], headers["retry-after-ms"]) == (503, "1", "1000")
    assert orjson.loads(raw)["error"] == {
        "type": "overloaded_error",
        "message": "the store (x.sqlite3) is locked by another process; retry",
        "details": {"error_code": "store_busy"},
    }
    assert "x-should-retry" not in headers  # 5xx: the SDK retries on its own


def test_classify_prefers_the_most_specific_class() -> None:
    # a rate-limit error carrying an odd upstream status is still a rate limit
    assert classify(UpstreamRateLimited("x", status=400)).status == 429
    assert classify(RequestTooLarge("x")).error_type == "request_too_large"
