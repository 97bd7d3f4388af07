"""Spans of a scripted conversation: OpenTelemetry's tree (with the SDK's in-memory exporter) and the
MLflow sink's calls; GenAI attributes present, the code's content and the key absent."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from execbridge.ids import key_id
from execbridge.observability.mlflow_tracing import MlflowSink
from execbridge.observability.tracing import OpenTelemetrySink
from execbridge.testing import FakeUpstream
from library.conftest import KEY

from .conftest import SECRET_COMMAND, converse


def _everything(spans: list[ReadableSpan]) -> str:
    return repr([(s.name, dict(s.attributes or {})) for s in spans])


def test_the_span_tree_of_a_conversation(fake_upstream: FakeUpstream, tmp_path: Path) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    done = converse(fake_upstream, tmp_path, sinks=[OpenTelemetrySink(provider)])
    spans = list(exporter.get_finished_spans())

    requests = [s for s in spans if s.kind is SpanKind.SERVER]
    assert [s.name for s in requests] == ["POST /v1/files", "POST /v1/messages", "GET /metrics"]
    message = requests[1]
    assert message.attributes is not None
    assert message.attributes["http.route"] == "/v1/messages"
    assert message.attributes["http.response.status_code"] == 200
    assert message.attributes["gen_ai.request.model"] == "m"
    request_id = message.attributes["execbridge.request_id"]
    assert str(request_id).startswith("req_")

    children = [s for s in spans if s.parent is not None]
    assert [s.name for s in children] == [
        "chat m",
        "execute_tool bash_code_execution",
        "execute_tool bash_code_execution",
        "chat m",
    ]
    assert message.context is not None
    for child in children:
        assert child.parent is not None and child.parent.span_id == message.context.span_id
        assert child.context is not None and child.context.trace_id == message.context.trace_id
        assert child.attributes is not None and child.attributes["execbridge.request_id"] == request_id

    first_turn, ok_tool, failing_tool, last_turn = children
    assert first_turn.kind is SpanKind.CLIENT
    assert dict(first_turn.attributes or {}) == {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "openai",
        "gen_ai.request.model": "m",
        "execbridge.request_id": request_id,
        "gen_ai.usage.input_tokens": 100,
        "gen_ai.usage.output_tokens": 20,
        "gen_ai.response.finish_reasons": ("tool_calls",),
    }
    assert last_turn.attributes is not None and last_turn.attributes["gen_ai.response.finish_reasons"] == ("stop",)
    container = done.message.container
    assert container is not None
    assert ok_tool.attributes is not None and failing_tool.attributes is not None
    assert ok_tool.attributes["gen_ai.tool.name"] == "bash_code_execution"
    assert ok_tool.attributes["execbridge.container.id"] == container.id
    assert (ok_tool.attributes["process.exit.code"], ok_tool.attributes["execbridge.tool.outcome"]) == (0, "ok")
    assert failing_tool.attributes["process.exit.code"] == 3
    assert failing_tool.attributes["execbridge.tool.outcome"] == "nonzero_exit"
    assert failing_tool.status.status_code is StatusCode.UNSET  # a failing program is data, not a failed tool
    call_ids = [b.id for b in done.message.content if b.type == "server_tool_use"]
    assert [ok_tool.attributes["gen_ai.tool.call.id"], failing_tool.attributes["gen_ai.tool.call.id"]] == call_ids

    # Never the code, its output, or the key.
    everything = _everything(spans)
    assert "s3cr3t" not in everything and "wc -l" not in everything and SECRET_COMMAND not in everything
    assert KEY not in everything and key_id(KEY) not in everything


class _RecordedSpan:
    def __init__(self, log: list[_RecordedSpan], name: str, span_type: str, parent: Any, attributes: dict[str, Any]):
        self.name, self.span_type, self.parent, self.attributes = name, span_type, parent, dict(attributes)
        self.ended_with: tuple[dict[str, Any], str] | None = None
        log.append(self)

    def end(self, outputs: Any = None, attributes: dict[str, Any] | None = None, status: str | None = None) -> None:
        assert outputs is None  # nothing a program printed
        self.ended_with = (attributes or {}, status or "")


class _RecordingMlflow:
    """Stands in for ``mlflow``: records ``start_span_no_context`` calls and their spans' ends."""

    def __init__(self) -> None:
        self.spans: list[_RecordedSpan] = []

    def start_span_no_context(
        self, name: str, span_type: str = "UNKNOWN", parent_span: Any = None, attributes: Any = None, **rest: Any
    ) -> _RecordedSpan:
        assert "inputs" not in rest
        return _RecordedSpan(self.spans, name, span_type, parent_span, attributes or {})


def test_mlflow_traces_each_agent_step(fake_upstream: FakeUpstream, tmp_path: Path) -> None:
    mlflow = _RecordingMlflow()
    converse(fake_upstream, tmp_path, sinks=[MlflowSink(mlflow)])
    message = next(s for s in mlflow.spans if s.name == "POST /v1/messages")
    steps = [(s.name, s.span_type) for s in mlflow.spans if s.parent is message]
    assert steps == [
        ("chat m", "CHAT_MODEL"),
        ("execute_tool bash_code_execution", "TOOL"),
        ("execute_tool bash_code_execution", "TOOL"),
        ("chat m", "CHAT_MODEL"),
    ]
    assert message.span_type == "AGENT" and message.ended_with is not None
    assert message.ended_with[1] == "OK" and message.ended_with[0]["http.route"] == "/v1/messages"
    assert all(s.ended_with is not None for s in mlflow.spans)
    tool = next(s for s in mlflow.spans if s.span_type == "TOOL")
    assert tool.ended_with == ({"execbridge.tool.outcome": "ok", "process.exit.code": 0}, "OK")
    assert "s3cr3t" not in repr([(s.name, s.attributes, s.ended_with) for s in mlflow.spans])


class _Collector(BaseHTTPRequestHandler):
    """An OTLP/HTTP collector stand-in: keeps each export's decoded request."""

    received: ClassVar[list[tuple[str, ExportTraceServiceRequest]]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("content-length", 0)))
        self.received.append((self.path, ExportTraceServiceRequest.FromString(body)))
        self.send_response(200)
        self.send_header("content-type", "application/x-protobuf")
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        return


@pytest.fixture
def collector() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Collector)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    _Collector.received.clear()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()
    thread.join()


def test_spans_go_to_the_otlp_endpoint_named_in_the_environment(
    fake_upstream: FakeUpstream, tmp_path: Path, collector: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", collector)
    monkeypatch.setenv("OTEL_SERVICE_NAME", "eb-under-test")
    converse(fake_upstream, tmp_path)  # settings.tracing is "auto": on, since the endpoint is set
    # The gateway's close shut the provider down, which exported what its batch still held.
    assert {path for path, _ in _Collector.received} == {"/v1/traces"}
    spans = [
        (resource.resource, span)
        for _, export in _Collector.received
        for resource in export.resource_spans
        for scope in resource.scope_spans
        for span in scope.spans
    ]
    names = sorted(span.name for _, span in spans)
    assert names == sorted(
        ["POST /v1/files", "POST /v1/messages", "GET /metrics", "chat m", "chat m"]
        + ["execute_tool bash_code_execution"] * 2
    )
    services = {a.value.string_value for resource, _ in spans for a in resource.attributes if a.key == "service.name"}
    assert services == {"eb-under-test"}
