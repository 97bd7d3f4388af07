"""The upstream model interface: one streaming call per model turn, neutral in and out.

An ``Upstream`` takes a ``ChatTurn`` (the conversation so far, the functions offered, generation
parameters) and yields ``UpstreamEvent``s. Non-streaming upstream calls are turned into the same event
sequence, so the engine has exactly one path. Implementations raise ``errors.UpstreamError`` subclasses;
they never return HTTP or JSON shapes to callers.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from dataclasses import dataclass, field
from typing import Literal, Protocol

from execbridge.types import FunctionDef, Message, Sampling, ThinkingConfig


@dataclass(frozen=True, slots=True)
class FunctionChoice:
    """Which functions the model may or must call: ``auto``, ``required``, ``none`` or one by name."""

    mode: Literal["auto", "required", "none", "function"] = "auto"
    name: str | None = None


@dataclass(frozen=True, slots=True)
class ChatTurn:
    """Everything one upstream call needs.

    ``messages`` may contain ``ToolCall`` parts (assistant) and ``ToolResult`` parts (the results, in
    the order the calls were made, anywhere after their call). Server tool results have already been
    rendered to text by the tools layer, so the upstream never sees ``ServerToolResult``.
    """

    model: str
    messages: tuple[Message, ...]
    max_tokens: int
    system: str | None = None
    functions: tuple[FunctionDef, ...] = ()
    function_choice: FunctionChoice | None = None
    parallel_calls: bool | None = None
    stop: tuple[str, ...] = ()
    sampling: Sampling = field(default_factory=Sampling)
    user: str | None = None
    stream: bool = True
    api_key: str | None = None  # the client's own key, when the gateway passes it through
    thinking: ThinkingConfig | None = None  # the client's extended-thinking setting (docs/protocol.md §4.10)


@dataclass(frozen=True, slots=True)
class TextDelta:
    text: str


@dataclass(frozen=True, slots=True)
class ReasoningDelta:
    text: str
    signature: str | None = None


@dataclass(frozen=True, slots=True)
class ToolCallDelta:
    """A piece of a function call. ``id`` and ``name`` come with the first piece of each ``index``."""

    index: int
    id: str | None = None
    name: str | None = None
    arguments: str = ""


FinishReason = Literal["stop", "length", "tool_calls", "content_filter"]


@dataclass(frozen=True, slots=True)
class Finished:
    """The turn is over. ``stop_sequence`` is set when the upstream says which one matched."""

    reason: FinishReason
    stop_sequence: str | None = None


@dataclass(frozen=True, slots=True)
class TokenUsage:
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0


UpstreamEvent = TextDelta | ReasoningDelta | ToolCallDelta | Finished | TokenUsage


class Upstream(Protocol):
    """A Chat-Completions-speaking model server."""

    def stream_turn(self, turn: ChatTurn) -> AsyncGenerator[UpstreamEvent, None]:
        """Run one model turn. Cancelling the iteration closes the upstream connection."""
        ...

    async def aclose(self) -> None: ...


@dataclass(frozen=True, slots=True)
class ModelInfo:
    """One model (or Databricks serving endpoint) the upstream offers, under its upstream name."""

    id: str
    created: int | None = None  # epoch seconds, when the upstream says


class ModelCatalog(Protocol):
    """What the upstream offers; ``api_key`` is the client's own key when the gateway passes it through."""

    async def list_models(self, api_key: str | None = None) -> list[ModelInfo]: ...

    def upstream_model(self, name: str) -> str:
        """The upstream's name for what a client calls ``name``."""
        ...


class Credentials(Protocol):
    """A credential the gateway holds for the upstream (a fixed key, or Databricks' unified auth).

    ``authorization()`` is called once per upstream request: it must be cheap when nothing needs
    refreshing and must never block the event loop (refreshes run on a thread, within a bound).
    """

    async def authorization(self) -> str:
        """The ``Authorization`` header value to send now; raises ``UpstreamError`` if none can be had."""
        ...

    def invalidate(self) -> None:
        """The upstream refused the current value: the next ``authorization()`` fetches a fresh one."""
        ...
