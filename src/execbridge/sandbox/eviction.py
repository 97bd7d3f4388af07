"""Early eviction: which live containers to stop, and when, before a budget is reached.

The one place of the eviction rule. The manager asks two things of it:
- ``may_stop(entry)``: may this container's processes be stopped now (files kept)? Only when nothing
  holds or waits for it, and no REPL cell of it waits for a client's tool results
  (``ContainerEntry.evictable``; that cell ends at ``ptc_call_timeout_s``).
- ``LiveBudget.excess(usage)``: how many containers to stop so that live containers stay under
  ``early`` (a fraction) of each budget: their number (``sandbox.max_live_containers``), the memory of
  all containers together (the parent cgroup's limit, ``sandbox.total_memory_mb``) and this process's
  file descriptors (its soft ``RLIMIT_NOFILE``). The manager's evictor then stops that many of the
  least recently used idle ones (``least_recently_used``), off the request path; a request only
  waits for an eviction when a hard limit is reached anyway.

Must not: stop anything itself, or read the machine (the manager measures ``LiveUsage``).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

from execbridge.sandbox.entry import ContainerEntry


@dataclass(frozen=True, slots=True)
class LiveUsage:
    containers: int  # live ones (running processes)
    memory_bytes: int | None  # all containers together (None: unknown, e.g. no cgroups)
    fds: int  # open in this process


@dataclass(frozen=True, slots=True)
class LiveBudget:
    containers: int
    memory_bytes: int | None  # None: no memory budget (no cgroups)
    fds: int | None  # None: unlimited
    early: float = 0.9  # start stopping idle containers at this fraction of a budget

    def excess(self, usage: LiveUsage, *, base_fds: int = 0) -> int:
        """How many live containers to stop to be back under ``early`` of every budget."""
        n = usage.containers
        if n == 0:
            return 0
        # Rounded up: a small budget (2 live containers) keeps all of it, and is enforced at the limit.
        wanted = [n - math.ceil(self.containers * self.early)]
        if self.memory_bytes is not None and usage.memory_bytes is not None:
            over = usage.memory_bytes - self.memory_bytes * self.early
            if over > 0:
                wanted.append(math.ceil(over / (usage.memory_bytes / n)))
        if self.fds is not None and usage.fds > base_fds:
            over = usage.fds - self.fds * self.early
            if over > 0:
                wanted.append(math.ceil(over / ((usage.fds - base_fds) / n)))
        return max(0, min(n, max(wanted)))

    def describe(self) -> str:
        memory = f"{self.memory_bytes >> 20} MiB of memory" if self.memory_bytes is not None else "no memory budget"
        fds = f"{self.fds} file descriptors" if self.fds is not None else "unlimited file descriptors"
        return (
            f"{self.containers} live containers, {memory}, {fds}; the least recently used idle ones are "
            f"stopped from {self.early:.0%} of any of them"
        )


def may_stop(entry: ContainerEntry) -> bool:
    """Whether ``entry``'s processes may be stopped now to make room (its files stay)."""
    return entry.live is not None and entry.evictable()


def least_recently_used(entries: Iterable[ContainerEntry], count: int) -> list[ContainerEntry]:
    """Up to ``count`` stoppable containers, least recently used first."""
    if count <= 0:
        return []  # the common case: no sort over every live container
    idle = sorted((e for e in entries if may_stop(e)), key=lambda e: e.record.last_used_at)
    return idle[:count]
