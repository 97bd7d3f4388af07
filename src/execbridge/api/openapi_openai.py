"""The OpenAI-shaped part of ``GET /openapi.json`` (``api/openapi.py`` assembles the document): the
Containers API's paths, and the schemas of OpenAI's file, model, container and list objects, which
the shared ``/v1/files`` and ``/v1/models`` paths answer with when a request has no
``anthropic-version`` header (``api/dialect.py``).

Schemas describe what ``api/containers.py``, ``api/openai_files.py`` and ``api/openai_models.py``
write and accept; the fuzz test (``tests/gateway/test_openapi_fuzz.py``) holds them to it.
"""

from __future__ import annotations

from typing import Any, Final

from execbridge.engine.openai_containers import MAX_EXPIRES_MINUTES, MAX_LIST_LIMIT, MEMORY_TIERS

__all__ = ["container_paths", "openai_schemas"]

JSON: Final = "application/json"
_REF: Final = "#/components/schemas/"
_ERRORS: Final = {
    "4XX": {
        "description": "Refused (OpenAI's envelope).",
        "content": {JSON: {"schema": {"$ref": _REF + "OpenAIErrorResponse"}}},
    },
    "5XX": {
        "description": "Failed (OpenAI's envelope).",
        "content": {JSON: {"schema": {"$ref": _REF + "OpenAIErrorResponse"}}},
    },
}
_NULLABLE_STRING: Final = {"type": ["string", "null"]}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": _REF + name}


def _ok(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"200": {"description": description, "content": {JSON: {"schema": schema}}}, **_ERRORS}


def _list_of(item: str) -> dict[str, Any]:
    return {
        "type": "object",
        "required": ["object", "data", "first_id", "last_id", "has_more"],
        "properties": {
            "object": {"const": "list"},
            "data": {"type": "array", "items": _ref(item)},
            "first_id": _NULLABLE_STRING,
            "last_id": _NULLABLE_STRING,
            "has_more": {"type": "boolean"},
        },
    }


def _deleted(kind: str) -> dict[str, Any]:
    return {
        "type": "object",
        "required": ["id", "object", "deleted"],
        "properties": {"id": {"type": "string"}, "object": {"const": kind}, "deleted": {"const": True}},
    }


def openai_schemas() -> dict[str, Any]:
    integer = {"type": "integer"}
    return {
        "OpenAIFile": {
            "type": "object",
            "required": ["id", "object", "bytes", "created_at", "filename", "purpose", "status"],
            "properties": {
                "id": {"type": "string"},
                "object": {"const": "file"},
                "bytes": integer,
                "created_at": integer,
                "filename": {"type": "string"},
                "purpose": {"type": "string"},
                "status": {"const": "processed"},
                "expires_at": {"type": ["integer", "null"]},
                "status_details": _NULLABLE_STRING,
            },
        },
        "OpenAIFileList": _list_of("OpenAIFile"),
        "OpenAIModel": {
            "type": "object",
            "required": ["id", "object", "created", "owned_by"],
            "properties": {
                "id": {"type": "string"},
                "object": {"const": "model"},
                "created": integer,
                "owned_by": {"type": "string"},
            },
        },
        "OpenAIModelList": {
            "type": "object",
            "required": ["object", "data"],
            "properties": {"object": {"const": "list"}, "data": {"type": "array", "items": _ref("OpenAIModel")}},
        },
        "Container": {
            "type": "object",
            "required": ["id", "object", "created_at", "status", "name"],
            "properties": {
                "id": {"type": "string"},
                "object": {"const": "container"},
                "created_at": integer,
                "status": {"type": "string", "enum": ["running", "expired"]},
                "name": {"type": "string"},
                "expires_after": {
                    "type": "object",
                    "properties": {"anchor": {"const": "last_active_at"}, "minutes": integer},
                },
                "last_active_at": integer,
                "memory_limit": {"type": "string", "enum": list(MEMORY_TIERS)},
                "network_policy": {"type": "object", "properties": {"type": {"const": "disabled"}}},
            },
        },
        "ContainerList": _list_of("Container"),
        "ContainerFile": {
            "type": "object",
            "required": ["id", "object", "created_at", "bytes", "container_id", "path", "source"],
            "properties": {
                "id": {"type": "string"},
                "object": {"const": "container.file"},
                "created_at": integer,
                "bytes": integer,
                "container_id": {"type": "string"},
                "path": {"type": "string"},
                "source": {"type": "string", "enum": ["user", "assistant"]},
            },
        },
        "ContainerFileList": _list_of("ContainerFile"),
        "ContainerCreateRequest": {
            "type": "object",
            "required": ["name"],
            "properties": {
                "name": {"type": "string", "maxLength": 256},
                "memory_limit": {"type": "string", "enum": list(MEMORY_TIERS)},
                "expires_after": {
                    "type": "object",
                    "required": ["anchor", "minutes"],
                    "properties": {
                        "anchor": {"const": "last_active_at"},
                        "minutes": {"type": "integer", "minimum": 1, "maximum": MAX_EXPIRES_MINUTES},
                    },
                },
                "file_ids": {"type": "array", "maxItems": 100, "items": {"type": "string"}},
                "network_policy": {
                    "type": "object",
                    "required": ["type"],
                    "properties": {"type": {"const": "disabled"}},
                    "additionalProperties": False,
                },
            },
        },
    }


def _paging() -> list[dict[str, Any]]:
    return [
        {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": MAX_LIST_LIMIT}},
        {"name": "after", "in": "query", "schema": {"type": "string"}},
        {"name": "order", "in": "query", "schema": {"type": "string", "enum": ["asc", "desc"]}},
    ]


def _path_ids(*names: str) -> list[dict[str, Any]]:
    return [{"name": name, "in": "path", "required": True, "schema": {"type": "string"}} for name in names]


def container_paths() -> dict[str, Any]:
    container, file = _path_ids("container_id"), _path_ids("container_id", "file_id")
    upload = {
        "multipart/form-data": {
            "schema": {
                "type": "object",
                "required": ["file"],
                "properties": {"file": {"type": "string", "format": "binary"}},
            }
        },
        JSON: {"schema": {"type": "object", "required": ["file_id"], "properties": {"file_id": {"type": "string"}}}},
    }
    return {
        "/v1/containers": {
            "post": {
                "summary": "Create a container (OpenAI's Containers API)",
                "requestBody": {"required": True, "content": {JSON: {"schema": _ref("ContainerCreateRequest")}}},
                "responses": _ok(_ref("Container"), "The running container."),
            },
            "get": {
                "summary": "List containers, newest first unless order=asc",
                "parameters": [*_paging(), {"name": "name", "in": "query", "schema": {"type": "string"}}],
                "responses": _ok(_ref("ContainerList"), "A page of containers."),
            },
        },
        "/v1/containers/{container_id}": {
            "get": {
                "summary": "A container",
                "parameters": container,
                "responses": _ok(_ref("Container"), "The container."),
            },
            "delete": {
                "summary": "Delete a container and its files",
                "parameters": container,
                "responses": _ok(_deleted("container.deleted"), "Deleted."),
            },
        },
        "/v1/containers/{container_id}/files": {
            "post": {
                "summary": "Put a file into a container (multipart upload, or a Files API file by id)",
                "parameters": container,
                "requestBody": {"required": True, "content": upload},
                "responses": _ok(_ref("ContainerFile"), "The file in the container."),
            },
            "get": {
                "summary": "List a container's files (those code wrote included)",
                "parameters": [*container, *_paging()],
                "responses": _ok(_ref("ContainerFileList"), "A page of files."),
            },
        },
        "/v1/containers/{container_id}/files/{file_id}": {
            "get": {
                "summary": "A container file",
                "parameters": file,
                "responses": _ok(_ref("ContainerFile"), "The file."),
            },
            "delete": {
                "summary": "Delete a container file",
                "parameters": file,
                "responses": _ok(_deleted("container.file.deleted"), "Deleted."),
            },
        },
        "/v1/containers/{container_id}/files/{file_id}/content": {
            "get": {
                "summary": "A container file's bytes",
                "parameters": file,
                "responses": {"200": {"description": "The file's bytes."}, **_ERRORS},
            }
        },
    }
