"""A gateway in a mount namespace of its own, so a test can take a path away from it (and from its
sandbox host and their sandboxes to come) at run time, without touching what the rest of the machine sees."""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Sequence
from pathlib import Path

from .conftest import Gateway

# ``unshare`` execs serve, so the process the fixture holds is serve's, in the new namespace.
PRIVATE_MOUNTS: Sequence[str] = ("unshare", "--mount", "--propagation", "private", "--")


def _descendants(pid: int) -> list[int]:
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        with contextlib.suppress(OSError):
            for child in (task / "children").read_text().split():
                found += [int(child), *_descendants(int(child))]
    return found


def _sandbox_owner(pid: int) -> int:
    """The process whose mount namespace the sandboxes are made in: the sandbox host (a child of the
    supervisor, in a private mount namespace of its own), else the gateway itself."""
    for candidate in _descendants(pid):
        with contextlib.suppress(OSError):
            if b"sandbox-host" in Path(f"/proc/{candidate}/cmdline").read_bytes():
                return candidate
    return pid


def _nsenter(pid: int, command: tuple[str, ...], *, check: bool) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["nsenter", "--target", str(pid), "--mount", "--", *command],
        capture_output=True,
        text=True,
        check=check,
        timeout=120,
    )


def change_mounts_of(gateway: Gateway, *command: str) -> None:
    """Run the mount ``command`` in the gateway's mount namespace and, when it keeps one of its own, in
    the sandbox host's: a mount does not propagate between them, and a path removed from the disk would
    be gone from both."""
    seen: set[str] = set()
    for pid in (gateway.process.pid, _sandbox_owner(gateway.process.pid)):
        namespace = os.readlink(f"/proc/{pid}/ns/mnt")
        if namespace not in seen:
            seen.add(namespace)
            _nsenter(pid, command, check=True)


def in_mounts_of(gateway: Gateway, *command: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run ``command`` where the gateway's sandboxes are made (the sandbox host's mount namespace), so
    it sees what they see."""
    return _nsenter(_sandbox_owner(gateway.process.pid), command, check=check)
