"""The container manager's own mount namespace: the table every new sandbox starts from, kept small.

Each sandbox starts with a copy of its spawner's mount table (``unshare --mount``, then bwrap's own
namespace), and copying costs time in proportion to the table's size: with 800 workspace mounts in the
table, starting bwrap took 26 ms instead of 4 ms here. Our own workspaces no longer enter any shared
table (``disk``), but the host's may still hold other instances' (or an older version's) workspace
mounts. So the manager moves its thread into a private mount namespace at start and, there only,
detaches every mount under ``/run/execbridge``: what its sandboxes copy is then the host's base table,
whatever other gateways on the machine hold.

Must not: change what the rest of the machine sees (the namespace is private: nothing propagates back),
or run anywhere but the thread that spawns the sandboxes (a mount namespace belongs to a thread; the
manager spawns from its event loop's thread, the one that calls ``enter_private``).
"""

from __future__ import annotations

import ctypes
import logging
import os
from pathlib import Path

log = logging.getLogger(__name__)

_CLONE_NEWNS = 0x00020000
_MS_REC = 0x4000
_MS_PRIVATE = 1 << 18
_MNT_DETACH = 2
RUN_ROOT = Path("/run/execbridge")

_libc = ctypes.CDLL(None, use_errno=True)


def _check(result: int, what: str) -> None:
    if result != 0:
        code = ctypes.get_errno()
        raise OSError(code, f"{what}: {os.strerror(code)}")


def thread_mounts(under: Path) -> list[str]:
    """Mount points at or below ``under`` in the calling thread's mount namespace, deepest first."""
    prefix = str(under).rstrip("/") + "/"
    try:
        text = Path("/proc/thread-self/mountinfo").read_text()
    except OSError:
        return []
    points = [f[4] for f in (line.split() for line in text.splitlines()) if len(f) > 4]
    return sorted((p for p in points if p.startswith(prefix)), key=len, reverse=True)


def enter_private(detach_under: Path = RUN_ROOT) -> int:
    """Move the calling thread into a private copy of its mount namespace and detach every mount
    under ``detach_under`` there; returns how many were detached. Idempotent in effect (a second call
    makes one more private copy). Raises ``OSError`` without root."""
    _check(_libc.unshare(_CLONE_NEWNS), "unshare(CLONE_NEWNS)")
    _check(_libc.mount(b"none", b"/", None, _MS_REC | _MS_PRIVATE, None), "making / private")
    detached = 0
    for point in thread_mounts(detach_under):
        if _libc.umount2(os.fsencode(point), _MNT_DETACH) == 0:
            detached += 1
    if detached:
        log.info("detached %d mounts under %s from the sandboxes' mount namespace", detached, detach_under)
    return detached


def enter_private_if_root() -> None:
    """``enter_private`` for the container manager: root only (as are the workspace images); without
    it each sandbox start copies the host's whole table, which is slower, not unsafe."""
    if os.geteuid() != 0:
        return
    try:
        enter_private()
    except OSError as exc:
        log.warning("no private mount namespace for the sandboxes (%s): each start copies the host's table", exc)
