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

import logging
import resource
import shutil
from pathlib import Path

from execbridge.config import Settings
from execbridge.errors import QuotaExceeded, SandboxUnavailable
from execbridge.sandbox import doctor, fdlimit, instances
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


_log = logging.getLogger(__name__)
# Without these no sandbox can start at all.
_REQUIRED = (doctor.BWRAP, doctor.USERNS, doctor.RUNTIME, doctor.RUNTIME_VERSION)
_MIN_MEMORY_MB = 32  # a container's own memory limit is never set below this
_DISK_RETRY_AFTER_S = 60.0  # when the disk is nearly full: deletions and expiry free it, slowly


def enforce_protections(report: doctor.DoctorReport, *, allow_weak: bool) -> tuple[str, ...]:
    """Refuse to start without a protection ``report`` misses (``SandboxUnavailable``), unless it is one
    that ``allow_weak`` (``sandbox.allow_weak_isolation``) may go without; the names of those."""
    missing = report.missing
    if not missing:
        return ()
    fatal = [c for c in missing if c.name in _REQUIRED]
    if fatal or not allow_weak:
        detail = "; ".join(f"{c.name}: {c.detail}" for c in (fatal or missing))
        hint = "" if fatal else " (set sandbox.allow_weak_isolation to run anyway — unsafe)"
        raise SandboxUnavailable(f"sandbox protections missing: {detail}{hint}")
    for c in missing:
        _log.warning("WEAK ISOLATION: %s is OFF — %s (%s)", c.name, c.consequence, c.detail)
    _log.warning("running containers with weakened isolation; missing: %s", ", ".join(c.name for c in missing))
    return tuple(c.name for c in missing)


def own_memory(memory_mb: int | None, sandbox_memory_mb: int) -> int | None:
    """A container's own memory limit: ``memory_mb`` clamped to the sandbox's per-container limit (and
    to at least ``_MIN_MEMORY_MB``); None when that is the sandbox's limit anyway."""
    if memory_mb is None or memory_mb >= sandbox_memory_mb:
        return None
    return max(memory_mb, _MIN_MEMORY_MB)


def require_free_disk(root: Path, min_free_mb: int) -> None:
    """Workspace images are sparse (``disk_mb`` is a cap, not a reservation): a new container is made
    only while the data directory's disk keeps ``min_free_mb`` free."""
    free = shutil.disk_usage(root).free
    if free < min_free_mb << 20:
        raise QuotaExceeded(
            f"the gateway's disk is nearly full ({free >> 20} MiB free); retry after containers are deleted",
            code="disk_full",
            retry_after=_DISK_RETRY_AFTER_S,
        )
