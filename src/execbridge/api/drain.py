"""Graceful shutdown: stop taking work, let what runs finish within a grace period, then end it cleanly.

On SIGTERM the server (``cli/serve.py``) calls ``Drain.begin(grace_s)`` before uvicorn stops listening:
- new ``/v1/`` requests, on connections still open, are answered ``503 overloaded_error`` with
  ``retry-after`` (``ShuttingDown``), so the SDK retries, elsewhere or after the restart; ``/readyz``
  says ``draining`` so a balancer stops sending;
- requests in flight go on; once ``grace_s`` has passed, each one ends at its next engine event, a
  stream with ``event: error`` (overloaded_error), a plain request with the same 503. The engine's
  generator is closed on the way out, which cancels a running command and releases its container (the
  container and its files stay for the next start).
A command running quietly still yields a heartbeat every few seconds, so the check between events needs
no timer of its own and costs nothing on the hot path; only an upstream silent for longer than the grace
is left to uvicorn's own cut-off a few seconds later.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncGenerator

from execbridge.engine.events import EngineEvent
from execbridge.errors import ShuttingDown

log = logging.getLogger(__name__)


class Drain:
    __slots__ = ("_expired", "_timer", "draining")

    def __init__(self) -> None:
        self.draining = False
        self._expired = False
        self._timer: asyncio.TimerHandle | None = None

    def begin(self, grace_s: float) -> None:
        """Stop taking requests now; end those in flight once ``grace_s`` has passed."""
        if self.draining:
            return
        self.draining = True
        log.warning("draining: in-flight requests have %.0f s to finish", grace_s)
        self._timer = asyncio.get_running_loop().call_later(grace_s, self._expire)

    def _expire(self) -> None:
        self._expired = True
        log.warning("the shutdown grace period is over: ending the requests still in flight")

    def refuse_new(self) -> None:
        if self.draining:
            raise ShuttingDown("the gateway is shutting down; retry the request")

    async def guard(self, events: AsyncGenerator[EngineEvent, None]) -> AsyncGenerator[EngineEvent, None]:
        """``events`` until the grace period is over, then ``ShuttingDown``; closes ``events`` either way."""
        try:
            async for event in events:
                if self._expired:
                    raise ShuttingDown("the gateway is shutting down; the request was stopped, retry it")
                yield event
        finally:
            await events.aclose()
