"""OpenAI Responses items ↔ the neutral conversation: the item half of the Responses surface.

Job: check a request's ``input`` (a string or a list of items) and bring it to one stored form (every
item a dict with its ``id``; message content as a list of parts), and turn a conversation of such
items (a ``previous_response_id`` chain's inputs and outputs, then the new input) into neutral
``Message``s for the engine.

Ids: the engine names calls ``srvtoolu_…`` (server) and ``toolu_…`` (client). The Responses surface
shows the same random part under OpenAI's prefixes (``ci_…`` for a code interpreter call; ``call_…``
for a function's or a shell call's ``call_id``; ``fc_``/``sh_``/``sho_`` item ids), so the mapping is
a pure function both ways and no id table is kept (docs/protocol.md §5.2, "The Responses API").

Must not: render events or know the store; it sees JSON values only.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import orjson

from execbridge import ids
from execbridge.api._checks import at, fail, kind_of, nested_at_most, wrong
from execbridge.errors import InvalidRequest
from execbridge.tools.versions import BASH, PYTHON
from execbridge.types import CommandOutcome, Image, Message, Part, ServerToolResult, Text, ToolCall, ToolResult

__all__ = [
    "Conversation",
    "call_id_of",
    "check_answered",
    "ci_id_of",
    "item_id",
    "normalize_input",
    "server_id_of",
    "to_conversation",
    "tool_id_of_call",
]

JSON = dict[str, Any]

_SERVER: Final = "srvtoolu_"
_CLIENT: Final = "toolu_"


def _suffix(value: str, prefix: str) -> str | None:
    return value[len(prefix) :] if value.startswith(prefix) else None


def ci_id_of(tool_id: str) -> str:
    """A server call's id as a ``code_interpreter_call`` item id."""
    rest = _suffix(tool_id, _SERVER)
    return f"ci_{rest}" if rest is not None else tool_id


def call_id_of(tool_id: str) -> str:
    """A call's id as a ``call_id`` (function calls and shell calls)."""
    rest = _suffix(tool_id, _SERVER)
    if rest is None:
        rest = _suffix(tool_id, _CLIENT)
    return f"call_{rest}" if rest is not None else tool_id


def item_id(prefix: str, tool_id: str) -> str:
    """An item id (``fc``, ``sh``, ``sho``) derived from a call's id."""
    rest = _suffix(tool_id, _SERVER)
    if rest is None:
        rest = _suffix(tool_id, _CLIENT)
    return f"{prefix}_{rest if rest is not None else tool_id}"


def server_id_of(item_or_call_id: str) -> str:
    """The engine's id of a server call named by a ``ci_…`` item id or a shell ``call_…`` id."""
    for prefix in ("ci_", "call_"):
        rest = _suffix(item_or_call_id, prefix)
        if rest is not None:
            return f"{_SERVER}{rest}"
    return item_or_call_id


def tool_id_of_call(call_id: str) -> str:
    """The engine's id of a client (function) call named by its ``call_id``."""
    rest = _suffix(call_id, "call_")
    return f"{_CLIENT}{rest}" if rest is not None else call_id


# ---------------------------------------------------------------- checking the request's input

_ROLES: Final = ("user", "assistant", "system", "developer")
_INPUT_TYPES: Final = (
    "message",
    "function_call",
    "function_call_output",
    "code_interpreter_call",
    "shell_call",
    "shell_call_output",
    "reasoning",
)


def normalize_input(value: object, path: str = "input") -> list[JSON]:
    """The request's ``input`` as a list of items in stored form (``id`` on every item)."""
    if type(value) is str:
        return [_message("user", [{"type": "input_text", "text": value}], None)]
    if type(value) is not list:
        wrong("", path, "a string or an array of items", value)
    return [_item(item, at(path, i)) for i, item in enumerate(value)]


def _message(role: str, content: list[JSON], item_id: str | None, status: str = "completed") -> JSON:
    return {
        "id": item_id or ids.new_id("msg"),
        "type": "message",
        "role": role,
        "status": status,
        "content": content,
    }


def _item(item: object, path: str) -> JSON:
    if type(item) is not dict:
        fail(path, f"expected an object, got {kind_of(item)}")
    kind = item.get("type", "message" if "role" in item else None)
    if kind not in _INPUT_TYPES:
        known = ", ".join(repr(t) for t in _INPUT_TYPES)
        fail(at(path, "type"), f"item type {kind!r} is not supported by this gateway; supported: {known}")
    given_id = item.get("id")
    if given_id is not None and type(given_id) is not str:
        wrong(path, "id", "a string", given_id)
    match kind:
        case "message":
            role = item.get("role")
            if role not in _ROLES:
                fail(at(path, "role"), f"expected one of {', '.join(map(repr, _ROLES))}, got {role!r}")
            return _message(role, _content(item.get("content"), role, at(path, "content")), given_id)
        case "function_call":
            call_id = _str(item, "call_id", path)
            arguments = _str(item, "arguments", path)
            return {
                "id": given_id or item_id("fc", tool_id_of_call(call_id)),
                "type": "function_call",
                "call_id": call_id,
                "name": _str(item, "name", path),
                "arguments": arguments,
                "status": "completed",
            }
        case "function_call_output":
            output = item.get("output")
            if type(output) is list:
                output = _parts(output, "user", at(path, "output"))
            elif type(output) is not str:
                wrong(path, "output", "a string or an array of content parts", output)
            return {
                "id": given_id or ids.new_id("fco"),
                "type": "function_call_output",
                "call_id": _str(item, "call_id", path),
                "output": output,
                "status": "completed",
            }
        case "code_interpreter_call":
            _str(item, "container_id", path)
            code = item.get("code")
            if code is not None and type(code) is not str:
                wrong(path, "code", "a string or null", code)
            outputs = item.get("outputs")
            if outputs is not None and type(outputs) is not list:
                wrong(path, "outputs", "an array or null", outputs)
            return {**item, "id": _str(item, "id", path)}
        case "shell_call":
            action = item.get("action")
            if type(action) is not dict or type(action.get("commands")) is not list:
                fail(at(path, "action"), "expected an object with a `commands` array")
            if not all(type(c) is str for c in action["commands"]):
                fail(at(at(path, "action"), "commands"), "expected an array of strings")
            call_id = _str(item, "call_id", path)
            return {**item, "id": given_id or item_id("sh", server_id_of(call_id)), "status": "completed"}
        case "shell_call_output":
            call_id = _str(item, "call_id", path)
            if type(item.get("output")) is not list:
                wrong(path, "output", "an array", item.get("output"))
            return {**item, "id": given_id or item_id("sho", server_id_of(call_id)), "status": "completed"}
        case _:  # reasoning: kept for the record, not shown to the model again (docs/protocol.md §5.2)
            return {**item, "id": given_id or ids.new_id("rs")}


def _str(item: JSON, key: str, path: str) -> str:
    value = item.get(key)
    if type(value) is not str:
        wrong(path, key, "a string", value if key in item else None)
    return value


def _content(content: object, role: str, path: str) -> list[JSON]:
    if type(content) is str:
        return [{"type": "output_text" if role == "assistant" else "input_text", "text": content}]
    if type(content) is not list:
        wrong("", path, "a string or an array of content parts", content)
    return _parts(content, role, path)


_PART_TYPES: Final = ("input_text", "output_text", "refusal", "input_image")


def _parts(parts: list[Any], role: str, path: str) -> list[JSON]:
    checked: list[JSON] = []
    for i, part in enumerate(parts):
        where = at(path, i)
        if type(part) is not dict:
            fail(where, f"expected an object, got {kind_of(part)}")
        kind = part.get("type")
        if kind not in _PART_TYPES:
            fail(at(where, "type"), f"content part {kind!r} is not supported by this gateway (text and images are)")
        if kind == "input_image":
            url = part.get("image_url")
            if type(url) is not str:
                fail(at(where, "image_url"), "expected a URL or a data: URI (file_id images are not supported)")
            checked.append({"type": "input_image", "image_url": url, "detail": part.get("detail") or "auto"})
            continue
        key = "refusal" if kind == "refusal" else "text"
        text = part.get(key)
        if type(text) is not str:
            wrong(where, key, "a string", text)
        checked.append(part)
    return nested_at_most({"parts": checked}, path)["parts"]  # type: ignore[no-any-return]


# ---------------------------------------------------------------- items → neutral messages


@dataclass(slots=True)
class Conversation:
    """A conversation of items as the engine takes it: extra system text (``system``/``developer``
    messages), the messages, and the latest container a code interpreter call ran in."""

    system: list[str] = field(default_factory=list)
    messages: list[Message] = field(default_factory=list)
    container_id: str | None = None


def _image(url: str) -> Image:
    if url.startswith("data:") and ";base64," in url:
        head, data = url[5:].split(";base64,", 1)
        return Image(media_type=head or None, data=data)
    return Image(url=url)


def _user_parts(parts: Iterable[JSON]) -> list[Text | Image]:
    out: list[Text | Image] = []
    for part in parts:
        if part["type"] == "input_image":
            out.append(_image(part["image_url"]))
        elif part.get("text"):
            out.append(Text(part["text"]))
    return out


def _logs(outputs: Sequence[Any] | None, status: str | None) -> CommandOutcome:
    if outputs is None:
        note = "(the output of this call was not included in the conversation)" if status != "failed" else ""
        return CommandOutcome(note, "", 0)
    logs = "".join(o.get("logs", "") for o in outputs if isinstance(o, dict) and o.get("type") == "logs")
    return CommandOutcome(logs, "", 0)


def _shell_outcome(output: Sequence[Any]) -> CommandOutcome:
    stdout = "".join(str(o.get("stdout", "")) for o in output if isinstance(o, dict))
    stderr = "".join(str(o.get("stderr", "")) for o in output if isinstance(o, dict))
    code = 0
    for entry in output:
        outcome = entry.get("outcome") if isinstance(entry, dict) else None
        if isinstance(outcome, dict):
            code = outcome.get("exit_code", 124) if outcome.get("type") == "exit" else 124
    return CommandOutcome(stdout, stderr, code if type(code) is int else 1)


def _arguments(raw: str) -> dict[str, Any]:
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return {}
    return value if isinstance(value, dict) else {}


def check_answered(items: Sequence[JSON]) -> None:
    """Every function call in the conversation has its output (OpenAI refuses the request otherwise,
    and so would a Chat Completions upstream, at indexes the client never sent)."""
    answered = {i["call_id"] for i in items if i["type"] == "function_call_output"}
    for item in items:
        if item["type"] == "function_call" and item["call_id"] not in answered:
            raise InvalidRequest(f"No tool output found for function call {item['call_id']}.", param="input")


def to_conversation(items: Iterable[JSON]) -> Conversation:
    """Items (stored form) as neutral messages: consecutive assistant-side items (assistant text,
    calls, server results) make one assistant message, consecutive user-side items one user message.

    A code interpreter call replayed without its outputs (the client did not ask for them) is answered
    by a note, so it is not run again; only one with status ``in_progress`` or ``incomplete`` (a call
    deferred because a function was called in the same batch) is left unanswered and runs first.
    """
    conversation = Conversation()
    role: str | None = None
    parts: list[Part] = []

    def push(part_role: str, new: Sequence[Part]) -> None:
        nonlocal role, parts
        if part_role != role and parts:
            conversation.messages.append(Message("assistant" if role == "assistant" else "user", tuple(parts)))
            parts = []
        role = part_role
        parts.extend(new)

    for item in items:
        kind = item["type"]
        if kind == "message":
            if item["role"] in ("system", "developer"):
                conversation.system.extend(p["text"] for p in item["content"] if p.get("text"))
            elif item["role"] == "assistant":
                push("assistant", [Text(p.get("text") or p.get("refusal") or "") for p in item["content"]])
            else:
                push("user", _user_parts(item["content"]))
        elif kind == "function_call":
            call = ToolCall(tool_id_of_call(item["call_id"]), item["name"], _arguments(item["arguments"]))
            push("assistant", [call])
        elif kind == "function_call_output":
            output = item["output"]
            content = (Text(output),) if isinstance(output, str) else tuple(_user_parts(output))
            push("user", [ToolResult(tool_id_of_call(item["call_id"]), content or (Text(""),))])
        elif kind == "code_interpreter_call":
            tool_id = server_id_of(item["id"])
            new: list[Part] = [ToolCall(tool_id, PYTHON, {"code": item.get("code") or ""}, server=True)]
            if item.get("status") not in ("in_progress", "incomplete"):
                new.append(ServerToolResult(tool_id, PYTHON, _logs(item.get("outputs"), item.get("status"))))
            push("assistant", new)
            conversation.container_id = item["container_id"]
        elif kind == "shell_call":
            command = "\n".join(item["action"]["commands"])
            push("assistant", [ToolCall(server_id_of(item["call_id"]), BASH, {"command": command}, server=True)])
            environment = item.get("environment")
            if isinstance(environment, dict) and isinstance(environment.get("container_id"), str):
                conversation.container_id = environment["container_id"]
        elif kind == "shell_call_output":
            push("assistant", [ServerToolResult(server_id_of(item["call_id"]), BASH, _shell_outcome(item["output"]))])
    if parts:
        conversation.messages.append(Message("assistant" if role == "assistant" else "user", tuple(parts)))
    return conversation
