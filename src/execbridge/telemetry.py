"""Telemetry: what the gateway reports about its own work, and the one object the working code reports to.

The app's edge (each request), the engine (each model turn and each tool execution, ``engine/observed.py``),
the container manager (containers made, evicted, started) and the upstream clients (retries) call
``Telemetry``'s hooks at the places that already time things. Sinks (``observability/``) turn the calls
into Prometheus metrics, OpenTelemetry or MLflow spans and usage per key. With no sink every hook returns
at once, and the engine does not even wrap its streams (``Telemetry.enabled``).

Must not: import a third-party library (the sinks do), or carry a key or any request or program content.
``owner`` is a key's id or digest (``keys.key_id``), safe to store; sinks that label metrics never use it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from execbridge.types import Usage


@dataclass(frozen=True, slots=True)
class RequestReport:
    """One HTTP request, answered in full. ``route`` is the route's template (``/v1/files/{file_id}``), or
    ``unmatched``; ``model`` and ``owner`` are set where the request named them."""

    request_id: str
    method: str
    route: str
    status: int | None
    duration_s: float
    model: str | None = None
    owner: str | None = None


@dataclass(frozen=True, slots=True)
class TurnReport:
    """One upstream model turn. ``finish_reason`` is the upstream's (``stop``, ``tool_calls``, …);
    ``error`` the error's class name when the turn failed (``None``: it finished)."""

    model: str
    owner: str
    duration_s: float
    usage: Usage
    finish_reason: str | None
    error: str | None = None


@dataclass(frozen=True, slots=True)
class ToolReport:
    """One server tool execution. ``outcome`` is ``ok``, ``nonzero_exit`` (a program that failed: data,
    not an error) or the tool's error code (``execution_time_exceeded``, ``unavailable``, …)."""

    sub_tool: str
    call_id: str
    container_id: str
    owner: str
    duration_s: float
    outcome: str
    exit_code: int | None = None


class Sink:
    """Receives the reports; every hook does nothing unless a sink overrides it.

    ``*_started`` hooks return a handle (a span, say) that the matching ``*_finished`` hook gets back.
    """

    def request_started(self, request_id: str, method: str, path: str) -> Any:
        return None

    def request_finished(self, handle: Any, report: RequestReport) -> None:
        return None

    def turn_started(self, model: str) -> Any:
        return None

    def turn_finished(self, handle: Any, report: TurnReport) -> None:
        return None

    def tool_started(self, sub_tool: str, call_id: str, container_id: str) -> Any:
        return None

    def tool_finished(self, handle: Any, report: ToolReport) -> None:
        return None

    def container_created(self) -> None:
        return None

    def container_evicted(self) -> None:
        return None

    def sandbox_started(self, duration_s: float) -> None:
        """A container's sandbox started (a cold start for a request, or a spare made ahead)."""
        return None

    def upstream_retried(self, reason: str) -> None:
        """The upstream client is about to retry a turn; ``reason`` is an HTTP status or ``transport``."""
        return None

    async def flush(self) -> None:
        """Write what the sink holds (usage totals) to where it keeps it."""
        return None

    async def aclose(self) -> None:
        return None


class Telemetry:
    """The sinks, as one: each hook goes to every sink in order."""

    def __init__(self, sinks: Sequence[Sink] = ()) -> None:
        self.sinks = tuple(sinks)
        self.enabled = bool(self.sinks)

    def request_started(self, request_id: str, method: str, path: str) -> tuple[Any, ...]:
        return tuple(s.request_started(request_id, method, path) for s in self.sinks)

    def request_finished(self, handles: tuple[Any, ...], report: RequestReport) -> None:
        for sink, handle in zip(self.sinks, handles, strict=True):
            sink.request_finished(handle, report)

    def turn_started(self, model: str) -> tuple[Any, ...]:
        return tuple(s.turn_started(model) for s in self.sinks)

    def turn_finished(self, handles: tuple[Any, ...], report: TurnReport) -> None:
        for sink, handle in zip(self.sinks, handles, strict=True):
            sink.turn_finished(handle, report)

    def tool_started(self, sub_tool: str, call_id: str, container_id: str) -> tuple[Any, ...]:
        return tuple(s.tool_started(sub_tool, call_id, container_id) for s in self.sinks)

    def tool_finished(self, handles: tuple[Any, ...], report: ToolReport) -> None:
        for sink, handle in zip(self.sinks, handles, strict=True):
            sink.tool_finished(handle, report)

    def container_created(self) -> None:
        for sink in self.sinks:
            sink.container_created()

    def container_evicted(self) -> None:
        for sink in self.sinks:
            sink.container_evicted()

    def sandbox_started(self, duration_s: float) -> None:
        for sink in self.sinks:
            sink.sandbox_started(duration_s)

    def upstream_retried(self, reason: str) -> None:
        for sink in self.sinks:
            sink.upstream_retried(reason)

    async def flush(self) -> None:
        for sink in self.sinks:
            await sink.flush()

    async def aclose(self) -> None:
        for sink in self.sinks:
            await sink.aclose()


OFF = Telemetry()
"""No sinks: what code built without telemetry (tests, the sandbox host) reports to."""
