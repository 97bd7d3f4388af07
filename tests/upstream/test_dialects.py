"""The rules written once in upstream/dialects.py: the Azure host test and Databricks' gpt-oss rule, as
the guess and the forced preset both use them (the guess itself is tabled in test_translate.py), and
what ``adapt`` learns from refusals of the conversation's forms, in the words real servers used."""

from __future__ import annotations

from dataclasses import replace
from typing import get_args

import orjson
import pytest

from execbridge.config import Settings
from execbridge.errors import UpstreamError
from execbridge.types import Document, FunctionDef, Message, Text, ToolCall, ToolResult
from execbridge.upstream.base import ChatTurn, FunctionChoice
from execbridge.upstream.dialects import (
    DATABRICKS,
    DATABRICKS_CLAUDE,
    DATABRICKS_GPT_OSS,
    GENERIC,
    PRESETS,
    VLLM,
    adapt,
    dialect_for,
    forced_dialect,
    is_azure_host,
)
from execbridge.upstream.error_envelopes import error_from_response, gave_no_reason


@pytest.mark.parametrize(
    ("url", "azure"),
    [
        ("https://acme.openai.azure.com/openai/v1", True),
        ("https://ACME.OpenAI.Azure.com/openai/v1?api-version=preview", True),
        ("https://acme.cognitiveservices.azure.com/openai/v1", True),
        ("https://adb-1.azuredatabricks.net/serving-endpoints", False),
        ("http://proxy.internal/openai.azure.com/v1", False),
    ],
)
def test_azure_host(url, azure):
    assert is_azure_host(url) is azure


@pytest.mark.parametrize("model", ["databricks-gpt-oss-120b", "databricks-claude-sonnet-4-5", "my-GPT-OSS-endpoint"])
def test_forced_databricks_keeps_the_gpt_oss_rule_of_the_guess(model):
    forced = forced_dialect("databricks")
    assert callable(forced)
    assert forced(model) == dialect_for("https://adb-1.azuredatabricks.net/serving-endpoints", model)
    expected = (
        DATABRICKS_GPT_OSS if "gpt-oss" in model.lower() else DATABRICKS_CLAUDE if "claude" in model else DATABRICKS
    )
    assert forced(model) == expected


def test_forced_presets():
    assert forced_dialect("auto") is None
    assert forced_dialect("vllm") == VLLM
    assert set(PRESETS) == {"generic", "openai", "azure", "vllm", "ollama", "litellm", "llama-cpp", "databricks"}
    # Every preset can be forced from the settings, and nothing else can.
    assert set(PRESETS) | {"auto"} == set(get_args(Settings.model_fields["upstream_dialect"].annotation))


# ---------------------------------------------------------------- adapt: refusals of forms, in real words

# What llama-cpp-python's server (0.3.36, chatml-function-calling) answered, cut to the lines that matter.
LLAMA_NULL_CONTENT = (
    "7 validation errors:\n"
    "  {'type': 'string_type', 'loc': ('body', 'messages', 1, 'ChatCompletionRequestAssistantMessage', 'content'), "
    "'msg': 'Input should be a valid string', 'input': None}\n"
)
LLAMA_FILE_PART = (
    "15 validation errors:\n"
    "  {'type': 'string_type', 'loc': ('body', 'messages', 0, 'ChatCompletionRequestUserMessage', 'content', 'str'), "
    "'msg': 'Input should be a valid string', 'input': [{'type': 'text', 'text': 'read'}, {'type': 'file', "
    "'file': {'filename': 'a.pdf', 'file_data': 'data:application/pdf;base64,JVBERi0='}}]}\n"
    "  {'type': 'literal_error', 'loc': ('body', 'messages', 0, 'ChatCompletionRequestUserMessage', 'content', "
    "'list[union[ChatCompletionRequestMessageContentPartText,ChatCompletionRequestMessageContentPartImage]]', 1, "
    "'ChatCompletionRequestMessageContentPartImage', 'type'), 'msg': \"Input should be 'image_url'\", "
    "'input': 'file'}\n"
)
BASH = FunctionDef("bash_code_execution", "", {})
EDIT = FunctionDef("text_editor_code_execution", "", {})
CALL_ONLY = (
    Message("user", (Text("go"),)),
    Message("assistant", (ToolCall("srvtoolu_a", "bash_code_execution", {"command": "ls"}, server=True),)),
    Message("user", (ToolResult("srvtoolu_a", (Text("a.txt"),)),)),
)
WITH_PDF = (Message("user", (Document(media_type="application/pdf", data="JVBERi0=", title="a.pdf"), Text("read"))),)
TURN = ChatTurn(model="m", messages=CALL_ONLY, max_tokens=10, functions=(BASH, EDIT))


def error_500(message: str) -> UpstreamError:
    body = orjson.dumps({"error": {"message": message, "type": "internal_server_error", "param": None, "code": None}})
    return error_from_response(500, body, {})


@pytest.mark.parametrize(
    ("dialect", "error", "turn", "adapted"),
    [
        pytest.param(
            DATABRICKS,
            error_500(LLAMA_NULL_CONTENT),
            TURN,
            replace(DATABRICKS, empty_call_content=""),
            id="null content refused as not a string",
        ),
        pytest.param(
            GENERIC,
            UpstreamError("messages.1: text content blocks must be non-empty", status=400),
            TURN,
            replace(GENERIC, empty_call_content=None),
            id="empty content refused",
        ),
        pytest.param(
            GENERIC,
            error_500(LLAMA_FILE_PART),
            replace(TURN, messages=WITH_PDF),
            replace(GENERIC, file_parts=False),
            id="file part refused",
        ),
        pytest.param(
            GENERIC,
            error_500(""),
            replace(TURN, function_choice=FunctionChoice("required")),
            replace(GENERIC, tool_choice_required=False),
            id="a bare 500 to tool_choice required",
        ),
        pytest.param(
            GENERIC,
            UpstreamError("tool_choice must be a named tool, 'auto', or 'none'", status=400),
            replace(TURN, function_choice=FunctionChoice("required")),
            replace(GENERIC, tool_choice_required=False),
            id="required refused in words",
        ),
        pytest.param(
            GENERIC,
            UpstreamError("the upstream stream ended before the turn finished", code="stream_truncated"),
            replace(TURN, function_choice=FunctionChoice("auto")),
            replace(GENERIC, stream_chosen_calls=False),
            id="empty stream to a chosen call",
        ),
    ],
)
def test_adapt_learns_forms(dialect, error, turn, adapted):
    assert adapt(dialect, error, turn) == adapted
    # …once: the adapted dialect has nothing more to learn from the same refusal.
    assert adapt(adapted, error, turn) is None


@pytest.mark.parametrize(
    ("error", "turn"),
    [
        pytest.param(error_500(""), TURN, id="a bare 500 without required is the server's own failure"),
        pytest.param(
            error_500("CUDA out of memory"),
            replace(TURN, function_choice=FunctionChoice("required")),
            id="a 500 with words is not about required",
        ),
        pytest.param(error_500(LLAMA_FILE_PART), TURN, id="no file part was sent"),
        pytest.param(
            UpstreamError("the upstream stream ended before the turn finished", code="stream_truncated"),
            replace(TURN, function_choice=FunctionChoice("function", "bash_code_execution")),
            id="a named call streams",
        ),
        pytest.param(
            UpstreamError("text content blocks must be non-empty", status=400),
            replace(TURN, messages=(Message("user", (Text("hi"),)),)),
            id="no call-only message was sent",
        ),
        pytest.param(
            UpstreamError("internal error: content must be a valid string", status=503),
            replace(TURN, function_choice=FunctionChoice("required")),
            id="not a refusal status",
        ),
    ],
)
def test_adapt_leaves_other_failures_alone(error, turn):
    assert adapt(DATABRICKS if "string" in error.message else GENERIC, error, turn) is None


def test_bare_500_reads_as_no_reason():
    error = error_500("")
    assert gave_no_reason(error) and error.message == "the upstream answered HTTP 500 without saying why"
    assert not gave_no_reason(error_500("boom"))


def test_litellm_passing_on_an_empty_message_reads_as_no_reason():
    wrapped = "litellm.InternalServerError: InternalServerError: OpenAIException - . Received Model Group=smollm2"
    assert gave_no_reason(error_500(wrapped))
    assert not gave_no_reason(error_500(wrapped.replace(" - .", " - boom.")))
    template = "litellm.InternalServerError: OpenAIException - 'dict object' has no attribute 'content'."
    assert adapt(DATABRICKS, error_500(template), TURN) == replace(DATABRICKS, empty_call_content="")
