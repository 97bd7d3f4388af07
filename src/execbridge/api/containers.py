"""OpenAI's Containers API (docs/protocol.md, "OpenAI Files and Containers"): ``/v1/containers`` and
``/v1/containers/{id}/files``, answered in OpenAI's shapes and (``api/dialect.py``) its error envelope.

Job: HTTP in, ``OpenAIContainers`` calls, container and container-file objects and OpenAI's list
envelope (``object: "list"``, ``data``, ``first_id``, ``last_id``, ``has_more``) out. The caller's
identity is the one every route uses (``auth.caller_for``): another key's container is a 404.

Choices: ``network_policy`` may only be ``{"type": "disabled"}`` (sandboxes have no network at all;
an allowlist is a 400), and ``skills`` are refused; a container upload (multipart ``file``, or JSON
``{"file_id"}``) is held in memory once on its way into the sandbox, as ``container_upload`` files are,
and is bounded by ``max_file_bytes``.
"""

from __future__ import annotations

from typing import Any, Final

from python_multipart.multipart import parse_options_header
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import Response

from execbridge.api.auth import caller_for
from execbridge.api.files import admit_writer, attachment, json_response
from execbridge.api.messages import read_json
from execbridge.api.multipart import MultipartUpload, boundary_of
from execbridge.engine.container_files import ContainerFile
from execbridge.engine.openai_containers import (
    DEFAULT_EXPIRES_MINUTES,
    DEFAULT_MEMORY_LIMIT,
    OpenAIContainers,
    check_memory_limit,
)
from execbridge.errors import InvalidRequest, NotFound, RequestTooLarge
from execbridge.files import mime_type_for
from execbridge.store.base import OpenAIContainerRecord
from execbridge.types import Caller
from execbridge.wiring import Services

__all__ = [
    "create_container",
    "create_container_file",
    "delete_container",
    "delete_container_file",
    "download_container_file",
    "get_container",
    "get_container_file",
    "list_container_files",
    "list_containers",
    "render_container",
    "render_container_file",
]

_MAX_JSON_BYTES: Final = 1 << 20
_MAX_NAME_CHARS: Final = 256
_MULTIPART_SLACK: Final = 64 << 10


def render_container(record: OpenAIContainerRecord, now_expired: bool) -> dict[str, Any]:
    return {
        "id": record.id,
        "object": "container",
        "created_at": int(record.created_at.timestamp()),
        "status": "expired" if now_expired else "running",
        "name": record.name,
        "expires_after": {"anchor": "last_active_at", "minutes": record.expires_after_minutes},
        "last_active_at": int(record.last_active_at.timestamp()),
        "memory_limit": record.memory_limit,
        "network_policy": {"type": "disabled"},
    }


def render_container_file(found: ContainerFile) -> dict[str, Any]:
    return {
        "id": found.id,
        "object": "container.file",
        "created_at": int(found.created_at.timestamp()),
        "bytes": found.bytes,
        "container_id": found.container_id,
        "path": found.path,
        "source": found.source,
    }


def _envelope(data: list[dict[str, Any]], has_more: bool) -> dict[str, Any]:
    return {
        "object": "list",
        "data": data,
        "first_id": data[0]["id"] if data else None,
        "last_id": data[-1]["id"] if data else None,
        "has_more": has_more,
    }


def _context(request: Request) -> tuple[OpenAIContainers, Caller]:
    services: Services = request.app.state.services
    if services.openai_containers is None:
        raise NotFound("this gateway does not offer the Containers API")
    return services.openai_containers, caller_for(request.headers, services.settings)


def _paging(request: Request) -> tuple[int, str | None, bool]:
    query = request.query_params
    raw = query.get("limit", "20")
    if not raw.isdigit():
        raise InvalidRequest("Invalid 'limit': must be an integer.", param="limit")
    order = query.get("order", "desc")
    if order not in ("asc", "desc"):
        raise InvalidRequest("Invalid 'order': must be 'asc' or 'desc'.", param="order")
    return int(raw), query.get("after"), order == "asc"


def _rendered(service: OpenAIContainers, record: OpenAIContainerRecord) -> dict[str, Any]:
    return render_container(record, service.is_expired(record))


# ---------------------------------------------------------------- containers


def _create_fields(body: dict[str, Any]) -> tuple[str, str, int, list[str]]:
    name = body.get("name")
    if not isinstance(name, str):
        raise InvalidRequest("Missing required parameter: 'name'.", param="name")
    if len(name) > _MAX_NAME_CHARS:
        raise InvalidRequest(f"Invalid 'name': at most {_MAX_NAME_CHARS} characters.", param="name")
    memory_limit = body.get("memory_limit", DEFAULT_MEMORY_LIMIT)
    if not isinstance(memory_limit, str):
        raise InvalidRequest("Invalid 'memory_limit': must be a string.", param="memory_limit")
    check_memory_limit(memory_limit)
    minutes = DEFAULT_EXPIRES_MINUTES
    expires_after = body.get("expires_after")
    if expires_after is not None:
        if not isinstance(expires_after, dict) or expires_after.get("anchor") != "last_active_at":
            raise InvalidRequest(
                'Invalid \'expires_after\': expected {"anchor": "last_active_at", "minutes": N}.',
                param="expires_after",
            )
        given = expires_after.get("minutes")
        if not isinstance(given, int) or isinstance(given, bool):
            raise InvalidRequest("Invalid 'expires_after.minutes': must be an integer.", param="expires_after.minutes")
        minutes = given
    file_ids = body.get("file_ids", [])
    if not isinstance(file_ids, list) or not all(isinstance(i, str) for i in file_ids) or len(file_ids) > 100:
        raise InvalidRequest("Invalid 'file_ids': must be a list of at most 100 file ids.", param="file_ids")
    policy = body.get("network_policy")
    if policy is not None and policy != {"type": "disabled"}:
        raise InvalidRequest(
            'Invalid \'network_policy\': containers here have no network; only {"type": "disabled"} is supported.',
            param="network_policy",
        )
    if body.get("skills"):
        raise InvalidRequest("'skills' are not supported by this gateway.", param="skills")
    return name, memory_limit, minutes, list(dict.fromkeys(file_ids))


async def create_container(request: Request) -> Response:
    request.app.state.drain.refuse_new()
    service, caller = _context(request)
    body = await read_json(request, _MAX_JSON_BYTES)
    name, memory_limit, minutes, file_ids = _create_fields(body)
    await admit_writer(request)  # a made-up key must not make containers (pass-through mode)
    live = await service.create(
        caller, name=name, memory_limit=memory_limit, expires_after_minutes=minutes, file_ids=file_ids
    )
    return json_response(_rendered(service, live.record))


async def list_containers(request: Request) -> Response:
    service, caller = _context(request)
    limit, after, ascending = _paging(request)
    records, has_more = await service.list(
        caller, limit=limit, after=after, ascending=ascending, name=request.query_params.get("name")
    )
    return json_response(_envelope([_rendered(service, r) for r in records], has_more))


async def get_container(request: Request) -> Response:
    service, caller = _context(request)
    return json_response(_rendered(service, await service.get(caller, request.path_params["container_id"])))


async def delete_container(request: Request) -> Response:
    service, caller = _context(request)
    container_id = request.path_params["container_id"]
    await service.delete(caller, container_id)
    return json_response({"id": container_id, "object": "container.deleted", "deleted": True})


# ---------------------------------------------------------------- files


class _MemorySink:
    """A container upload's bytes, gathered for ``put_file`` (which takes them in one frame)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.data = bytearray()

    async def write(self, chunk: bytes) -> None:
        if len(self.data) + len(chunk) > self.limit:
            raise RequestTooLarge(f"file is larger than the limit of {self.limit} bytes")
        self.data += chunk


async def create_container_file(request: Request) -> Response:
    request.app.state.drain.refuse_new()
    service, caller = _context(request)
    container_id = request.path_params["container_id"]
    content_type, _ = parse_options_header(request.headers.get("content-type", ""))
    if content_type == b"multipart/form-data":
        services: Services = request.app.state.services
        limit = services.files.max_bytes
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limit + _MULTIPART_SLACK:
            raise RequestTooLarge(f"file is larger than the limit of {limit} bytes")
        sink = _MemorySink(limit)
        form = MultipartUpload(sink)
        await form.parse(request, boundary_of(request, "a multipart/form-data body with a `file` part"))
        if not form.got_file:
            if (file_id := form.text("file_id")) is not None:
                return json_response(render_container_file(await service.add_file_id(caller, container_id, file_id)))
            raise InvalidRequest("Missing required parameter: 'file' or 'file_id'.", param="file")
        data = bytes(sink.data)
        del sink
        return json_response(render_container_file(await service.upload(caller, container_id, form.filename, data)))
    body = await read_json(request, _MAX_JSON_BYTES)
    file_id = body.get("file_id")
    if not isinstance(file_id, str):
        raise InvalidRequest("Missing required parameter: 'file' or 'file_id'.", param="file_id")
    return json_response(render_container_file(await service.add_file_id(caller, container_id, file_id)))


async def list_container_files(request: Request) -> Response:
    service, caller = _context(request)
    limit, after, ascending = _paging(request)
    found, has_more = await service.list_files(
        caller, request.path_params["container_id"], limit=limit, after=after, ascending=ascending
    )
    return json_response(_envelope([render_container_file(f) for f in found], has_more))


async def get_container_file(request: Request) -> Response:
    service, caller = _context(request)
    found = await service.get_file(caller, request.path_params["container_id"], request.path_params["file_id"])
    return json_response(render_container_file(found))


async def download_container_file(request: Request) -> Response:
    """The bytes, as an attachment named like the file (``nosniff``: code chose the name, so the type);
    the temporary copy goes once they are sent."""
    service, caller = _context(request)
    found, path, discard = await service.download(
        caller, request.path_params["container_id"], request.path_params["file_id"]
    )
    name = found.path.rsplit("/", 1)[-1]
    return attachment(path, media_type=mime_type_for(name, None), filename=name, background=BackgroundTask(discard))


async def delete_container_file(request: Request) -> Response:
    service, caller = _context(request)
    file_id = request.path_params["file_id"]
    await service.delete_file(caller, request.path_params["container_id"], file_id)
    return json_response({"id": file_id, "object": "container.file.deleted", "deleted": True})
