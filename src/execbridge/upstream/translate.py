"""Neutral ``ChatTurn`` → Chat Completions request body. Pure functions, no I/O.

Job: turn the conversation model of ``types.py`` into the JSON payload (a plain ``dict``) an
OpenAI-compatible ``POST /chat/completions`` accepts, with per-provider differences carried by a
``Dialect`` value (``dialects.py``) rather than by ``if provider == …`` branches scattered through the
code.

Must not: do HTTP, read settings, or know about Anthropic's wire format (that lives in ``api/``).

Invariants of every payload produced here (Databricks rejects violations of the first three):
- no empty or whitespace-only text content, string or part;
- every function has a ``parameters`` object (at least ``{"type":"object","properties":{}}``);
- every ``tool`` message directly follows the assistant message (or run of tool messages) that made
  the call it answers, in the order the results appear in the conversation;
- ``Thinking`` parts go upstream only as Databricks-style ``reasoning`` parts, where the dialect takes
  ``thinking`` and the turn asks for it (docs/protocol.md §4.10); ``ContainerUpload`` parts are side
  effects, not content;
- an assistant message with calls and no text has the dialect's empty content (``""``, or null for
  Databricks), never a missing key: llama-cpp-python refuses null and its templates fail on a missing
  key (docs/protocol.md §4.9).
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterable, Mapping
from typing import Any

import orjson

from execbridge.errors import InvalidRequest
from execbridge.types import (
    ContainerUpload,
    Document,
    FunctionDef,
    Image,
    Message,
    ServerToolResult,
    Text,
    Thinking,
    ToolCall,
    ToolResult,
)
from execbridge.upstream.base import ChatTurn, FunctionChoice
from execbridge.upstream.dialects import GENERIC, Dialect
from execbridge.upstream.pdf_text import pdf_text

__all__ = [
    "build_payload",
    "to_chat_messages",
    "to_tool_choice",
    "to_tools",
]

JSON = dict[str, Any]
EMPTY_PARAMETERS: Mapping[str, Any] = {"type": "object", "properties": {}}


# ---------------------------------------------------------------- the whole payload


def build_payload(turn: ChatTurn, dialect: Dialect = GENERIC) -> JSON:
    """The complete request body for one model turn.

    Raises ``InvalidRequest`` when the turn asks for extended thinking and the dialect cannot carry it.
    """
    thinking = _thinking(turn, dialect)
    messages = to_chat_messages(turn.messages, turn.system, dialect, reasoning=thinking is not None)
    payload: JSON = {"model": turn.model, "messages": messages}
    payload[dialect.max_tokens_field] = turn.max_tokens
    if thinking is not None:
        payload["thinking"] = thinking
    stream = turn.stream
    if turn.functions:
        payload["tools"] = to_tools(turn.functions)
        if turn.function_choice is not None:
            choice = payload["tool_choice"] = to_tool_choice(turn.function_choice, dialect, turn.functions)
            stream = stream and (dialect.stream_chosen_calls or choice not in ("auto", "required"))
        # OpenAI rejects parallel_tool_calls without tools, so it only rides along with them.
        if turn.parallel_calls is False and dialect.send_parallel_tool_calls:
            payload["parallel_tool_calls"] = False
    # ``turn.stop`` is not sent: the gateway matches stop sequences itself (``stop_match.py``), since
    # servers cut the text at a match without saying which one it was.
    sampling = turn.sampling
    if sampling.temperature is not None:
        payload["temperature"] = sampling.temperature
    if sampling.top_p is not None:
        payload["top_p"] = sampling.top_p
    if sampling.top_k is not None and dialect.supports_top_k:
        payload["top_k"] = sampling.top_k
    if sampling.reasoning_effort is not None and dialect.reasoning_effort:
        payload["reasoning_effort"] = sampling.reasoning_effort
    if turn.user:
        payload["user"] = turn.user
    if stream:
        payload["stream"] = True
        if dialect.stream_options_supported:
            payload["stream_options"] = {"include_usage": True}
    return payload


def _thinking(turn: ChatTurn, dialect: Dialect) -> JSON | None:
    """Anthropic's ``thinking`` object for the payload, ``None`` when not asked for (docs/protocol.md §4.10)."""
    config = turn.thinking
    if config is None or config.type == "disabled":
        return None
    if not dialect.thinking:
        raise InvalidRequest(
            f"thinking: extended thinking cannot be requested from model {turn.model!r} through this gateway's "
            "upstream (its Chat Completions API has no such setting for it); omit `thinking`. Reasoning a model "
            "does on its own still comes back as thinking blocks."
        )
    value: JSON = {"type": config.type}
    if config.budget_tokens is not None:
        value["budget_tokens"] = config.budget_tokens
    if config.display is not None:
        value["display"] = config.display
    return value


def to_tools(functions: Iterable[FunctionDef]) -> list[JSON]:
    """Functions in the only tool shape Databricks accepts, each with a ``parameters`` object."""
    tools: list[JSON] = []
    for fn in functions:
        spec: JSON = {"name": fn.name}
        if fn.description:
            spec["description"] = fn.description
        spec["parameters"] = dict(fn.parameters) if fn.parameters else dict(EMPTY_PARAMETERS)
        tools.append({"type": "function", "function": spec})
    return tools


def to_tool_choice(
    choice: FunctionChoice, dialect: Dialect = GENERIC, functions: tuple[FunctionDef, ...] = ()
) -> str | JSON:
    if choice.mode == "function":
        if not choice.name:
            raise ValueError("FunctionChoice(mode='function') needs a name")
        return _named(choice.name)
    if choice.mode == "required" and not dialect.tool_choice_required:
        # "Call one of these" is "call this one" when there is only one.
        return _named(functions[0].name) if len(functions) == 1 else "auto"
    return choice.mode


def _named(name: str) -> JSON:
    return {"type": "function", "function": {"name": name}}


# ---------------------------------------------------------------- messages


def to_chat_messages(
    messages: Iterable[Message], system: str | None = None, dialect: Dialect = GENERIC, *, reasoning: bool = False
) -> list[JSON]:
    """The conversation as Chat Completions messages (see the module invariants). With ``reasoning``,
    the model's thinking goes back in its assistant messages as signed ``reasoning`` parts."""
    out: list[JSON] = []
    if system and system.strip():
        out.append({"role": "system", "content": system})
    for message in messages:
        if message.role == "user":
            _user_message(message.parts, out, dialect)
        else:
            _assistant_message(message.parts, out, dialect, reasoning)
    return _one_call_per_message(out, dialect) if dialect.one_tool_call_per_message else out


def _user_message(parts: Iterable[object], out: list[JSON], dialect: Dialect) -> None:
    # Tool results answer the previous assistant message, so they go first whatever their position;
    # images they carry cannot ride in a tool message and follow in the user message instead.
    content: list[JSON] = []
    for part in parts:
        if isinstance(part, ToolResult):
            content.extend(_tool_result(part, out))
        elif isinstance(part, Text | Image | Document):
            content.extend(_content_parts(part, dialect))
        else:
            _check_droppable(part)
    _emit_user(content, out)


def _assistant_message(parts: Iterable[object], out: list[JSON], dialect: Dialect, reasoning: bool = False) -> None:
    # Server tools put their results inline: [text, call A, result A, call B, result B, text]. Each
    # result closes the assistant message in progress, and whatever follows starts a new one. Images
    # from results wait until the run of tool messages is over, as tool messages must be contiguous.
    texts: list[str] = []
    calls: list[JSON] = []
    images: list[JSON] = []
    thoughts: list[JSON] = []

    def flush() -> None:
        _emit_user(images, out)
        images.clear()
        text = "".join(texts)
        if calls or text.strip() or thoughts:
            content: Any = text if text.strip() else dialect.empty_call_content
            if thoughts:  # Databricks' list form: reasoning first, then the text (§4.10)
                content = [*thoughts, {"type": "text", "text": text}] if text.strip() else list(thoughts)
            msg: JSON = {"role": "assistant", "content": content}
            if calls:
                msg["tool_calls"] = list(calls)
            out.append(msg)
        texts.clear()
        calls.clear()
        thoughts.clear()

    for part in parts:
        if isinstance(part, Text):
            texts.append(part.text)
        elif isinstance(part, ToolCall):
            calls.append(_tool_call(part))
        elif isinstance(part, ToolResult):
            if texts or calls or thoughts:
                flush()
            images.extend(_tool_result(part, out))
        elif isinstance(part, Thinking) and reasoning and part.data is None:  # redacted: Anthropic's route only
            if texts or calls:
                flush()  # reasoning opens a message: it comes before that message's text and calls
            thoughts.append(_reasoning_part(part))
        else:
            _check_droppable(part)
    flush()


def _reasoning_part(thinking: Thinking) -> JSON:
    summary: JSON = {"type": "summary_text", "text": thinking.text}
    if thinking.signature:
        summary["signature"] = thinking.signature
    return {"type": "reasoning", "summary": [summary]}


def _tool_call(call: ToolCall) -> JSON:
    # default=dict: inputs are Mappings, and orjson serialises only real dicts natively.
    arguments = orjson.dumps(call.input, default=dict).decode() if call.input else "{}"
    return {"id": call.id, "type": "function", "function": {"name": call.name, "arguments": arguments}}


def _tool_result(result: ToolResult, out: list[JSON]) -> list[JSON]:
    """Append the ``tool`` message; return the image parts that must follow in a user message."""
    texts = [p.text for p in result.content if isinstance(p, Text) and p.text.strip()]
    images = [p for p in result.content if isinstance(p, Image)]
    text = "\n".join(texts)
    if images:
        note = f"({len(images)} image{'s' if len(images) > 1 else ''} attached in the next message)"
        text = f"{text}\n{note}" if text else note
    if result.is_error:
        text = f"Error: {text}" if text else "Error"
    out.append({"role": "tool", "tool_call_id": result.tool_use_id, "content": text or "(no output)"})
    if not images:
        return []
    parts: list[JSON] = [{"type": "text", "text": f"Image output of tool call {result.tool_use_id}:"}]
    for image in images:
        parts.extend(_content_parts(image))
    return parts


def _emit_user(content: list[JSON], out: list[JSON]) -> None:
    if not content:
        return
    if all(p["type"] == "text" for p in content):
        out.append({"role": "user", "content": "\n\n".join(p["text"] for p in content)})
    else:
        out.append({"role": "user", "content": list(content)})  # the caller may reuse its list


def _content_parts(part: Text | Image | Document, dialect: Dialect = GENERIC) -> list[JSON]:
    if isinstance(part, Text):
        return [{"type": "text", "text": part.text}] if part.text.strip() else []
    if isinstance(part, Image):
        if part.data:
            url = f"data:{part.media_type or 'image/png'};base64,{part.data}"
        elif part.url:
            url = part.url
        else:
            return []
        return [{"type": "image_url", "image_url": {"url": url}}]
    return _document_parts(part, dialect.file_parts)


def _document_parts(doc: Document, file_parts: bool) -> list[JSON]:
    header = [f"Document: {doc.title}" if doc.title else "Document:"]
    if doc.context:
        header.append(f"Context: {doc.context}")
    if doc.text is not None or (doc.data and doc.media_type and doc.media_type.startswith("text/")):
        body = doc.text if doc.text is not None else _b64_text(doc.data or "")
        if not body.strip():
            return []
        return [{"type": "text", "text": "\n".join([*header, body])}]
    if doc.data and not file_parts:
        text = pdf_text(doc.data)
        if text is not None:
            note = "(the PDF's text, extracted by the gateway: this model's API takes no PDF files)"
            return [{"type": "text", "text": "\n".join([*header, note, text])}]
        # Better that the model knows a document it cannot read was given than that it never hears of it.
        note = f"({doc.media_type or 'application/pdf'} without a text layer, not readable through this model's API)"
        return [{"type": "text", "text": "\n".join([*header, note])}]
    if doc.data:
        filename = doc.title or "document.pdf"
        file_data = f"data:{doc.media_type or 'application/pdf'};base64,{doc.data}"
        parts: list[JSON] = []
        if doc.context:
            parts.append({"type": "text", "text": "\n".join(header)})
        parts.append({"type": "file", "file": {"filename": filename, "file_data": file_data}})
        return parts
    if doc.url:
        return [{"type": "text", "text": "\n".join([*header, f"The document is at {doc.url}"])}]
    return []


def _b64_text(data: str) -> str:
    try:
        return base64.b64decode(data, validate=False).decode("utf-8", errors="replace")
    except (binascii.Error, ValueError):
        return ""


def _check_droppable(part: object) -> None:
    if isinstance(part, Thinking | ContainerUpload):
        return  # reasoning is not sent back upstream; uploads were placed in the container already
    if isinstance(part, ServerToolResult):
        raise TypeError("ServerToolResult must be rendered to a ToolResult before reaching the upstream")
    raise TypeError(f"cannot send {type(part).__name__} in this position upstream")


# ---------------------------------------------------------------- gpt-oss: one call per message


def _one_call_per_message(messages: list[JSON], dialect: Dialect) -> list[JSON]:
    """Split each multi-call assistant message into assistant(call)+tool(result) pairs.

    The tool messages answering a multi-call message are the run of ``tool`` messages right after it;
    each result moves behind its own call. Results of calls that were never answered cannot move, and
    an unmatched result keeps its place after the last pair.
    """
    out: list[JSON] = []
    i, n = 0, len(messages)
    while i < n:
        msg = messages[i]
        calls = msg.get("tool_calls") if msg["role"] == "assistant" else None
        if not calls or len(calls) < 2:
            out.append(msg)
            i += 1
            continue
        j = i + 1
        results: dict[str, JSON] = {}
        leftovers: list[JSON] = []
        while j < n and messages[j]["role"] == "tool":
            tool_msg = messages[j]
            if tool_msg["tool_call_id"] in results:
                leftovers.append(tool_msg)
            else:
                results[tool_msg["tool_call_id"]] = tool_msg
            j += 1
        for k, call in enumerate(calls):
            head: JSON = {"role": "assistant", "content": msg["content"] if k == 0 else dialect.empty_call_content}
            head["tool_calls"] = [call]
            out.append(head)
            answer = results.pop(call["id"], None)
            if answer is not None:
                out.append(answer)
        out.extend(results.values())
        out.extend(leftovers)
        i = j
    return out
