"""Databricks unified auth through the real SDK against a fake workspace on 127.0.0.1: OAuth M2M with
expiring tokens, a profile file, environment variables, and hosts that never answer."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from execbridge.errors import ConfigurationError, UpstreamError, UpstreamTimeout
from execbridge.testing import FakeDatabricks, Turn
from execbridge.types import Message, Text
from execbridge.upstream.base import ChatTurn, TextDelta
from execbridge.upstream.databricks import DatabricksCredentials
from execbridge.upstream.openai_chat import OpenAIChatUpstream

TURN = ChatTurn(model="databricks-claude-sonnet-4-5", messages=(Message("user", (Text("hi"),)),), max_tokens=64)


@pytest.fixture(autouse=True)
def clean_env(monkeypatch, tmp_path):
    """Nothing from the machine's own Databricks setup may leak in."""
    for name in list(os.environ):
        if name.startswith(("DATABRICKS_", "ARM_", "AZURE_", "GOOGLE_")):
            monkeypatch.delenv(name)
    monkeypatch.setenv("DATABRICKS_CONFIG_FILE", str(tmp_path / "absent.cfg"))


@contextlib.contextmanager
def blackhole() -> Iterator[int]:
    """A port on 127.0.0.1 that accepts connections (the kernel's backlog) and never answers."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(16)
        yield sock.getsockname()[1]


async def text_of(upstream: OpenAIChatUpstream) -> str:
    async with contextlib.aclosing(upstream.stream_turn(TURN)) as events:
        return "".join([e.text async for e in events if isinstance(e, TextDelta)])


async def m2m(ws: FakeDatabricks, timeout_s: float = 5.0, **options: Any) -> DatabricksCredentials:
    return await DatabricksCredentials.connect(
        timeout_s=timeout_s, host=ws.url, client_id=ws.client_id, client_secret=ws.client_secret, **options
    )


class ManualClock:
    """A monotonic clock that moves only when the test says so: token lifetimes without sleeping."""

    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


async def test_oauth_m2m_tokens_are_refreshed_before_they_expire():
    # The SDK treats any token with under 40 s left as expired and fetches a new one on every call, so a
    # 30 s token makes each refresh a real token request. Both the credentials and the workspace reckon
    # expiry on one hand-moved clock, so no step depends on how fast the machine is.
    clock = ManualClock()
    with FakeDatabricks([Turn.text(str(n)) for n in range(5)], token_ttl_s=30.0, clock=clock) as ws:
        credentials = await m2m(ws, clock=clock)
        assert (credentials.auth_type, credentials.base_url) == ("oauth-m2m", f"{ws.url}/serving-endpoints")
        upstream = OpenAIChatUpstream(credentials.base_url, credentials=credentials, trust_env=False)
        try:
            assert await text_of(upstream) == "0"
            # A 30 s token is due for refresh after 15 s and must be replaced by 22.5 s.
            clock.advance(16)  # due for refresh, still valid: served at once, refreshed in the background
            assert await text_of(upstream) == "1"
            assert await replaced("Bearer fake-oauth-1", credentials)
            assert await text_of(upstream) == "2"
            clock.advance(31)  # every token issued so far has expired: this request waits for a new one
            assert await text_of(upstream) == "3"
        finally:
            await upstream.aclose()
        used = [r.headers["authorization"] for r in ws.requests if r.path.endswith("/chat/completions")]
        assert used[:2] == ["Bearer fake-oauth-1", "Bearer fake-oauth-1"]
        assert used[2] == "Bearer fake-oauth-2"  # the background refresh replaced the token before it expired
        assert used[3] == "Bearer fake-oauth-3"  # after every token expired, a fresh one was fetched
        assert ws.oauth.issued == ["fake-oauth-1", "fake-oauth-2", "fake-oauth-3"]
        assert ws.rejections == []  # the fake upstream refuses expired tokens: none was ever sent


async def replaced(old: str, credentials: DatabricksCredentials) -> bool:
    """Wait (on the event, not on a guess of how long it takes) until the background refresh landed."""
    for _ in range(6_000):  # a cap far beyond any machine, for a refresh that never lands
        if await credentials.authorization() != old:
            return True
        await asyncio.sleep(0.01)
    return False


async def test_fast_path_does_not_call_the_sdk():
    with FakeDatabricks(token_ttl_s=3600) as ws:
        credentials = await m2m(ws)
        first = await credentials.authorization()
        calls = 0
        sdk_token = credentials.config.oauth_token

        def counted() -> Any:
            nonlocal calls
            calls += 1
            return sdk_token()

        credentials.config.oauth_token = counted  # type: ignore[method-assign]
        for _ in range(10_000):  # its speed is benchmarks/'s business; here: the SDK is never consulted
            assert await credentials.authorization() == first
        assert calls == 0 and ws.oauth.issued == ["fake-oauth-1"]


async def test_a_refused_token_is_replaced_once():
    with FakeDatabricks([Turn.text("after re-auth")], token_ttl_s=3600) as ws:
        credentials = await m2m(ws)
        upstream = OpenAIChatUpstream(credentials.base_url, credentials=credentials, trust_env=False)
        try:
            ws.oauth.revoke_all()  # e.g. the service principal's tokens were revoked
            assert await text_of(upstream) == "after re-auth"
        finally:
            await upstream.aclose()
        assert ws.oauth.issued == ["fake-oauth-1", "fake-oauth-2"]
        assert [s for s, _ in ws.rejections] == [401]


async def test_wrong_client_secret_fails_at_start_up():
    with FakeDatabricks() as ws:
        with pytest.raises(ConfigurationError, match="Databricks") as caught:
            await DatabricksCredentials.connect(
                timeout_s=5, host=ws.url, client_id=ws.client_id, client_secret="not-the-secret"
            )
        assert "oauth-m2m" in caught.value.message or "invalid_client" in caught.value.message


async def test_slow_token_endpoint_is_a_timeout_on_the_request():
    with FakeDatabricks(token_ttl_s=3600) as ws:
        credentials = await m2m(ws, timeout_s=0.3)
        ws.oauth.token_delay = 1.0
        credentials.invalidate()
        # Only the bound can end this call with a timeout: the endpoint itself would answer, late.
        with pytest.raises(UpstreamTimeout) as caught:
            await credentials.authorization()
        assert caught.value.code == "upstream_auth_timeout" and ws.url in caught.value.message


async def test_profile_from_config_file(tmp_path, monkeypatch):
    with FakeDatabricks([Turn.text("from the profile")], pat="dapi-profile-token") as ws:
        config = tmp_path / "databrickscfg"
        config.write_text(
            "[DEFAULT]\nhost = http://127.0.0.1:9\ntoken = dapi-wrong\n\n"
            f"[work]\nhost = {ws.url}\ntoken = dapi-profile-token\n"
        )
        monkeypatch.setenv("DATABRICKS_CONFIG_FILE", str(config))
        monkeypatch.setenv("DATABRICKS_CONFIG_PROFILE", "work")
        credentials = await DatabricksCredentials.connect(timeout_s=5)
        assert (credentials.auth_type, credentials.host) == ("pat", ws.url)
        upstream = OpenAIChatUpstream(credentials.base_url, credentials=credentials, trust_env=False)
        try:
            assert await text_of(upstream) == "from the profile"
            assert [m.id for m in await upstream.list_models()][:1] == ["databricks-claude-sonnet-4-5"]
        finally:
            await upstream.aclose()
        assert ws.requests[0].headers["authorization"] == "Bearer dapi-profile-token"


async def test_host_and_token_from_the_environment(monkeypatch):
    with FakeDatabricks(pat="dapi-env") as ws:
        monkeypatch.setenv("DATABRICKS_HOST", ws.url)
        monkeypatch.setenv("DATABRICKS_TOKEN", "dapi-env")
        credentials = await DatabricksCredentials.connect(timeout_s=5)
        assert await credentials.authorization() == "Bearer dapi-env"
        assert credentials.base_url == f"{ws.url}/serving-endpoints"


async def test_unreachable_host_fails_start_up_within_the_bound():
    with blackhole() as port:
        host = f"http://127.0.0.1:{port}"
        # The SDK's own give-up would be a different error: this one is the bound's.
        with pytest.raises(ConfigurationError) as caught:
            await DatabricksCredentials.connect(timeout_s=0.5, host=host, client_id="c", client_secret="s")
        assert host in caught.value.message and "did not answer within 0.5 s" in caught.value.message


async def test_unreachable_profile_host_is_named(tmp_path, monkeypatch):
    with blackhole() as port:
        config = tmp_path / "cfg"
        config.write_text(f"[DEFAULT]\nhost = http://127.0.0.1:{port}\nclient_id = c\nclient_secret = s\n")
        monkeypatch.setenv("DATABRICKS_CONFIG_FILE", str(config))
        with pytest.raises(ConfigurationError, match=f"127.0.0.1:{port} \\(profile DEFAULT in {config}\\)"):
            await DatabricksCredentials.connect(timeout_s=0.3)


async def test_nothing_configured_is_a_clear_configuration_error(tmp_path: Path):
    with pytest.raises(ConfigurationError, match="Databricks"):
        await DatabricksCredentials.connect(timeout_s=5)


async def test_auth_failure_on_a_request_is_an_upstream_error():
    with FakeDatabricks(token_ttl_s=3600) as ws:
        credentials = await m2m(ws)
        ws.oauth.client_secret = "rotated"  # the secret changed under the running gateway
        credentials.invalidate()
        with pytest.raises(UpstreamError) as caught:
            await credentials.authorization()
        assert caught.value.code == "upstream_auth_failed" and caught.value.status is None
