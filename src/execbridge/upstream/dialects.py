"""What each OpenAI-compatible server accepts beyond the common Chat Completions core: ``Dialect``.

Job: hold the per-provider differences as values (``max_tokens`` vs ``max_completion_tokens``,
``stream_options``, ``parallel_tool_calls``, ``top_k``, one tool call per assistant message, how a
call-only assistant message says it has no text, ``tool_choice: "required"``, streaming a turn whose
model may choose to call, ``file`` parts, ``thinking``), guess the right preset from the base URL and model
(``dialect_for``), name the presets a configuration may force (``forced_dialect``), and learn from a
refusal which flag to flip (``adapt``; docs/protocol.md §4.9).

Must not: do HTTP, read settings, or build payloads (``translate.py`` reads a ``Dialect``; it does not
choose one).

Invariants: each rule is written once: the Azure host test (``is_azure_host``, also used for the key
header) and Databricks' gpt-oss rule (``databricks_dialect``, used by the guess and by the forced
preset). ``adapt`` flips one flag per refusal and never flips it back, except the token-limit field
and the empty-content form, which it switches only when that very form is refused; the client bounds
the resends.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Literal
from urllib.parse import urlsplit

from execbridge.errors import UpstreamError
from execbridge.types import Document, Message, Text, ToolCall, ToolResult
from execbridge.upstream.base import ChatTurn
from execbridge.upstream.error_envelopes import gave_no_reason

__all__ = [
    "AZURE",
    "DATABRICKS",
    "DATABRICKS_CLAUDE",
    "DATABRICKS_GPT_OSS",
    "GENERIC",
    "LITELLM",
    "LLAMA_CPP",
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
    # What an assistant message that only carries tool calls has as ``content``. llama-cpp-python's
    # server refuses null (its schema wants a string) and fails on a missing key (its chat templates read
    # ``message.content``); Databricks refuses empty text. OpenAI, vLLM and Ollama take either.
    empty_call_content: Literal["", None] = ""
    # llama-cpp-python's function-calling chat format implements "auto" and a named function only.
    # Without "required", one function is named instead and several become "auto" (a weaker ask).
    tool_choice_required: bool = True
    # llama-cpp-python cannot stream a turn in which the model chooses between text and a call
    # (tool_choice "auto"): its stream ends empty. Such turns are then asked for unstreamed, which the
    # client reads into the same events.
    stream_chosen_calls: bool = True
    # OpenAI's {"type": "file"} part (PDFs); servers without it get the PDF's text, extracted by the
    # gateway (``pdf_text.py``), or a sentence naming the document when it has no text to extract.
    file_parts: bool = True
    # Anthropic's ``thinking`` object is a request field, and the model's reasoning goes back in assistant
    # messages as ``reasoning`` parts with their signatures (Databricks' Claude endpoints; §4.10).
    # Elsewhere a request that asks for thinking is refused rather than served without it.
    thinking: bool = False
    # Chat Completions' ``reasoning_effort`` (OpenAI's reasoning models); learnt off where refused.
    reasoning_effort: bool = True


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
# risk a 400 on an endpoint that validates strictly. Its Chat Completions route takes no ``file`` parts.
DATABRICKS = Dialect(send_parallel_tool_calls=False, empty_call_content=None, file_parts=False)
DATABRICKS_GPT_OSS = replace(DATABRICKS, one_tool_call_per_message=True)
# Databricks documents ``thinking`` (with ``budget_tokens``) for its Claude endpoints on this route.
DATABRICKS_CLAUDE = replace(DATABRICKS, thinking=True)
# llama-cpp-python's server (``python -m llama_cpp.server``, 0.3.x) with a function-calling chat format.
# Not guessed (it listens on :8000 like vLLM); the guess reaches the same flags by adapting.
LLAMA_CPP = Dialect(tool_choice_required=False, stream_chosen_calls=False, file_parts=False)

# Names a configuration may use to force a preset (``upstream_dialect``); "auto" means ``dialect_for``.
PRESETS: Mapping[str, Dialect] = {
    "generic": GENERIC,
    "openai": OPENAI,
    "azure": AZURE,
    "vllm": VLLM,
    "ollama": OLLAMA,
    "litellm": LITELLM,
    "llama-cpp": LLAMA_CPP,
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
# How servers say a string was expected (pydantic, JSON schema, OpenAI) and that text may not be empty.
_WANTS_STRING = ("valid string", "string_type", "not of type 'string'", "must be a string", "expected a string")
_WANTS_TEXT = ("empty", "non-whitespace")
_NO_CONTENT = "has no attribute 'content'"  # a Jinja chat template reading a message without one


def is_azure_host(url: str) -> bool:
    """Whether ``url`` is an Azure OpenAI (or AI Services) endpoint."""
    return (urlsplit(url).hostname or "").lower().endswith(_AZURE_HOSTS)


def databricks_dialect(model: str) -> Dialect:
    """Databricks' dialect for one (upstream) model: gpt-oss takes one tool call per assistant message,
    Claude takes ``thinking``."""
    name = model.lower()
    if "gpt-oss" in name:
        return DATABRICKS_GPT_OSS
    return DATABRICKS_CLAUDE if "claude" in name else DATABRICKS


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
    """The dialect that avoids what a refusal complains about, or ``None`` if it is about something else.

    Refusals are 400 and 422, and 500 where llama-cpp-python reports request validation and forms it
    does not implement; a stream that ended before saying anything is one too when it may come from a
    server that cannot stream the turn's form (docs/protocol.md §4.9).
    """
    if error.code == "stream_truncated":
        if turn.stream and dialect.stream_chosen_calls and _lets_model_choose(turn):
            return replace(dialect, stream_chosen_calls=False)
        return None
    if error.status not in (400, 422, 500):
        return None
    message = error.message.lower()
    if error.status == 500:
        return _adapt_to_500(dialect, message, error, turn)
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
    if "reasoning_effort" in message and dialect.reasoning_effort and turn.sampling.reasoning_effort is not None:
        return replace(dialect, reasoning_effort=False)
    if "tool_choice" in message and _asks_required(turn, dialect):
        return replace(dialect, tool_choice_required=False)
    adapted = _adapt_to_shape(dialect, message, turn)
    if adapted is not None:
        return adapted
    # The token limit carries a client's value: switch fields only when the field itself is refused.
    if not any(word in message for word in _UNSUPPORTED):
        return None
    if "max_completion_tokens" in message and dialect.max_tokens_field == "max_completion_tokens":
        return replace(dialect, max_tokens_field="max_tokens")
    if "max_tokens" in message and dialect.max_tokens_field == "max_tokens":
        return replace(dialect, max_tokens_field="max_completion_tokens")
    return None


def _adapt_to_500(dialect: Dialect, message: str, error: UpstreamError, turn: ChatTurn) -> Dialect | None:
    # A 500 is normally the server's own failure, so only what names our request's shape counts:
    # llama-cpp-python's pydantic report ("N validation errors: …") or its template missing a content,
    # and the bare 500 its chatml-function-calling format answers to tool_choice "required" (an
    # assertion without words, which LiteLLM wraps in words of its own).
    if "validation error" in message or _NO_CONTENT in message:
        return _adapt_to_shape(dialect, message, turn)
    if gave_no_reason(error) and _asks_required(turn, dialect):
        return replace(dialect, tool_choice_required=False)
    return None


def _adapt_to_shape(dialect: Dialect, message: str, turn: ChatTurn) -> Dialect | None:
    """Refusals of how a part of the conversation is written: file parts, call-only assistant content."""
    # First, since llama-cpp-python's report on a file part also says "content … valid string".
    if dialect.file_parts and "'file'" in message and _has(turn, _file_part):
        return replace(dialect, file_parts=False)
    if "content" not in message or not _has(turn, _call_only):
        return None
    # Null must be named: a list where a string was wanted is refused in the same words. LiteLLM drops
    # a null content, and the server's chat template then misses it.
    null_named = "none" in message or "null" in message
    refused_null = (null_named and any(w in message for w in _WANTS_STRING)) or _NO_CONTENT in message
    if dialect.empty_call_content is None and refused_null:
        return replace(dialect, empty_call_content="")
    if dialect.empty_call_content == "" and any(w in message for w in _WANTS_TEXT):
        return replace(dialect, empty_call_content=None)
    return None


def _asks_required(turn: ChatTurn, dialect: Dialect) -> bool:
    choice = turn.function_choice
    return bool(turn.functions) and choice is not None and choice.mode == "required" and dialect.tool_choice_required


def _lets_model_choose(turn: ChatTurn) -> bool:
    """Whether the turn is sent with tool_choice "auto" (or "required", which may become "auto")."""
    choice = turn.function_choice
    return bool(turn.functions) and choice is not None and choice.mode in ("auto", "required")


def _has(turn: ChatTurn, test: Callable[[Message], bool]) -> bool:
    return any(test(message) for message in turn.messages)


def _file_part(message: Message) -> bool:
    """A document that ``translate`` sends as a ``file`` part (PDF data, not text)."""
    return any(
        isinstance(p, Document) and p.data and p.text is None and not (p.media_type or "").startswith("text/")
        for p in message.parts
    )


def _call_only(message: Message) -> bool:
    """Whether ``translate`` makes an assistant message of calls without text from ``message``: its
    messages end at each result, and one with calls and only blank text has empty content."""
    if message.role != "assistant":
        return False
    text, calls = "", False
    for part in message.parts:
        if isinstance(part, Text):
            text += part.text
        elif isinstance(part, ToolCall):
            calls = True
        elif isinstance(part, ToolResult):
            if calls and not text.strip():
                return True
            text, calls = "", False
    return calls and not text.strip()
