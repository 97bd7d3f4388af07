"""``RoutedUpstream``: each model on the route that carries it best, Anthropic-native or Chat Completions.

Job: on a workspace that serves Claude both ways (Databricks: ``/serving-endpoints/anthropic`` and
``/serving-endpoints/chat/completions``), send turns for the models ``native_for`` picks (Claude models)
to the Anthropic-native upstream, which carries thinking signatures, cache breakpoints, documents,
citations and exact usage, and everything else to Chat Completions. When the workspace answers that
the native route does not serve a model (``not_served_natively``: a 404, or a 400/501 that says the
endpoint does not support the Messages API, as provisioned-throughput endpoints may), that model
falls back to Chat Completions, at once for this turn (nothing was output) and from then on.

Must not: fall back after any output, or on a refusal of the request itself (a prefill, a bad
parameter): those are the client's to see. Counting tokens and listing models follow the same routes.
"""

from __future__ import annotations

import logging
import re
from collections.abc import AsyncGenerator, Callable
from contextlib import aclosing
from typing import Final

from execbridge.errors import UpstreamError
from execbridge.upstream.anthropic_messages import AnthropicMessagesUpstream
from execbridge.upstream.base import ChatTurn, ModelInfo, UpstreamEvent
from execbridge.upstream.openai_chat import OpenAIChatUpstream

__all__ = ["RoutedUpstream", "is_claude", "not_served_natively"]

log = logging.getLogger(__name__)

_NOT_SERVED: Final = re.compile(
    r"(not supported|does not support|unsupported|not available|not enabled).*"
    r"(anthropic|messages api|/v1/messages|this endpoint|endpoint type|this route|provisioned throughput)",
    re.IGNORECASE | re.DOTALL,
)


def is_claude(model: str) -> bool:
    """Claude models, by their upstream name (``databricks-claude-sonnet-4-5``, ``claude-opus-4-5``)."""
    return "claude" in model.lower()


def not_served_natively(error: UpstreamError) -> bool:
    """Whether the native route's answer says it does not serve this model (as opposed to refusing
    the request): a 404, or a 400/501 whose words say the endpoint does not take the Messages API."""
    if error.status == 404:
        return True
    return error.status in (400, 501) and _NOT_SERVED.search(error.message) is not None


class RoutedUpstream:
    """Native for the models ``native_for`` picks (by upstream name), Chat Completions for the rest."""

    def __init__(
        self,
        native: AnthropicMessagesUpstream,
        chat: OpenAIChatUpstream,
        *,
        native_for: Callable[[str], bool] = is_claude,
    ) -> None:
        self.native = native
        self.chat = chat
        self._native_for = native_for
        self._chat_only: set[str] = set()  # models the native route said it does not serve

    @property
    def base_url(self) -> str:
        return self.chat.base_url

    def upstream_model(self, name: str) -> str:
        return self.chat.upstream_model(name)

    def route(self, model: str) -> str:
        """``"anthropic"`` or ``"chat"``: where a turn for the client's ``model`` goes now."""
        upstream = self.upstream_model(model)
        return "anthropic" if self._native_for(upstream) and upstream not in self._chat_only else "chat"

    async def stream_turn(self, turn: ChatTurn) -> AsyncGenerator[UpstreamEvent, None]:
        if self.route(turn.model) == "anthropic":
            yielded = False
            try:
                async with aclosing(self.native.stream_turn(turn)) as events:
                    async for event in events:
                        yielded = True
                        yield event
                return
            except UpstreamError as error:
                if yielded or not not_served_natively(error):
                    raise
                model = self.upstream_model(turn.model)
                log.info("%s is not served on the Anthropic route (%s); using Chat Completions", model, error.message)
                self._chat_only.add(model)
        async with aclosing(self.chat.stream_turn(turn)) as events:
            async for event in events:
                yield event

    async def count_tokens(self, turn: ChatTurn) -> int | None:
        if self.route(turn.model) != "anthropic":
            return None
        return await self.native.count_tokens(turn)

    async def list_models(self, api_key: str | None = None) -> list[ModelInfo]:
        return await self.chat.list_models(api_key)

    async def aclose(self) -> None:
        try:
            await self.native.aclose()
        finally:
            await self.chat.aclose()
