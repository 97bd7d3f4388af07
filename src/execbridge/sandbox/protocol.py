"""The executor protocol, gateway side: framing, encoding and the limits that keep it safe.

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
                 file_limit, file_count                       stderr_truncated, return_code, duration_ms,
    python       code, (same limits)                          timed_out, cancelled, files [{name, data (b)}],
                                                              files_too_large [name], files_omitted
    view         path, max_bytes                              file_type, data (b); for text also num_lines,
                                                              start_line, total_lines, truncated
    create       path, data (b: the file's UTF-8 text)        is_file_update
    str_replace  path, old_str, new_str, max_bytes            old_start, old_lines, new_start, new_lines, lines
    put_file     path, data (b)                               size
    cancel       id of the running bash/python command        (no response; that command answers, cancelled)

Must not: trust the executor. User code shares the sandbox with it, so every frame is bounded
(``max_header``/``max_body``) and checked before use; nothing here can be made to allocate more than
the caller allowed. The executor (``executor/framing.py``) keeps its own copy of this framing because it
cannot import the package; ``tests/sandbox/test_executor.py`` checks that the two interoperate.
"""

from __future__ import annotations

import asyncio
import json
import struct
from collections.abc import Mapping
from typing import Any

PROTOCOL_VERSION = 1
PREFIX = struct.Struct(">II")
MAX_HEADER_BYTES = 64 << 20  # headers hold only names, numbers, messages and diff lines


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

    header = json.dumps(message, ensure_ascii=False, separators=(",", ":"), default=body_ref)
    header_bytes = header.encode("utf-8", "surrogatepass")
    if offset > 0xFFFFFFFF:
        raise ValueError("frame body over 4 GiB")
    return b"".join([PREFIX.pack(len(header_bytes), offset), header_bytes, *blobs])


def decode_frame(header: bytes, body: bytes) -> dict[str, Any]:
    """The message of one frame; body references become ``bytes``."""
    try:
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
