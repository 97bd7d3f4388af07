"""Anthropic Messages request (decoded JSON + headers) → neutral ``GenerationRequest``.

Job: validate a ``POST /v1/messages`` body the way the Anthropic API does (docs/protocol.md §1.1 to §1.3, §2.7,
§2.8) and build the neutral model from it. Server-tool history (``server_tool_use`` and every
``*_tool_result`` variant) parses back into ``ToolCall(server=True)`` / ``ServerToolResult``, so what
``api.blocks`` renders parses back to the same values.

Must not: touch the network, the sandbox or the store; decide anything about upstreams. It is on the
hot path, so validation is written by hand: one pass over the body, no intermediate models, and an
error path string is only built when there is an error.

Invariants:
- Every failure is ``errors.InvalidRequest`` whose message starts with the field path, pydantic-style
  (``messages.2.content.0.source.media_type: …``), so the client knows exactly what to fix.
- ``cache_control``, ``citations``, ``thinking``, ``service_tier`` and the ``anthropic-beta`` values are
  carried in the neutral model (``api/anthropic_fields.py``: an Anthropic-native upstream gets them back;
  Chat Completions upstreams ignore what they cannot take); other unknown optional fields (``caller``,
  …) are accepted and ignored (a ``tool_use``'s ``caller`` is read: it names the REPL cell whose code made
  the call); anything we cannot serve (other server tools, ``file`` sources, skills)
  is refused by name rather than silently dropped.
- Consecutive turns of the same role are merged into one ``Message``; ``system`` messages join the system
  prompt (docs/protocol.md §1.2).
- What Anthropic checks of a conversation's shape is checked here, in its words and at the client's own
  indexes (empty text, ``tool_use``/``tool_result`` pairing: ``_tool_pairs``), so no upstream refuses it
  later at indexes of a translation the client never saw.
- ``redacted_thinking`` is kept as ``Thinking(data=…)``: opaque ciphertext only the upstream that made it
  can read back (Chat Completions upstreams drop it, as they drop all thinking).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Final, Literal, TypeAlias

from execbridge.api import anthropic_fields as fields
from execbridge.api._checks import (
    MISSING,
    at,
    choice_error,
    fail,
    kind_of,
    nested_at_most,
    opt_bool,
    opt_int,
    opt_str,
    req_dict,
    req_int,
    req_str,
    wrong,
)
from execbridge.api._tool_pairs import check_tool_pairs
from execbridge.api.blocks import RESULT_BLOCK_TYPES, parse_result_block
from execbridge.api.tool_specs import parse_caller, parse_tool_choice, parse_tools
from execbridge.tools.versions import SERVER_TOOL_NAMES
from execbridge.types import (
    ContainerUpload,
    Document,
    GenerationRequest,
    Image,
    Message,
    Part,
    Sampling,
    ServerToolResult,
    Text,
    Thinking,
    ThinkingConfig,
    ToolCall,
    ToolResult,
)

__all__ = [
    "API_VERSIONS",
    "ApiVersion",
    "api_version",
    "parse_content",
    "parse_count_tokens_request",
    "parse_messages_request",
]

ApiVersion: TypeAlias = Literal["2023-06-01", "2026-10-21"]
Role: TypeAlias = Literal["user", "assistant"]

DEFAULT_API_VERSION: Final[ApiVersion] = "2023-06-01"
API_VERSIONS: Final[tuple[ApiVersion, ...]] = ("2023-06-01", "2026-10-21")
NEW_DIALECT: Final[ApiVersion] = "2026-10-21"

_SERVER_TOOL_LIST: Final = ", ".join(sorted(SERVER_TOOL_NAMES))
_IMAGE_MEDIA_TYPES: Final = ("image/jpeg", "image/png", "image/gif", "image/webp")
MAX_MESSAGES: Final = 100_000
# ``max_tokens`` and ``top_k`` bounds: OpenAI-compatible servers read both as 32-bit integers, and no
# model's output limit comes near it (the upstream refuses what its model cannot do). A max_tokens of 0
# is allowed (it pre-warms a cache).
INT32_MAX: Final = 2**31 - 1


def _unit(obj: dict[str, Any], key: str) -> float | None:
    """An optional number in [0, 1] (``temperature``, ``top_p``)."""
    value = obj.get(key)
    if value is None:
        return None
    if type(value) is not int and type(value) is not float:
        wrong("", key, "a number", value)
    if not 0 <= value <= 1:
        fail(key, "must be between 0 and 1")
    return float(value)


# ---------------------------------------------------------------- headers


def api_version(headers: Mapping[str, str]) -> ApiVersion:
    """The request's API dialect. ``headers`` must look up case-insensitively (Starlette ``Headers``)
    or have lower-case keys. A missing header is read as ``2023-06-01``: curl users forget it and the
    old dialect is the permissive one."""
    raw = headers.get("anthropic-version")
    if raw is None:
        return DEFAULT_API_VERSION
    value = raw.strip()
    if value == "2023-06-01":
        return "2023-06-01"
    if value == "2026-10-21":
        return "2026-10-21"
    fail("anthropic-version", f"unsupported API version {raw!r}; supported: {', '.join(API_VERSIONS)}")


# ---------------------------------------------------------------- content blocks


_BlockParser: TypeAlias = Callable[[dict[str, Any], str, Role, bool], Part | None]


def _text(block: dict[str, Any], path: str, role: Role, new_dialect: bool) -> Part:
    text = req_str(block, "text", path)
    # Anthropic's own checks, in its words: an upstream would refuse these later, at its own indexes.
    if not text:
        fail(path, "text content blocks must be non-empty")
    if role == "user" and text.isspace():
        fail(path, "text content blocks must contain non-whitespace text")
    if new_dialect and role == "user" and block.get("citations"):
        fail(
            at(path, "citations"),
            "text blocks with citations are not allowed in user messages with anthropic-version 2026-10-21",
        )
    return Text(text, fields.cache_control(block, path), fields.citations(block, path))


def _image(block: dict[str, Any], path: str, role: Role, new_dialect: bool) -> Image:
    source = req_dict(block, "source", path)
    src_path = at(path, "source")
    kind = source.get("type", MISSING)
    if kind == "base64":
        media_type = source.get("media_type", MISSING)
        if media_type not in _IMAGE_MEDIA_TYPES:
            choice_error(media_type, at(src_path, "media_type"), _IMAGE_MEDIA_TYPES)
        return Image(media_type, req_str(source, "data", src_path), cache_control=fields.cache_control(block, path))
    if kind == "url":
        return Image(url=req_str(source, "url", src_path), cache_control=fields.cache_control(block, path))
    if kind == "file":
        fail(at(src_path, "type"), "'file' image sources are not supported by this gateway; send base64 or url")
    choice_error(kind, at(src_path, "type"), ("base64", "url", "file"))


def _document(block: dict[str, Any], path: str, role: Role, new_dialect: bool) -> Document:
    if new_dialect and role == "assistant":
        fail(path, "document blocks are not allowed in assistant messages with anthropic-version 2026-10-21")
    source = req_dict(block, "source", path)
    src_path = at(path, "source")
    title = opt_str(block, "title", path)
    context = opt_str(block, "context", path)
    labels: dict[str, Any] = {
        "title": title,
        "context": context,
        "citations": fields.citations_enabled(block, path),
        "cache_control": fields.cache_control(block, path),
    }
    kind = source.get("type", MISSING)
    if kind == "base64":
        if source.get("media_type") != "application/pdf":
            choice_error(source.get("media_type", MISSING), at(src_path, "media_type"), ("application/pdf",))
        data = req_str(source, "data", src_path)
        return Document(media_type="application/pdf", data=data, **labels)
    if kind == "text":
        if source.get("media_type") != "text/plain":
            choice_error(source.get("media_type", MISSING), at(src_path, "media_type"), ("text/plain",))
        text = req_str(source, "data", src_path)
        return Document(media_type="text/plain", text=text, **labels)
    if kind == "url":
        return Document(url=req_str(source, "url", src_path), **labels)
    if kind == "content":
        text = _document_content(source, src_path)
        return Document(media_type="text/plain", text=text, **labels)
    if kind == "file":
        fail(
            at(src_path, "type"), "'file' document sources are not supported by this gateway; send base64, text or url"
        )
    choice_error(kind, at(src_path, "type"), ("base64", "text", "url", "content", "file"))


def _document_content(source: dict[str, Any], path: str) -> str:
    """A ``content`` document source becomes plain text: its text blocks joined by blank lines."""
    content = source.get("content", MISSING)
    if type(content) is str:
        return content
    if type(content) is not list:
        wrong(path, "content", "a string or an array of blocks", content)
    texts = []
    for i, item in enumerate(content):
        item_path = at(at(path, "content"), i)
        if type(item) is not dict:
            fail(item_path, f"expected an object, got {kind_of(item)}")
        if item.get("type") != "text":
            fail(at(item_path, "type"), "only text blocks are supported inside a content document source")
        texts.append(req_str(item, "text", item_path))
    return "\n\n".join(texts)


def _thinking(block: dict[str, Any], path: str, role: Role, new_dialect: bool) -> Thinking:
    return Thinking(req_str(block, "thinking", path), req_str(block, "signature", path))


def _redacted_thinking(block: dict[str, Any], path: str, role: Role, new_dialect: bool) -> Thinking:
    return Thinking("", data=req_str(block, "data", path))


def _tool_input(block: dict[str, Any], path: str) -> dict[str, Any]:
    return nested_at_most(req_dict(block, "input", path), at(path, "input"))


def _tool_use(block: dict[str, Any], path: str, role: Role, new_dialect: bool) -> ToolCall:
    id_, name = req_str(block, "id", path), req_str(block, "name", path)
    cache_control = fields.cache_control(block, path)
    return ToolCall(id_, name, _tool_input(block, path), cache_control=cache_control, caller=parse_caller(block, path))


def _server_tool_use(block: dict[str, Any], path: str, role: Role, new_dialect: bool) -> ToolCall:
    id_ = req_str(block, "id", path)
    name = req_str(block, "name", path)
    if name not in SERVER_TOOL_NAMES:
        fail(
            at(path, "name"),
            f"server tool {name!r} is not supported by this gateway; supported: {_SERVER_TOOL_LIST}",
        )
    return ToolCall(id_, name, _tool_input(block, path), server=True)


def _tool_result(block: dict[str, Any], path: str, role: Role, new_dialect: bool) -> ToolResult:
    tool_use_id = req_str(block, "tool_use_id", path)
    is_error = opt_bool(block, "is_error", path)
    cache_control = fields.cache_control(block, path)
    content = block.get("content")
    if content is None or content == "":
        return ToolResult(tool_use_id, (), is_error, cache_control)
    if type(content) is str:
        return ToolResult(tool_use_id, (Text(content),), is_error, cache_control)
    if type(content) is not list:
        wrong(path, "content", "a string or an array of blocks", content)
    parts: list[Text | Image] = []
    content_path = at(path, "content")
    for i, item in enumerate(content):
        item_path = at(content_path, i)
        if type(item) is not dict:
            fail(item_path, f"expected an object, got {kind_of(item)}")
        kind = item.get("type", MISSING)
        if kind == "text":
            parts.append(Text(req_str(item, "text", item_path), fields.cache_control(item, item_path)))
        elif kind == "image":
            parts.append(_image(item, item_path, role, new_dialect))
        elif kind == "document":
            # the neutral tool result holds text and images only; a plain-text document is text
            doc = _document(item, item_path, role, new_dialect)
            if doc.text is None:
                fail(item_path, "only text documents are supported inside tool_result content")
            parts.append(Text(doc.text))
        else:
            choice_error(kind, at(item_path, "type"), ("text", "image", "document"))
    return ToolResult(tool_use_id, tuple(parts), is_error, cache_control)


def _container_upload(block: dict[str, Any], path: str, role: Role, new_dialect: bool) -> ContainerUpload:
    return ContainerUpload(req_str(block, "file_id", path))


def _server_tool_result(block: dict[str, Any], path: str, role: Role, new_dialect: bool) -> ServerToolResult:
    return parse_result_block(block, path)


_ANY_ROLE: Final[tuple[Role, ...]] = ("user", "assistant")
# block type → (parser, roles it may appear in)
_BLOCKS: Final[dict[str, tuple[_BlockParser, tuple[Role, ...]]]] = {
    "text": (_text, _ANY_ROLE),
    "image": (_image, _ANY_ROLE),
    "document": (_document, _ANY_ROLE),
    "thinking": (_thinking, ("assistant",)),
    "redacted_thinking": (_redacted_thinking, ("assistant",)),
    "tool_use": (_tool_use, ("assistant",)),
    "server_tool_use": (_server_tool_use, ("assistant",)),
    "tool_result": (_tool_result, ("user",)),
    "container_upload": (_container_upload, _ANY_ROLE),
    # §2.7: results belong in assistant turns; a user turn holding one is tolerated (lenient)
    **{block_type: (_server_tool_result, _ANY_ROLE) for block_type in RESULT_BLOCK_TYPES},
}


def _block(block: object, path: str, role: Role, new_dialect: bool) -> Part | None:
    if type(block) is not dict:
        fail(path, f"expected a content block object, got {kind_of(block)}")
    kind = block.get("type", MISSING)
    entry = _BLOCKS.get(kind) if type(kind) is str else None
    if entry is None:
        if kind is MISSING:
            fail(at(path, "type"), "Field required")
        fail(at(path, "type"), f"unsupported content block type {kind!r}")
    parser, roles = entry
    if role not in roles:
        fail(path, f"{kind} blocks are only allowed in {roles[0]} messages")
    return parser(block, path, role, new_dialect)


def parse_content(
    content: object, role: Role, *, path: str = "content", version: ApiVersion = DEFAULT_API_VERSION
) -> tuple[Part, ...]:
    """One message's ``content`` (a string or a block list) → neutral parts."""
    if type(content) is str:
        return (Text(content),)
    if type(content) is not list:
        fail(path, f"expected a string or an array of content blocks, got {kind_of(content)}")
    new_dialect = version == NEW_DIALECT
    parts = []
    for i, block in enumerate(content):
        part = _block(block, f"{path}.{i}", role, new_dialect)
        if part is not None:
            parts.append(part)
    return tuple(parts)


_ROLES: Final = ("user", "assistant", "system")


def _messages(raw: object, version: ApiVersion) -> tuple[tuple[Message, ...], list[str]]:
    """The conversation's turns, and the texts of its ``system`` messages (they join the system prompt)."""
    if type(raw) is not list:
        wrong("", "messages", "an array", raw)
    if not raw:
        fail("messages", "at least one message is required")
    if len(raw) > MAX_MESSAGES:
        fail("messages", f"at most {MAX_MESSAGES} messages are allowed, got {len(raw)}")
    last = len(raw) - 1
    merged: list[tuple[Role, list[Part]]] = []
    system: list[str] = []
    for i, message in enumerate(raw):
        path = f"messages.{i}"
        if type(message) is not dict:
            fail(path, f"expected an object, got {kind_of(message)}")
        role = message.get("role", MISSING)
        if role not in _ROLES:
            choice_error(role, at(path, "role"), _ROLES)
        content = message.get("content", MISSING)
        if content is MISSING:
            fail(at(path, "content"), "Field required")
        if (content == "" or content == []) and not (i == last and role == "assistant"):
            fail(
                at(path, "content"),
                "all messages must have non-empty content except for the optional final assistant message",
            )
        if role == "system":
            # docs/protocol.md §1.2: folded into the one system prompt, in order, after ``system``.
            system.extend(_system_texts(content, at(path, "content")))
            continue
        parts = parse_content(content, role, path=at(path, "content"), version=version)
        if merged and merged[-1][0] == role:
            merged[-1][1].extend(parts)  # consecutive same-role turns are one turn (§1.2)
        else:
            merged.append((role, list(parts)))
    if not merged:
        fail("messages", "at least one user or assistant message is required")
    check_tool_pairs(raw)
    return tuple(Message(role, tuple(parts)) for role, parts in merged), system


# ---------------------------------------------------------------- system, tools, tool_choice


def _system_blocks(raw: object, from_messages: list[str]) -> tuple[Text, ...]:
    """The system prompt as text blocks, with their cache breakpoints: ``system`` (a string is one
    block), then the texts of ``system`` messages (docs/protocol.md §1.2); empty texts are left out."""
    blocks = [] if raw is None else _system_text_blocks(raw, "system")
    return tuple(b for b in (*blocks, *(Text(t) for t in from_messages)) if b.text)


def _system_texts(raw: object, path: str) -> list[str]:
    """A system prompt's texts: a string, or an array of text blocks."""
    return [b.text for b in _system_text_blocks(raw, path)]


def _system_text_blocks(raw: object, path: str) -> list[Text]:
    if type(raw) is str:
        return [Text(raw)]
    if type(raw) is not list:
        fail(path, f"expected a string or an array of text blocks, got {kind_of(raw)}")
    blocks = []
    for i, block in enumerate(raw):
        block_path = at(path, i)
        if type(block) is not dict:
            fail(block_path, f"expected a text block object, got {kind_of(block)}")
        if block.get("type") != "text":
            choice_error(block.get("type", MISSING), at(block_path, "type"), ("text",))
        blocks.append(Text(req_str(block, "text", block_path), fields.cache_control(block, block_path)))
    return blocks


# ---------------------------------------------------------------- the request


def _sampling(body: dict[str, Any], version: ApiVersion) -> Sampling:
    if version == NEW_DIALECT:
        for key in ("temperature", "top_p", "top_k"):
            if key in body:
                fail(key, "removed in anthropic-version 2026-10-21; omit it or send anthropic-version 2023-06-01")
        return Sampling()
    top_k = opt_int(body, "top_k", "", minimum=0, maximum=INT32_MAX)
    return Sampling(_unit(body, "temperature"), _unit(body, "top_p"), top_k)


def _stop_sequences(raw: object) -> tuple[str, ...]:
    if raw is None:
        return ()
    if type(raw) is not list:
        wrong("", "stop_sequences", "an array of strings", raw)
    for i, item in enumerate(raw):
        if type(item) is not str:
            fail(f"stop_sequences.{i}", f"expected a string, got {kind_of(item)}")
    return tuple(raw)


_THINKING_TYPES: Final = ("enabled", "disabled", "adaptive")


def _thinking_config(raw: object) -> ThinkingConfig | None:
    if raw is None:
        return None
    if type(raw) is not dict:
        wrong("", "thinking", "an object", raw)
    kind = raw.get("type", MISSING)
    display = opt_str(raw, "display", "thinking")
    if kind == "enabled":
        budget = req_int(raw, "budget_tokens", "thinking", minimum=1024, maximum=INT32_MAX)
        return ThinkingConfig("enabled", budget, display)
    if kind == "disabled":
        return ThinkingConfig("disabled")
    if kind == "adaptive":
        return ThinkingConfig("adaptive", None, display)
    choice_error(kind, "thinking.type", _THINKING_TYPES)


def _user_id(raw: object) -> str | None:
    if raw is None:
        return None
    if type(raw) is not dict:
        wrong("", "metadata", "an object", raw)
    return opt_str(raw, "user_id", "metadata")


def _container(raw: object) -> str | None:
    if raw is None or type(raw) is str:
        return raw or None
    if type(raw) is not dict:
        wrong("", "container", "a string or an object", raw)
    if raw.get("skills"):
        fail("container.skills", "Agent Skills are not supported by this gateway")
    return opt_str(raw, "id", "container") or None


def parse_messages_request(body: object, headers: Mapping[str, str]) -> GenerationRequest:
    """Validate an Anthropic Messages request and return its neutral form.

    Raises ``InvalidRequest`` (→ 400 ``invalid_request_error``) naming the offending field.
    """
    version = api_version(headers)
    if type(body) is not dict:
        fail("body", f"expected a JSON object, got {kind_of(body)}")
    model = req_str(body, "model", "")
    max_tokens = req_int(body, "max_tokens", "", minimum=0, maximum=INT32_MAX)
    messages, system_messages = _messages(body.get("messages", MISSING), version)
    tools = parse_tools(body.get("tools"))
    stream = body.get("stream")
    if stream is not None and type(stream) is not bool:
        wrong("", "stream", "a boolean", stream)
    system_blocks = _system_blocks(body.get("system"), system_messages)
    return GenerationRequest(
        model=model,
        max_tokens=max_tokens,
        messages=messages,
        system="\n\n".join(b.text for b in system_blocks) or None,
        system_blocks=system_blocks,
        service_tier=fields.service_tier(body.get("service_tier")),
        betas=fields.request_betas(headers),
        tools=tools,
        tool_choice=parse_tool_choice(body.get("tool_choice"), tools),
        stop_sequences=_stop_sequences(body.get("stop_sequences")),
        sampling=_sampling(body, version),
        user_id=_user_id(body.get("metadata")),
        stream=bool(stream),
        container_id=_container(body.get("container")),
        thinking=_thinking_config(body.get("thinking")),
    )


COUNTING_MAX_TOKENS: Final = 1
"""``max_tokens`` of a counted request: ``count_tokens`` takes none, and nothing is generated."""


def parse_count_tokens_request(body: object, headers: Mapping[str, str]) -> GenerationRequest:
    """A ``POST /v1/messages/count_tokens`` body: a Messages request without ``max_tokens`` (or ``stream``),
    validated the same way, field paths and all."""
    if type(body) is dict and "max_tokens" not in body:
        body = {**body, "max_tokens": COUNTING_MAX_TOKENS}
    return parse_messages_request(body, headers)
