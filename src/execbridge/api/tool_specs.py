"""The ``tools`` and ``tool_choice`` of a Messages request, and the ``caller`` of a ``tool_use`` block.

Job: validate them the way the Anthropic API does (docs/protocol.md §1.3, §2.1, §5.1) and build the
neutral ``ToolSpec``s: client tools (with their ``allowed_callers``: may the model call them, may a
REPL cell's code) and the code execution tool. Part of ``api/wire.py``'s one pass over a request.

Must not: decide anything about upstreams or the sandbox. Every failure is ``InvalidRequest`` whose
message starts with the field path.
"""

from __future__ import annotations

import re
from typing import Any, Final

from execbridge.api import anthropic_fields as fields
from execbridge.api._checks import (
    MISSING,
    at,
    choice_error,
    fail,
    kind_of,
    nested_at_most,
    opt_bool,
    opt_str,
    req_dict,
    req_str,
    wrong,
)
from execbridge.tools.versions import TOOL_NAME, VERSIONS, version_of
from execbridge.types import ClientTool, CodeExecutionTool, ToolChoice, ToolSpec

__all__ = ["parse_caller", "parse_tool_choice", "parse_tools"]

_CLIENT_TOOL_NAME: Final = re.compile(r"[a-zA-Z0-9_-]{1,64}")

_CODE_CALLERS: Final = frozenset(f"{TOOL_NAME}_{v}" for v in ("20250825", "20260120", "20260521"))
_CALLERS: Final = ("direct", *sorted(_CODE_CALLERS))


def parse_caller(block: dict[str, Any], path: str) -> str | None:
    """The REPL cell that made a client call (``caller.tool_id``), or None for the model's own calls."""
    caller = block.get("caller")
    if caller is None:
        return None
    if type(caller) is not dict:
        wrong(path, "caller", "an object", caller)
    kind = caller.get("type", MISSING)
    if kind == "direct":
        return None
    if kind not in _CODE_CALLERS:
        choice_error(kind, at(at(path, "caller"), "type"), _CALLERS)
    return req_str(caller, "tool_id", at(path, "caller"))


def _supported_types() -> str:
    return ", ".join(VERSIONS)


def _tool(raw: object, path: str) -> ToolSpec:
    if type(raw) is not dict:
        fail(path, f"expected a tool object, got {kind_of(raw)}")
    kind = raw.get("type")
    if kind is None or kind == "custom":
        name = req_str(raw, "name", path)
        if _CLIENT_TOOL_NAME.fullmatch(name) is None:
            fail(at(path, "name"), f"tool names must match ^[a-zA-Z0-9_-]{{1,64}}$, got {name!r}")
        schema = nested_at_most(req_dict(raw, "input_schema", path), at(path, "input_schema"))
        if schema.get("type", "object") != "object":
            fail(at(at(path, "input_schema"), "type"), f"expected 'object', got {schema.get('type')!r}")
        direct, from_code = _allowed_callers(raw.get("allowed_callers"), path)
        return ClientTool(
            name, opt_str(raw, "description", path), schema, fields.cache_control(raw, path), direct, from_code
        )
    if type(kind) is not str:
        wrong(path, "type", "a string", kind)
    version = VERSIONS.get(kind)
    if version is None:
        fail(
            at(path, "type"),
            f"tool type {kind!r} is not supported by this gateway; supported server tools: {_supported_types()} "
            "(client tools have no type, or type 'custom')",
        )
    name = raw.get("name", MISSING)
    if name != TOOL_NAME:
        choice_error(name, at(path, "name"), (TOOL_NAME,))
    return CodeExecutionTool(version.version, fields.cache_control(raw, path))


def _allowed_callers(raw: object, path: str) -> tuple[bool, bool]:
    """A client tool's ``allowed_callers``: whether the model may call it, and code (docs/protocol.md §5.1)."""
    if raw is None:
        return True, False
    if type(raw) is not list or not raw:
        wrong(path, "allowed_callers", "a non-empty array", raw)
    for i, item in enumerate(raw):
        if item not in _CALLERS:
            choice_error(item, at(at(path, "allowed_callers"), i), _CALLERS)
    return "direct" in raw, any(item in _CODE_CALLERS for item in raw)


def parse_tools(raw: object) -> tuple[ToolSpec, ...]:
    if raw is None:
        return ()
    if type(raw) is not list:
        wrong("", "tools", "an array", raw)
    tools: list[ToolSpec] = []
    seen: dict[str, int] = {}
    for i, item in enumerate(raw):
        tool = _tool(item, f"tools.{i}")
        name = TOOL_NAME if isinstance(tool, CodeExecutionTool) else tool.name
        if name in seen:
            fail(f"tools.{i}.name", f"tool names must be unique; {name!r} is already used by tools.{seen[name]}")
        seen[name] = i
        tools.append(tool)
    code_execution = next((t for t in tools if isinstance(t, CodeExecutionTool)), None)
    if code_execution is None and any(isinstance(t, ClientTool) and t.from_code for t in tools):
        # Code may call these tools, but no code execution tool was sent: the API provisions one
        # (docs/protocol.md §5.1); so does the gateway, as the first version with a REPL.
        code_execution = CodeExecutionTool(_IMPLIED_VERSION)
        tools.append(code_execution)
    if code_execution is not None:
        version = version_of(code_execution)
        # The tool's own name is checked for uniqueness above; its sub-tools' names are reserved too.
        for name in (version.names - {TOOL_NAME}) & seen.keys():
            fail(f"tools.{seen[name]}.name", f"{name!r} is reserved by the {version.type} tool")
    return tuple(tools)


_CHOICES: Final = ("auto", "any", "tool", "none")
_IMPLIED_VERSION: Final = "20260120"


def parse_tool_choice(raw: object, tools: tuple[ToolSpec, ...]) -> ToolChoice | None:
    if raw is None:
        return None
    if type(raw) is not dict:
        wrong("", "tool_choice", "an object", raw)
    mode = raw.get("type", MISSING)
    if mode not in _CHOICES:
        choice_error(mode, "tool_choice.type", _CHOICES)
    disable_parallel = opt_bool(raw, "disable_parallel_tool_use", "tool_choice")
    if mode in ("any", "tool") and not tools:
        fail("tool_choice", f"{mode!r} may only be specified while providing tools")
    name = None
    if mode == "tool":
        name = req_str(raw, "name", "tool_choice")
        names = {TOOL_NAME if isinstance(t, CodeExecutionTool) else t.name for t in tools}
        if name not in names:
            fail("tool_choice.name", f"tool {name!r} is not among the provided tools")
        if any(isinstance(t, ClientTool) and t.name == name and not t.direct for t in tools):
            fail("tool_choice.name", f"tool {name!r} cannot be forced: its allowed_callers do not include 'direct'")
    return ToolChoice(mode, name, disable_parallel)
