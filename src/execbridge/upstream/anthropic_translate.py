"""Neutral ``ChatTurn`` → Anthropic Messages request body. Pure functions, no I/O.

Job: the JSON an Anthropic-native upstream (``POST {base}/v1/messages``: Databricks'
``/serving-endpoints/anthropic``, its AI Gateway, LiteLLM, vLLM, Anthropic itself) takes for one model
turn, carrying the client's request as faithfully as the neutral model holds it: thinking and
redacted thinking with their signatures, ``cache_control`` on system, tools and content blocks,
documents, images, citations, ``metadata``, ``stop_sequences``, ``service_tier`` and ``thinking``.
What differs from the client's own request is the gateway's doing: the code execution server tool is
offered as plain tools with the same sub-tool names and inputs (``ChatTurn.functions``), server calls
and their results in history are ``tool_use`` / ``tool_result`` blocks, and the gateway's system note
is one more system block.

Must not: do HTTP, read settings, or know the client's wire format (``api/``).

Invariants of every payload produced here:
- roles alternate, starting with ``user``; a ``tool_result`` is always in the user message right after
  the assistant message holding its call, before anything else there;
- an assistant turn the gateway split around server results (``[call A, result A, call B, result B]``
  in one neutral message) becomes one assistant message per model turn, each starting with the
  thinking the model produced for it; a new model turn is recognised by a thinking block after a
  result, otherwise calls after results are put back in the turn they came from;
- no empty or whitespace-only text block, and no message without content;
- thinking blocks go back byte for byte (text and signature, or redacted data).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Final

from execbridge.types import (
    CacheControl,
    ContainerUpload,
    Document,
    FunctionDef,
    Image,
    Message,
    ServerToolResult,
    Text,
    Thinking,
    ThinkingConfig,
    ToolCall,
    ToolResult,
)
from execbridge.upstream.base import ChatTurn, FunctionChoice

__all__ = ["build_messages_payload", "has_call_only_turn", "to_messages", "to_system", "to_tool_choice", "to_tools"]

JSON = dict[str, Any]
EMPTY_SCHEMA: Final[Mapping[str, Any]] = {"type": "object", "properties": {}}


def build_messages_payload(turn: ChatTurn, *, stream: bool | None = None, text_in_call_turns: bool = False) -> JSON:
    """The complete ``/v1/messages`` body for one model turn (``stream`` defaults to ``turn.stream``).

    ``text_in_call_turns`` gives an assistant message that only calls tools an empty text block: for
    upstreams that translate to Chat Completions and then miss the message's ``content`` (LiteLLM in
    front of llama-cpp-python), learnt from their refusal; Anthropic itself refuses empty text."""
    messages = to_messages(turn.messages)
    if text_in_call_turns:
        messages = [_with_text(m) if m["role"] == "assistant" else m for m in messages]
    payload: JSON = {"model": turn.model, "max_tokens": turn.max_tokens, "messages": messages}
    system = to_system(turn)
    if system:
        payload["system"] = system
    if turn.functions:
        payload["tools"] = to_tools(turn.functions)
        choice = to_tool_choice(turn.function_choice, turn.parallel_calls)
        if choice is not None:
            payload["tool_choice"] = choice
    if turn.stop:
        payload["stop_sequences"] = list(turn.stop)
    sampling = turn.sampling
    if sampling.temperature is not None:
        payload["temperature"] = sampling.temperature
    if sampling.top_p is not None:
        payload["top_p"] = sampling.top_p
    if sampling.top_k is not None:
        payload["top_k"] = sampling.top_k
    if turn.user:
        payload["metadata"] = {"user_id": turn.user}
    if turn.thinking is not None:
        payload["thinking"] = _thinking(turn.thinking)
    if turn.service_tier is not None:
        payload["service_tier"] = turn.service_tier
    if turn.stream if stream is None else stream:
        payload["stream"] = True
    return payload


def has_call_only_turn(payload: JSON) -> bool:
    """Whether an assistant message of ``payload`` calls tools and says nothing."""
    return any(
        m["role"] == "assistant"
        and any(b["type"] == "tool_use" for b in m["content"])
        and not any(b["type"] == "text" for b in m["content"])
        for m in payload["messages"]
    )


def _with_text(message: JSON) -> JSON:
    blocks = message["content"]
    if any(b["type"] == "text" for b in blocks) or not any(b["type"] == "tool_use" for b in blocks):
        return message
    at = next(i for i, b in enumerate(blocks) if b["type"] == "tool_use")  # after any thinking
    return {**message, "content": [*blocks[:at], {"type": "text", "text": ""}, *blocks[at:]]}


def _thinking(config: ThinkingConfig) -> JSON:
    out: JSON = {"type": config.type}
    if config.budget_tokens is not None:
        out["budget_tokens"] = config.budget_tokens
    if config.display is not None:
        out["display"] = config.display
    return out


def _with_cache(block: JSON, cache_control: CacheControl | None) -> JSON:
    if cache_control is not None:
        cc: JSON = {"type": cache_control.type}
        if cache_control.ttl is not None:
            cc["ttl"] = cache_control.ttl
        block["cache_control"] = cc
    return block


# ---------------------------------------------------------------- system, tools, tool_choice


def to_system(turn: ChatTurn) -> str | list[JSON]:
    """The system prompt: text blocks when one carries a cache breakpoint, else one string.

    Both mean the same to Anthropic; the string is what upstreams that translate to Chat Completions
    take (LiteLLM's ``/v1/messages`` passes blocks on as a list, which llama-cpp-python refuses)."""
    blocks = [b for b in turn.system_blocks if b.text]
    if any(b.cache_control is not None for b in blocks):
        return [_with_cache({"type": "text", "text": b.text}, b.cache_control) for b in blocks]
    if blocks:
        return "\n\n".join(b.text for b in blocks)
    return turn.system if turn.system and turn.system.strip() else ""


def to_tools(functions: Iterable[FunctionDef]) -> list[JSON]:
    tools: list[JSON] = []
    for fn in functions:
        tool: JSON = {"name": fn.name}
        if fn.description:
            tool["description"] = fn.description
        tool["input_schema"] = dict(fn.parameters) if fn.parameters else dict(EMPTY_SCHEMA)
        tools.append(_with_cache(tool, fn.cache_control))
    return tools


def to_tool_choice(choice: FunctionChoice | None, parallel_calls: bool | None = None) -> JSON | None:
    """Anthropic's ``tool_choice``; ``parallel_calls=False`` becomes ``disable_parallel_tool_use``."""
    if choice is None and parallel_calls is not False:
        return None
    mode = choice.mode if choice is not None else "auto"
    out: JSON
    if mode == "required":
        out = {"type": "any"}
    elif mode == "function":
        if choice is None or not choice.name:
            raise ValueError("FunctionChoice(mode='function') needs a name")
        out = {"type": "tool", "name": choice.name}
    else:
        out = {"type": mode}
    if parallel_calls is False and mode != "none":
        out["disable_parallel_tool_use"] = True
    return out


# ---------------------------------------------------------------- messages


def to_messages(messages: Iterable[Message]) -> list[JSON]:
    """The conversation as alternating Anthropic messages (see the module invariants)."""
    out: list[JSON] = []
    for message in messages:
        if message.role == "user":
            _append(out, "user", _user_blocks(message.parts))
        else:
            for assistant, results in _model_turns(message.parts):
                _append(out, "assistant", assistant)
                _append(out, "user", results)
    return out


def _append(out: list[JSON], role: str, blocks: list[JSON]) -> None:
    """Add ``blocks`` as a ``role`` message, joining the previous one when it has the same role (tool
    results stay in front of whatever the client's own next user turn says)."""
    if not blocks:
        return
    if out and out[-1]["role"] == role:
        out[-1]["content"].extend(blocks)
    else:
        out.append({"role": role, "content": blocks})


def _user_blocks(parts: Iterable[object]) -> list[JSON]:
    results: list[JSON] = []
    others: list[JSON] = []
    for part in parts:
        if isinstance(part, ToolResult):
            results.append(_tool_result(part))
        else:
            block = _content_block(part)
            if block is not None:
                others.append(block)
    return results + others  # Anthropic wants the results first in their message


def _model_turns(parts: Iterable[object]) -> list[tuple[list[JSON], list[JSON]]]:
    """An assistant message as ``(assistant blocks, result blocks)`` per model turn.

    Results inline in an assistant message (the gateway's own history: server results follow their
    calls) move to the user message after the turn. A thinking block after a result opens the next
    model turn (every turn the model thought in starts with its thinking); anything else after a
    result belongs to the turn it came from.
    """
    turns: list[tuple[list[JSON], list[JSON]]] = [([], [])]
    for part in parts:
        assistant, results = turns[-1]
        if isinstance(part, ToolResult):
            results.append(_tool_result(part))
        elif isinstance(part, Thinking) and results:
            turns.append(([_thinking_block(part)], []))
        else:
            block = _content_block(part)
            if block is not None:
                assistant.append(block)
    return turns


def _thinking_block(part: Thinking) -> JSON:
    if part.data is not None:
        return {"type": "redacted_thinking", "data": part.data}
    return {"type": "thinking", "thinking": part.text, "signature": part.signature}


def _content_block(part: object) -> JSON | None:
    match part:
        case Text(text=text, cache_control=cache_control, citations=citations):
            if not text.strip():
                return None  # refused by Anthropic; carries nothing
            block: JSON = {"type": "text", "text": text}
            if citations:
                block["citations"] = [dict(c) for c in citations]
            return _with_cache(block, cache_control)
        case Image():
            return _image(part)
        case Document():
            return _document(part)
        case Thinking():
            return _thinking_block(part)
        case ToolCall(id=id_, name=name, input=input_, cache_control=cache_control):
            return _with_cache({"type": "tool_use", "id": id_, "name": name, "input": dict(input_)}, cache_control)
        case ContainerUpload():
            return None  # placed in the container already; the history says where (``engine/history.py``)
        case ServerToolResult():
            raise TypeError("ServerToolResult must be rendered to a ToolResult before reaching the upstream")
        case _:
            raise TypeError(f"cannot send {type(part).__name__} upstream")


def _image(image: Image) -> JSON | None:
    if image.data:
        source: JSON = {"type": "base64", "media_type": image.media_type or "image/png", "data": image.data}
    elif image.url:
        source = {"type": "url", "url": image.url}
    else:
        return None
    return _with_cache({"type": "image", "source": source}, image.cache_control)


def _document(doc: Document) -> JSON | None:
    if doc.text is not None:
        source: JSON = {"type": "text", "media_type": "text/plain", "data": doc.text}
    elif doc.data:
        source = {"type": "base64", "media_type": doc.media_type or "application/pdf", "data": doc.data}
    elif doc.url:
        source = {"type": "url", "url": doc.url}
    else:
        return None
    block: JSON = {"type": "document", "source": source}
    if doc.title is not None:
        block["title"] = doc.title
    if doc.context is not None:
        block["context"] = doc.context
    if doc.citations is not None:
        block["citations"] = {"enabled": doc.citations}
    return _with_cache(block, doc.cache_control)


def _tool_result(result: ToolResult) -> JSON:
    content: list[JSON] = []
    for part in result.content:
        block = _content_block(part)
        if block is not None:
            content.append(block)
    out: JSON = {"type": "tool_result", "tool_use_id": result.tool_use_id}
    if content:
        out["content"] = content
    if result.is_error:
        out["is_error"] = True
    return _with_cache(out, result.cache_control)
