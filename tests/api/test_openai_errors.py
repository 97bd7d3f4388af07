"""One ``/v1``, two APIs: which envelope a request's errors come in (``api/dialect.py``), and OpenAI's
envelope as the official ``openai`` SDK reads it (``api/openai_errors.py``)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

import httpx2
import openai
import orjson
import pytest
from starlette.testclient import TestClient

from execbridge.api.app import create_app
from execbridge.api.dialect import dialect_of
from execbridge.api.openai_errors import openai_error_response
from execbridge.config import Settings
from execbridge.errors import (
    AuthenticationFailed,
    InvalidRequest,
    NotFound,
    PermissionDenied,
    QuotaExceeded,
    SandboxError,
    ShuttingDown,
    UpstreamOverloaded,
    UpstreamRateLimited,
)
from execbridge.files import FileService
from execbridge.store.memory import MemoryStore
from execbridge.wiring import Services

# (exception, status, error.type, error.code, SDK exception class)
TABLE: list[tuple[BaseException, int, str, str | None, type[openai.APIStatusError]]] = [
    (
        InvalidRequest("bad temperature", param="temperature"),
        400,
        "invalid_request_error",
        None,
        openai.BadRequestError,
    ),
    (AuthenticationFailed("no key"), 401, "invalid_request_error", "invalid_api_key", openai.AuthenticationError),
    (PermissionDenied("not yours"), 403, "permission_error", None, openai.PermissionDeniedError),
    (NotFound("no such container"), 404, "invalid_request_error", None, openai.NotFoundError),
    (
        UpstreamRateLimited("slow down", status=429),
        429,
        "rate_limit_error",
        "rate_limit_exceeded",
        openai.RateLimitError,
    ),
    (QuotaExceeded("busy", code="containers_busy"), 429, "rate_limit_error", "containers_busy", openai.RateLimitError),
    (UpstreamOverloaded("overloaded", status=529), 503, "server_error", None, openai.InternalServerError),
    (ShuttingDown("stopping"), 503, "server_error", None, openai.InternalServerError),
    (SandboxError("sandbox gone"), 500, "server_error", None, openai.InternalServerError),
    (KeyError("/home/secret"), 500, "server_error", None, openai.InternalServerError),
]
IDS = [f"{type(e).__name__}-{status}" for e, status, *_ in TABLE]


def client_returning(status: int, body: bytes, headers: dict[str, str]) -> openai.OpenAI:
    def handler(request: httpx2.Request) -> httpx2.Response:
        return httpx2.Response(status, headers=headers, content=body)

    return openai.OpenAI(
        api_key="sk-test",
        base_url="http://execbridge.test/v1",
        max_retries=0,
        http_client=httpx2.Client(transport=httpx2.MockTransport(handler)),
    )


@pytest.mark.parametrize(("exc", "status", "error_type", "code", "sdk_error"), TABLE, ids=IDS)
def test_the_sdk_raises_the_matching_exception(
    exc: BaseException, status: int, error_type: str, code: str | None, sdk_error: type[openai.APIStatusError]
) -> None:
    got_status, raw, headers = openai_error_response(exc, "req_1")
    assert got_status == status
    client = client_returning(got_status, raw, headers)
    with pytest.raises(sdk_error) as caught:
        client.responses.create(model="m", input="hi")
    error = caught.value
    assert type(error) is sdk_error
    assert (error.status_code, error.type, error.code) == (status, error_type, code)
    assert error.request_id == "req_1"
    assert set(orjson.loads(raw)) == {"error"}  # OpenAI's envelope has nothing beside ``error``
    message = orjson.loads(raw)["error"]["message"]
    assert message == (getattr(exc, "message", None) or "Internal server error")


def test_param_names_the_field_at_fault() -> None:
    _, raw, _ = openai_error_response(InvalidRequest("bad temperature", param="temperature"), "req_2")
    assert orjson.loads(raw)["error"]["param"] == "temperature"
    client = client_returning(400, raw, {"content-type": "application/json"})
    with pytest.raises(openai.BadRequestError) as caught:
        client.responses.create(model="m", input="hi")
    assert caught.value.param == "temperature"


def test_client_errors_are_not_retried_and_rate_limits_say_when() -> None:
    _, _, headers = openai_error_response(NotFound("gone"), "req_3")
    assert headers["x-should-retry"] == "false"
    _, _, headers = openai_error_response(UpstreamRateLimited("slow", status=429, retry_after=1.2), "req_4")
    assert (headers["retry-after"], headers["retry-after-ms"]) == ("2", "1200")
    assert "x-should-retry" not in headers


@pytest.mark.parametrize(
    ("path", "headers", "dialect"),
    [
        ("/v1/messages", {}, "anthropic"),
        ("/v1/messages/count_tokens", {}, "anthropic"),
        ("/v1/responses", {}, "openai"),
        ("/v1/responses/resp_1/input_items", {"anthropic-version": "2023-06-01"}, "openai"),
        ("/v1/containers/cntr_1/files", {}, "openai"),
        ("/v1/files", {}, "openai"),
        ("/v1/files", {"anthropic-version": "2023-06-01"}, "anthropic"),
        ("/v1/models/m", {}, "openai"),
        ("/v1/models/m", {"anthropic-version": "2023-06-01"}, "anthropic"),
        ("/v1/responsesx", {}, "anthropic"),  # a prefix match is by path segment, not by string
        ("/healthz", {}, "anthropic"),
    ],
)
def test_the_path_and_the_anthropic_version_header_decide(path: str, headers: dict[str, str], dialect: str) -> None:
    scope: dict[str, Any] = {
        "type": "http",
        "path": path,
        "headers": [(k.encode(), v.encode()) for k, v in headers.items()],
    }
    assert dialect_of(scope) == dialect


@pytest.fixture
def http(tmp_path) -> Iterator[TestClient]:
    files = FileService(MemoryStore().files, tmp_path / "files", max_bytes=1000)
    files.prepare()

    @asynccontextmanager
    async def services() -> AsyncIterator[Services]:
        yield Services(settings=Settings(data_dir=tmp_path), engine=None, containers=None, files=files)  # type: ignore[arg-type]

    with TestClient(create_app(services)) as client:
        yield client


def test_one_path_answers_each_api_in_its_own_envelope(http: TestClient) -> None:
    key = {"x-api-key": "key-alice"}
    anthropic_answer = http.delete("/v1/files/file_nope", headers={**key, "anthropic-version": "2023-06-01"})
    assert anthropic_answer.status_code == 404
    assert anthropic_answer.json()["type"] == "error"
    assert anthropic_answer.json()["error"]["type"] == "not_found_error"
    assert "x-request-id" not in anthropic_answer.headers

    openai_answer = http.delete("/v1/files/file_nope", headers=key)
    assert openai_answer.status_code == 404
    assert openai_answer.json() == {
        "error": {
            "message": openai_answer.json()["error"]["message"],
            "type": "invalid_request_error",
            "param": None,
            "code": None,
        }
    }
    assert openai_answer.headers["x-request-id"] == openai_answer.headers["request-id"]


def test_an_openai_only_route_answers_in_openais_envelope_even_before_it_exists(http: TestClient) -> None:
    # Unknown routes under OpenAI's paths (here, whatever this build does not serve yet) are still OpenAI's.
    answer = http.post("/v1/containers/cntr_nope/unknown", headers={"authorization": "Bearer key-alice"})
    assert answer.status_code == 404
    assert set(answer.json()) == {"error"}
    assert answer.json()["error"]["type"] == "invalid_request_error"
