"""Anthropic Messages request (decoded JSON + headers) → neutral ``GenerationRequest``.

Job: validate a ``POST /v1/messages`` body the way the Anthropic API does (wire-format §1.1 to §1.3, §2.7,
§2.8) and build the neutral model from it. Server-tool history (``server_tool_use`` and every
``*_tool_result`` variant) parses back into ``ToolCall(server=True)`` / ``ServerToolResult``, so what
``api.blocks`` renders parses back to the same values.

Must not: touch the network, the sandbox or the store; decide anything about upstreams. It is on the
hot path, so validation is written by hand: one pass over the body, no intermediate models, and an
error path string is only built when there is an error.

Invariants:
- Every failure is ``errors.InvalidRequest`` whose message starts with the field path, pydantic-style
  (``messages.2.content.0.source.media_type: …``), so the client knows exactly what to fix.
- Unknown optional fields (``cache_control``, ``citations``, ``thinking``, ``caller``, …) are accepted
  and ignored; anything we cannot serve (other server tools, ``file`` sources, skills) is refused by
  name rather than silently dropped.
- Consecutive turns of the same role are merged into one ``Message``.
- ``redacted_thinking`` is dropped: it is opaque ciphertext no OpenAI-compatible upstream can take back.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any, Final, Literal, NoReturn, TypeAlias

from execbridge.errors import InvalidRequest
from execbridge.types import (
    ClientTool,
    CodeExecutionTool,
    CodeExecutionVersion,
    CommandOutcome,
    ContainerUpload,
    CreateOutcome,
    Document,
    GenerationRequest,
    Image,
    Message,
    OutputFile,
    Part,
    Sampling,
    ServerToolResult,
    StrReplaceOutcome,
    Text,
    Thinking,
    ToolCall,
    ToolChoice,
    ToolErrorCode,
    ToolFailure,
    ToolOutcome,
    ToolResult,
    ToolSpec,
    ViewOutcome,
)

__all__ = [
    "API_VERSIONS",
    "CODE_EXECUTION_TYPES",
    "ApiVersion",
    "api_version",
    "parse_content",
    "parse_messages_request",
]

ApiVersion: TypeAlias = Literal["2023-06-01", "2026-10-21"]
Role: TypeAlias = Literal["user", "assistant"]

DEFAULT_API_VERSION: Final[ApiVersion] = "2023-06-01"
API_VERSIONS: Final[tuple[ApiVersion, ...]] = ("2023-06-01", "2026-10-21")
NEW_DIALECT: Final[ApiVersion] = "2026-10-21"

CODE_EXECUTION_TYPES: Final[dict[str, CodeExecutionVersion]] = {
    "code_execution_20250522": "20250522",
    "code_execution_20250825": "20250825",
    "code_execution_20260120": "20260120",
    "code_execution_20260521": "20260521",
}
# Function names the code execution tool puts in front of the model (wire-format §6.1); a client tool
# with one of these names could not be told apart upstream.
_SUB_TOOLS: Final[dict[CodeExecutionVersion, frozenset[str]]] = {
    "20250522": frozenset({"code_execution"}),
    "20250825": frozenset({"bash_code_execution", "text_editor_code_execution"}),
    "20260120": frozenset({"code_execution", "bash_code_execution", "text_editor_code_execution"}),
    "20260521": frozenset({"code_execution", "bash_code_execution", "text_editor_code_execution"}),
}
_SERVER_TOOL_NAMES: Final = frozenset({"code_execution", "bash_code_execution", "text_editor_code_execution"})
_SERVER_TOOL_LIST: Final = ", ".join(sorted(_SERVER_TOOL_NAMES))
_IMAGE_MEDIA_TYPES: Final = ("image/jpeg", "image/png", "image/gif", "image/webp")
_TOOL_NAME: Final = re.compile(r"[a-zA-Z0-9_-]{1,64}")
_ERROR_CODES: Final[frozenset[str]] = frozenset(
    {
        "invalid_tool_input",
        "unavailable",
        "too_many_requests",
        "execution_time_exceeded",
        "output_file_too_large",
        "file_not_found",
    }
)
MAX_MESSAGES: Final = 100_000

_MISSING: Final = object()


# ---------------------------------------------------------------- small validators


def _fail(path: str, message: str) -> NoReturn:
    raise InvalidRequest(f"{path}: {message}")


def _kind(value: object) -> str:
    """The JSON name of a value's type, for 'expected X, got Y' messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


def _at(path: str, key: str | int) -> str:
    return f"{path}.{key}" if path else str(key)


def _wrong(path: str, key: str | int, expected: str, value: object) -> NoReturn:
    if value is _MISSING:
        _fail(_at(path, key), "Field required")
    _fail(_at(path, key), f"expected {expected}, got {_kind(value)}")


def _str(obj: dict[str, Any], key: str, path: str) -> str:
    value = obj.get(key, _MISSING)
    if type(value) is str:
        return value
    _wrong(path, key, "a string", value)


def _opt_str(obj: dict[str, Any], key: str, path: str) -> str | None:
    value = obj.get(key)
    if value is None or type(value) is str:
        return value
    _wrong(path, key, "a string or null", value)


def _dict(obj: dict[str, Any], key: str, path: str) -> dict[str, Any]:
    value = obj.get(key, _MISSING)
    if type(value) is dict:
        return value
    _wrong(path, key, "an object", value)


def _int(obj: dict[str, Any], key: str, path: str) -> int:
    value = obj.get(key, _MISSING)
    if type(value) is int:
        return value
    if type(value) is float and value.is_integer():  # 1024.0 is an integer in JSON
        return int(value)
    _wrong(path, key, "an integer", value)


def _opt_int(obj: dict[str, Any], key: str, path: str) -> int | None:
    return None if obj.get(key) is None else _int(obj, key, path)


def _opt_bool(obj: dict[str, Any], key: str, path: str) -> bool:
    value = obj.get(key)
    if value is None:
        return False
    if type(value) is bool:
        return value
    _wrong(path, key, "a boolean", value)


def _unit(obj: dict[str, Any], key: str) -> float | None:
    """An optional number in [0, 1] (``temperature``, ``top_p``)."""
    value = obj.get(key)
    if value is None:
        return None
    if type(value) is not int and type(value) is not float:
        _wrong("", key, "a number", value)
    if not 0 <= value <= 1:
        _fail(key, "must be between 0 and 1")
    return float(value)


def _choice(value: object, path: str, allowed: tuple[str, ...]) -> NoReturn:
    options = ", ".join(repr(a) for a in allowed)
    if value is _MISSING:
        _fail(path, f"Field required (one of {options})")
    got = repr(value) if type(value) is str else _kind(value)
    _fail(path, f"expected one of {options}, got {got}")


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
    _fail("anthropic-version", f"unsupported API version {raw!r}; supported: {', '.join(API_VERSIONS)}")


# ---------------------------------------------------------------- content blocks

_BlockParser: TypeAlias = Callable[[dict[str, Any], str, Role, bool], Part | None]


def _text(block: dict[str, Any], path: str, role: Role, new_dialect: bool) -> Part:
    text = _str(block, "text", path)
    if new_dialect and role == "user" and block.get("citations"):
        _fail(
            _at(path, "citations"),
            "text blocks with citations are not allowed in user messages with anthropic-version 2026-10-21",
        )
    return Text(text)


def _image(block: dict[str, Any], path: str, role: Role, new_dialect: bool) -> Image:
    source = _dict(block, "source", path)
    src_path = _at(path, "source")
    kind = source.get("type", _MISSING)
    if kind == "base64":
        media_type = source.get("media_type", _MISSING)
        if media_type not in _IMAGE_MEDIA_TYPES:
            _choice(media_type, _at(src_path, "media_type"), _IMAGE_MEDIA_TYPES)
        return Image(media_type=media_type, data=_str(source, "data", src_path))
    if kind == "url":
        return Image(url=_str(source, "url", src_path))
    if kind == "file":
        _fail(_at(src_path, "type"), "'file' image sources are not supported by this gateway; send base64 or url")
    _choice(kind, _at(src_path, "type"), ("base64", "url", "file"))


def _document(block: dict[str, Any], path: str, role: Role, new_dialect: bool) -> Document:
    if new_dialect and role == "assistant":
        _fail(path, "document blocks are not allowed in assistant messages with anthropic-version 2026-10-21")
    source = _dict(block, "source", path)
    src_path = _at(path, "source")
    title = _opt_str(block, "title", path)
    context = _opt_str(block, "context", path)
    kind = source.get("type", _MISSING)
    if kind == "base64":
        if source.get("media_type") != "application/pdf":
            _choice(source.get("media_type", _MISSING), _at(src_path, "media_type"), ("application/pdf",))
        data = _str(source, "data", src_path)
        return Document(media_type="application/pdf", data=data, title=title, context=context)
    if kind == "text":
        if source.get("media_type") != "text/plain":
            _choice(source.get("media_type", _MISSING), _at(src_path, "media_type"), ("text/plain",))
        text = _str(source, "data", src_path)
        return Document(media_type="text/plain", text=text, title=title, context=context)
    if kind == "url":
        return Document(url=_str(source, "url", src_path), title=title, context=context)
    if kind == "content":
        text = _document_content(source, src_path)
        return Document(media_type="text/plain", text=text, title=title, context=context)
    if kind == "file":
        _fail(
            _at(src_path, "type"), "'file' document sources are not supported by this gateway; send base64, text or url"
        )
    _choice(kind, _at(src_path, "type"), ("base64", "text", "url", "content", "file"))


def _document_content(source: dict[str, Any], path: str) -> str:
    """A ``content`` document source becomes plain text: its text blocks joined by blank lines."""
    content = source.get("content", _MISSING)
    if type(content) is str:
        return content
    if type(content) is not list:
        _wrong(path, "content", "a string or an array of blocks", content)
    texts = []
    for i, item in enumerate(content):
        item_path = _at(_at(path, "content"), i)
        if type(item) is not dict:
            _fail(item_path, f"expected an object, got {_kind(item)}")
        if item.get("type") != "text":
            _fail(_at(item_path, "type"), "only text blocks are supported inside a content document source")
        texts.append(_str(item, "text", item_path))
    return "\n\n".join(texts)


def _thinking(block: dict[str, Any], path: str, role: Role, new_dialect: bool) -> Thinking:
    return Thinking(_str(block, "thinking", path), _str(block, "signature", path))


def _redacted_thinking(block: dict[str, Any], path: str, role: Role, new_dialect: bool) -> None:
    _str(block, "data", path)
    return None


def _tool_input(block: dict[str, Any], path: str) -> dict[str, Any]:
    return _dict(block, "input", path)


def _tool_use(block: dict[str, Any], path: str, role: Role, new_dialect: bool) -> ToolCall:
    return ToolCall(_str(block, "id", path), _str(block, "name", path), _tool_input(block, path))


def _server_tool_use(block: dict[str, Any], path: str, role: Role, new_dialect: bool) -> ToolCall:
    id_ = _str(block, "id", path)
    name = _str(block, "name", path)
    if name not in _SERVER_TOOL_NAMES:
        _fail(
            _at(path, "name"),
            f"server tool {name!r} is not supported by this gateway; supported: {_SERVER_TOOL_LIST}",
        )
    return ToolCall(id_, name, _tool_input(block, path), server=True)


def _tool_result(block: dict[str, Any], path: str, role: Role, new_dialect: bool) -> ToolResult:
    tool_use_id = _str(block, "tool_use_id", path)
    is_error = _opt_bool(block, "is_error", path)
    content = block.get("content")
    if content is None or content == "":
        return ToolResult(tool_use_id, (), is_error)
    if type(content) is str:
        return ToolResult(tool_use_id, (Text(content),), is_error)
    if type(content) is not list:
        _wrong(path, "content", "a string or an array of blocks", content)
    parts: list[Text | Image] = []
    content_path = _at(path, "content")
    for i, item in enumerate(content):
        item_path = _at(content_path, i)
        if type(item) is not dict:
            _fail(item_path, f"expected an object, got {_kind(item)}")
        kind = item.get("type", _MISSING)
        if kind == "text":
            parts.append(Text(_str(item, "text", item_path)))
        elif kind == "image":
            parts.append(_image(item, item_path, role, new_dialect))
        elif kind == "document":
            # the neutral tool result holds text and images only; a plain-text document is text
            doc = _document(item, item_path, role, new_dialect)
            if doc.text is None:
                _fail(item_path, "only text documents are supported inside tool_result content")
            parts.append(Text(doc.text))
        else:
            _choice(kind, _at(item_path, "type"), ("text", "image", "document"))
    return ToolResult(tool_use_id, tuple(parts), is_error)


def _container_upload(block: dict[str, Any], path: str, role: Role, new_dialect: bool) -> ContainerUpload:
    return ContainerUpload(_str(block, "file_id", path))


# ---- server tool results in history (§2.3, §2.4, §2.7)


def _error_code(obj: dict[str, Any], path: str) -> ToolErrorCode:
    code = obj.get("error_code", _MISSING)
    if code not in _ERROR_CODES:
        _choice(code, _at(path, "error_code"), tuple(sorted(_ERROR_CODES)))
    return code  # type: ignore[no-any-return]  # membership checked above


def _command_outcome(obj: dict[str, Any], path: str, output_type: str, encrypted: bool) -> CommandOutcome:
    # An encrypted result's stdout is ciphertext meant for Anthropic's servers only: nothing to show.
    stdout = "" if encrypted else _str(obj, "stdout", path)
    if encrypted:
        _str(obj, "encrypted_stdout", path)
    stderr = _str(obj, "stderr", path)
    return_code = _int(obj, "return_code", path)
    files = obj.get("content")
    outputs: tuple[OutputFile, ...] = ()
    if files:
        if type(files) is not list:
            _wrong(path, "content", "an array", files)
        found = []
        for i, item in enumerate(files):
            item_path = _at(_at(path, "content"), i)
            if type(item) is not dict:
                _fail(item_path, f"expected an object, got {_kind(item)}")
            if item.get("type") != output_type:
                _choice(item.get("type", _MISSING), _at(item_path, "type"), (output_type,))
            # name and size are not on the wire; only the id matters when re-rendering
            found.append(OutputFile(_str(item, "file_id", item_path), "", 0))
        outputs = tuple(found)
    return CommandOutcome(stdout, stderr, return_code, outputs)


def _code_execution_outcome(obj: dict[str, Any], path: str, kind: object) -> ToolOutcome:
    if kind == "code_execution_result":
        return _command_outcome(obj, path, "code_execution_output", encrypted=False)
    if kind == "encrypted_code_execution_result":
        return _command_outcome(obj, path, "code_execution_output", encrypted=True)
    if kind == "code_execution_tool_result_error":
        return ToolFailure(_error_code(obj, path))
    _choice(
        kind,
        _at(path, "type"),
        ("code_execution_result", "encrypted_code_execution_result", "code_execution_tool_result_error"),
    )


def _bash_outcome(obj: dict[str, Any], path: str, kind: object) -> ToolOutcome:
    if kind == "bash_code_execution_result":
        return _command_outcome(obj, path, "bash_code_execution_output", encrypted=False)
    if kind == "bash_code_execution_tool_result_error":
        return ToolFailure(_error_code(obj, path))
    _choice(kind, _at(path, "type"), ("bash_code_execution_result", "bash_code_execution_tool_result_error"))


_FILE_TYPES: Final = ("text", "image", "pdf")


def _editor_outcome(obj: dict[str, Any], path: str, kind: object) -> ToolOutcome:
    if kind == "text_editor_code_execution_view_result":
        file_type = obj.get("file_type", _MISSING)
        if file_type not in _FILE_TYPES:
            _choice(file_type, _at(path, "file_type"), _FILE_TYPES)
        return ViewOutcome(
            file_type,
            _str(obj, "content", path),
            _opt_int(obj, "num_lines", path),
            _opt_int(obj, "start_line", path),
            _opt_int(obj, "total_lines", path),
        )
    if kind == "text_editor_code_execution_create_result":
        value = obj.get("is_file_update", _MISSING)
        if type(value) is not bool:
            _wrong(path, "is_file_update", "a boolean", value)
        return CreateOutcome(value)
    if kind == "text_editor_code_execution_str_replace_result":
        lines = obj.get("lines")
        if lines is None:
            lines = []
        elif type(lines) is not list or any(type(line) is not str for line in lines):
            _wrong(path, "lines", "an array of strings", lines)
        return StrReplaceOutcome(
            _opt_int(obj, "old_start", path),
            _opt_int(obj, "old_lines", path),
            _opt_int(obj, "new_start", path),
            _opt_int(obj, "new_lines", path),
            tuple(lines),
        )
    if kind == "text_editor_code_execution_tool_result_error":
        return ToolFailure(_error_code(obj, path), _opt_str(obj, "error_message", path))
    _choice(
        kind,
        _at(path, "type"),
        (
            "text_editor_code_execution_view_result",
            "text_editor_code_execution_create_result",
            "text_editor_code_execution_str_replace_result",
            "text_editor_code_execution_tool_result_error",
        ),
    )


_OutcomeParser: TypeAlias = Callable[[dict[str, Any], str, object], ToolOutcome]


def _result_parser(tool_name: str, outcome: _OutcomeParser) -> _BlockParser:
    def parse(block: dict[str, Any], path: str, role: Role, new_dialect: bool) -> ServerToolResult:
        tool_use_id = _str(block, "tool_use_id", path)
        content = _dict(block, "content", path)
        content_path = _at(path, "content")
        return ServerToolResult(tool_use_id, tool_name, outcome(content, content_path, content.get("type", _MISSING)))

    return parse


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
    "code_execution_tool_result": (_result_parser("code_execution", _code_execution_outcome), _ANY_ROLE),
    "bash_code_execution_tool_result": (_result_parser("bash_code_execution", _bash_outcome), _ANY_ROLE),
    "text_editor_code_execution_tool_result": (
        _result_parser("text_editor_code_execution", _editor_outcome),
        _ANY_ROLE,
    ),
}


def _block(block: object, path: str, role: Role, new_dialect: bool) -> Part | None:
    if type(block) is not dict:
        _fail(path, f"expected a content block object, got {_kind(block)}")
    kind = block.get("type", _MISSING)
    entry = _BLOCKS.get(kind) if type(kind) is str else None
    if entry is None:
        if kind is _MISSING:
            _fail(_at(path, "type"), "Field required")
        _fail(_at(path, "type"), f"unsupported content block type {kind!r}")
    parser, roles = entry
    if role not in roles:
        _fail(path, f"{kind} blocks are only allowed in {roles[0]} messages")
    return parser(block, path, role, new_dialect)


def parse_content(
    content: object, role: Role, *, path: str = "content", version: ApiVersion = DEFAULT_API_VERSION
) -> tuple[Part, ...]:
    """One message's ``content`` (a string or a block list) → neutral parts."""
    if type(content) is str:
        return (Text(content),)
    if type(content) is not list:
        _fail(path, f"expected a string or an array of content blocks, got {_kind(content)}")
    new_dialect = version == NEW_DIALECT
    parts = []
    for i, block in enumerate(content):
        part = _block(block, f"{path}.{i}", role, new_dialect)
        if part is not None:
            parts.append(part)
    return tuple(parts)


def _messages(raw: object, version: ApiVersion) -> tuple[Message, ...]:
    if type(raw) is not list:
        _wrong("", "messages", "an array", raw)
    if not raw:
        _fail("messages", "at least one message is required")
    if len(raw) > MAX_MESSAGES:
        _fail("messages", f"at most {MAX_MESSAGES} messages are allowed, got {len(raw)}")
    last = len(raw) - 1
    merged: list[tuple[Role, list[Part]]] = []
    for i, message in enumerate(raw):
        path = f"messages.{i}"
        if type(message) is not dict:
            _fail(path, f"expected an object, got {_kind(message)}")
        role = message.get("role", _MISSING)
        if role != "user" and role != "assistant":
            _choice(role, _at(path, "role"), ("user", "assistant"))
        content = message.get("content", _MISSING)
        if content is _MISSING:
            _fail(_at(path, "content"), "Field required")
        if (content == "" or content == []) and not (i == last and role == "assistant"):
            _fail(
                _at(path, "content"),
                "all messages must have non-empty content except for the optional final assistant message",
            )
        parts = parse_content(content, role, path=_at(path, "content"), version=version)
        if merged and merged[-1][0] == role:
            merged[-1][1].extend(parts)  # consecutive same-role turns are one turn (§1.2)
        else:
            merged.append((role, list(parts)))
    return tuple(Message(role, tuple(parts)) for role, parts in merged)


# ---------------------------------------------------------------- system, tools, tool_choice


def _system(raw: object) -> str | None:
    if raw is None or type(raw) is str:
        return raw or None
    if type(raw) is not list:
        _wrong("", "system", "a string or an array of text blocks", raw)
    texts = []
    for i, block in enumerate(raw):
        path = f"system.{i}"
        if type(block) is not dict:
            _fail(path, f"expected a text block object, got {_kind(block)}")
        if block.get("type") != "text":
            _choice(block.get("type", _MISSING), _at(path, "type"), ("text",))
        texts.append(_str(block, "text", path))
    return "\n\n".join(texts) or None


def _supported_types() -> str:
    return ", ".join(CODE_EXECUTION_TYPES)


def _tool(raw: object, path: str) -> ToolSpec:
    if type(raw) is not dict:
        _fail(path, f"expected a tool object, got {_kind(raw)}")
    kind = raw.get("type")
    if kind is None or kind == "custom":
        name = _str(raw, "name", path)
        if _TOOL_NAME.fullmatch(name) is None:
            _fail(_at(path, "name"), f"tool names must match ^[a-zA-Z0-9_-]{{1,64}}$, got {name!r}")
        schema = _dict(raw, "input_schema", path)
        if schema.get("type", "object") != "object":
            _fail(_at(_at(path, "input_schema"), "type"), f"expected 'object', got {schema.get('type')!r}")
        return ClientTool(name, _opt_str(raw, "description", path), schema)
    if type(kind) is not str:
        _wrong(path, "type", "a string", kind)
    version = CODE_EXECUTION_TYPES.get(kind)
    if version is None:
        _fail(
            _at(path, "type"),
            f"tool type {kind!r} is not supported by this gateway; supported server tools: {_supported_types()} "
            "(client tools have no type, or type 'custom')",
        )
    name = raw.get("name", _MISSING)
    if name != "code_execution":
        _choice(name, _at(path, "name"), ("code_execution",))
    return CodeExecutionTool(version)


def _tools(raw: object) -> tuple[ToolSpec, ...]:
    if raw is None:
        return ()
    if type(raw) is not list:
        _wrong("", "tools", "an array", raw)
    tools: list[ToolSpec] = []
    seen: dict[str, int] = {}
    for i, item in enumerate(raw):
        tool = _tool(item, f"tools.{i}")
        name = "code_execution" if isinstance(tool, CodeExecutionTool) else tool.name
        if name in seen:
            _fail(f"tools.{i}.name", f"tool names must be unique; {name!r} is already used by tools.{seen[name]}")
        seen[name] = i
        tools.append(tool)
    code_execution = next((t for t in tools if isinstance(t, CodeExecutionTool)), None)
    if code_execution is not None:
        for name in _SUB_TOOLS[code_execution.version] & seen.keys():
            if name != "code_execution":
                _fail(
                    f"tools.{seen[name]}.name",
                    f"{name!r} is reserved by the code_execution_{code_execution.version} tool",
                )
    return tuple(tools)


_CHOICES: Final = ("auto", "any", "tool", "none")


def _tool_choice(raw: object, tools: tuple[ToolSpec, ...]) -> ToolChoice | None:
    if raw is None:
        return None
    if type(raw) is not dict:
        _wrong("", "tool_choice", "an object", raw)
    mode = raw.get("type", _MISSING)
    if mode not in _CHOICES:
        _choice(mode, "tool_choice.type", _CHOICES)
    disable_parallel = _opt_bool(raw, "disable_parallel_tool_use", "tool_choice")
    if mode in ("any", "tool") and not tools:
        _fail("tool_choice", f"{mode!r} may only be specified while providing tools")
    name = None
    if mode == "tool":
        name = _str(raw, "name", "tool_choice")
        names = {"code_execution" if isinstance(t, CodeExecutionTool) else t.name for t in tools}
        if name not in names:
            _fail("tool_choice.name", f"tool {name!r} is not among the provided tools")
    return ToolChoice(mode, name, disable_parallel)


# ---------------------------------------------------------------- the request


def _sampling(body: dict[str, Any], version: ApiVersion) -> Sampling:
    if version == NEW_DIALECT:
        for key in ("temperature", "top_p", "top_k"):
            if key in body:
                _fail(key, "removed in anthropic-version 2026-10-21; omit it or send anthropic-version 2023-06-01")
        return Sampling()
    top_k = _opt_int(body, "top_k", "")
    if top_k is not None and top_k < 0:
        _fail("top_k", "must be at least 0")
    return Sampling(_unit(body, "temperature"), _unit(body, "top_p"), top_k)


def _stop_sequences(raw: object) -> tuple[str, ...]:
    if raw is None:
        return ()
    if type(raw) is not list:
        _wrong("", "stop_sequences", "an array of strings", raw)
    for i, item in enumerate(raw):
        if type(item) is not str:
            _fail(f"stop_sequences.{i}", f"expected a string, got {_kind(item)}")
    return tuple(raw)


def _user_id(raw: object) -> str | None:
    if raw is None:
        return None
    if type(raw) is not dict:
        _wrong("", "metadata", "an object", raw)
    return _opt_str(raw, "user_id", "metadata")


def _container(raw: object) -> str | None:
    if raw is None or type(raw) is str:
        return raw or None
    if type(raw) is not dict:
        _wrong("", "container", "a string or an object", raw)
    if raw.get("skills"):
        _fail("container.skills", "Agent Skills are not supported by this gateway")
    return _opt_str(raw, "id", "container") or None


def parse_messages_request(body: object, headers: Mapping[str, str]) -> GenerationRequest:
    """Validate an Anthropic Messages request and return its neutral form.

    Raises ``InvalidRequest`` (→ 400 ``invalid_request_error``) naming the offending field.
    """
    version = api_version(headers)
    if type(body) is not dict:
        _fail("body", f"expected a JSON object, got {_kind(body)}")
    model = _str(body, "model", "")
    max_tokens = _int(body, "max_tokens", "")
    if max_tokens < 0:
        _fail("max_tokens", "must be at least 0")
    messages = _messages(body.get("messages", _MISSING), version)
    tools = _tools(body.get("tools"))
    stream = body.get("stream")
    if stream is not None and type(stream) is not bool:
        _wrong("", "stream", "a boolean", stream)
    return GenerationRequest(
        model=model,
        max_tokens=max_tokens,
        messages=messages,
        system=_system(body.get("system")),
        tools=tools,
        tool_choice=_tool_choice(body.get("tool_choice"), tools),
        stop_sequences=_stop_sequences(body.get("stop_sequences")),
        sampling=_sampling(body, version),
        user_id=_user_id(body.get("metadata")),
        stream=bool(stream),
        container_id=_container(body.get("container")),
    )
