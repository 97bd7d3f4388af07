"""The sandbox host's protocol: what a gateway may ask of the root process that owns the containers.

The frames are the executor protocol's (``protocol.py``: a JSON header and a raw body, sizes checked
before anything is read). A connection carries one request at a time; each request gets one answer,
``{"status": "ok", ...}`` or ``{"status": "error", "kind", "message", "code", "retry_after"}``
(``kind`` picks the exception: see ``raise_error``). The first request is ``hello``.

    op            request fields                     ok answer
    hello         protocol                           protocol, instance
    create        owner, memory_mb (int or null)     container
    get           id, owner                          container
    list          owner (null: all; root only)       containers
    delete        id, owner                          -
    lease         id, owner                          container; the connection now holds the lease
      run_bash    source, timeout                    first the command's ``file`` frames (as the
      run_python  source, timeout                    executor sends them), then the result's fields
      run_cell    source, timeout, tools, cell_id    the same; ``calls`` [{id, name, input}] when the
                                                     cell awaits client tools (it is suspended)
      resume_cell cell_id, replies {toolu id: text}  as run_cell: the cell's end or its next pause
      view        path                               outcome
      write       path, text                         outcome (the editor's create)
      str_replace path, old_str, new_str             outcome
      put_file    path, data (b)                     -
      info        -                                  container
      release     -                                  -; the connection is free for another request

``owner`` is ``{"key": K}`` (the key the client presented: the host takes ``keys.key_id(K)`` as the
owner) or ``{"id": OWNER}`` (taken as given only from a root peer, and from anyone for the anonymous
owner of an open loopback gateway). A connection that closes while it holds a lease ends the
running command and releases the lease, so a gateway that gives up on a request cannot leave a
container locked.

Must not: trust the other side. The host checks every request (``checked_*``) against the peer's
credentials before acting; the gateway checks every answer (``decode_*``) like any executor frame.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, Literal, NoReturn, cast, get_args

from execbridge.errors import (
    ExecbridgeError,
    InvalidRequest,
    NotFound,
    PermissionDenied,
    QuotaExceeded,
    SandboxError,
    SandboxUnavailable,
    StoreBusy,
)
from execbridge.sandbox.base import ContainerInfo, ExecutionResult, ToolRequest
from execbridge.sandbox.protocol import (
    ProtocolError,
    bool_field,
    float_field,
    int_field,
    opt_int_field,
    skipped_files,
    str_field,
)
from execbridge.types import Caller, CreateOutcome, StrReplaceOutcome, ToolErrorCode, ToolFailure, ViewOutcome

HOST_PROTOCOL_VERSION = 1
ANONYMOUS_OWNER = "anonymous"  # the owner of an open loopback gateway's callers (``api/auth.py``)
MAX_REQUEST_BODY_FLOOR = 1 << 20  # a request's body may always be this big (``put_file`` of small files)

ErrorKind = Literal["not_found", "quota", "refused", "bad_request", "sandbox", "unavailable", "store_busy"]
_KINDS: dict[type[ExecbridgeError], ErrorKind] = {
    NotFound: "not_found",
    QuotaExceeded: "quota",
    StoreBusy: "store_busy",  # the host's container records are locked by another process: retryable
    PermissionDenied: "refused",
    InvalidRequest: "bad_request",
    SandboxUnavailable: "unavailable",
    SandboxError: "sandbox",
}
_ERROR_CODES = frozenset(("execution_time_exceeded", "unavailable", "output_file_too_large"))
_TOOL_ERROR_CODES = frozenset(get_args(ToolErrorCode))


class HostUnreachable(SandboxUnavailable):
    """No sandbox host answers at the socket (not started, restarting, or gone)."""


# ---------------------------------------------------------------- owners


def encode_owner(owner: str | Caller) -> dict[str, str]:
    if isinstance(owner, Caller):
        if owner.key is not None:
            return {"key": owner.key}
        return {"id": owner.owner}
    return {"id": owner}


# ---------------------------------------------------------------- errors


def error_answer(exc: ExecbridgeError) -> dict[str, Any]:
    kind = next((k for t, k in _KINDS.items() if isinstance(exc, t)), "sandbox")
    answer: dict[str, Any] = {"status": "error", "kind": kind, "message": exc.message, "code": exc.code}
    if isinstance(exc, QuotaExceeded | StoreBusy):
        answer["retry_after"] = exc.retry_after
    return answer


def raise_error(frame: Mapping[str, Any]) -> NoReturn:
    """The exception an error answer stands for."""
    kind = frame.get("kind")
    message = frame.get("message")
    code = frame.get("code")
    if not isinstance(message, str) or (code is not None and not isinstance(code, str)):
        raise ProtocolError("an error answer needs a message (and a string code or none)")
    retry = frame.get("retry_after")
    retry_after = float(retry) if isinstance(retry, (int, float)) else None
    if kind == "quota":
        raise QuotaExceeded(message, code=code, retry_after=retry_after)
    if kind == "store_busy":
        raise StoreBusy(message, retry_after=retry_after)
    types: dict[object, type[ExecbridgeError]] = {k: t for t, k in _KINDS.items()}
    error_type = types.get(kind)
    if error_type is None:
        raise ProtocolError(f"unknown error kind {kind!r}")
    raise error_type(message, code=code)


# ---------------------------------------------------------------- containers


def encode_info(info: ContainerInfo) -> dict[str, Any]:
    return {
        "id": info.id,
        "owner": info.owner,
        "created_at": info.created_at.timestamp(),
        "last_used_at": info.last_used_at.timestamp(),
        "expires_at": info.expires_at.timestamp(),
        "active": info.active,
        "workspace": info.workspace,
        "memory_mb": info.memory_mb,
    }


def decode_info(value: Any) -> ContainerInfo:
    if not isinstance(value, dict):
        raise ProtocolError("a container must be an object")

    def when(key: str) -> datetime:
        return datetime.fromtimestamp(float_field(value, key), UTC)

    return ContainerInfo(
        id=str_field(value, "id"),
        owner=str_field(value, "owner"),
        created_at=when("created_at"),
        last_used_at=when("last_used_at"),
        expires_at=when("expires_at"),
        active=bool_field(value, "active"),
        workspace=str_field(value, "workspace"),
        memory_mb=opt_int_field(value, "memory_mb"),
    )


# ---------------------------------------------------------------- results


def encode_result(result: ExecutionResult) -> dict[str, Any]:
    """A command's result without its files (those went ahead as ``file`` frames)."""
    fields = {f.name: getattr(result, f.name) for f in dataclasses.fields(result) if f.name != "files"}
    fields["files_too_large"] = list(result.files_too_large)
    fields["files_skipped"] = [[s.name, s.reason, s.detail] for s in result.files_skipped]
    fields["calls"] = [{"id": c.id, "name": c.name, "input": dict(c.input)} for c in result.calls]
    return fields


def _calls(value: Any) -> tuple[ToolRequest, ...]:
    if value is None:
        return ()
    if not isinstance(value, list):
        raise ProtocolError("'calls' must be a list")
    calls = []
    for call in value:
        if not isinstance(call, dict) or not isinstance(call.get("input"), dict):
            raise ProtocolError("a call must be an object with an 'input' object")
        calls.append(ToolRequest(str_field(call, "id"), str_field(call, "name"), call["input"]))
    return tuple(calls)


def decode_result(frame: dict[str, Any]) -> dict[str, Any]:
    """The checked fields of a command's result, for ``ExecutionResult(**fields, files=...)``."""
    error_code = frame.get("error_code")
    if error_code is not None and error_code not in _ERROR_CODES:
        raise ProtocolError(f"unknown error code {error_code!r}")
    too_large = frame.get("files_too_large")
    if not isinstance(too_large, list) or not all(isinstance(name, str) for name in too_large):
        raise ProtocolError("'files_too_large' must be a list of names")
    return {
        "stdout": str_field(frame, "stdout"),
        "stderr": str_field(frame, "stderr"),
        "return_code": int_field(frame, "return_code", minimum=-(1 << 31)),
        "duration_ms": float_field(frame, "duration_ms"),
        "error_code": error_code,
        "stdout_truncated": bool_field(frame, "stdout_truncated"),
        "stderr_truncated": bool_field(frame, "stderr_truncated"),
        "files_too_large": tuple(too_large),
        "files_too_large_unlisted": int_field(frame, "files_too_large_unlisted"),
        "files_omitted": int_field(frame, "files_omitted"),
        "files_skipped": skipped_files(frame.get("files_skipped")),
        "files_skipped_unlisted": int_field(frame, "files_skipped_unlisted"),
        "calls": _calls(frame.get("calls")),
    }


Outcome = ViewOutcome | CreateOutcome | StrReplaceOutcome | ToolFailure


def encode_outcome(outcome: Outcome) -> dict[str, Any]:
    kind = {ViewOutcome: "view", CreateOutcome: "create", StrReplaceOutcome: "str_replace", ToolFailure: "failure"}
    fields = dataclasses.asdict(outcome)
    if isinstance(outcome, StrReplaceOutcome):
        fields["lines"] = list(outcome.lines)
    return {"outcome": kind[type(outcome)], **fields}


def decode_outcome(frame: dict[str, Any]) -> Outcome:
    kind = frame.get("outcome")
    if kind == "failure":
        code = frame.get("error_code")
        message = frame.get("message")
        if code not in _TOOL_ERROR_CODES or (message is not None and not isinstance(message, str)):
            raise ProtocolError(f"bad tool failure {code!r}")
        return ToolFailure(cast(ToolErrorCode, code), message)
    if kind == "view":
        file_type = frame.get("file_type")
        if file_type not in ("text", "image", "pdf"):
            raise ProtocolError(f"unknown file_type {file_type!r}")
        return ViewOutcome(
            file_type=file_type,
            content=str_field(frame, "content"),
            num_lines=opt_int_field(frame, "num_lines"),
            start_line=opt_int_field(frame, "start_line"),
            total_lines=opt_int_field(frame, "total_lines"),
        )
    if kind == "create":
        return CreateOutcome(is_file_update=bool_field(frame, "is_file_update"))
    if kind == "str_replace":
        lines = frame.get("lines")
        if not isinstance(lines, list) or not all(isinstance(line, str) for line in lines):
            raise ProtocolError("'lines' must be a list of strings")
        return StrReplaceOutcome(
            old_start=opt_int_field(frame, "old_start"),
            old_lines=opt_int_field(frame, "old_lines"),
            new_start=opt_int_field(frame, "new_start"),
            new_lines=opt_int_field(frame, "new_lines"),
            lines=tuple(lines),
        )
    raise ProtocolError(f"unknown outcome {kind!r}")
