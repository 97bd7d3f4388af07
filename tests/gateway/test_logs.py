"""``--log-format json``: one JSON object a line from every process of a real ``execbridge serve``, and
at ``--log-level info`` one access line per request carrying what the request did."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from execbridge.testing import Turn

from .conftest import CLIENT_KEY, Gateway, sdk_client, serve


@pytest.fixture(scope="module")
def json_gateway(fake_upstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    data_dir = tmp_path_factory.mktemp("json-logs")
    with serve(fake_upstream, data_dir, EXECBRIDGE_LOG_FORMAT="json", EXECBRIDGE_LOG_LEVEL="info") as running:
        yield running


def _json_lines(log: Path) -> list[dict]:
    """Every line the processes wrote as JSON (a supervisor's click notices are plain text)."""
    lines = []
    for raw in log.read_text().splitlines():
        if raw.startswith("{"):
            lines.append(json.loads(raw))
    return lines


def _access_line(log: Path, request_id: str) -> dict:
    """The request's access line. It is written once the response has been sent, so the client may read
    the log a moment before it is there: wait for it."""
    deadline = time.monotonic() + 30
    while True:
        found = [line for line in _json_lines(log) if line.get("request_id") == request_id and "status" in line]
        if found or time.monotonic() > deadline:
            break
        time.sleep(0.02)
    assert len(found) == 1, found
    return found[0]


def test_a_code_execution_request_is_one_access_line_with_its_container(json_gateway: Gateway) -> None:
    json_gateway.fake.reset(
        [Turn.text("Running.").call("bash_code_execution", command="echo hi"), lambda req: Turn.text("Done.")]
    )
    raw = sdk_client(json_gateway.url, CLIENT_KEY).beta.messages.with_raw_response.create(
        model="databricks-claude-sonnet-4-5",
        max_tokens=256,
        betas=["code-execution-2025-08-25"],
        tools=[{"type": "code_execution_20250825", "name": "code_execution"}],
        messages=[{"role": "user", "content": "run it"}],
    )
    message = raw.parse()
    line = _access_line(json_gateway.log, raw.headers["request-id"])
    assert line["logger"] == "execbridge.access" and line["level"] == "info"
    assert (line["method"], line["path"], line["status"]) == ("POST", "/v1/messages", 200)
    assert line["container"] == message.container.id
    assert line["stop_reason"] == "end_turn" and line["model"] == "databricks-claude-sonnet-4-5"
    assert line["owner"] and CLIENT_KEY not in json.dumps(line)  # the key's digest, never the key
    assert isinstance(line["duration_ms"], float) and line["time"].endswith("+00:00")


def test_an_error_answer_is_logged_with_its_status_and_kind(json_gateway: Gateway) -> None:
    response = httpx.get(f"{json_gateway.url}/v1/files/file_nope", headers={"x-api-key": CLIENT_KEY})
    assert response.status_code == 404
    line = _access_line(json_gateway.log, response.headers["request-id"])
    assert (line["status"], line["error"], line["path"]) == (404, "NotFound", "/v1/files/file_nope")


def test_every_process_writes_json(json_gateway: Gateway) -> None:
    """The supervisor's children (gateway, sandbox host) and uvicorn itself: no stray text log lines."""
    text = [
        raw
        for raw in json_gateway.log.read_text().splitlines()
        if raw.strip() and not raw.startswith("{") and not raw.startswith("execbridge")
    ]
    assert text == []
    assert any(line["logger"].startswith("uvicorn") for line in _json_lines(json_gateway.log))
