"""Message threads (beta ``message-threads-2026-08-12``): the gateway holds a conversation, so a client
sends only what is new (docs/protocol.md, "Message threads").

``thread: {"type": "create"}`` serves the request as usual and holds its messages and its reply under
the reply's id. ``thread: {"type": "continue", "previous_message_id": …}`` claims that reply (one
continue per reply: threads are linear), prepends the held history, takes ``system`` and ``tools``
from the thread when the request leaves them out (the SDK does), and continues in the thread's
container. The new reply is held before its last event reaches the client, so the client's next
continue always finds it. A continue that fails (upstream error, client gone) gives its claim back,
so the same continue can be sent again; nothing is ever served from a fragment.

Errors are the ones the SDK recovers from: 404 ``thread_not_found`` (unknown, expired or another key's;
it replays the whole history under a new thread), 400 ``thread_already_continued`` and
``thread_continue_in_flight`` (it replays too), ``thread_fingerprint_mismatch`` (naming the fields) and,
when threads are turned off (``threads = false``), ``thread_unsupported_request`` (it goes on unthreaded).
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Final

import orjson

from execbridge.api.render_json import MessageFolder
from execbridge.engine.events import EngineEvent, MessageFinished
from execbridge.errors import InvalidRequest, NotFound, RequestTooLarge
from execbridge.store.base import ThreadStore, ThreadTurn

THREADS_BETA: Final = "message-threads-2026-08-12"
FINGERPRINT_FIELDS: Final = ("system", "tools")
"""What a continue must not change; taken from the thread when a continue leaves them out. Not
``model``: the SDK lets a thread change model from one turn to the next."""
UNSUPPORTED_FIELDS: Final = ("context_management", "fallbacks")
"""Request fields a thread cannot hold here (this gateway does not serve them at all): with ``thread``,
``thread_unsupported_request`` naming them, and the SDK sends whole conversations instead."""
_SWEEP_BATCH: Final = 100
_MESSAGE_ID = re.compile(r"msg_[A-Za-z0-9_]{1,64}")


@dataclass(frozen=True, slots=True)
class PendingTurn:
    """A threaded request being served: what to hold once its reply is whole."""

    owner: str
    continues: str | None  # the claimed reply, for a continue
    new_messages: list[Any]
    fingerprint: dict[str, Any]


def _canonical(value: object) -> bytes:
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS)


class Threads:
    def __init__(
        self,
        store: ThreadStore | None,
        *,
        retention_s: float,
        enabled: bool = True,
        max_bytes: int | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._held = store
        self._retention = timedelta(seconds=retention_s)
        self._enabled = enabled and store is not None  # no store (a library user gave none): none held
        self._clock = clock
        self._max_bytes = max_bytes  # of a whole conversation: the held history and the new request

    def _store(self) -> ThreadStore:
        assert self._held is not None  # only reached when enabled
        return self._held

    async def open(
        self, body: dict[str, Any], owner: str, *, size: int = 0
    ) -> tuple[dict[str, Any], PendingTurn | None]:
        """The request to serve for ``body`` and, when it is threaded, what to hold afterwards."""
        if "thread" not in body or body["thread"] is None:
            return body, None
        kind, previous = _parse_thread(body["thread"])
        if not self._enabled:
            raise InvalidRequest(
                "message threads are turned off on this gateway; send the whole conversation without `thread`",
                code="thread_unsupported_request",
                details={"unsupported": []},
            )
        unsupported = [field for field in UNSUPPORTED_FIELDS if body.get(field) is not None]
        if unsupported:
            raise InvalidRequest(
                f"thread: {', '.join(unsupported)} cannot be combined with a thread here; send the whole "
                "conversation without `thread`",
                code="thread_unsupported_request",
                details={"unsupported": unsupported},
            )
        body = {k: v for k, v in body.items() if k != "thread"}
        messages = body.get("messages")
        if not isinstance(messages, list):
            raise InvalidRequest("messages: expected an array")
        if kind == "create":
            fingerprint = {f: body.get(f) for f in FINGERPRINT_FIELDS}
            return body, PendingTurn(owner, None, messages, fingerprint)
        assert previous is not None
        await self._claim(previous, owner)
        try:
            return await self._continued(body, messages, previous, owner, size)
        except BaseException:
            await self._store().release(previous)
            raise

    async def _claim(self, previous: str, owner: str) -> None:
        claim = await self._store().claim(previous, owner, self._clock())
        if claim == "claimed":
            return
        if claim == "not_found":
            raise NotFound(
                f"thread: no thread holds {previous!r} (unknown, expired, or another key's); send the whole "
                "conversation with thread.type `create`",
                code="thread_not_found",
            )
        if claim == "continued":
            raise InvalidRequest(
                f"thread: {previous!r} was already continued; a thread goes on from its newest message only",
                code="thread_already_continued",
            )
        raise InvalidRequest(
            f"thread: another request is continuing from {previous!r} right now", code="thread_continue_in_flight"
        )

    async def _continued(
        self, body: dict[str, Any], messages: list[Any], previous: str, owner: str, size: int
    ) -> tuple[dict[str, Any], PendingTurn]:
        chain = await self._store().chain(previous)
        if not chain:
            raise NotFound(f"thread: the thread of {previous!r} has expired", code="thread_not_found")
        held: dict[str, Any] = orjson.loads(chain[-1].fingerprint)
        changed = [
            f"`{field}`"
            for field in FINGERPRINT_FIELDS
            if field in body and _canonical(body[field]) != _canonical(held.get(field))
        ]
        if changed:
            raise InvalidRequest(
                f"thread: {' and '.join(changed)} differ{'s' if len(changed) == 1 else ''} from what the thread "
                "was created with; send the same values, or the whole conversation with thread.type `create`",
                code="thread_fingerprint_mismatch",
            )
        held_bytes = sum(len(turn.messages) for turn in chain)
        if self._max_bytes is not None and held_bytes + size > self._max_bytes:
            raise RequestTooLarge(
                f"the thread's conversation with this request is larger than {self._max_bytes} bytes; start a "
                "new thread with a shorter history"
            )
        # Breakpoints were set for the turn that first sent them, and a request takes only a few: what is
        # sent again goes without them, as the SDK does when it replays a history itself.
        history = [_without_cache_control(message) for turn in chain for message in orjson.loads(turn.messages)]
        full = {**body, "messages": [*history, *messages]}
        for field in ("system", "tools"):
            if field not in body and held.get(field) is not None:
                full[field] = held[field]
        if full.get("container") is None and chain[-1].container_id is not None:
            full["container"] = chain[-1].container_id
        return full, PendingTurn(owner, previous, messages, held)

    async def abandon(self, pending: PendingTurn | None) -> None:
        """The request failed before it ran: give its claim back."""
        if pending is not None and pending.continues is not None:
            await asyncio.shield(self._store().release(pending.continues))

    async def recording(
        self, events: AsyncGenerator[EngineEvent, None], pending: PendingTurn
    ) -> AsyncGenerator[EngineEvent, None]:
        """``events`` as they are; the reply is held before its last event goes on to the client."""
        folder = MessageFolder()
        recorded = False
        try:
            async for event in events:
                folder.add(event)
                if isinstance(event, MessageFinished):
                    await self._record(pending, folder.message())
                    recorded = True
                yield event
        finally:
            await events.aclose()
            if not recorded:
                await self.abandon(pending)

    async def _record(self, pending: PendingTurn, message: dict[str, Any]) -> None:
        now = self._clock()
        reply = {"role": "assistant", "content": message["content"]}
        container = message.get("container")
        turn = ThreadTurn(
            message_id=message["id"],
            owner=pending.owner,
            parent_id=pending.continues,
            messages=orjson.dumps([*pending.new_messages, reply]),
            fingerprint=orjson.dumps(pending.fingerprint),
            container_id=container["id"] if isinstance(container, dict) else None,
            created_at=now,
            expires_at=now + self._retention,
        )
        await self._store().record(turn, continues=pending.continues)
        await self._store().sweep(now, limit=_SWEEP_BATCH)


def _without_cache_control(message: Any) -> Any:
    content = message.get("content") if isinstance(message, dict) else None
    if not isinstance(content, list):
        return message
    blocks = [
        {k: v for k, v in block.items() if k != "cache_control"} if isinstance(block, dict) else block
        for block in content
    ]
    return {**message, "content": blocks}


def _parse_thread(raw: object) -> tuple[str, str | None]:
    if not isinstance(raw, dict):
        raise InvalidRequest("thread: expected an object")
    kind = raw.get("type")
    if kind == "create":
        return "create", None
    if kind != "continue":
        raise InvalidRequest("thread.type: expected `create` or `continue`")
    previous = raw.get("previous_message_id")
    if not isinstance(previous, str) or not _MESSAGE_ID.fullmatch(previous):
        raise InvalidRequest("thread.previous_message_id: expected the id of a message (`msg_…`)")
    return "continue", previous
