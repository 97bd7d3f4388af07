"""OpenAI's Files API on the shared ``/v1/files`` paths, for requests that speak OpenAI's API
(``api/dialect.py``): upload with a ``purpose``, list, retrieve, delete, ``/content``.

Job: HTTP in, ``FileService`` calls, OpenAI's file objects (``file-…`` ids, ``object: "file"``,
``bytes``, Unix ``created_at``, ``purpose``, ``status: "processed"``) and list envelope out. The
bytes, the owner scoping, the per-owner budget and the upload's streaming are the Anthropic Files
API's (``files.py``, ``api/files.py``); only the shapes differ. Each API lists only its own files
(an OpenAI file has a ``purpose``), and an Anthropic ``file_…`` id is unknown here.

Choices (docs/protocol.md, "OpenAI Files and Containers"): every file can be downloaded, whatever its
purpose; ``limit`` takes 1 to 10000 like OpenAI's, and a page holds at most 1000 (``has_more`` says
when more follow); ``expires_after`` (anchor ``created_at``, 3600 to 2592000 seconds) sets ``expires_at``.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Final

from starlette.requests import Request
from starlette.responses import Response

from execbridge.api.files import admit_writer, attachment, files_of, json_response
from execbridge.api.multipart import MultipartUpload, boundary_of
from execbridge.errors import InvalidRequest, NotFound, RequestTooLarge
from execbridge.files import MAX_LIST_LIMIT, FileService
from execbridge.store.base import FileRecord

__all__ = ["delete_file", "download_file", "get_file", "list_files", "render_file", "upload_file"]

PURPOSES: Final = ("assistants", "batch", "fine-tune", "vision", "user_data", "evals")
MIN_EXPIRES_SECONDS: Final = 3600
MAX_EXPIRES_SECONDS: Final = 2_592_000  # 30 days, OpenAI's bound
MAX_LIMIT: Final = 10_000
_MULTIPART_SLACK: Final = 64 << 10
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)


def render_file(record: FileRecord) -> dict[str, Any]:
    """OpenAI's file object, every key its SDK's ``FileObject`` declares."""
    return {
        "id": record.id,
        "object": "file",
        "bytes": record.size_bytes,
        "created_at": int(record.created_at.timestamp()),
        "filename": record.filename,
        "purpose": record.purpose,
        "status": "processed",
        "expires_at": None if record.expires_at is None else int(record.expires_at.timestamp()),
        "status_details": None,
    }


async def _own_file(files: FileService, owner: str, file_id: str) -> FileRecord:
    record = await files.get(owner, file_id)
    if record.purpose is None:  # an Anthropic file: not one of this API's
        raise NotFound(f"No such File object: {file_id}", param="id")
    return record


def _purpose(form: MultipartUpload) -> str:
    purpose = form.text("purpose")
    if purpose is None:
        raise InvalidRequest("Missing required parameter: 'purpose'.", param="purpose")
    if purpose not in PURPOSES:
        raise InvalidRequest(
            f"Invalid value for 'purpose': {purpose!r}; expected one of {', '.join(PURPOSES)}.", param="purpose"
        )
    return purpose


def _expires_in_seconds(form: MultipartUpload) -> int | None:
    anchor, seconds = form.text("expires_after[anchor]"), form.text("expires_after[seconds]")
    if anchor is None and seconds is None:
        return None
    if anchor != "created_at":
        raise InvalidRequest("Invalid 'expires_after.anchor': must be 'created_at'.", param="expires_after.anchor")
    if seconds is None or not seconds.strip().isdigit():
        raise InvalidRequest("Invalid 'expires_after.seconds': must be an integer.", param="expires_after.seconds")
    value = int(seconds)
    if not MIN_EXPIRES_SECONDS <= value <= MAX_EXPIRES_SECONDS:
        raise InvalidRequest(
            f"Invalid 'expires_after.seconds': must be between {MIN_EXPIRES_SECONDS} and {MAX_EXPIRES_SECONDS}.",
            param="expires_after.seconds",
        )
    return value


async def upload_file(request: Request) -> Response:
    request.app.state.drain.refuse_new()
    files, owner = files_of(request)
    await admit_writer(request)
    boundary = boundary_of(request, "POST /v1/files takes a multipart/form-data body with `file` and `purpose`")
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > files.max_bytes + _MULTIPART_SLACK:
        raise RequestTooLarge(f"file is larger than the limit of {files.max_bytes} bytes")
    async with files.upload(owner) as sink:
        if declared.isdigit() and sink.room + _MULTIPART_SLACK < int(declared) <= files.max_bytes:
            raise files.storage_full()
        form = MultipartUpload(sink)
        await form.parse(request, boundary)
        if not form.got_file:
            raise InvalidRequest("Missing required parameter: 'file'.", param="file")
        purpose = _purpose(form)
        record = await sink.commit(
            form.filename, form.content_type, expires_in_seconds=_expires_in_seconds(form), purpose=purpose
        )
    return json_response(render_file(record))


def _limit(raw: str | None) -> int:
    if raw is None:
        return MAX_LIST_LIMIT
    if not raw.isdigit() or not 1 <= int(raw) <= MAX_LIMIT:
        raise InvalidRequest(f"Invalid 'limit': must be an integer from 1 to {MAX_LIMIT}.", param="limit")
    return min(int(raw), MAX_LIST_LIMIT)


async def list_files(request: Request) -> Response:
    """Newest first unless ``order=asc``; ``after`` is the last id of the previous page."""
    files, owner = files_of(request)
    query = request.query_params
    limit = _limit(query.get("limit"))
    order = query.get("order", "desc")
    if order not in ("asc", "desc"):
        raise InvalidRequest("Invalid 'order': must be 'asc' or 'desc'.", param="order")
    purpose = query.get("purpose")
    cursor = None
    if (after := query.get("after")) is not None:
        try:
            cursor = (await _own_file(files, owner, after)).cursor
        except NotFound:
            raise InvalidRequest(f"Invalid 'after': no file '{after}'.", param="after") from None
    if order == "desc":
        page = await files.list(owner, limit=limit, after=cursor, openai=True, purpose=purpose)
        records = list(page.records)
    else:
        # The files just newer than the cursor (or than the epoch: the oldest), turned oldest first.
        start = cursor or (_EPOCH, "")
        page = await files.list(owner, limit=limit, before=start, openai=True, purpose=purpose)
        records = list(reversed(page.records))
    body = {
        "object": "list",
        "data": [render_file(r) for r in records],
        "first_id": records[0].id if records else None,
        "last_id": records[-1].id if records else None,
        "has_more": page.has_more,
    }
    return json_response(body)


async def get_file(request: Request) -> Response:
    files, owner = files_of(request)
    return json_response(render_file(await _own_file(files, owner, request.path_params["file_id"])))


async def download_file(request: Request) -> Response:
    files, owner = files_of(request)
    record = await _own_file(files, owner, request.path_params["file_id"])
    return attachment(files.path_of(record), media_type=record.mime_type, filename=record.filename)


async def delete_file(request: Request) -> Response:
    files, owner = files_of(request)
    record = await _own_file(files, owner, request.path_params["file_id"])
    await files.delete(owner, record.id)
    return json_response({"id": record.id, "object": "file", "deleted": True})
