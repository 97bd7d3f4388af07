"""``GET /metrics`` after a scripted conversation: every family the issue lists, with the values the
conversation must have produced, and no label carrying a key or an owner."""

from __future__ import annotations

from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

import execbridge
from execbridge.ids import key_id
from execbridge.testing import FakeUpstream
from library.conftest import KEY, library_options

from .conftest import SALES, converse


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(found: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str) -> float:
    return found[(name, frozenset(labels.items()))]


def test_metrics_after_a_conversation(fake_upstream: FakeUpstream, tmp_path: Path) -> None:
    done = converse(fake_upstream, tmp_path)
    assert done.message.stop_reason == "end_turn"
    found = samples(done.metrics_text)

    assert value(found, "execbridge_requests_total", route="/v1/messages", method="POST", status="200", model="m") == 1
    assert value(found, "execbridge_requests_total", route="/v1/files", method="POST", status="200", model="") == 1
    assert value(found, "execbridge_request_duration_seconds_count", route="/v1/messages") == 1

    # The retried first turn is one turn that went through on its second try.
    assert value(found, "execbridge_upstream_retries_total", reason="429") == 1
    assert value(found, "execbridge_model_turns_total", model="m", finish_reason="tool_calls") == 1
    assert value(found, "execbridge_model_turns_total", model="m", finish_reason="stop") == 1
    assert value(found, "execbridge_model_turn_duration_seconds_count", model="m") == 2
    assert value(found, "execbridge_tokens_total", model="m", direction="input") == 250
    assert value(found, "execbridge_tokens_total", model="m", direction="output") == 25

    assert value(found, "execbridge_tool_executions_total", sub_tool="bash_code_execution", outcome="ok") == 1
    assert value(found, "execbridge_tool_executions_total", sub_tool="bash_code_execution", outcome="nonzero_exit") == 1
    assert value(found, "execbridge_tool_execution_duration_seconds_count", sub_tool="bash_code_execution") == 2

    assert value(found, "execbridge_containers_created_total") == 1
    assert value(found, "execbridge_sandbox_start_seconds_count") >= 1  # no spares here: a cold start
    assert value(found, "execbridge_containers", state="idle") == 1  # the request is over; the container lives
    assert value(found, "execbridge_containers", state="busy") == 0
    assert value(found, "execbridge_containers_evicted_total") == 0
    assert value(found, "execbridge_files_stored") == 1
    assert value(found, "execbridge_files_stored_bytes") == len(SALES)

    names = {name for name, _ in found}
    assert all(name.startswith("execbridge_") for name in names)
    # No label names a key or an owner.
    assert KEY not in done.metrics_text and key_id(KEY) not in done.metrics_text


def test_a_failed_turn_counts_as_an_upstream_error(fake_upstream: FakeUpstream, tmp_path: Path) -> None:
    from execbridge.testing import Turn

    fake_upstream.reset([Turn.error(400, "no such model")])
    with execbridge.open(upstream=fake_upstream.databricks_url, **library_options(tmp_path)) as gateway:
        client = gateway.http_client()
        answer = client.post(
            "/v1/messages",
            headers={"x-api-key": KEY, "anthropic-version": "2023-06-01"},
            json={"model": "m", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]},
        )
        found = samples(client.get("/metrics").text)
    assert answer.status_code == 400
    assert value(found, "execbridge_requests_total", route="/v1/messages", method="POST", status="400", model="m") == 1
    assert value(found, "execbridge_model_turns_total", model="m", finish_reason="error") == 1
    assert value(found, "execbridge_upstream_errors_total", model="m", error="UpstreamError") == 1


def test_model_labels_are_bounded(fake_upstream: FakeUpstream, tmp_path: Path) -> None:
    from execbridge.observability.metrics import MAX_MODELS, PrometheusSink
    from execbridge.telemetry import RequestReport

    sink = PrometheusSink()
    for i in range(MAX_MODELS + 10):
        sink.request_finished(None, RequestReport("req", "POST", "/v1/messages", 404, 0.001, f"made-up-{i}"))
    models = {
        s.labels["model"]
        for f in text_string_to_metric_families(sink.registry_text())
        for s in f.samples
        if s.name == "execbridge_requests_total"
    }
    assert len(models) == MAX_MODELS + 1 and "other" in models


@pytest.mark.parametrize("path", ["/metrics"])
def test_metrics_off_is_a_404_in_the_envelope(fake_upstream: FakeUpstream, tmp_path: Path, path: str) -> None:
    with execbridge.open(upstream=fake_upstream.databricks_url, metrics=False, **library_options(tmp_path)) as gateway:
        answer = gateway.http_client().get(path)
    assert answer.status_code == 404 and answer.json()["error"]["type"] == "not_found_error"
