"""Prometheus metrics (``GET /metrics``), from the telemetry hooks, on a registry of this gateway's own.

Names start ``execbridge_``. Labels are bounded and never carry a key or an owner: routes are templates,
models are capped (``_Bounded``: past ``MAX_MODELS`` distinct names a request's model counts as
``other``, so a client sending made-up model names cannot grow the registry without end).

Gauges that describe the present (containers live and idle, files stored) are read when scraped.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator
from typing import Any, Final

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from execbridge.telemetry import RequestReport, Sink, ToolReport, TurnReport

CONTENT_TYPE: Final = "text/plain; version=0.0.4; charset=utf-8"
MAX_MODELS: Final = 64

# Seconds: a sandbox starts in milliseconds; a model turn or a command takes up to minutes.
_START_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_LONG_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 180.0, 600.0)


class _Bounded:
    """At most ``limit`` distinct values of a label; later newcomers are ``other``."""

    def __init__(self, limit: int) -> None:
        self._seen: set[str] = set()
        self._limit = limit

    def __call__(self, value: str | None) -> str:
        if value is None:
            return ""
        if value in self._seen:
            return value
        if len(self._seen) >= self._limit:
            return "other"
        self._seen.add(value)
        return value


class _Containers(Collector):
    def __init__(self, counts: Callable[[], tuple[int, int]]) -> None:
        self._counts = counts

    def collect(self) -> Iterator[GaugeMetricFamily]:
        live, idle = self._counts()
        family = GaugeMetricFamily(
            "execbridge_containers",
            "Containers with running processes, by whether a request uses them.",
            labels=["state"],
        )
        family.add_metric(["busy"], live - idle)
        family.add_metric(["idle"], idle)
        yield family


class PrometheusSink(Sink):
    """``render()`` is the scrape; ``files_total`` (count, bytes) and the counts ``watch_containers`` names
    (live, idle) are read at each scrape when given."""

    def __init__(self, *, files_total: Callable[[], Awaitable[tuple[int, int]]] | None = None) -> None:
        self.registry = registry = CollectorRegistry(auto_describe=True)
        self._model = _Bounded(MAX_MODELS)
        self._files_total = files_total
        self.requests = Counter(
            "execbridge_requests",
            "HTTP requests answered, by route template, method, status and model.",
            ["route", "method", "status", "model"],
            registry=registry,
        )
        self.request_seconds = Histogram(
            "execbridge_request_duration_seconds",
            "Time from a request's arrival to the end of its response (a stream's included).",
            ["route"],
            buckets=_LONG_BUCKETS,
            registry=registry,
        )
        self.turns = Counter(
            "execbridge_model_turns",
            "Upstream model turns, by model and finish reason (error: the turn failed).",
            ["model", "finish_reason"],
            registry=registry,
        )
        self.turn_seconds = Histogram(
            "execbridge_model_turn_duration_seconds",
            "Time of one upstream model turn, from the request to its last event.",
            ["model"],
            buckets=_LONG_BUCKETS,
            registry=registry,
        )
        self.tokens = Counter(
            "execbridge_tokens",
            "Tokens of model turns, by model and direction.",
            ["model", "direction"],
            registry=registry,
        )
        self.tools = Counter(
            "execbridge_tool_executions",
            "Server tool executions, by sub-tool and outcome (ok, nonzero_exit, or the tool's error code).",
            ["sub_tool", "outcome"],
            registry=registry,
        )
        self.tool_seconds = Histogram(
            "execbridge_tool_execution_duration_seconds",
            "Time of one server tool execution.",
            ["sub_tool"],
            buckets=_LONG_BUCKETS,
            registry=registry,
        )
        self.containers_created = Counter(
            "execbridge_containers_created", "Containers made for requests.", registry=registry
        )
        self.containers_evicted = Counter(
            "execbridge_containers_evicted",
            "Containers whose processes were stopped (idle, or to make room); their files stay.",
            registry=registry,
        )
        self.sandbox_start = Histogram(
            "execbridge_sandbox_start_seconds",
            "Time to start a container's sandbox (cold starts and spares made ahead).",
            buckets=_START_BUCKETS,
            registry=registry,
        )
        self.upstream_retries = Counter(
            "execbridge_upstream_retries",
            "Upstream turns retried, by reason (the HTTP status, or transport).",
            ["reason"],
            registry=registry,
        )
        self.upstream_errors = Counter(
            "execbridge_upstream_errors",
            "Model turns that failed, by error class.",
            ["model", "error"],
            registry=registry,
        )
        self.files = Gauge("execbridge_files_stored", "Files kept in the Files API.", registry=registry)
        self.file_bytes = Gauge("execbridge_files_stored_bytes", "Bytes kept in the Files API.", registry=registry)

    def watch_containers(self, counts: Callable[[], tuple[int, int]]) -> None:
        """Report containers live and idle from ``counts`` (the in-process manager's) at each scrape."""
        self.registry.register(_Containers(counts))

    async def render(self) -> bytes:
        if self._files_total is not None:
            count, size = await self._files_total()
            self.files.set(count)
            self.file_bytes.set(size)
        return generate_latest(self.registry)

    def registry_text(self) -> str:
        """The metrics without refreshing the gauges read at scrape time."""
        return generate_latest(self.registry).decode()

    def request_finished(self, handle: Any, report: RequestReport) -> None:
        status = str(report.status) if report.status is not None else "none"
        self.requests.labels(report.route, report.method, status, self._model(report.model)).inc()
        self.request_seconds.labels(report.route).observe(report.duration_s)

    def turn_finished(self, handle: Any, report: TurnReport) -> None:
        model = self._model(report.model)
        self.turns.labels(model, report.finish_reason or "error").inc()
        self.turn_seconds.labels(model).observe(report.duration_s)
        if report.usage.input_tokens:
            self.tokens.labels(model, "input").inc(report.usage.input_tokens)
        if report.usage.output_tokens:
            self.tokens.labels(model, "output").inc(report.usage.output_tokens)
        if report.error is not None and report.error != "cancelled":
            self.upstream_errors.labels(model, report.error).inc()

    def tool_finished(self, handle: Any, report: ToolReport) -> None:
        self.tools.labels(report.sub_tool, report.outcome).inc()
        self.tool_seconds.labels(report.sub_tool).observe(report.duration_s)

    def container_created(self) -> None:
        self.containers_created.inc()

    def container_evicted(self) -> None:
        self.containers_evicted.inc()

    def sandbox_started(self, duration_s: float) -> None:
        self.sandbox_start.observe(duration_s)

    def upstream_retried(self, reason: str) -> None:
        self.upstream_retries.labels(reason).inc()
