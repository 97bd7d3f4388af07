"""``api.threads.Threads`` over the in-memory store: what a continue sends on, and what it refuses."""

from __future__ import annotations

from typing import Any

import pytest

from execbridge.api.threads import Threads
from execbridge.errors import RequestTooLarge
from execbridge.store.memory import MemoryStore

BREAKPOINT = {"type": "ephemeral"}


def _reply(message_id: str, text: str) -> dict[str, Any]:
    return {"id": message_id, "content": [{"type": "text", "text": text}], "container": None}


async def _held_thread(threads: Threads) -> None:
    first = [{"role": "user", "content": [{"type": "text", "text": "long document", "cache_control": BREAKPOINT}]}]
    body, pending = await threads.open({"model": "m", "thread": {"type": "create"}, "messages": first}, "alice")
    assert pending is not None and "thread" not in body
    await threads._record(pending, _reply("msg_1", "noted"))


async def test_held_breakpoints_are_not_sent_again_but_new_ones_are() -> None:
    threads = Threads(MemoryStore().threads, retention_s=3600)
    await _held_thread(threads)
    new = [{"role": "user", "content": [{"type": "text", "text": "question", "cache_control": BREAKPOINT}]}]
    body, _ = await threads.open(
        {"model": "m", "thread": {"type": "continue", "previous_message_id": "msg_1"}, "messages": new}, "alice"
    )
    held, reply, asked = body["messages"]
    assert held["content"] == [{"type": "text", "text": "long document"}]
    assert reply == {"role": "assistant", "content": [{"type": "text", "text": "noted"}]}
    assert asked["content"][0]["cache_control"] == BREAKPOINT


async def test_a_conversation_over_the_request_limit_is_a_413_and_the_claim_comes_back() -> None:
    store = MemoryStore()
    threads = Threads(store.threads, retention_s=3600, max_bytes=200)
    await _held_thread(threads)
    body = {"model": "m", "thread": {"type": "continue", "previous_message_id": "msg_1"}, "messages": []}
    with pytest.raises(RequestTooLarge):
        await threads.open(body, "alice", size=150)
    assert store.threads.states["msg_1"] == "open"
    assert (await threads.open(body, "alice", size=10))[1] is not None
