"""A streamed ``multipart/form-data`` upload: one ``file`` part written through a sink as it arrives,
and the other (small) form fields kept as text.

Job: shared by the upload routes (the Files APIs of both dialects, container files), so none of them
holds a file in memory unless its sink does. The parser calls back synchronously; file bytes are
collected per chunk and written (awaited) after each ``write``, as Starlette's own form parser does.

Must not: accept a body cut short (its file would be cut short too), more than one ``file`` part,
more than ``MAX_FIELDS`` other fields or a field over ``MAX_FIELD_BYTES``.
"""

from __future__ import annotations

from typing import Final, Protocol

from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.requests import ClientDisconnect, Request

from execbridge.errors import InvalidRequest

__all__ = ["MAX_FIELDS", "MAX_FIELD_BYTES", "ByteSink", "MultipartUpload", "boundary_of"]

MAX_FIELDS: Final = 16  # form fields beside the file (``purpose``, ``expires_in_seconds``, …), each small
MAX_FIELD_BYTES: Final = 1024


class ByteSink(Protocol):
    async def write(self, chunk: bytes) -> None: ...


def boundary_of(request: Request, usage: str) -> bytes:
    """The multipart boundary of ``request``; ``usage`` says what the route takes, for the error."""
    content_type, options = parse_options_header(request.headers.get("content-type", ""))
    boundary = options.get(b"boundary")
    if content_type != b"multipart/form-data" or not boundary:
        raise InvalidRequest(usage)
    return boundary


class MultipartUpload:
    """Feeds a request body through python-multipart; the ``file`` part streams into ``sink``;
    every other field lands in ``fields`` (name → text, decoded as UTF-8)."""

    def __init__(self, sink: ByteSink) -> None:
        self.sink = sink
        self.filename: str | None = None
        self.content_type: str | None = None
        self.got_file = False
        self.fields: dict[str, bytes] = {}
        self._field_count = 0
        self._pending: list[bytes] = []
        self._headers: list[tuple[bytes, bytes]] = []
        self._header_name = b""
        self._header_value = b""
        self._in_file = False
        self._field_name: bytes | None = None
        self._field_value = bytearray()
        self._ended = False  # the closing boundary was seen

    def text(self, name: str) -> str | None:
        value = self.fields.get(name)
        return None if value is None else value.decode("utf-8", "replace")

    async def parse(self, request: Request, boundary: bytes) -> None:
        parser = MultipartParser(
            boundary,
            {
                "on_part_begin": self._part_begin,
                "on_part_data": self._part_data,
                "on_header_field": self._header_field,
                "on_header_value": self._header_value_data,
                "on_header_end": self._header_end,
                "on_headers_finished": self._headers_finished,
                "on_part_end": self._part_end,
                "on_end": self._end,
            },
        )
        try:
            async for chunk in request.stream():
                parser.write(chunk)
                for data in self._pending:
                    await self.sink.write(data)
                self._pending.clear()
            parser.finalize()
        except FormParserError:
            raise InvalidRequest("the upload is not a valid multipart/form-data body") from None
        except ClientDisconnect:
            # Nobody is left to answer; the sink's owner removes the partial file. Not an internal error.
            raise InvalidRequest("the client went away during the upload") from None
        if not self._ended:  # python-multipart accepts a body cut short; its file would be cut short too
            raise InvalidRequest("the upload is not a valid multipart/form-data body: its closing boundary is missing")

    def _end(self) -> None:
        self._ended = True

    def _part_begin(self) -> None:
        self._headers = []
        self._in_file = False
        self._field_name = None
        self._field_value = bytearray()

    def _part_end(self) -> None:
        if self._field_name is not None:
            self.fields[self._field_name.decode("utf-8", "replace")] = bytes(self._field_value)

    def _header_field(self, data: bytes, start: int, end: int) -> None:
        self._header_name += data[start:end]

    def _header_value_data(self, data: bytes, start: int, end: int) -> None:
        self._header_value += data[start:end]

    def _header_end(self) -> None:
        self._headers.append((self._header_name.strip().lower(), self._header_value.strip()))
        self._header_name = self._header_value = b""

    def _headers_finished(self) -> None:
        headers = dict(self._headers)
        _, options = parse_options_header(headers.get(b"content-disposition", b""))
        name = options.get(b"name")
        if name == b"file":
            if self.got_file:
                raise InvalidRequest("the upload has more than one `file` part")
            self.got_file = self._in_file = True
            self.filename = _form_filename(options.get(b"filename"))
            content_type = headers.get(b"content-type")
            self.content_type = content_type.decode("latin-1") if content_type else None
            return
        self._field_count += 1
        if self._field_count > MAX_FIELDS:
            raise InvalidRequest("the upload has too many form fields")
        self._field_name = name or b""

    def _part_data(self, data: bytes, start: int, end: int) -> None:
        if self._in_file:
            self._pending.append(data[start:end])
            return
        if len(self._field_value) + end - start > MAX_FIELD_BYTES:
            raise InvalidRequest("a form field of the upload is too large")
        self._field_value += data[start:end]


def _form_filename(raw: bytes | None) -> str | None:
    if raw is None:
        return None
    name = raw.decode("utf-8", "replace")
    # Browsers and httpx escape these three in a part's filename (HTML's multipart encoding).
    return name.replace("%22", '"').replace("%0D", "\r").replace("%0A", "\n")
