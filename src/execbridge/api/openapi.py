"""``GET /openapi.json``: an OpenAPI 3.1 description of what this gateway serves.

Job: describe every route, the request schemas the parsers enforce (``api/wire.py`` for messages,
``api/files.py`` for uploads and listings) and Anthropic's error envelope, for users' own tooling and
for the schema-driven fuzz test (``tests/gateway/test_openapi_fuzz.py``, schemathesis).

Where the parser accepts more than the schema says (unknown fields are ignored, as Anthropic ignores
them), the schema says so with ``additionalProperties``; where it refuses, the schema refuses too, so a
request generated from the schema and refused by the gateway is a finding. ``tests/gateway/
test_openapi.py`` checks that every route of the app is here and nothing else is.
"""

from __future__ import annotations

import functools
from typing import Any, Final

import orjson
from starlette.requests import Request
from starlette.responses import Response

from execbridge import __version__
from execbridge.api.blocks import RESULT_BLOCK_TYPES
from execbridge.api.openai_files import PURPOSES
from execbridge.api.openapi_openai import container_paths, openai_schemas
from execbridge.api.openapi_responses import responses_paths, responses_schemas
from execbridge.api.wire import INT32_MAX, MAX_MESSAGES
from execbridge.tools.versions import TOOL_NAME, VERSIONS

JSON: Final = "application/json"
_REF = "#/components/schemas/"


def _ref(name: str) -> dict[str, str]:
    return {"$ref": _REF + name}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {JSON: {"schema": schema}}}


_ERRORS: Final = {
    "4XX": _json(_ref("ErrorResponse"), "The request cannot be served; the message names the field."),
    "5XX": _json(_ref("ErrorResponse"), "The gateway or the upstream failed; retry where the SDK does."),
}
# Paths both APIs share (/v1/files, /v1/models) answer in OpenAI's envelope unless the request carries
# ``anthropic-version`` (api/dialect.py).
_EITHER_ERROR: Final = {"oneOf": [_ref("ErrorResponse"), _ref("OpenAIErrorResponse")]}
_SHARED_ERRORS: Final = {
    "4XX": _json(_EITHER_ERROR, "The request cannot be served; the message names the field."),
    "5XX": _json(_EITHER_ERROR, "The gateway or the upstream failed; retry where the SDK does."),
}
_BETA_HEADER: Final = {
    "name": "anthropic-beta",
    "in": "header",
    "required": False,
    "schema": {"type": "string"},
    "description": "Comma-separated beta names (code-execution-2025-08-25, files-api-2025-04-14, …).",
}
_VERSION_HEADER: Final = {
    "name": "anthropic-version",
    "in": "header",
    "required": False,
    "schema": {"type": "string", "enum": ["2023-06-01", "2026-10-21"]},
}

_TEXT_BLOCK: Final = {
    "type": "object",
    "required": ["type", "text"],
    "properties": {"type": {"const": "text"}, "text": {"type": "string", "minLength": 1}},
}
_SOURCE: Final = {
    "type": "object",
    "required": ["type"],
    "properties": {
        "type": {"type": "string", "enum": ["base64", "url", "text", "content"]},
        "media_type": {"type": "string"},
        "data": {"type": "string"},
        "url": {"type": "string"},
    },
}


def _block(kind: str, required: list[str], properties: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "object",
        "required": ["type", *required],
        "properties": {"type": {"const": kind}, **properties},
    }


def _content_block() -> dict[str, Any]:
    blocks = [
        _TEXT_BLOCK,
        _block("image", ["source"], {"source": _SOURCE}),
        _block("document", ["source"], {"source": _SOURCE, "title": {"type": "string"}}),
        _block("thinking", ["thinking"], {"thinking": {"type": "string"}, "signature": {"type": "string"}}),
        _block("redacted_thinking", ["data"], {"data": {"type": "string"}}),
        _block(
            "tool_use",
            ["id", "name", "input"],
            {
                "id": {"type": "string"},
                "name": {"type": "string"},
                "input": {"type": "object"},
                "caller": {
                    "type": "object",
                    "required": ["type"],
                    "properties": {"type": {"type": "string"}, "tool_id": {"type": "string"}},
                },
            },
        ),
        _block(
            "server_tool_use",
            ["id", "name", "input"],
            {"id": {"type": "string"}, "name": {"type": "string"}, "input": {"type": "object"}},
        ),
        _block(
            "tool_result",
            ["tool_use_id"],
            {
                "tool_use_id": {"type": "string"},
                "content": {"oneOf": [{"type": "string"}, {"type": "array", "items": {"type": "object"}}]},
                "is_error": {"type": "boolean"},
            },
        ),
        _block("container_upload", ["file_id"], {"file_id": {"type": "string"}}),
        *(
            _block(kind, ["tool_use_id", "content"], {"tool_use_id": {"type": "string"}, "content": {"type": "object"}})
            for kind in sorted(RESULT_BLOCK_TYPES)
        ),
    ]
    return {"oneOf": blocks}


def _tool() -> dict[str, Any]:
    code_execution = {
        "type": "object",
        "required": ["type", "name"],
        "properties": {"type": {"type": "string", "enum": sorted(VERSIONS)}, "name": {"const": TOOL_NAME}},
    }
    custom = {
        "type": "object",
        "required": ["name", "input_schema"],
        "properties": {
            "type": {"const": "custom"},
            "name": {"type": "string", "pattern": "^[a-zA-Z0-9_-]{1,64}$"},
            "description": {"type": "string"},
            "input_schema": {"type": "object", "properties": {"type": {"const": "object"}}},
            "allowed_callers": {
                "type": "array",
                "minItems": 1,
                "items": {"enum": ["direct", *(f"{TOOL_NAME}_{v}" for v in ("20250825", "20260120", "20260521"))]},
            },
        },
    }
    return {"oneOf": [code_execution, custom]}


def _messages_request() -> dict[str, Any]:
    unit = {"type": "number", "minimum": 0, "maximum": 1}
    return {
        "type": "object",
        "required": ["model", "max_tokens", "messages"],
        "properties": {
            "model": {"type": "string"},
            "max_tokens": {"type": "integer", "minimum": 0, "maximum": INT32_MAX},
            "messages": {"type": "array", "minItems": 1, "maxItems": MAX_MESSAGES, "items": _ref("Message")},
            "system": {"oneOf": [{"type": "string"}, {"type": "array", "items": _TEXT_BLOCK}]},
            "tools": {"type": "array", "items": _ref("Tool")},
            "tool_choice": {
                "type": "object",
                "required": ["type"],
                "properties": {
                    "type": {"type": "string", "enum": ["auto", "any", "tool", "none"]},
                    "name": {"type": "string"},
                    "disable_parallel_tool_use": {"type": "boolean"},
                },
            },
            "stream": {"type": "boolean"},
            "stop_sequences": {"type": "array", "items": {"type": "string"}},
            "temperature": unit,
            "top_p": unit,
            "top_k": {"type": "integer", "minimum": 0, "maximum": INT32_MAX},
            "metadata": {"type": "object", "properties": {"user_id": {"type": "string"}}},
            "service_tier": {"type": "string", "enum": ["auto", "standard_only"]},
            "container": {"oneOf": [{"type": "string"}, {"type": "object", "properties": {"id": {"type": "string"}}}]},
            "thinking": {
                "oneOf": [
                    {
                        "type": "object",
                        "required": ["type", "budget_tokens"],
                        "properties": {
                            "type": {"const": "enabled"},
                            "budget_tokens": {"type": "integer", "minimum": 1024, "maximum": INT32_MAX},
                            "display": {"type": "string"},
                        },
                    },
                    {"type": "object", "required": ["type"], "properties": {"type": {"const": "disabled"}}},
                    {
                        "type": "object",
                        "required": ["type"],
                        "properties": {"type": {"const": "adaptive"}, "display": {"type": "string"}},
                    },
                ]
            },
            "thread": {
                "oneOf": [
                    {"type": "object", "required": ["type"], "properties": {"type": {"const": "create"}}},
                    {
                        "type": "object",
                        "required": ["type", "previous_message_id"],
                        "properties": {
                            "type": {"const": "continue"},
                            "previous_message_id": {"type": "string", "pattern": "^msg_[A-Za-z0-9_]{1,64}$"},
                        },
                    },
                ]
            },
        },
    }


def _count_tokens_request() -> dict[str, Any]:
    schema = _messages_request()
    schema["required"] = ["model", "messages"]
    return schema


def _schemas() -> dict[str, Any]:
    return {
        "MessagesRequest": _messages_request(),
        "CountTokensRequest": _count_tokens_request(),
        "TokenCount": {
            "type": "object",
            "required": ["input_tokens"],
            "properties": {"input_tokens": {"type": "integer", "minimum": 0}},
        },
        "Message": {
            "type": "object",
            "required": ["role", "content"],
            "properties": {
                # ``system`` messages are folded into the system prompt, in order (docs/protocol.md §1.2).
                "role": {"type": "string", "enum": ["user", "assistant", "system"]},
                "content": {
                    "oneOf": [
                        {"type": "string", "minLength": 1},
                        {"type": "array", "minItems": 1, "items": _ref("ContentBlock")},
                    ]
                },
            },
        },
        "ContentBlock": _content_block(),
        "Tool": _tool(),
        "MessageResponse": {
            "type": "object",
            "required": ["id", "type", "role", "model", "content", "stop_reason", "usage"],
            "properties": {
                "id": {"type": "string"},
                "type": {"const": "message"},
                "role": {"const": "assistant"},
                "model": {"type": "string"},
                "content": {"type": "array", "items": {"type": "object"}},
                "stop_reason": {"type": ["string", "null"]},
                "stop_sequence": {"type": ["string", "null"]},
                "usage": {"type": "object"},
                "container": {"type": ["object", "null"]},
            },
        },
        "ErrorResponse": {
            "type": "object",
            "required": ["type", "error"],
            "properties": {
                "type": {"const": "error"},
                "error": {
                    "type": "object",
                    "required": ["type", "message"],
                    "properties": {
                        "type": {"type": "string"},
                        "message": {"type": "string"},
                        "details": {"type": "object", "properties": {"error_code": {"type": "string"}}},
                    },
                },
                "request_id": {"type": "string"},
            },
        },
        "OpenAIErrorResponse": {
            "type": "object",
            "required": ["error"],
            "properties": {
                "error": {
                    "type": "object",
                    "required": ["message", "type", "param", "code"],
                    "properties": {
                        "message": {"type": "string"},
                        "type": {"type": "string"},
                        "param": {"type": ["string", "null"]},
                        "code": {"type": ["string", "null"]},
                    },
                },
            },
        },
        "File": {
            "type": "object",
            "required": ["id", "type", "filename", "mime_type", "size_bytes", "created_at"],
            "properties": {
                "id": {"type": "string"},
                "type": {"const": "file"},
                "filename": {"type": "string"},
                "mime_type": {"type": "string"},
                "size_bytes": {"type": "integer"},
                "created_at": {"type": "string"},
                "downloadable": {"type": "boolean"},
            },
        },
        "FileList": {
            "type": "object",
            "required": ["data"],
            "properties": {"data": {"type": "array", "items": _ref("File")}, "has_more": {"type": "boolean"}},
        },
        "Model": {"type": "object", "required": ["id", "type"], "properties": {"id": {"type": "string"}}},
        "ModelList": {"type": "object", "required": ["data"], "properties": {"data": {"type": "array"}}},
        "Health": {"type": "object", "required": ["status"], "properties": {"status": {"type": "string"}}},
        **openai_schemas(),
        **responses_schemas(),
    }


def _either(anthropic: str, openai: str) -> dict[str, Any]:
    """A shared path's answer: Anthropic's object with ``anthropic-version``, OpenAI's without (api/dialect.py)."""
    return {"anyOf": [_ref(anthropic), _ref(openai)]}


def _file_id_parameter() -> dict[str, Any]:
    return {"name": "file_id", "in": "path", "required": True, "schema": {"type": "string"}}


_HEADERS: Final = [_VERSION_HEADER, _BETA_HEADER]


def _count_tokens_path(headers: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "post": {
            "summary": "Count a request's input tokens, with the tools and system note the gateway adds",
            "parameters": headers,
            "requestBody": {"required": True, "content": {JSON: {"schema": _ref("CountTokensRequest")}}},
            "responses": {
                "200": {
                    "description": "The count: the upstream's own, or the gateway's estimate (header says which).",
                    "headers": {
                        "execbridge-token-count": {
                            "schema": {"type": "string", "enum": ["upstream", "estimate"]},
                            "description": "upstream: counted by the upstream; estimate: the gateway's estimate.",
                        }
                    },
                    "content": {JSON: {"schema": _ref("TokenCount")}},
                },
                **_ERRORS,
            },
        }
    }


def _paths() -> dict[str, Any]:
    return {
        **_message_paths(),
        **_file_paths(),
        **_other_paths(),
        **container_paths(),
        **responses_paths(),
        **_playground_paths(),
    }


def _message_paths() -> dict[str, Any]:
    headers = _HEADERS
    return {
        "/v1/messages": {
            "post": {
                "summary": "Create a message; server-side code execution runs here",
                "parameters": headers,
                "requestBody": {"required": True, "content": {JSON: {"schema": _ref("MessagesRequest")}}},
                "responses": {
                    "200": {
                        "description": "The message (JSON), or server-sent events when stream is true.",
                        "content": {JSON: {"schema": _ref("MessageResponse")}, "text/event-stream": {}},
                    },
                    **_ERRORS,
                },
            }
        },
        "/v1/messages/count_tokens": _count_tokens_path(headers),
    }


def _file_paths() -> dict[str, Any]:
    headers = _HEADERS
    return {
        "/v1/files": {
            "post": {
                "summary": "Upload a file",
                "parameters": headers,
                "requestBody": {
                    "required": True,
                    "content": {
                        "multipart/form-data": {
                            "schema": {
                                "type": "object",
                                "required": ["file"],
                                "properties": {
                                    "file": {"type": "string", "format": "binary"},
                                    "expires_in_seconds": {"type": "integer", "minimum": 3600, "maximum": 7776000},
                                    # OpenAI's Files API (required there): api/openai_files.py
                                    "purpose": {"type": "string", "enum": list(PURPOSES)},
                                },
                            }
                        }
                    },
                },
                "responses": {"200": _json(_either("File", "OpenAIFile"), "The stored file."), **_SHARED_ERRORS},
            },
            "get": {
                "summary": "List files, newest first",
                "parameters": [
                    *headers,
                    {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 1000}},
                    {"name": "after_id", "in": "query", "schema": {"type": "string"}},
                    {"name": "before_id", "in": "query", "schema": {"type": "string"}},
                    # OpenAI's paging and filter (api/openai_files.py)
                    {"name": "after", "in": "query", "schema": {"type": "string"}},
                    {"name": "order", "in": "query", "schema": {"type": "string", "enum": ["asc", "desc"]}},
                    {"name": "purpose", "in": "query", "schema": {"type": "string"}},
                ],
                "responses": {
                    "200": _json(_either("FileList", "OpenAIFileList"), "A page of files."),
                    **_SHARED_ERRORS,
                },
            },
        },
        "/v1/files/{file_id}": {
            "get": {
                "summary": "A file's metadata",
                "parameters": [*headers, _file_id_parameter()],
                "responses": {"200": _json(_either("File", "OpenAIFile"), "The file."), **_SHARED_ERRORS},
            },
            "delete": {
                "summary": "Delete a file",
                "parameters": [*headers, _file_id_parameter()],
                "responses": {"200": _json({"type": "object"}, "The deleted file's id."), **_SHARED_ERRORS},
            },
        },
        "/v1/files/{file_id}/content": {
            "get": {
                "summary": "Download a file that code execution made",
                "parameters": [*headers, _file_id_parameter()],
                "responses": {"200": {"description": "The file's bytes."}, **_SHARED_ERRORS},
            }
        },
    }


def _other_paths() -> dict[str, Any]:
    headers = _HEADERS
    return {
        "/v1/models": {
            "get": {
                "summary": "The models the upstream offers",
                "parameters": headers,
                "responses": {"200": _json(_either("ModelList", "OpenAIModelList"), "The models."), **_SHARED_ERRORS},
            }
        },
        "/v1/models/{model_id}": {
            "get": {
                "summary": "One model",
                "parameters": [
                    *headers,
                    {"name": "model_id", "in": "path", "required": True, "schema": {"type": "string"}},
                ],
                "responses": {"200": _json(_either("Model", "OpenAIModel"), "The model."), **_SHARED_ERRORS},
            }
        },
        "/healthz": {
            "get": {
                "summary": "The process answers (no key needed)",
                "security": [],
                "responses": {"200": _json(_ref("Health"), "ok")},
            }
        },
        "/readyz": {
            "get": {
                "summary": "The store, the sandbox host and the upstream credential answer (no key needed)",
                "security": [],
                "responses": {
                    "200": _json(_ref("Health"), "ready"),
                    "503": _json(_ref("Health"), "not ready, starting or draining"),
                },
            }
        },
        "/openapi.json": {
            "get": {
                "summary": "This document (no key needed)",
                "security": [],
                "responses": {"200": {"description": "OpenAPI 3.1", "content": {JSON: {}}}},
            }
        },
        "/metrics": {
            "get": {
                "summary": "Prometheus metrics, text format (no key needed; 404 when metrics are off)",
                "security": [],
                "responses": {
                    "200": {"description": "metrics", "content": {"text/plain": {"schema": {"type": "string"}}}},
                    "404": _json(_ref("ErrorResponse"), "metrics are off"),
                },
            }
        },
    }


def _playground_paths() -> dict[str, Any]:
    """The browser page (api/playground.py): no key; a 404 when the gateway runs without it."""
    off = {"404": _json(_ref("ErrorResponse"), "Not served: the playground is off, or no such asset.")}
    return {
        "/playground": {
            "get": {
                "summary": "The playground page (no key needed)",
                "security": [],
                "responses": {"200": {"description": "The page", "content": {"text/html": {}}}, **off},
            }
        },
        "/playground/session": {
            "get": {
                "summary": "Whether the playground must ask for an API key (no key needed)",
                "security": [],
                "responses": {
                    "200": _json(
                        {
                            "type": "object",
                            "required": ["key_required"],
                            "properties": {"key_required": {"type": "boolean"}},
                        },
                        "false only on an open loopback gateway",
                    ),
                    **off,
                },
            }
        },
        "/playground/static/{name}": {
            "get": {
                "summary": "One of the playground's stylesheet and scripts (no key needed)",
                "security": [],
                "parameters": [{"name": "name", "in": "path", "required": True, "schema": {"type": "string"}}],
                "responses": {
                    "200": {"description": "The asset", "content": {"text/css": {}, "text/javascript": {}}},
                    **off,
                },
            }
        },
    }


def document() -> dict[str, Any]:
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "execbridge",
            "version": __version__,
            "description": "Anthropic's Messages and Files APIs with server-side code execution, in front of "
            "function-calling upstreams. Errors use Anthropic's envelope (ErrorResponse); on paths OpenAI's API "
            "shares (/v1/files, /v1/models), a request without an anthropic-version header gets OpenAI's "
            "(OpenAIErrorResponse).",
        },
        "paths": _paths(),
        "components": {
            "schemas": _schemas(),
            "securitySchemes": {
                "apiKey": {"type": "apiKey", "in": "header", "name": "x-api-key"},
                "bearer": {"type": "http", "scheme": "bearer"},
            },
        },
        "security": [{"apiKey": []}, {"bearer": []}],
    }


@functools.cache
def _document_bytes() -> bytes:
    return orjson.dumps(document())


async def openapi_json(request: Request) -> Response:
    return Response(_document_bytes(), media_type=JSON)
