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


def in_mounts_of(gateway: Gateway, *command: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run ``command`` in the gateway's mount namespace and, when it keeps one of its own, in the sandbox
    host's (a mount does not propagate between them; a path removed from the disk would be gone from
    both). The result is the sandbox host's."""
    targets = dict.fromkeys([gateway.process.pid, _sandbox_owner(gateway.process.pid)])
    namespaces = {pid: os.readlink(f"/proc/{pid}/ns/mnt") for pid in targets}
    distinct = list({ns: pid for pid, ns in namespaces.items()}.values())
    result = None
    for pid in distinct:
        result = subprocess.run(
            ["nsenter", "--target", str(pid), "--mount", "--", *command],
            capture_output=True,
            text=True,
            check=check,
            timeout=120,
        )
    assert result is not None
    return result
