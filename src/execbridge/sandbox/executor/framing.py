"""The executor's copy of the frame format: encode, decode, read and write frames on raw fds.

Frame := u32be header_len, u32be body_len, header (UTF-8 JSON object), body (raw bytes). A binary
value anywhere in the header is written as ``{"$b": [offset, length]}`` into the body, so file bytes
and program output travel without base64. ``sandbox/protocol.py`` holds the gateway's copy and the
table of fields; ``tests/sandbox/test_executor.py`` makes the two talk to each other, so a change
here goes there too (and ``PROTOCOL_VERSION`` with it). ``FILE_CHUNK`` bounds the data of one ``file``
frame (a command's ``$OUTPUT_DIR`` files travel as a series of them, never as one big frame).

Must not: import ``json`` (it pulls in ``re`` and ``enum``, ~7 ms at start-up): the C half ``_json``
does the scanning and string escaping; log, or know what any message means.

Invariants: a request frame's sizes are checked before anything is allocated for it; binary values
come back as ``memoryview`` slices of the body (no copies); a frame is written whole or not at all
(``writev`` until done; a broken pipe raises).
"""

import _json
import os

# Names for type checkers only: ``typing`` costs ~8 ms to import here and ``from __future__ import
# annotations`` ~0.1 ms, so the annotations that use them are quoted.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

PROTOCOL_VERSION = 2
FILE_CHUNK = 1 << 20  # at most this many file bytes per ``file`` frame
_PREFIX_LEN = 8
_MAX_REQUEST_HEADER = 1 << 30
_MAX_REQUEST_BODY = 1 << 32
MAX_RESPONSE_BODY = (1 << 32) - 1


class _ScannerContext:
    """The attributes ``_json.make_scanner`` reads from a ``json.JSONDecoder``."""

    strict = True
    object_hook = None
    object_pairs_hook = None
    parse_float = float
    parse_int = int
    parse_constant = float
    # One shared dict is what the C scanner expects (json.JSONDecoder has one per decoder); it memoises
    # object keys and the scanner clears it after each document.
    memo: "dict[str, Any]" = {}  # noqa: RUF012


_scan_json = _json.make_scanner(_ScannerContext())  # type: ignore[arg-type]  # it reads only these attributes
_encode_str = _json.encode_basestring  # keeps non-ASCII as is; the frame is UTF-8
_INF = float("inf")


def _loads(text: str) -> "Any":
    start = len(text) - len(text.lstrip())
    try:
        value, end = _scan_json(text, start)
    except StopIteration as exc:
        raise ValueError(f"invalid JSON at offset {exc.value}") from None
    except SystemError:  # _json reports errors through json.decoder, which is not imported here
        raise ValueError("invalid JSON") from None
    if text[end:].strip():
        raise ValueError(f"extra data after JSON value at offset {end}")
    return value


def _dump_json(value: "Any", parts: list[str], blobs: "list[Any]", offset: list[int]) -> None:
    """Append ``value`` as JSON to ``parts``; bytes-like values become body references."""
    if value is None:
        parts.append("null")
    elif value is True:
        parts.append("true")
    elif value is False:
        parts.append("false")
    elif isinstance(value, str):
        parts.append(_encode_str(value))
    elif isinstance(value, int):
        parts.append(int.__repr__(value))
    elif isinstance(value, float):
        parts.append(float.__repr__(value) if value == value and value not in (_INF, -_INF) else "null")
    elif isinstance(value, (bytes, bytearray, memoryview)):
        size = len(value) if not isinstance(value, memoryview) else value.nbytes
        parts.append(f'{{"$b":[{offset[0]},{size}]}}')
        blobs.append(value)
        offset[0] += size
    elif isinstance(value, dict):
        parts.append("{")
        first = True
        for key, item in value.items():
            if not first:
                parts.append(",")
            first = False
            parts.append(_encode_str(key))
            parts.append(":")
            _dump_json(item, parts, blobs, offset)
        parts.append("}")
    elif isinstance(value, (list, tuple)):
        parts.append("[")
        for i, item in enumerate(value):
            if i:
                parts.append(",")
            _dump_json(item, parts, blobs, offset)
        parts.append("]")
    else:
        raise TypeError(f"cannot encode {type(value).__name__}")


def encode_frame(message: "dict[str, Any]") -> "list[Any]":
    """Prefix, header and body pieces of one frame (written with one ``writev``)."""
    parts: list[str] = []
    blobs: list[Any] = []
    offset = [0]
    _dump_json(message, parts, blobs, offset)
    header = "".join(parts).encode("utf-8", "surrogatepass")
    if offset[0] > MAX_RESPONSE_BODY:
        raise ValueError("frame body too large")
    return [len(header).to_bytes(4, "big") + offset[0].to_bytes(4, "big"), header, *blobs]


def _resolve_blobs(value: "Any", body: memoryview) -> "Any":
    if isinstance(value, dict):
        if len(value) == 1 and "$b" in value:
            ref = value["$b"]
            if (
                not isinstance(ref, list)
                or len(ref) != 2
                or not all(type(x) is int and x >= 0 for x in ref)
                or ref[0] + ref[1] > len(body)
            ):
                raise ValueError("bad body reference")
            return body[ref[0] : ref[0] + ref[1]]
        return {k: _resolve_blobs(v, body) for k, v in value.items()}
    if isinstance(value, list):
        return [_resolve_blobs(v, body) for v in value]
    return value


def decode_frame(header: bytes | bytearray | memoryview, body: bytes | bytearray | memoryview) -> "dict[str, Any]":
    """Decode one frame; binary values come back as memoryview slices of ``body`` (no copies)."""
    message = _loads(bytes(header).decode("utf-8", "surrogatepass"))
    if not isinstance(message, dict):
        raise ValueError("frame header is not a JSON object")
    resolved: dict[str, Any] = _resolve_blobs(message, memoryview(body))  # a dict stays a dict
    return resolved


def _read_exact(fd: int, size: int) -> bytearray | None:
    """Read exactly ``size`` bytes; ``None`` on a clean EOF before the first byte."""
    buf = bytearray(size)
    view = memoryview(buf)
    got = 0
    while got < size:
        n = os.readv(fd, [view[got:]])
        if n == 0:
            if got == 0:
                return None
            raise EOFError("protocol stream ended inside a frame")
        got += n
    return buf


def read_frame(fd: int) -> "dict[str, Any] | None":
    """Read one request frame from ``fd``; ``None`` when the gateway closed the stream."""
    prefix = _read_exact(fd, _PREFIX_LEN)
    if prefix is None:
        return None
    header_len = int.from_bytes(prefix[:4], "big")
    body_len = int.from_bytes(prefix[4:], "big")
    if header_len > _MAX_REQUEST_HEADER or body_len > _MAX_REQUEST_BODY:
        raise ValueError("request frame too large")
    header = _read_exact(fd, header_len) if header_len else bytearray()
    body = _read_exact(fd, body_len) if body_len else bytearray()
    if header is None or body is None:
        raise EOFError("protocol stream ended inside a frame")
    return decode_frame(header, body)


def write_frame(fd: int, message: "dict[str, Any]") -> None:
    pieces = [memoryview(p).cast("B") for p in encode_frame(message)]
    pieces = [p for p in pieces if p.nbytes]
    while pieces:
        written = os.writev(fd, pieces[:512])  # IOV_MAX is 1024 on Linux
        while written:
            if written >= pieces[0].nbytes:
                written -= pieces.pop(0).nbytes
            else:
                pieces[0] = pieces[0][written:]
                written = 0
