"""``GET /metrics`` and ``keys usage`` on a real ``execbridge serve`` (as root: the privilege split, so the
gateway that counts runs unprivileged), driven by the official SDK against the scripted upstream."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from execbridge.ids import key_id
from execbridge.testing import FakeUpstream, Turn

from .conftest import CLIENT_KEY, sdk_client, serve


def test_metrics_and_usage_of_a_served_conversation(fake_upstream: FakeUpstream, tmp_path: Path) -> None:
    fake_upstream.reset(
        [
            Turn.text("Running.", prompt_tokens=40, completion_tokens=4).call("bash_code_execution", command="echo hi"),
            Turn.text("Done.", prompt_tokens=60, completion_tokens=2),
        ]
    )
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    with serve(fake_upstream, data_dir, EXECBRIDGE_USAGE_FLUSH_S="0") as gateway:
        message = sdk_client(gateway.url, CLIENT_KEY).messages.create(
            model="m",
            max_tokens=100,
            tools=[{"type": "code_execution_20250825", "name": "code_execution"}],
            messages=[{"role": "user", "content": "go"}],
        )
        scraped = httpx.get(f"{gateway.url}/metrics", timeout=30)  # no key: outside /v1/
        usage = subprocess.run(
            [sys.executable, "-m", "execbridge", "--data-dir", str(data_dir), "keys", "usage", "--json"],
            env=os.environ.copy(),
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert message.stop_reason == "end_turn"
    assert scraped.status_code == 200 and scraped.headers["content-type"].startswith("text/plain; version=0.0.4")
    found = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(scraped.text)
        for s in family.samples
    }
    assert found[("execbridge_tokens_total", (("direction", "input"), ("model", "m")))] == 100
    assert found[("execbridge_tool_executions_total", (("outcome", "ok"), ("sub_tool", "bash_code_execution")))] == 1
    labels = (("method", "POST"), ("model", "m"), ("route", "/v1/messages"), ("status", "200"))
    assert found[("execbridge_requests_total", labels)] == 1
    assert CLIENT_KEY not in scraped.text and key_id(CLIENT_KEY) not in scraped.text

    assert usage.returncode == 0, usage.stderr
    (row,) = [json.loads(line) for line in usage.stdout.splitlines()]
    assert (row["key"], row["requests"], row["input_tokens"], row["output_tokens"]) == (key_id(CLIENT_KEY), 1, 100, 6)
    assert fake_upstream.remaining == 0
