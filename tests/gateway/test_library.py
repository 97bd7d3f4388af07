"""The Python API as a program uses it (README, "Python API"): settings, services, the engine and its
events, through ``import execbridge`` alone, against the scripted upstream and a real sandbox."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import execbridge
from execbridge.testing import FakeUpstream, Turn

BODY = {
    "model": "m",
    "max_tokens": 100,
    "tools": [{"type": "code_execution_20250825", "name": "code_execution"}],
    "messages": [{"role": "user", "content": "Say hi from bash."}],
}


async def test_the_engine_runs_a_request_through_the_public_api(tmp_path: Path) -> None:
    script = [Turn.text("Running it.").call("bash_code_execution", command="echo hi from $PWD"), Turn.text("Done.")]
    with FakeUpstream(script) as fake:
        settings = execbridge.load_settings(
            upstream_url=fake.base_url,
            data_dir=tmp_path,
            sandbox={"spare_containers": 0, "uid_base": 600_000 + (os.getpid() % 50) * 1000},
        )
        async with execbridge.open_services(settings) as services:
            request = execbridge.parse_messages_request(BODY, {"anthropic-version": "2023-06-01"})
            events = [e async for e in services.engine.run(request, execbridge.Caller("me", "key"))]
    assert isinstance(events[0], execbridge.MessageStarted) and events[0].container is not None
    assert isinstance(events[-1], execbridge.MessageFinished) and events[-1].stop_reason == "end_turn"
    (ready,) = [e for e in events if isinstance(e, execbridge.ServerToolResultReady)]
    assert ready.result.outcome.stdout == "hi from /workspace\n"  # type: ignore[union-attr]
    text = "".join(e.text for e in events if isinstance(e, execbridge.TextDelta))
    assert text == "Running it.Done."


def test_a_bad_request_is_the_public_error() -> None:
    with pytest.raises(execbridge.InvalidRequest, match="max_tokens"):
        execbridge.parse_messages_request({**BODY, "max_tokens": -1}, {})
