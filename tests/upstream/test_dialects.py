"""The rules written once in upstream/dialects.py: the Azure host test and Databricks' gpt-oss rule, as
the guess and the forced preset both use them (the guess itself is tabled in test_translate.py)."""

from __future__ import annotations

import pytest

from execbridge.upstream.dialects import (
    DATABRICKS,
    DATABRICKS_GPT_OSS,
    PRESETS,
    VLLM,
    dialect_for,
    forced_dialect,
    is_azure_host,
)


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
    assert forced(model) == (DATABRICKS_GPT_OSS if "gpt-oss" in model.lower() else DATABRICKS)


def test_forced_presets():
    assert forced_dialect("auto") is None
    assert forced_dialect("vllm") == VLLM
    assert set(PRESETS) == {"generic", "openai", "azure", "vllm", "ollama", "litellm", "databricks"}
