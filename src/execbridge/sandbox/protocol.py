"""The executor protocol, gateway side: framing, encoding, the limits that keep it safe, and the
decoders that turn an answer frame into the neutral result types (``execution_result``,
``view_outcome``, …; a frame that breaks the table below is a ``ProtocolError``).

Frame := u32be header_len, u32be body_len, header, body.
- ``header`` is a UTF-8 JSON object; lone surrogates (from undecodable file names, say) travel as
  ``surrogatepass`` bytes rather than being lost.
- ``body`` is raw bytes. Any binary value in the header is written as ``{"$b": [offset, length]}``
  pointing into the body, so program output and file bytes are never base64-encoded or escaped.

Requests carry ``op`` and a positive ``id``; every request except ``cancel`` gets exactly one response
with the same ``id`` and a ``status`` of ``ok``, ``tool_error`` (``error_code``, ``message``) or
``internal_error`` (``message``: the executor failed on this request and carries on). The
executor's first frame is ``{"id": 0, "op": "ready", "protocol", "pid", "python", "subreaper",
"kill_all"}``. Binary fields are marked (b).

    op           request fields                               ok response fields
    ping         -                                            op="pong", warm
    bash         command, timeout, output_limit,              stdout (b), stderr (b), stdout_truncated,
                 file_limit, file_count, file_total           stderr_truncated, return_code, duration_ms,
    python       code, (same limits)                          timed_out, cancelled, files_too_large [name],
                                                              files_too_large_unlisted, files_omitted,
                                                              files_skipped [[name, reason, detail]],
                                                              files_skipped_unlisted
    view         path, max_bytes                              file_type, data (b); for text also num_lines,
                                                              start_line, total_lines, truncated
    create       path, data (b: the file's UTF-8 text)        is_file_update
    str_replace  path, old_str, new_str, max_bytes            old_start, old_lines, new_start, new_lines, lines
    put_file     path, data (b)                               size
    cell         code, tools [name], (same limits); only an     the same as python; a cell past ``timeout`` is
                 executor started with ``--repl`` (the REPL's)  not ``timed_out``: rc 1, detection_timeout note;
                                                              or paused=true, calls [{seq, name, input}]: the
                                                              cell awaits client tools (it is suspended)
    resume       replies [{seq, text} | {seq, timeout}],       as cell: the suspended cell's end or next pause
                 (same limits)
    cancel       id of the running bash/python command        (no response; that command answers, cancelled)

Before the answer to ``bash``/``python``, the command's ``$OUTPUT_DIR`` files arrive one after the
other as ``file`` frames with the request's ``id`` and no ``status`` (``output_files.py`` takes them):

    file         name (a file's first frame only), data (b, at most FILE_CHUNK bytes),
                 end (null: more of this file follows; "ok": the file is complete and kept;
                 "changed", "unreadable", "failed": the file is dropped)

A file's size is its apparent size; ``file_limit`` and ``file_total`` bound the bytes of one file
and of all files of the command together, ``file_count`` how many are kept. The lists of the answer
hold at most ``MAX_LISTED`` names each (``*_unlisted`` count the rest); ``reason`` is one of
``SkippedFile``'s (``hard_link``: ``detail`` names the first name of the same inode).

Must not: trust the executor. User code shares the sandbox with it, so every frame is bounded
(``max_header``/``max_body``) and checked before use; nothing here can be made to allocate more than
the caller allowed. The executor (``executor/framing.py``) keeps its own copy of this framing because it
cannot import the package; ``tests/sandbox/test_executor.py`` checks that the two interoperate.
"""

from __future__ import annotations

import asyncio
import base64
import codecs
import json
import struct
from collections.abc import Mapping
from typing import Any, Literal, cast, get_args

import orjson

from execbridge.sandbox.base import ExecutionResult, SkippedFile, SkipReason, ToolRequest
from execbridge.types import CreateOutcome, StrReplaceOutcome, ToolErrorCode, ToolFailure, ViewOutcome

PROTOCOL_VERSION = 2
PREFIX = struct.Struct(">II")
MAX_HEADER_BYTES = 64 << 20  # headers hold only names, numbers, messages and diff lines
FILE_CHUNK = 1 << 20  # file bytes per ``file`` frame, at most (executor/framing.py has the same)
MAX_LISTED = 100  # names per list in a command's answer (executor/outputs.py has the same)

_TOOL_ERROR_CODES = frozenset(get_args(ToolErrorCode))
_SKIP_REASONS = frozenset(get_args(SkipReason))


class ProtocolError(ValueError):
    """A frame that breaks the protocol; the stream cannot be trusted after it."""


def encode_frame(message: Mapping[str, Any]) -> bytes:
    """One frame; ``bytes``/``bytearray``/``memoryview`` values anywhere in ``message`` go to the body."""
    blobs: list[bytes | bytearray | memoryview] = []
    offset = 0

    def body_ref(value: object) -> dict[str, list[int]]:
        nonlocal offset
        if isinstance(value, (bytes, bytearray, memoryview)):
            size = value.nbytes if isinstance(value, memoryview) else len(value)
            blobs.append(value)
            ref = {"$b": [offset, size]}
            offset += size
            return ref
        raise TypeError(f"cannot encode {type(value).__name__}")

    try:
        # orjson: most of a frame's cost, several times over, with the stdlib (bench_sandbox's CPU line).
        header_bytes = orjson.dumps(message, default=body_ref)
    except orjson.JSONEncodeError:
        # A string with a lone surrogate (an undecodable file name, say): orjson refuses it; the
        # stdlib writes it as ``surrogatepass`` bytes, which ``decode_frame`` reads back.
        blobs.clear()
        offset = 0
        header = json.dumps(message, ensure_ascii=False, separators=(",", ":"), default=body_ref)
        header_bytes = header.encode("utf-8", "surrogatepass")
    if offset > 0xFFFFFFFF:
        raise ValueError("frame body over 4 GiB")
    return b"".join([PREFIX.pack(len(header_bytes), offset), header_bytes, *blobs])


def decode_frame(header: bytes, body: bytes) -> dict[str, Any]:
    """The message of one frame; body references become ``bytes``."""
    try:
        message = orjson.loads(header)
    except orjson.JSONDecodeError:
        try:  # not UTF-8 as orjson reads it: lone surrogates written as ``surrogatepass`` bytes
            message = json.loads(header.decode("utf-8", "surrogatepass"))
        except ValueError as exc:
            raise ProtocolError(f"frame header is not JSON: {exc}") from None
    if not isinstance(message, dict):
        raise ProtocolError("frame header is not a JSON object")
    resolved = _resolve(message, body)
    assert isinstance(resolved, dict)
    return resolved


def _resolve(value: Any, body: bytes) -> Any:
    if isinstance(value, dict):
        if len(value) == 1 and "$b" in value:
            ref = value["$b"]
            if (
                not isinstance(ref, list)
                or len(ref) != 2
                or not all(type(x) is int and x >= 0 for x in ref)
                or ref[0] + ref[1] > len(body)
            ):
                raise ProtocolError(f"bad body reference {ref!r}")
            return body[ref[0] : ref[0] + ref[1]]
        return {key: _resolve(item, body) for key, item in value.items()}
    if isinstance(value, list):
        return [_resolve(item, body) for item in value]
    return value


async def read_frame(
    reader: asyncio.StreamReader, *, max_body: int, max_header: int = MAX_HEADER_BYTES
) -> dict[str, Any]:
    """Read one frame. Raises ``asyncio.IncompleteReadError`` at EOF and ``ProtocolError`` on garbage.

    The sizes are checked before anything is allocated, so a forged length cannot exhaust memory.
    """
    header_len, body_len = PREFIX.unpack(await reader.readexactly(PREFIX.size))
    if header_len > max_header:
        raise ProtocolError(f"frame header of {header_len} bytes (limit {max_header})")
    if body_len > max_body:
        raise ProtocolError(f"frame body of {body_len} bytes (limit {max_body})")
    header = await reader.readexactly(header_len)
    body = await reader.readexactly(body_len) if body_len else b""
    return decode_frame(header, body)


# ---------------------------------------------------------------- decoding answers


def _decode_output(data: bytes, truncated: bool) -> str:
    # A cut output may end inside a UTF-8 sequence; a non-final decode drops that partial tail
    # instead of showing a replacement character that was never in the output.
    return codecs.getincrementaldecoder("utf-8")("replace").decode(data, final=not truncated)


def tool_failure(frame: dict[str, Any]) -> ToolFailure:
    code = frame.get("error_code")
    if code not in _TOOL_ERROR_CODES:
        raise ProtocolError(f"unknown tool error code {code!r}")
    return ToolFailure(cast(ToolErrorCode, code), str_field(frame, "message"))


def view_outcome(frame: dict[str, Any]) -> ViewOutcome | ToolFailure:
    if frame["status"] == "tool_error":
        return tool_failure(frame)
    file_type = frame.get("file_type")
    data = bytes_field(frame, "data")
    if file_type == "text":
        # Raw text, no line-number prefixes: Anthropic's view result carries the file as is, with
        # the numbering in start_line/num_lines/total_lines (docs/protocol.md §2.4). A view cut at the size limit
        # shows whole lines and says so through num_lines < total_lines.
        return ViewOutcome(
            file_type="text",
            content=data.decode("utf-8", "replace"),
            num_lines=int_field(frame, "num_lines"),
            start_line=int_field(frame, "start_line"),
            total_lines=opt_int_field(frame, "total_lines"),
        )
    if file_type == "image" or file_type == "pdf":
        return ViewOutcome(file_type=file_type, content=base64.b64encode(data).decode("ascii"))
    raise ProtocolError(f"unknown file_type {file_type!r}")


def create_outcome(frame: dict[str, Any]) -> CreateOutcome | ToolFailure:
    if frame["status"] == "tool_error":
        return tool_failure(frame)
    return CreateOutcome(is_file_update=bool_field(frame, "is_file_update"))


def str_replace_outcome(frame: dict[str, Any]) -> StrReplaceOutcome | ToolFailure:
    if frame["status"] == "tool_error":
        return tool_failure(frame)
    lines = frame.get("lines")
    if not isinstance(lines, list) or not all(isinstance(line, str) for line in lines):
        raise ProtocolError("'lines' must be a list of strings")
    return StrReplaceOutcome(
        old_start=int_field(frame, "old_start"),
        old_lines=int_field(frame, "old_lines"),
        new_start=int_field(frame, "new_start"),
        new_lines=int_field(frame, "new_lines"),
        lines=tuple(lines),
    )


MAX_PAUSED_CALLS = 1000  # calls one pause may await together


def _paused(frame: dict[str, Any]) -> ExecutionResult:
    """A cell suspended on client tool calls: the calls, checked (the interpreter said them)."""
    calls = frame.get("calls")
    if not isinstance(calls, list) or not calls or len(calls) > MAX_PAUSED_CALLS:
        raise ProtocolError(f"'calls' must be a list of 1 to {MAX_PAUSED_CALLS} calls")
    requests = []
    for call in calls:
        if not isinstance(call, dict) or not isinstance(call.get("input"), dict):
            raise ProtocolError("a call must be an object with an 'input' object")
        requests.append(ToolRequest(str(int_field(call, "seq")), str_field(call, "name"), call["input"]))
    return ExecutionResult("", "", 0, 0.0, calls=tuple(requests))


def execution_result(frame: dict[str, Any]) -> ExecutionResult:
    if frame["status"] != "ok":
        raise ProtocolError(f"status {frame['status']!r} for a command")
    if frame.get("paused") is True:
        return _paused(frame)
    stdout_truncated = bool_field(frame, "stdout_truncated")
    stderr_truncated = bool_field(frame, "stderr_truncated")
    too_large = frame.get("files_too_large")
    if not isinstance(too_large, list) or not all(isinstance(name, str) for name in too_large):
        raise ProtocolError("'files_too_large' must be a list of names")
    error_code: Literal["execution_time_exceeded", "output_file_too_large"] | None = None
    if bool_field(frame, "timed_out"):
        error_code = "execution_time_exceeded"
    elif too_large:
        error_code = "output_file_too_large"  # the files under the limit are still returned
    if len(too_large) > MAX_LISTED:
        raise ProtocolError("'files_too_large' is too long")
    return ExecutionResult(
        stdout=_decode_output(bytes_field(frame, "stdout"), stdout_truncated),
        stderr=_decode_output(bytes_field(frame, "stderr"), stderr_truncated),
        return_code=int_field(frame, "return_code", minimum=-1),
        duration_ms=float_field(frame, "duration_ms"),
        error_code=error_code,
        stdout_truncated=stdout_truncated,
        stderr_truncated=stderr_truncated,
        files_too_large=tuple(too_large),
        files_too_large_unlisted=int_field(frame, "files_too_large_unlisted"),
        files_omitted=int_field(frame, "files_omitted"),
        files_skipped=skipped_files(frame.get("files_skipped")),
        files_skipped_unlisted=int_field(frame, "files_skipped_unlisted"),
    )


def skipped_files(value: Any) -> tuple[SkippedFile, ...]:
    if not isinstance(value, list) or len(value) > MAX_LISTED:
        raise ProtocolError(f"'files_skipped' must be a list of at most {MAX_LISTED} entries")
    skipped = []
    for item in value:
        if (
            not isinstance(item, list)
            or len(item) != 3
            or not all(isinstance(part, str) for part in item)
            or item[1] not in _SKIP_REASONS
        ):
            raise ProtocolError(f"bad 'files_skipped' entry {item!r}")
        skipped.append(SkippedFile(item[0], cast(SkipReason, item[1]), item[2]))
    return tuple(skipped)


def output_file_name(name: str) -> str:
    """``name`` if it can be the name of a file at the top level of a directory, else ``ProtocolError``."""
    # Names come from one directory listing: anything path-like is forged.
    if not name or name in (".", "..") or "/" in name or "\x00" in name:
        raise ProtocolError(f"bad output file name {name!r}")
    return name


def int_field(frame: dict[str, Any], key: str, *, minimum: int = 0) -> int:
    value = frame.get(key)
    if type(value) is not int or value < minimum:
        raise ProtocolError(f"{key!r} must be an integer ≥ {minimum}, got {value!r}")
    return value


def opt_int_field(frame: dict[str, Any], key: str) -> int | None:
    return None if frame.get(key) is None else int_field(frame, key)


def float_field(frame: dict[str, Any], key: str) -> float:
    value = frame.get(key)
    if type(value) not in (int, float):
        raise ProtocolError(f"{key!r} must be a number, got {value!r}")
    return float(cast(float, value))


def bool_field(frame: dict[str, Any], key: str) -> bool:
    value = frame.get(key)
    if type(value) is not bool:
        raise ProtocolError(f"{key!r} must be a boolean, got {value!r}")
    return value


def str_field(frame: dict[str, Any], key: str) -> str:
    value = frame.get(key)
    if not isinstance(value, str):
        raise ProtocolError(f"{key!r} must be a string, got {type(value).__name__}")
    return value


def bytes_field(frame: dict[str, Any], key: str) -> bytes:
    value = frame.get(key)
    if not isinstance(value, bytes):
        raise ProtocolError(f"{key!r} must be binary, got {type(value).__name__}")
    return value
