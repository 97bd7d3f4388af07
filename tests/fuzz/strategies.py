"""Inputs for the fuzz tests: any JSON, and requests that are almost right (the interesting kind)."""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st

SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False),  # JSON has no NaN; orjson refuses it before the parser sees one
    st.text(max_size=20),
)


def json_values(max_leaves: int = 12) -> st.SearchStrategy[Any]:
    return st.recursive(
        SCALARS,
        lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)),
        max_leaves=max_leaves,
    )


ANY = json_values()

BLOCK_TYPES = [
    "text", "image", "document", "thinking", "redacted_thinking", "tool_use", "server_tool_use",
    "tool_result", "container_upload", "code_execution_tool_result", "bash_code_execution_tool_result",
    "text_editor_code_execution_tool_result", "search_result", "nonsense",
]  # fmt: skip
BLOCK_KEYS = [
    "text", "source", "id", "name", "input", "tool_use_id", "content", "is_error", "file_id", "thinking",
    "signature", "data", "cache_control", "citations", "title", "context", "type",
]  # fmt: skip
TOOL_TYPES = [
    "code_execution_20250522", "code_execution_20250825", "code_execution_20260120", "code_execution_20260521",
    "custom", "web_search_20250305", "bogus",
]  # fmt: skip
SOURCE = st.fixed_dictionaries(
    {},
    optional={
        "type": st.sampled_from(["base64", "url", "text", "file", "content", "x"]),
        "media_type": st.sampled_from(["image/png", "application/pdf", "text/plain", "x/y"]) | ANY,
        "data": st.sampled_from(["aGVsbG8=", "!!", ""]) | ANY,
        "url": st.text(max_size=20),
        "file_id": st.text(max_size=10),
        "content": ANY,
    },
)


def _block() -> st.SearchStrategy[dict[str, Any]]:
    fields = {key: ANY for key in BLOCK_KEYS if key != "type"}
    fields["source"] = SOURCE | ANY
    fields["input"] = st.dictionaries(st.text(max_size=6), ANY, max_size=3) | ANY
    return st.fixed_dictionaries({"type": st.sampled_from(BLOCK_TYPES) | ANY}, optional=fields)


BLOCK = _block()
MESSAGE = st.fixed_dictionaries(
    {"role": st.sampled_from(["user", "assistant", "system"]) | ANY},
    optional={"content": st.text(max_size=10) | st.lists(BLOCK | ANY, max_size=4) | ANY},
)
TOOL = st.fixed_dictionaries(
    {},
    optional={
        "type": st.sampled_from(TOOL_TYPES) | ANY,
        "name": st.sampled_from(["code_execution", "get_weather", ""]) | ANY,
        "description": ANY,
        "input_schema": st.just({"type": "object"}) | ANY,
        "allowed_callers": ANY,
        "cache_control": ANY,
    },
)
REQUEST = st.fixed_dictionaries(
    {
        "model": st.just("m") | ANY,
        "max_tokens": st.integers(min_value=-5, max_value=2**40) | ANY,
        "messages": st.lists(MESSAGE, max_size=4) | ANY,
    },
    optional={
        "system": st.text(max_size=10) | st.lists(BLOCK, max_size=2) | ANY,
        "tools": st.lists(TOOL, max_size=3) | ANY,
        "tool_choice": st.fixed_dictionaries({"type": st.sampled_from(["auto", "any", "tool", "none"])}) | ANY,
        "stream": ANY,
        "stop_sequences": st.lists(st.text(max_size=5), max_size=3) | ANY,
        "temperature": ANY,
        "top_p": ANY,
        "top_k": ANY,
        "metadata": ANY,
        "container": ANY,
        "thinking": ANY,
        "thread": ANY,
    },
)
