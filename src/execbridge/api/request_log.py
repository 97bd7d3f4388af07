"""What one request did, for the logs: one access line per request, and fields every line carries.

``RequestIdMiddleware`` opens a request's fields (its id, method and path) in a context variable, the
handlers ``note`` what they learn (the owner, the container, the stop reason, the upstream's status on
an error), and when the response has been sent in full (a stream included) one line goes to the
``execbridge.access`` logger at INFO with the status and the time taken. Any other line logged while the
request runs carries the same fields under ``--log-format json`` (``cli/logs.py``), so one request's
lines can be found by its ``request_id``.

Must not: note a key or any request content. Owners are key digests, already safe to log.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncGenerator, Mapping
from contextvars import ContextVar, Token
from typing import Any

from execbridge.engine.events import EngineEvent, MessageFinished, MessageStarted

access_log = logging.getLogger("execbridge.access")

_FIELDS: ContextVar[dict[str, Any] | None] = ContextVar("execbridge_request_fields", default=None)


def begin(request_id: str, method: str, path: str) -> Token[dict[str, Any] | None]:
    return _FIELDS.set({"request_id": request_id, "method": method, "path": path})


def end(token: Token[dict[str, Any] | None], status: int | None, duration_s: float) -> None:
    fields = _FIELDS.get() or {}
    _FIELDS.reset(token)
    fields = {**fields, "status": status, "duration_ms": round(duration_s * 1000, 1)}
    if access_log.isEnabledFor(logging.INFO):
        others = " ".join(f"{k}={v}" for k, v in fields.items() if k not in _LEADING)
        access_log.info(
            "%s %s %s %s %s",
            fields["request_id"],
            fields["method"],
            fields["path"],
            status,
            others,
            extra={"fields": fields},
        )


_LEADING = frozenset({"request_id", "method", "path", "status"})


def note(**fields: Any) -> None:
    """Add to the current request's fields (nothing outside a request)."""
    current = _FIELDS.get()
    if current is not None:
        current.update(fields)


def current() -> Mapping[str, Any]:
    return _FIELDS.get() or {}


async def noting(events: AsyncGenerator[EngineEvent, None]) -> AsyncGenerator[EngineEvent, None]:
    """``events`` as they are, noting the container, the stop reason and the tokens on the way."""
    try:
        async for event in events:
            if isinstance(event, MessageStarted | MessageFinished) and event.container is not None:
                note(container=event.container.id)
            if isinstance(event, MessageFinished):
                note(
                    stop_reason=event.stop_reason,
                    input_tokens=event.usage.input_tokens,
                    output_tokens=event.usage.output_tokens,
                )
            yield event
    finally:
        await events.aclose()
