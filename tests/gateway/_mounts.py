"""A gateway in a mount namespace of its own, so a test can take a path away from it (and from its
sandbox host and their sandboxes to come) at run time, without touching what the rest of the machine sees."""

from __future__ import annotations

import subprocess
from collections.abc import Sequence

from .conftest import Gateway

# ``unshare`` execs serve, so the process the fixture holds is serve's, in the new namespace.
PRIVATE_MOUNTS: Sequence[str] = ("unshare", "--mount", "--propagation", "private", "--")


def in_mounts_of(gateway: Gateway, *command: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run ``command`` in the gateway's mount namespace (it sees what the gateway sees)."""
    return subprocess.run(
        ["nsenter", "--target", str(gateway.process.pid), "--mount", "--", *command],
        capture_output=True,
        text=True,
        check=check,
        timeout=120,
    )
