"""Databricks' rules for a Chat Completions request, checked the way its serving endpoints check them.

Job: ``check_request(body)`` answers ``None`` for a request Databricks would accept, else the status and
Databricks' error envelope it would answer with, so that a translation bug fails a test here instead
of in a customer's workspace. The rules: a string ``model`` (and, optionally, one of the served
models); function tools only, each named ``[A-Za-z0-9_-]{1,64}`` and carrying a ``parameters`` object;
``tool_choice``/``parallel_tool_calls`` only with tools; ``stream_options`` only when streaming; known
roles; no empty or whitespace-only text, as a string or as a part; part types allowed per role;
every assistant tool call answered by a ``tool`` message before the next other message (optional);
tool-call arguments a JSON object; optionally, one tool call per assistant message (gpt-oss) and no
``file`` parts; with ``thinking`` on, the reasoning that opened a running tool loop sent back, signed.

Must not: do I/O, or reject what Databricks is known to accept; the messages follow Databricks' own
words where they are known.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from typing import Any

import orjson

__all__ = ["check_request"]

JSON = dict[str, Any]


_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_PART_TYPES = {
    "user": {"text", "image_url", "file"},
    "system": {"text"},
    "assistant": {"text", "reasoning"},
    "tool": {"text"},
}


class _Rejected(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def check_request(
    body: Any,
    *,
    reject_multiple_tool_calls: bool = False,
    require_tool_results: bool = True,
    models: Sequence[str] | None = None,
    file_parts: bool = True,
) -> tuple[int, JSON] | None:
    """``None`` when the request is acceptable, else ``(status, Databricks error envelope)``.

    ``file_parts=False``: ``file`` parts (PDFs) are refused, as Databricks' Chat Completions route does.
    """
    try:
        _check(body, reject_multiple_tool_calls, require_tool_results, models)
        if not file_parts:
            _check_no_files(body)
        _check_thinking(body)
    except _Rejected as exc:
        return exc.status, {"error_code": exc.code, "message": exc.message}
    return None


def _check_no_files(body: JSON) -> None:
    for i, message in enumerate(body["messages"]):
        content = message.get("content")
        if isinstance(content, list) and any(isinstance(p, dict) and p.get("type") == "file" for p in content):
            raise _bad(f"messages[{i}]: content part type 'file' is not supported.", "INVALID_PARAMETER_VALUE")


def _check_thinking(body: JSON) -> None:
    """With thinking on, Claude wants the reasoning that opened the running tool loop sent back: the first
    assistant message after the last user message starts with a signed reasoning part (Anthropic's rule,
    which Databricks' Claude endpoints apply to the translated request)."""
    thinking = body.get("thinking")
    if thinking is None:
        return
    if not isinstance(thinking, dict) or thinking.get("type") not in ("enabled", "adaptive", "disabled"):
        raise _bad(f"Invalid 'thinking': {thinking!r}", "INVALID_PARAMETER_VALUE")
    budget = thinking.get("budget_tokens")
    if thinking["type"] == "enabled" and not (isinstance(budget, int) and budget >= 1024):
        raise _bad("'thinking.budget_tokens' must be an integer of at least 1024.", "INVALID_PARAMETER_VALUE")
    messages = body["messages"]
    if thinking["type"] == "disabled" or not messages or messages[-1].get("role") != "tool":
        return
    last_user = max((i for i, m in enumerate(messages) if m.get("role") == "user"), default=-1)
    opening = next((i for i in range(last_user + 1, len(messages)) if messages[i].get("role") == "assistant"), None)
    if opening is None:
        return
    content = messages[opening].get("content")
    first = content[0] if isinstance(content, list) and content else None
    if not (isinstance(first, dict) and first.get("type") == "reasoning" and _signed(first)):
        raise _bad(
            f"messages[{opening}]: when thinking is enabled, a final assistant message must start with a thinking "
            "block (preceding the last set of tool calls and results). Include the reasoning returned earlier, "
            "with its signature, or disable thinking."
        )


def _signed(part: JSON) -> bool:
    summary = part.get("summary")
    return isinstance(summary, list) and any(isinstance(s, dict) and s.get("signature") for s in summary)


def _bad(message: str, code: str = "BAD_REQUEST", status: int = 400) -> _Rejected:
    return _Rejected(status, code, message)


def _check(body: Any, reject_multiple: bool, require_results: bool, models: Sequence[str] | None) -> None:
    if not isinstance(body, dict) or not isinstance(body.get("model"), str):
        raise _bad("Request body must be a JSON object with a string 'model'.")
    if models is not None and body["model"] not in models:
        raise _bad(
            "The given endpoint does not exist, please retry after checking the specified model and version "
            "deployment exists.",
            "ENDPOINT_NOT_FOUND",
            404,
        )
    names = _check_tools(body)
    choice = body.get("tool_choice")
    if not names and (choice is not None or "parallel_tool_calls" in body):
        raise _bad("'tool_choice' and 'parallel_tool_calls' are only allowed when 'tools' are specified.")
    if isinstance(choice, dict) and choice.get("function", {}).get("name") not in names:
        raise _bad(f"tool_choice names a function that is not in 'tools': {choice!r}", "INVALID_PARAMETER_VALUE")
    if isinstance(choice, str) and choice not in ("auto", "required", "none"):
        raise _bad(f"Invalid tool_choice: {choice!r}", "INVALID_PARAMETER_VALUE")
    if "stream_options" in body and not body.get("stream"):
        raise _bad("The 'stream_options' parameter is only allowed when 'stream' is enabled.")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise _bad("'messages' must be a non-empty list.")
    open_calls: list[str] = []
    for i, message in enumerate(messages):
        role = message.get("role") if isinstance(message, dict) else None
        if role not in ("system", "developer", "user", "assistant", "tool"):
            raise _bad(f"messages[{i}]: invalid role {role!r}")
        if role != "tool" and open_calls and require_results:
            raise _unanswered(open_calls)
        if role == "tool":
            call_id = message.get("tool_call_id")
            if call_id not in open_calls:
                raise _bad(
                    f"messages[{i}]: messages with role 'tool' must be a response to a preceding message with "
                    f"'tool_calls' (unknown tool_call_id {call_id!r})."
                )
            open_calls.remove(call_id)
            _check_content(i, "tool", message.get("content"), required=True)
        elif role == "assistant":
            calls = message.get("tool_calls") or []
            if reject_multiple and len(calls) > 1:
                raise _bad("Multiple tool calls are not supported.\n")
            _check_content(i, role, message.get("content"), required=not calls)
            open_calls = [_check_call(i, call) for call in calls]
        else:
            _check_content(i, role, message.get("content"), required=True)
    if open_calls and require_results:
        raise _unanswered(open_calls)


def _check_tools(body: JSON) -> set[str]:
    tools = body.get("tools") or []
    names: set[str] = set()
    for tool in tools:
        fn = tool.get("function") if isinstance(tool, dict) else None
        if not isinstance(fn, dict) or tool.get("type") != "function":
            raise _bad("Missing 'function' in the tool specification.", "INVALID_PARAMETER_VALUE")
        if not isinstance(fn.get("name"), str) or not _NAME.match(fn["name"]):
            raise _bad(f"Invalid function name {fn.get('name')!r}.", "INVALID_PARAMETER_VALUE")
        if not isinstance(fn.get("parameters"), dict):
            raise _bad(
                '"parameters" is a required property for "function" object in parameter "tools"',
                "INVALID_PARAMETER_VALUE",
            )
        names.add(fn["name"])
    return names


def _check_content(i: int, role: str, content: Any, *, required: bool) -> None:
    if content is None:
        if required:
            raise _bad(f"messages[{i}]: 'content' is required for role {role!r}.")
        return
    if isinstance(content, str):
        if not content.strip():
            raise _bad(f"messages[{i}]: text content blocks must contain non-whitespace text")
        return
    if not isinstance(content, list) or not content:
        raise _bad(f"messages[{i}]: 'content' must be a non-empty string or list of parts.")
    for part in content:
        kind = part.get("type") if isinstance(part, dict) else None
        if kind not in _PART_TYPES[role if role != "developer" else "system"]:
            raise _bad(f"messages[{i}]: content part type {kind!r} is not allowed for role {role!r}.")
        if kind == "text" and not (isinstance(part.get("text"), str) and part["text"].strip()):
            raise _bad(f"messages[{i}]: text content blocks must contain non-whitespace text")
        if kind == "image_url" and not part.get("image_url", {}).get("url"):
            raise _bad(f"messages[{i}]: image_url part without a url.")
        if kind == "file" and not part.get("file", {}).get("file_data"):
            raise _bad(f"messages[{i}]: file part without file_data.")


def _check_call(i: int, call: Any) -> str:
    fn = call.get("function") if isinstance(call, dict) else None
    if not isinstance(fn, dict) or not call.get("id") or not isinstance(fn.get("name"), str):
        raise _bad(f"messages[{i}]: each tool call needs an id, type 'function' and a function name.")
    try:
        arguments = orjson.loads(fn.get("arguments") or "")
    except orjson.JSONDecodeError:
        arguments = None
    if not isinstance(arguments, dict):
        raise _bad(f"messages[{i}]: tool call arguments must be a JSON object string.", "INVALID_PARAMETER_VALUE")
    return str(call["id"])


def _unanswered(ids: Iterable[str]) -> _Rejected:
    return _bad(
        "An assistant message with 'tool_calls' must be followed by tool messages responding to each "
        f"'tool_call_id'. The following tool_call_ids did not have response messages: {', '.join(ids)}"
    )
