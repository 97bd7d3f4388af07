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
from pathlib import Path
from typing import Any, Final

import orjson
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import FileResponse, Response

from execbridge.api.auth import caller_for
from execbridge.api.multipart import MultipartUpload, boundary_of
from execbridge.errors import InvalidRequest, RequestTooLarge
from execbridge.files import (
    MAX_EXPIRES_IN_SECONDS,
    MAX_LIST_LIMIT,
    MIN_EXPIRES_IN_SECONDS,
    FileService,
)
from execbridge.store.base import FileRecord
from execbridge.wiring import Services

__all__ = ["admit_writer", "delete_file", "download_file", "get_file", "list_files", "render_file", "upload_file"]

_MULTIPART_SLACK: Final = 64 << 10  # boundaries and part headers around the file's bytes
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


def json_response(body: Any) -> Response:
    return Response(orjson.dumps(body), media_type="application/json")


def attachment(path: Path, *, media_type: str, filename: str, background: BackgroundTask | None = None) -> FileResponse:
    """File bytes as a download, for every API that serves them. ``nosniff``: the type was chosen by
    an uploader or by sandboxed code, so a browser must not guess a more dangerous one."""
    return FileResponse(
        path,
        media_type=media_type,
        filename=filename,
        headers={"x-content-type-options": "nosniff"},
        background=background,
    )


def files_of(request: Request) -> tuple[FileService, str]:
    """The file service and the caller's owner id."""
    services: Services = request.app.state.services
    return services.files, caller_for(request.headers, services.settings).owner


# ---------------------------------------------------------------- upload


async def admit_writer(request: Request) -> None:
    """In pass-through mode a key may create state only once the upstream has accepted it (a made-up
    key must not fill the disk); gateway keys were admitted by the middleware already."""
    services: Services = request.app.state.services
    caller = caller_for(request.headers, services.settings)
    if services.key_check is not None and caller.upstream_api_key is not None:
        await services.key_check.check(caller.upstream_api_key)


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


def _boundary(request: Request) -> bytes:
    return boundary_of(request, "POST /v1/files takes a multipart/form-data body with a `file` part")


async def upload_file(request: Request) -> Response:
    request.app.state.drain.refuse_new()
    files, owner = files_of(request)
    await admit_writer(request)
    boundary = _boundary(request)
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > files.max_bytes + _MULTIPART_SLACK:
        raise RequestTooLarge(f"file is larger than the limit of {files.max_bytes} bytes")
    async with files.upload(owner) as sink:
        # Only when the file surely fits the per-file limit: one over it is a 413 whatever the budget.
        if declared.isdigit() and sink.room + _MULTIPART_SLACK < int(declared) <= files.max_bytes:
            raise files.storage_full()
        form = MultipartUpload(sink)
        await form.parse(request, boundary)
        if not form.got_file:
            raise InvalidRequest("file: the upload has no `file` part")
        raw_expiry = form.fields.get("expires_in_seconds")
        expires_in_seconds = None if raw_expiry is None else _expires_in_seconds(raw_expiry)
        record = await sink.commit(form.filename, form.content_type, expires_in_seconds=expires_in_seconds)
    return json_response(render_file(record))


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
    files, owner = files_of(request)
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
        return json_response(_envelope(records, has_more=False))
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
    return json_response(_envelope(list(result.records), has_more=result.has_more, paging_back=before_id is not None))


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
    files, owner = files_of(request)
    return json_response(render_file(await files.get(owner, request.path_params["file_id"])))


async def download_file(request: Request) -> Response:
    files, owner = files_of(request)
    record = await files.get(owner, request.path_params["file_id"])
    if not record.downloadable:
        raise InvalidRequest(
            f"file '{record.id}' is not downloadable: only files created by code execution can be downloaded",
            code="file_not_downloadable",
        )
    return attachment(files.path_of(record), media_type=record.mime_type, filename=record.filename)


async def delete_file(request: Request) -> Response:
    files, owner = files_of(request)
    file_id = request.path_params["file_id"]
    await files.delete(owner, file_id)
    return json_response({"id": file_id, "type": "file_deleted"})
