"""OpenTelemetry spans: one per request, per model turn and per tool execution, following OpenTelemetry's
GenAI semantic conventions (https://opentelemetry.io/docs/specs/semconv/gen-ai/).

Spans are made with an explicit parent (the request's span, held in a context variable of this sink)
and never made current: the engine's event stream is an async generator that yields across the
request's tasks, where attaching and detaching an OpenTelemetry context would not pair up.

Must not: put a key, an owner, a prompt, a command or a program's output on a span. What a tool span
carries is its sub-tool, the call and container ids, its outcome and exit code.

``otlp_provider`` builds the provider ``serve`` uses: the OTLP/HTTP exporter reads the standard
``OTEL_EXPORTER_OTLP_*`` variables, the resource ``OTEL_SERVICE_NAME`` / ``OTEL_RESOURCE_ATTRIBUTES``.
"""

from __future__ import annotations

import asyncio
import os
from contextvars import ContextVar
from importlib.metadata import PackageNotFoundError, version
from typing import Any, Final

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import Span, SpanKind, Status, StatusCode

from execbridge.telemetry import RequestReport, Sink, ToolReport, TurnReport

PROVIDER_NAME: Final = "openai"
"""``gen_ai.provider.name``: the upstream speaks OpenAI's Chat Completions (or Anthropic's Messages)."""


def otlp_provider() -> TracerProvider:
    """A provider exporting over OTLP/HTTP in batches, named by ``OTEL_SERVICE_NAME`` (default execbridge)."""
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    resource = Resource.create({"service.name": os.environ.get("OTEL_SERVICE_NAME") or "execbridge"})
    provider = TracerProvider(resource=resource)
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    return provider


def _version() -> str:
    try:
        return version("execbridge")
    except PackageNotFoundError:  # a source tree never installed
        return "0+unknown"


class OpenTelemetrySink(Sink):
    """Spans on ``provider``'s tracer; ``shutdown`` (when the sink built the provider) flushes it at close."""

    def __init__(self, provider: trace.TracerProvider, *, shutdown: bool = False) -> None:
        self._provider = provider
        self._shutdown = shutdown
        self._tracer = provider.get_tracer("execbridge", _version())
        self._request: ContextVar[tuple[Span, str] | None] = ContextVar("execbridge_otel_request", default=None)

    def _child(self, name: str, kind: SpanKind, attributes: dict[str, Any]) -> Span:
        current = self._request.get()
        context = None
        if current is not None:
            context = trace.set_span_in_context(current[0])
            attributes["execbridge.request_id"] = current[1]
        return self._tracer.start_span(name, context=context, kind=kind, attributes=attributes)

    def request_started(self, request_id: str, method: str, path: str) -> Any:
        span = self._tracer.start_span(
            method,
            kind=SpanKind.SERVER,
            attributes={"http.request.method": method, "url.path": path, "execbridge.request_id": request_id},
        )
        token = self._request.set((span, request_id))
        return span, token

    def request_finished(self, handle: Any, report: RequestReport) -> None:
        span, token = handle
        span.update_name(f"{report.method} {report.route}")
        span.set_attribute("http.route", report.route)
        if report.status is not None:
            span.set_attribute("http.response.status_code", report.status)
            if report.status >= 500:
                span.set_status(Status(StatusCode.ERROR))
        if report.model is not None:
            span.set_attribute("gen_ai.request.model", report.model)
        span.end()
        self._request.reset(token)

    def turn_started(self, model: str) -> Any:
        attributes: dict[str, Any] = {
            "gen_ai.operation.name": "chat",
            "gen_ai.provider.name": PROVIDER_NAME,
            "gen_ai.request.model": model,
        }
        return self._child(f"chat {model}", SpanKind.CLIENT, attributes)

    def turn_finished(self, handle: Any, report: TurnReport) -> None:
        span: Span = handle
        span.set_attribute("gen_ai.usage.input_tokens", report.usage.input_tokens)
        span.set_attribute("gen_ai.usage.output_tokens", report.usage.output_tokens)
        if report.finish_reason is not None:
            span.set_attribute("gen_ai.response.finish_reasons", [report.finish_reason])
        if report.error is not None:
            span.set_attribute("error.type", report.error)
            span.set_status(Status(StatusCode.ERROR, report.error))
        span.end()

    def tool_started(self, sub_tool: str, call_id: str, container_id: str) -> Any:
        attributes: dict[str, Any] = {
            "gen_ai.operation.name": "execute_tool",
            "gen_ai.tool.name": sub_tool,
            "gen_ai.tool.call.id": call_id,
            "gen_ai.tool.type": "extension",  # runs on the gateway's side, not the client's
            "execbridge.container.id": container_id,
        }
        return self._child(f"execute_tool {sub_tool}", SpanKind.INTERNAL, attributes)

    def tool_finished(self, handle: Any, report: ToolReport) -> None:
        span: Span = handle
        span.set_attribute("execbridge.tool.outcome", report.outcome)
        if report.exit_code is not None:
            span.set_attribute("process.exit.code", report.exit_code)
        if report.outcome not in ("ok", "nonzero_exit"):  # a failing program is data; a failed tool is not
            span.set_attribute("error.type", report.outcome)
            span.set_status(Status(StatusCode.ERROR, report.outcome))
        span.end()

    async def aclose(self) -> None:
        if self._shutdown and isinstance(self._provider, TracerProvider):
            # Exports what is left: a network call, off the event loop.
            await asyncio.to_thread(self._provider.shutdown)
