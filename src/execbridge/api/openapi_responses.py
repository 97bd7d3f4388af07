"""The Responses API's part of ``GET /openapi.json`` (``api/openapi.py`` assembles the document).

Schemas describe what ``api/responses.py`` accepts and writes, loosely where OpenAI's own objects are
open unions (input and output items, tools): the fuzz test (``tests/gateway/test_openapi_fuzz.py``)
holds the answers to them. Errors use OpenAI's envelope (``OpenAIErrorResponse``).
"""

from __future__ import annotations

from typing import Any, Final

__all__ = ["responses_paths", "responses_schemas"]

JSON: Final = "application/json"
_REF: Final = "#/components/schemas/"
_ERROR: Final = {"content": {JSON: {"schema": {"$ref": _REF + "OpenAIErrorResponse"}}}}
_ERRORS: Final = {"4XX": {"description": "Refused.", **_ERROR}, "5XX": {"description": "Failed.", **_ERROR}}
_OBJECT: Final = {"type": "object"}
_ID: Final = [{"name": "response_id", "in": "path", "required": True, "schema": {"type": "string"}}]
_INCLUDE: Final = {
    "name": "include",
    "in": "query",
    "schema": {"type": "array", "items": {"type": "string", "enum": ["code_interpreter_call.outputs"]}},
}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": _REF + name}


def responses_schemas() -> dict[str, Any]:
    return {
        "ResponseCreateRequest": {
            "type": "object",
            "required": ["model"],
            "properties": {
                "model": {"type": "string"},
                "input": {"oneOf": [{"type": "string"}, {"type": "array", "items": _OBJECT}]},
                "instructions": {"type": ["string", "null"]},
                "tools": {"type": "array", "items": _OBJECT},
                "tool_choice": {"oneOf": [{"type": "string", "enum": ["auto", "none", "required"]}, _OBJECT]},
                "parallel_tool_calls": {"type": "boolean"},
                "include": {"type": "array", "items": {"type": "string"}},
                "previous_response_id": {"type": ["string", "null"]},
                "store": {"type": "boolean"},
                "stream": {"type": "boolean"},
                "max_output_tokens": {"type": ["integer", "null"], "minimum": 1},
                "temperature": {"type": ["number", "null"], "minimum": 0, "maximum": 2},
                "top_p": {"type": ["number", "null"], "minimum": 0, "maximum": 1},
                "reasoning": {"type": ["object", "null"]},
                "metadata": {"type": ["object", "null"], "additionalProperties": {"type": "string"}},
            },
            "additionalProperties": False,
        },
        "Response": {
            "type": "object",
            "required": ["id", "object", "created_at", "status", "model", "output", "tools", "tool_choice"],
            "properties": {
                "id": {"type": "string"},
                "object": {"const": "response"},
                "created_at": {"type": "integer"},
                "status": {"enum": ["completed", "failed", "in_progress", "incomplete"]},
                "model": {"type": "string"},
                "output": {"type": "array", "items": _OBJECT},
                "usage": {"type": ["object", "null"]},
                "error": {"type": ["object", "null"]},
                "incomplete_details": {"type": ["object", "null"]},
            },
        },
        "ResponseItemList": {
            "type": "object",
            "required": ["object", "data", "first_id", "last_id", "has_more"],
            "properties": {
                "object": {"const": "list"},
                "data": {"type": "array", "items": _OBJECT},
                "first_id": {"type": ["string", "null"]},
                "last_id": {"type": ["string", "null"]},
                "has_more": {"type": "boolean"},
            },
        },
        "ResponseDeleted": {
            "type": "object",
            "required": ["id", "object", "deleted"],
            "properties": {"id": {"type": "string"}, "object": {"const": "response"}, "deleted": {"const": True}},
        },
    }


def responses_paths() -> dict[str, Any]:
    created = {
        "200": {
            "description": "The response, or with stream: true its events (text/event-stream).",
            "content": {JSON: {"schema": _ref("Response")}, "text/event-stream": {"schema": {"type": "string"}}},
        },
        **_ERRORS,
    }
    return {
        "/v1/responses": {
            "post": {
                "summary": "Create a model response (OpenAI's Responses API; code_interpreter, shell, functions)",
                "requestBody": {"required": True, "content": {JSON: {"schema": _ref("ResponseCreateRequest")}}},
                "responses": created,
            }
        },
        "/v1/responses/{response_id}": {
            "get": {
                "summary": "A stored response",
                "parameters": [*_ID, _INCLUDE],
                "responses": {
                    "200": {"description": "The response.", "content": {JSON: {"schema": _ref("Response")}}},
                    **_ERRORS,
                },
            },
            "delete": {
                "summary": "Delete a stored response",
                "parameters": _ID,
                "responses": {
                    "200": {"description": "Deleted.", "content": {JSON: {"schema": _ref("ResponseDeleted")}}},
                    **_ERRORS,
                },
            },
        },
        "/v1/responses/{response_id}/input_items": {
            "get": {
                "summary": "The input items of a stored response, newest first unless order=asc",
                "parameters": [
                    *_ID,
                    {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 100}},
                    {"name": "after", "in": "query", "schema": {"type": "string"}},
                    {"name": "order", "in": "query", "schema": {"type": "string", "enum": ["asc", "desc"]}},
                    _INCLUDE,
                ],
                "responses": {
                    "200": {"description": "A page of items.", "content": {JSON: {"schema": _ref("ResponseItemList")}}},
                    **_ERRORS,
                },
            }
        },
    }
