"""The spare pool: a few ready, unowned sandboxes so a new container's first command is fast.

A spare is a slot with a fresh workspace and a live sandbox whose executor has said "ready". Taking
one is synchronous and instant; the pool then refills in the background, one spare at a time (so
refilling never competes much with real work for the CPU).

Owner of its one task: ``run()`` is started and cancelled by the manager. Spares never hold user
data; ``drain()`` destroys them completely (sandbox, cgroup, workspace, slot).
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable

from execbridge.sandbox.live import LiveSandbox

log = logging.getLogger(__name__)

_RETRY_DELAY_S = 1.0


class SparePool:
    def __init__(
        self,
        size: int,
        make: Callable[[], Awaitable[LiveSandbox]],
        discard: Callable[[LiveSandbox], Awaitable[None]],
    ) -> None:
        self.size = size
        self._make = make
        self._discard = discard
        self._ready: deque[LiveSandbox] = deque()
        self._dead: deque[LiveSandbox] = deque()  # spares that died while waiting; run() discards them
        self._wanted = asyncio.Event()
        self._wanted.set()
        self._added = asyncio.Event()  # set each time a spare is added (``wait_full`` waits on it)

    def __len__(self) -> int:
        return len(self._ready)

    def take(self) -> LiveSandbox | None:
        """A ready spare, or None when the pool is empty; wakes the refill either way."""
        self._wanted.set()
        while self._ready:
            live = self._ready.popleft()
            if live.alive:
                return live
            self._dead.append(live)
        return None

    async def run(self) -> None:
        """Keep ``size`` spares ready until cancelled."""
        while True:
            await self._wanted.wait()
            self._wanted.clear()
            while self._dead:
                await self._discard(self._dead.popleft())
            while len(self._ready) < self.size:
                try:
                    live = await self._make()
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # boundary: a failed spare must not end the refill loop
                    log.warning("could not prepare a spare sandbox: %s", exc)
                    await asyncio.sleep(_RETRY_DELAY_S)
                    continue
                self._ready.append(live)
                self._added.set()

    async def wait_full(self, timeout: float = 30.0) -> None:
        """Wait until the pool holds ``size`` spares (tests and benchmarks)."""
        async with asyncio.timeout(timeout):
            while len(self._ready) < self.size:
                self._added.clear()
                await self._added.wait()

    async def drain(self) -> None:
        """Destroy every spare (the run task must be cancelled first)."""
        while self._ready:
            await self._discard(self._ready.popleft())
        while self._dead:
            await self._discard(self._dead.popleft())
