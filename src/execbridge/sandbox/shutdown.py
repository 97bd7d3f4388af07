"""Stopping every live container at once, when the container manager closes.

Every sandbox gets SIGKILL first (a few syscalls each, REPLs thawed so that they can die), then the
orderly stops run in parallel: each mostly waits for the kernel to reap processes, and a supervisor
gives a stopping service seconds (10 by default under systemd), not some per container. What is not
done by the deadline (empty cgroups, mostly) the next start removes, or ``execbridge sandbox gc``;
mounts and loop devices go with the sandboxes' namespaces anyway (``disk``).

Must not: touch the store or decide anything about a container but that it stops now.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Collection, Iterable

from execbridge.sandbox.entry import ContainerEntry

log = logging.getLogger(__name__)

DEADLINE_S = 6.0  # within a supervisor's usual 10 s, after the gateway's own drain


async def stop_all(
    entries: Collection[ContainerEntry],
    evict: Callable[[ContainerEntry], Awaitable[None]],
    *,
    under_way: Iterable[asyncio.Task[None]],
    drain_pool: Awaitable[None],
) -> None:
    """Stop every one of ``entries`` (after the evictions and deletions ``under_way``, which hold
    their entries' locks) and the spare pool, within ``DEADLINE_S``."""
    for entry in entries:
        for running in (entry.repl, entry.live):
            if running is not None:
                running.kill_now()
    try:
        async with asyncio.timeout(DEADLINE_S):
            await asyncio.gather(*under_way, return_exceptions=True)
            await asyncio.gather(drain_pool, *(evict(e) for e in entries))
    except TimeoutError:
        log.warning(
            "stopping %d containers took over %.0f s; the next start removes what is left", len(entries), DEADLINE_S
        )
