"""Slot numbers: each container (and each spare sandbox) holds one for its whole life.

A slot names the container's host uid (``uid_base + slot``), its workspace image and mount point,
and its cgroup. Slot 0 is reserved for the doctor's probe. The lowest free slot is handed out first,
so uids stay in a compact range; a slot is free again only once its container is deleted.

In-memory only; the manager seeds it from the store at start (one manager per data directory, held
by a lock file), so no two containers can ever hold the same slot. Bounded: at most ``limit`` slots
are held at once, so host uids stay within ``uid_base + 1 … uid_base + limit``; past it, ``take``
raises ``QuotaExceeded``.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable

from execbridge.errors import QuotaExceeded

# How long a client is asked to wait when every slot is held (containers expire or are deleted).
_RETRY_AFTER_S = 60.0


class SlotAllocator:
    def __init__(self, used: Iterable[int] = (), first: int = 1, *, limit: int | None = None) -> None:
        self._used = set(used)
        self._limit = limit
        self._next = max(self._used, default=first - 1) + 1
        # Holes below _next (slots of deleted containers, or never used when seeded from the store).
        self._free = [s for s in range(first, self._next) if s not in self._used]
        heapq.heapify(self._free)

    def take(self) -> int:
        if self._limit is not None and len(self._used) >= self._limit:
            raise QuotaExceeded(
                f"this gateway holds its maximum of {self._limit} containers; delete some or retry later",
                code="container_limit",
                retry_after=_RETRY_AFTER_S,
            )
        while self._free:
            slot = heapq.heappop(self._free)
            if slot not in self._used:
                self._used.add(slot)
                return slot
        slot = self._next
        self._next += 1
        self._used.add(slot)
        return slot

    def release(self, slot: int) -> None:
        if slot in self._used:
            self._used.discard(slot)
            heapq.heappush(self._free, slot)

    def __contains__(self, slot: int) -> bool:
        return slot in self._used

    def __len__(self) -> int:
        return len(self._used)
