"""A used-up budget through a real ``execbridge serve`` and the official SDK: a 429 ``rate_limit_error``
with ``retry-after``, never a 500, and the containers that exist keep working."""

from __future__ import annotations

import anthropic
import pytest

from execbridge.testing import FakeUpstream, Turn

from .conftest import CLIENT_KEY, sdk_client, serve

TOOLS = [{"type": "code_execution_20250825", "name": "code_execution"}]
ASK = [{"role": "user", "content": "hi"}]


def test_a_used_up_container_budget_is_a_429_with_retry_after(fake_upstream: FakeUpstream, tmp_path):
    options = {
        "EXECBRIDGE_SANDBOX__SPARE_CONTAINERS": "0",
        "EXECBRIDGE_SANDBOX__MAX_CONTAINERS": "1",
        "EXECBRIDGE_SANDBOX__UID_BASE": "240000",  # apart from the other gateways' host uids
    }
    fake_upstream.reset([Turn.text("one"), Turn.text("two"), Turn.text("three")])
    with serve(fake_upstream, tmp_path, **options) as gateway:
        sdk = sdk_client(gateway.url, CLIENT_KEY)
        first = sdk.messages.create(model="m", max_tokens=10, tools=TOOLS, messages=ASK)
        assert first.container is not None
        with pytest.raises(anthropic.RateLimitError) as refused:
            sdk.messages.create(model="m", max_tokens=10, tools=TOOLS, messages=ASK)
        assert refused.value.body["error"]["type"] == "rate_limit_error"
        assert refused.value.response.headers["retry-after"] == "60"
        again = sdk.messages.create(model="m", max_tokens=10, tools=TOOLS, messages=ASK, container=first.container.id)
        assert again.container is not None and again.container.id == first.container.id
    assert fake_upstream.remaining == 0
