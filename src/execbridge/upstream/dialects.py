"""What each OpenAI-compatible server accepts beyond the common Chat Completions core: ``Dialect``.

Job: hold the per-provider differences as values (``max_tokens`` vs ``max_completion_tokens``,
``stream_options``, ``parallel_tool_calls``, ``top_k``, one tool call per assistant message), guess the
right preset from the base URL and model (``dialect_for``), name the presets a configuration may force
(``forced_dialect``), and learn from a 400 which flag to flip (``adapt``).

Must not: do HTTP, read settings, or build payloads (``translate.py`` reads a ``Dialect``; it does not
choose one).

Invariants: each rule is written once: the Azure host test (``is_azure_host``, also used for the key
header) and Databricks' gpt-oss rule (``databricks_dialect``, used by the guess and by the forced
preset). ``adapt`` flips one flag per refusal and never flips it back, except the token-limit field,
which it switches only when that very field is refused; the client bounds the resends.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Literal
from urllib.parse import urlsplit

from execbridge.errors import UpstreamError
from execbridge.upstream.base import ChatTurn

__all__ = [
    "AZURE",
    "DATABRICKS",
    "DATABRICKS_GPT_OSS",
    "GENERIC",
    "LITELLM",
    "OLLAMA",
    "OPENAI",
    "PRESETS",
    "VLLM",
    "Dialect",
    "adapt",
    "databricks_dialect",
    "dialect_for",
    "forced_dialect",
    "is_azure_host",
]


@dataclass(frozen=True, slots=True)
class Dialect:
    """What one provider (or one model on it) accepts beyond the common Chat Completions core."""

    max_tokens_field: Literal["max_tokens", "max_completion_tokens"] = "max_tokens"
    stream_options_supported: bool = True
    # gpt-oss on Databricks answers 400 "Multiple tool calls are not supported." for any history
    # holding an assistant message with more than one tool call.
    one_tool_call_per_message: bool = False
    supports_top_k: bool = False
    send_parallel_tool_calls: bool = True


GENERIC = Dialect()
# OpenAI deprecated max_tokens, and its o-series and gpt-5 models reject it outright.
OPENAI = Dialect(max_tokens_field="max_completion_tokens")
# Azure OpenAI follows OpenAI's parameters (api-key header and api-version are the client's business).
AZURE = Dialect(max_tokens_field="max_completion_tokens")
VLLM = Dialect(supports_top_k=True)
# Ollama's OpenAI layer ignores parallel_tool_calls; leaving it out keeps its logs quiet.
OLLAMA = Dialect(send_parallel_tool_calls=False)
# LiteLLM's proxy translates the OpenAI core for every backend it fronts; top_k is not in that core.
LITELLM = Dialect()
# parallel_tool_calls is not in the parameter list Databricks documents; leave it out rather than
# risk a 400 on an endpoint that validates strictly.
DATABRICKS = Dialect(send_parallel_tool_calls=False)
DATABRICKS_GPT_OSS = Dialect(send_parallel_tool_calls=False, one_tool_call_per_message=True)

# Names a configuration may use to force a preset (``upstream_dialect``); "auto" means ``dialect_for``.
PRESETS: Mapping[str, Dialect] = {
    "generic": GENERIC,
    "openai": OPENAI,
    "azure": AZURE,
    "vllm": VLLM,
    "ollama": OLLAMA,
    "litellm": LITELLM,
    "databricks": DATABRICKS,
}

# OpenAI reasoning models (o1, o3-mini, o4-mini, gpt-5…) take max_completion_tokens wherever they are
# served through OpenAI's own API shape (Azure, a LiteLLM proxy, …).
_REASONING_MODEL = re.compile(r"^(?:.*/)?(?:o\d|gpt-5)(?:$|[-.])")
_AZURE_HOSTS = (".openai.azure.com", ".cognitiveservices.azure.com")
# Words with which servers say a parameter is not accepted (OpenAI "Unsupported parameter",
# "Unrecognized request argument", vLLM/pydantic "Extra inputs are not permitted", Databricks "not
# supported"). A value error ("max_tokens must be at most …") carries none of them.
_UNSUPPORTED = ("unsupported", "not supported", "unrecognized", "unknown", "not permitted", "extra input")


def is_azure_host(url: str) -> bool:
    """Whether ``url`` is an Azure OpenAI (or AI Services) endpoint."""
    return (urlsplit(url).hostname or "").lower().endswith(_AZURE_HOSTS)


def databricks_dialect(model: str) -> Dialect:
    """Databricks' dialect for one (upstream) model: gpt-oss takes one tool call per assistant message."""
    return DATABRICKS_GPT_OSS if "gpt-oss" in model.lower() else DATABRICKS


def dialect_for(base_url: str, model: str) -> Dialect:
    """Guess the dialect from where the upstream lives and which (upstream) model is asked for.

    A wrong guess is not fatal: ``OpenAIChatUpstream`` adapts when the upstream names a parameter
    it rejects (``max_tokens``/``max_completion_tokens``, ``stream_options``, several calls per message).
    """
    url = base_url.lower()
    if "/serving-endpoints" in url or "databricks" in url:
        return databricks_dialect(model)
    if "api.openai.com" in url:
        return OPENAI
    if is_azure_host(url):
        return AZURE
    parts = urlsplit(url)
    base = VLLM if parts.port == 8000 or "vllm" in url else OLLAMA if parts.port == 11434 or "ollama" in url else None
    if base is None:
        base = LITELLM if parts.port == 4000 or "litellm" in url else GENERIC
    if _REASONING_MODEL.match(model.lower()):
        return replace(base, max_tokens_field="max_completion_tokens")
    return base


def forced_dialect(name: str) -> Dialect | Callable[[str], Dialect] | None:
    """The ``upstream_dialect`` setting: ``auto`` guesses per model; Databricks keeps its gpt-oss rule."""
    if name == "auto":
        return None
    if name == "databricks":
        return databricks_dialect
    return PRESETS[name]


def adapt(dialect: Dialect, error: UpstreamError, turn: ChatTurn) -> Dialect | None:
    """The dialect that avoids what a 400 complains about, or ``None`` if it is about something else."""
    message = error.message.lower()
    if "multiple tool calls" in message and not dialect.one_tool_call_per_message:
        return replace(dialect, one_tool_call_per_message=True)
    # Optional extras we only ever send with valid values: a 400 naming one, however worded, means
    # the endpoint does not take it, and leaving it out loses little.
    if "stream_options" in message and turn.stream and dialect.stream_options_supported:
        return replace(dialect, stream_options_supported=False)
    if "parallel_tool_calls" in message and dialect.send_parallel_tool_calls and turn.parallel_calls is False:
        return replace(dialect, send_parallel_tool_calls=False)
    if "top_k" in message and dialect.supports_top_k and turn.sampling.top_k is not None:
        return replace(dialect, supports_top_k=False)
    # The token limit carries a client's value: switch fields only when the field itself is refused.
    if not any(word in message for word in _UNSUPPORTED):
        return None
    if "max_completion_tokens" in message and dialect.max_tokens_field == "max_completion_tokens":
        return replace(dialect, max_tokens_field="max_tokens")
    if "max_tokens" in message and dialect.max_tokens_field == "max_tokens":
        return replace(dialect, max_tokens_field="max_completion_tokens")
    return None
