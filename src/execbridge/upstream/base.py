"""The upstream model interface: one streaming call per model turn, neutral in and out.

An ``Upstream`` takes a ``ChatTurn`` (the conversation so far, the functions offered, generation
parameters) and yields ``UpstreamEvent``s. Non-streaming upstream calls are turned into the same event
sequence, so the engine has exactly one path. Implementations raise ``errors.UpstreamError`` subclasses;
they never return HTTP or JSON shapes to callers.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

from execbridge.types import FunctionDef, Message, Sampling, Text, ThinkingConfig


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

    ``system`` is the whole system prompt as one string; ``system_blocks`` the same prompt as blocks
    with their cache breakpoints (the gateway's note is one of them), for upstreams that take blocks.
    ``thinking``, ``service_tier`` and ``betas`` are for upstreams that speak Anthropic's Messages API;
    the others leave them out.
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
    system_blocks: tuple[Text, ...] = ()
    thinking: ThinkingConfig | None = None  # the client's extended-thinking setting (docs/protocol.md §4.10)
    service_tier: str | None = None
    betas: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class TextDelta:
    text: str


@dataclass(frozen=True, slots=True)
class ReasoningDelta:
    text: str
    signature: str | None = None


@dataclass(frozen=True, slots=True)
class RedactedReasoning:
    """A whole redacted reasoning block: encrypted, passed back to the upstream unchanged."""

    data: str


@dataclass(frozen=True, slots=True)
class CitationDelta:
    """A citation for the text block being streamed (the upstream's own citation object)."""

    citation: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class BlockEnd:
    """The upstream closed the block it was streaming (upstreams with explicit blocks send this, so a
    block can finish, signature and all, before the next one starts or the turn ends)."""


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
    """The turn's usage as the upstream counts it: OpenAI-style upstreams include cached tokens in
    ``prompt_tokens``; Anthropic-style ones count them apart (``cached_tokens`` read from the cache,
    ``cache_creation_tokens`` written to it)."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0
    cache_creation_tokens: int = 0


UpstreamEvent = (
    TextDelta | ReasoningDelta | RedactedReasoning | CitationDelta | BlockEnd | ToolCallDelta | Finished | TokenUsage
)


class Upstream(Protocol):
    """A model server: Chat Completions (``openai_chat``) or Anthropic Messages (``anthropic_messages``)."""

    def stream_turn(self, turn: ChatTurn) -> AsyncGenerator[UpstreamEvent, None]:
        """Run one model turn. Cancelling the iteration closes the upstream connection."""
        ...

    async def aclose(self) -> None: ...


@runtime_checkable
class TokenCounter(Protocol):
    """An upstream that may count a turn's input tokens itself (Anthropic's ``count_tokens``)."""

    async def count_tokens(self, turn: ChatTurn) -> int | None:
        """The input tokens of ``turn`` as the upstream counts them; ``None`` when it does not count
        them (for this model): the caller estimates instead."""
        ...


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


class GatewayUpstream(Upstream, ModelCatalog, Protocol):
    """What the gateway serves with: model turns, the model list, and where the upstream is."""

    @property
    def base_url(self) -> str: ...


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
