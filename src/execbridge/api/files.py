"""The Files API routes (docs/protocol.md §2.10): upload, list, metadata, download, delete.

Job: HTTP in, ``FileService`` calls, Anthropic's file objects and list envelope out. The caller's
identity is the one the messages route uses (``auth.caller_for``), so a key sees only its own files;
another key's file is a 404 like an id that never existed. ``?beta=true`` and ``anthropic-beta`` are
accepted and ignored: both SDK generations call the same paths.

Must not: hold an upload in memory. The multipart body is parsed as it arrives and the ``file`` part
goes straight to a temporary file through an ``UploadSink``, which refuses bytes past
``max_file_bytes`` (413 ``request_too_large``) and past what the owner's budget has left
(``max_file_bytes_per_owner``, 400 ``invalid_request_error``; past it bytes are counted, not kept,
so that a file over the per-file limit is still a 413); a declared ``content-length`` that is surely
over either is refused before any byte is read. ``expires_in_seconds`` (3600 to 7776000 seconds) sets ``expires_at``.

Choices where Anthropic's documentation is silent: listings are newest first; the GA ``page`` cursor encodes a
position (it survives the deletion of the file it came from); unknown beta ``after_id``/``before_id``
are 400s; downloads are served as attachments with ``nosniff``, since a sandbox output's name (and
so its type) is chosen by the code that made it.
"""

from __future__ import annotations

import base64
import binascii
import re
from datetime import UTC, datetime
from typing import Any, Final

import orjson
from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.requests import ClientDisconnect, Request
from starlette.responses import FileResponse, Response

from execbridge.api.auth import caller_for
from execbridge.errors import InvalidRequest, RequestTooLarge
from execbridge.files import (
    MAX_EXPIRES_IN_SECONDS,
    MAX_LIST_LIMIT,
    MIN_EXPIRES_IN_SECONDS,
    FileService,
    UploadSink,
)
from execbridge.store.base import FileRecord
from execbridge.wiring import Services

__all__ = ["delete_file", "download_file", "get_file", "list_files", "render_file", "upload_file"]

_MULTIPART_SLACK: Final = 64 << 10  # boundaries and part headers around the file's bytes
_MAX_FIELDS: Final = 16  # other form fields (``expires_in_seconds``), each small
_MAX_FIELD_BYTES: Final = 1024
_MAX_IDS: Final = 100
_PAGE_PREFIX: Final = "page_"
_INTEGER: Final = re.compile(r"[+-]?[0-9]+")


def render_file(record: FileRecord) -> dict[str, Any]:
    """The file object, exactly the documented keys (``expires_at`` null unless the upload set one)."""
    return {
        "id": record.id,
        "type": "file",
        "filename": record.filename,
        "mime_type": record.mime_type,
        "size_bytes": record.size_bytes,
        "created_at": _timestamp(record.created_at),
        "downloadable": record.downloadable,
        "expires_at": None if record.expires_at is None else _timestamp(record.expires_at),
    }


def _timestamp(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _json(body: Any) -> Response:
    return Response(orjson.dumps(body), media_type="application/json")


def _context(request: Request) -> tuple[FileService, str]:
    services: Services = request.app.state.services
    return services.files, caller_for(request.headers, services.settings).owner


# ---------------------------------------------------------------- upload


async def _admit_writer(request: Request) -> None:
    """In pass-through mode a key may create state only once the upstream has accepted it (a made-up
    key must not fill the disk); gateway keys were admitted by the middleware already."""
    services: Services = request.app.state.services
    caller = caller_for(request.headers, services.settings)
    if services.key_check is not None and caller.upstream_api_key is not None:
        await services.key_check.check(caller.upstream_api_key)


class _MultipartUpload:
    """Feeds the request body through python-multipart; the ``file`` part streams into ``sink``.

    The parser calls back synchronously; file bytes are collected per chunk and written (awaited)
    after each ``write``, as Starlette's own form parser does.
    """

    def __init__(self, sink: UploadSink) -> None:
        self.sink = sink
        self.filename: str | None = None
        self.content_type: str | None = None
        self.got_file = False
        self.expires_in_seconds: int | None = None
        self._pending: list[bytes] = []
        self._fields = 0
        self._headers: list[tuple[bytes, bytes]] = []
        self._header_name = b""
        self._header_value = b""
        self._in_file = False
        self._field_name: bytes | None = None
        self._field_value = bytearray()
        self._field_bytes = 0
        self._ended = False  # the closing boundary was seen

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
            # Nobody is left to answer; the sink removes the partial file. Not an internal error.
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
        self._field_bytes = 0

    def _part_end(self) -> None:
        if self._field_name == b"expires_in_seconds":
            self.expires_in_seconds = _expires_in_seconds(bytes(self._field_value))

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
        self._fields += 1
        if self._fields > _MAX_FIELDS:
            raise InvalidRequest("the upload has too many form fields")
        self._field_name = name

    def _part_data(self, data: bytes, start: int, end: int) -> None:
        if self._in_file:
            self._pending.append(data[start:end])
            return
        # Other fields than ``expires_in_seconds`` are accepted and ignored; all stay small.
        self._field_bytes += end - start
        if self._field_bytes > _MAX_FIELD_BYTES:
            raise InvalidRequest("a form field of the upload is too large")
        if self._field_name == b"expires_in_seconds":
            self._field_value += data[start:end]


def _expires_in_seconds(raw: bytes) -> int:
    text = raw.decode("latin-1").strip()
    if not _INTEGER.fullmatch(text):
        raise InvalidRequest("expires_in_seconds: must be an integer number of seconds")
    value = int(text)
    if not MIN_EXPIRES_IN_SECONDS <= value <= MAX_EXPIRES_IN_SECONDS:
        raise InvalidRequest(
            f"expires_in_seconds: must be between {MIN_EXPIRES_IN_SECONDS} and {MAX_EXPIRES_IN_SECONDS}"
        )
    return value


def _form_filename(raw: bytes | None) -> str | None:
    if raw is None:
        return None
    name = raw.decode("utf-8", "replace")
    # Browsers and httpx escape these three in a part's filename (HTML's multipart encoding).
    return name.replace("%22", '"').replace("%0D", "\r").replace("%0A", "\n")


def _boundary(request: Request) -> bytes:
    content_type, options = parse_options_header(request.headers.get("content-type", ""))
    boundary = options.get(b"boundary")
    if content_type != b"multipart/form-data" or not boundary:
        raise InvalidRequest("POST /v1/files takes a multipart/form-data body with a `file` part")
    return boundary


async def upload_file(request: Request) -> Response:
    request.app.state.drain.refuse_new()
    files, owner = _context(request)
    await _admit_writer(request)
    boundary = _boundary(request)
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > files.max_bytes + _MULTIPART_SLACK:
        raise RequestTooLarge(f"file is larger than the limit of {files.max_bytes} bytes")
    async with files.upload(owner) as sink:
        # Only when the file surely fits the per-file limit: one over it is a 413 whatever the budget.
        if declared.isdigit() and sink.room + _MULTIPART_SLACK < int(declared) <= files.max_bytes:
            raise files.storage_full()
        form = _MultipartUpload(sink)
        await form.parse(request, boundary)
        if not form.got_file:
            raise InvalidRequest("file: the upload has no `file` part")
        record = await sink.commit(form.filename, form.content_type, expires_in_seconds=form.expires_in_seconds)
    return _json(render_file(record))


# ---------------------------------------------------------------- list


def _encode_page(record: FileRecord) -> str:
    position = f"{_timestamp(record.created_at)}|{record.id}".encode()
    return _PAGE_PREFIX + base64.urlsafe_b64encode(position).decode().rstrip("=")


def _decode_page(token: str) -> tuple[datetime, str]:
    try:
        if not token.startswith(_PAGE_PREFIX):
            raise ValueError
        raw = token[len(_PAGE_PREFIX) :]
        stamp, _, file_id = base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)).decode().partition("|")
        created = datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise InvalidRequest("page: not a page cursor from a previous list response") from None
    if not file_id:
        raise InvalidRequest("page: not a page cursor from a previous list response")
    return created, file_id


def _limit(request: Request) -> int:
    raw = request.query_params.get("limit")
    if raw is None:
        return 20
    try:
        limit = int(raw)
    except ValueError:
        raise InvalidRequest("limit: must be an integer") from None
    if not 1 <= limit <= MAX_LIST_LIMIT:
        raise InvalidRequest(f"limit: must be between 1 and {MAX_LIST_LIMIT}")
    return limit


async def list_files(request: Request) -> Response:
    files, owner = _context(request)
    query = request.query_params
    wanted = [*query.getlist("ids[]"), *query.getlist("ids")]
    if wanted:
        # ``ids``: one page of exactly those (visible) files; no cursors with it.
        if any(k in query for k in ("page", "limit", "after_id", "before_id")):
            raise InvalidRequest("ids: cannot be combined with page, limit, after_id or before_id")
        if len(set(wanted)) > _MAX_IDS:
            raise InvalidRequest(f"ids: at most {_MAX_IDS} ids")
        found = await files.find(owner, wanted)
        records = sorted(found.values(), key=lambda r: r.cursor, reverse=True)
        return _json(_envelope(records, has_more=False))
    page = query.get("page")
    after_id, before_id = query.get("after_id"), query.get("before_id")
    if sum(x is not None for x in (page, after_id, before_id)) > 1:
        raise InvalidRequest("page, after_id and before_id cannot be combined")
    result = await files.list(
        owner,
        limit=_limit(request),
        after_id=after_id,
        before_id=before_id,
        after=_decode_page(page) if page is not None else None,
    )
    return _json(_envelope(list(result.records), has_more=result.has_more, paging_back=before_id is not None))


def _envelope(records: list[FileRecord], *, has_more: bool, paging_back: bool = False) -> dict[str, Any]:
    """All five keys, so the old beta ``SyncPage`` and the GA ``SyncPageCursor`` both parse it.

    ``next_page`` continues towards older files; when paging back with ``before_id`` there is no
    forward cursor to give, so it is null.
    """
    next_page = _encode_page(records[-1]) if has_more and records and not paging_back else None
    return {
        "data": [render_file(r) for r in records],
        "has_more": has_more,
        "first_id": records[0].id if records else None,
        "last_id": records[-1].id if records else None,
        "next_page": next_page,
    }


# ---------------------------------------------------------------- one file


async def get_file(request: Request) -> Response:
    files, owner = _context(request)
    return _json(render_file(await files.get(owner, request.path_params["file_id"])))


async def download_file(request: Request) -> Response:
    files, owner = _context(request)
    record = await files.get(owner, request.path_params["file_id"])
    if not record.downloadable:
        raise InvalidRequest(
            f"file '{record.id}' is not downloadable: only files created by code execution can be downloaded",
            code="file_not_downloadable",
        )
    return FileResponse(
        files.path_of(record),
        media_type=record.mime_type,
        filename=record.filename,
        headers={"x-content-type-options": "nosniff"},
    )


async def delete_file(request: Request) -> Response:
    files, owner = _context(request)
    file_id = request.path_params["file_id"]
    await files.delete(owner, file_id)
    return _json({"id": file_id, "type": "file_deleted"})
