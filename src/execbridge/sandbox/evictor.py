"""``Evictor``: the container manager's background task that stops containers early, near a budget.

Whenever a container goes live the manager calls ``poke()``; the evictor then measures what live
containers hold (``usage``) against the budgets (``eviction.LiveBudget``, built at start after this
process raised its descriptor limit) and stops the least recently used idle ones through the
manager's ``stop`` callable, off the request path. The rule itself (which, how many) is
``eviction``'s; this module only measures and loops.

Must not: stop a container itself (``stop`` does, under the entry's lock), or end on one bad pass.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Awaitable, Callable, Iterable

from execbridge.config import SandboxSettings
from execbridge.sandbox import eviction, fdlimit
from execbridge.sandbox.cgroups import Cgroups
from execbridge.sandbox.entry import ContainerEntry

log = logging.getLogger(__name__)

_WHY = "its processes were stopped to make room for other containers"


def open_fds() -> int:
    try:
        return len(os.listdir("/proc/self/fd"))
    except OSError:
        return 0


class Evictor:
    def __init__(
        self,
        settings: SandboxSettings,
        cgroups: Cgroups | None,
        entries: Callable[[], Iterable[ContainerEntry]],
        stop: Callable[[ContainerEntry, str], Awaitable[None]],
    ) -> None:
        wanted = fdlimit.BASE_FDS + fdlimit.FDS_PER_LIVE_CONTAINER * (
            settings.max_live_containers + settings.spare_containers
        )
        fds = fdlimit.raise_soft_limit(wanted, who="the container manager")
        memory = cgroups.total_memory() if cgroups is not None else None
        self.budget = eviction.LiveBudget(settings.max_live_containers, memory, fds, settings.evict_early_fraction)
        self._cgroups = cgroups
        self._entries = entries
        self._stop = stop
        self._base_fds = open_fds()
        self._pressure = asyncio.Event()

    def poke(self) -> None:
        """One more live container: look at the budgets soon."""
        self._pressure.set()

    def usage(self) -> eviction.LiveUsage:
        """What live containers hold now."""
        live = sum(1 for e in self._entries() if e.live is not None and not e.deleted)
        memory = self._cgroups.total_memory_usage() if self._cgroups is not None else None
        # Listing /proc/self/fd costs in proportion to the descriptors: only near the budget is it
        # worth counting them rather than bounding them.
        fds = self._base_fds + fdlimit.FDS_PER_LIVE_CONTAINER * live
        if self.budget.fds is None or fds >= self.budget.fds * self.budget.early * 0.8:
            fds = open_fds()
        return eviction.LiveUsage(live, memory, fds)

    async def run(self) -> None:
        """Forever (until cancelled): after each poke, stop what the budgets say is too much."""
        while True:
            await self._pressure.wait()
            self._pressure.clear()
            try:
                excess = self.budget.excess(self.usage(), base_fds=self._base_fds)
                for entry in eviction.least_recently_used(self._entries(), excess):
                    # Asked again just before the stop takes the lock (taken at once when free): a
                    # lease may have come while earlier ones were being stopped.
                    if not eviction.may_stop(entry):
                        continue
                    await self._stop(entry, _WHY)
                    log.info("stopped container %s early: live containers near a budget", entry.record.id)
            except Exception as exc:  # boundary: the evictor must outlive one bad pass
                log.error("early eviction failed: %s", exc)
