"""MLflow tracing (``mlflow-tracing``): each request a trace in MLflow's trace UI (Databricks' included),
its model turns and tool executions as spans, so every agent step shows.

Off unless ``settings.mlflow_tracing``; MLflow itself is configured as usual, by ``MLFLOW_TRACKING_URI``
(``databricks`` for a workspace) and ``MLFLOW_EXPERIMENT_NAME`` / ``MLFLOW_EXPERIMENT_ID``.

Must not: log inputs or outputs (prompts, commands, program output); spans carry what the OpenTelemetry
sink's do (``tracing.py``).
"""

from __future__ import annotations

from contextvars import ContextVar, Token
from typing import Any

from execbridge.telemetry import RequestReport, Sink, ToolReport, TurnReport


class MlflowSink(Sink):
    """``tracer``: what makes the spans, ``mlflow`` itself unless a test gives a recording stand-in."""

    def __init__(self, tracer: Any = None) -> None:
        if tracer is None:
            import mlflow as tracer  # the optional extra: imported only when MLflow tracing is on

        self._mlflow = tracer
        self._request: ContextVar[tuple[Any, str] | None] = ContextVar("execbridge_mlflow_request", default=None)

    def _child(self, name: str, span_type: str, attributes: dict[str, Any]) -> Any:
        current = self._request.get()
        parent = None
        if current is not None:
            parent = current[0]
            attributes["execbridge.request_id"] = current[1]
        return self._mlflow.start_span_no_context(name, span_type=span_type, parent_span=parent, attributes=attributes)

    def request_started(self, request_id: str, method: str, path: str) -> Any:
        span = self._mlflow.start_span_no_context(
            f"{method} {path}", span_type="AGENT", attributes={"execbridge.request_id": request_id}
        )
        token: Token[tuple[Any, str] | None] = self._request.set((span, request_id))
        return span, token

    def request_finished(self, handle: Any, report: RequestReport) -> None:
        span, token = handle
        attributes: dict[str, Any] = {"http.route": report.route, "http.response.status_code": report.status}
        if report.model is not None:
            attributes["gen_ai.request.model"] = report.model
        failed = report.status is None or report.status >= 500
        span.end(attributes=attributes, status="ERROR" if failed else "OK")
        self._request.reset(token)

    def turn_started(self, model: str) -> Any:
        return self._child(
            f"chat {model}", "CHAT_MODEL", {"gen_ai.operation.name": "chat", "gen_ai.request.model": model}
        )

    def turn_finished(self, handle: Any, report: TurnReport) -> None:
        attributes = {
            "gen_ai.usage.input_tokens": report.usage.input_tokens,
            "gen_ai.usage.output_tokens": report.usage.output_tokens,
            "gen_ai.response.finish_reasons": [report.finish_reason] if report.finish_reason else [],
        }
        handle.end(attributes=attributes, status="ERROR" if report.error else "OK")

    def tool_started(self, sub_tool: str, call_id: str, container_id: str) -> Any:
        attributes = {
            "gen_ai.operation.name": "execute_tool",
            "gen_ai.tool.name": sub_tool,
            "gen_ai.tool.call.id": call_id,
            "execbridge.container.id": container_id,
        }
        return self._child(f"execute_tool {sub_tool}", "TOOL", attributes)

    def tool_finished(self, handle: Any, report: ToolReport) -> None:
        attributes: dict[str, Any] = {"execbridge.tool.outcome": report.outcome}
        if report.exit_code is not None:
            attributes["process.exit.code"] = report.exit_code
        failed = report.outcome not in ("ok", "nonzero_exit")
        handle.end(attributes=attributes, status="ERROR" if failed else "OK")
