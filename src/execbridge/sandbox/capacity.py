"""``execbridge doctor``'s lines about capacity: the live budget, and what dead instances left behind.

- "live budget": the budgets live containers are kept under (``eviction.LiveBudget``) as a sandbox
  host on this machine would get them: ``max_live_containers``, the memory of all containers together
  (``total_memory_mb``, default 80% of RAM) and the file descriptors its soft limit can be raised to
  (MISSING when the hard limit is below what ``max_live_containers`` needs).
- "leftovers": dead instances' cgroups, processes and old-style mounts (``instances``), with the
  command that removes them (reported, never MISSING: it says nothing about this instance's safety).

Must not: change anything (``instances.collect`` is ``execbridge sandbox gc``'s).
"""

from __future__ import annotations

import resource

from execbridge.config import Settings
from execbridge.sandbox import fdlimit, instances
from execbridge.sandbox.cgroups import host_totals
from execbridge.sandbox.doctor import Check
from execbridge.sandbox.eviction import LiveBudget

LIVE_BUDGET = "live budget"
LEFTOVERS = "leftovers"


def check_live_budget(settings: Settings) -> Check:
    sb = settings.sandbox
    wanted = fdlimit.BASE_FDS + fdlimit.FDS_PER_LIVE_CONTAINER * (sb.max_live_containers + sb.spare_containers)
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    fds = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    memory = host_totals(sb.total_memory_mb, sb.total_pids).memory_bytes
    budget = LiveBudget(sb.max_live_containers, memory, fds, sb.evict_early_fraction)
    if fds < wanted:
        return Check(
            LIVE_BUDGET,
            False,
            f"{budget.describe()}; the hard descriptor limit {hard} is below the {wanted} needed",
            "idle containers are stopped early, long before max_live_containers (raise LimitNOFILE)",
        )
    return Check(LIVE_BUDGET, True, budget.describe(), "")


def check_leftovers() -> Check:
    dead = [i for i in instances.scan() if i.state == "dead"]
    if not dead:
        return Check(LEFTOVERS, True, "no dead instance left cgroups, processes or mounts", "")
    cgroups = sum(len(i.cgroups) for i in dead)
    processes = sum(i.processes for i in dead)
    mounts = sum(len(i.mounts) for i in dead)
    # Reported, not failed: another instance's crash on a shared machine says nothing about this one.
    return Check(
        LEFTOVERS,
        True,
        f"{len(dead)} dead instances left {cgroups} cgroups, {processes} processes, {mounts} mounts "
        f"({', '.join(i.name for i in dead[:3])}{', …' if len(dead) > 3 else ''}): `execbridge sandbox gc` "
        "removes them",
        "",
    )
