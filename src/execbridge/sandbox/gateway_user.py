"""The unprivileged user the gateway runs as when ``serve`` is started as root, and what it must reach.

Shared by the supervisor that starts the gateway (``cli/supervisor.py``) and by ``execbridge doctor``,
which reports whether the privilege split can run on this machine.
"""

from __future__ import annotations

import pwd
import stat
import sys
from dataclasses import dataclass
from pathlib import Path


class SplitError(Exception):
    """The privilege split cannot be set up; the message says what to do."""


@dataclass(frozen=True, slots=True)
class GatewayUser:
    name: str
    uid: int
    gid: int
    home: str

    @classmethod
    def named(cls, name: str) -> GatewayUser:
        try:
            entry = pwd.getpwnam(name)
        except KeyError:
            raise SplitError(
                f"the gateway user {name!r} does not exist: scripts/install.sh creates 'execbridge'; or pass "
                "--gateway-user NAME, or --no-privilege-split to run the gateway as root (not recommended)"
            ) from None
        if entry.pw_uid == 0:
            raise SplitError("the gateway user must not be root (use --no-privilege-split to mean that)")
        return cls(entry.pw_name, entry.pw_uid, entry.pw_gid, entry.pw_dir)


def check_gateway_can_run(user: GatewayUser) -> None:
    """The gateway user must reach this interpreter and this package (not a pyenv build under /root)."""
    for path, what in (
        (Path(sys.executable).resolve(), "the Python interpreter"),
        (Path(__file__).resolve().parents[1], "the execbridge package"),
    ):
        try:
            check_reachable(path, user)
        except SplitError as exc:
            raise SplitError(f"{what}: {exc} (scripts/install.sh builds the venv on /usr/bin/python3.11)") from None


def check_reachable(path: Path, user: GatewayUser) -> None:
    """Every directory above ``path`` must be searchable by the gateway user (as its owner, group or other)."""
    for parent in reversed(path.parents):
        st = parent.stat()
        if st.st_uid == user.uid:
            bit = stat.S_IXUSR
        elif st.st_gid == user.gid:
            bit = stat.S_IXGRP
        else:
            bit = stat.S_IXOTH
        if not st.st_mode & bit:
            raise SplitError(
                f"the gateway user {user.name!r} cannot reach {path}: {parent} is mode {stat.S_IMODE(st.st_mode):o}"
            )
