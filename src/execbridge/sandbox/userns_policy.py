"""Why user namespaces are refused, when they are: the usual culprits, each with the setting that fixes it.

Every sandbox is a bubblewrap process that creates a user namespace under an unprivileged host uid.
When that fails, bwrap says only "Operation not permitted" or "Permission denied"; the causes seen in
practice are policies around the gateway, not the gateway:

- **a seccomp filter** on the whole container that denies ``unshare``/``clone`` with ``CLONE_NEWUSER``
  (Docker's default profile does, for a container without ``CAP_SYS_ADMIN``), or ``sethostname`` or
  ``mount`` in them (podman's does): the call tried here fails with EPERM while this process runs
  under a filter (``Seccomp: 2``);
- **Ubuntu's AppArmor restriction** (``kernel.apparmor_restrict_unprivileged_userns = 1``, the default
  since Ubuntu 23.10): the namespace is created, but without the capabilities bwrap needs in it, so only
  the sysctl tells;
- Debian's older ``kernel.unprivileged_userns_clone = 0`` and ``user.max_user_namespaces = 0``.

``check_userns_policy`` makes bwrap's first namespace calls as the sandboxes' uid in a child process, reads
the sysctls (``sysctl_dir`` is injectable, for tests), and returns one doctor ``Check``. It is its own
check beside ``diagnose``'s (which says *that* namespaces fail); it only explains, so it never makes a
machine pass or fail on its own: with the probe sandbox working, a restriction found is noted, not missing.

Must not: change the machine (the child's namespace dies with it).
"""

from __future__ import annotations

import asyncio
import errno
import os
from dataclasses import dataclass
from pathlib import Path

from execbridge.config import Settings
from execbridge.sandbox.bwrap import setpriv_argv
from execbridge.sandbox.doctor import PROBE_SLOT, Check

USERNS_POLICY = "user namespace policy"

APPARMOR_SYSCTL = "kernel/apparmor_restrict_unprivileged_userns"
DEBIAN_SYSCTL = "kernel/unprivileged_userns_clone"
MAX_USERNS_SYSCTL = "user/max_user_namespaces"

SECCOMP_FIX = (
    "a seccomp filter around execbridge denies {call}, as Docker's and podman's default profiles do "
    "without CAP_SYS_ADMIN: run the container with --cap-add SYS_ADMIN (the default profile then allows "
    "namespaces) or with --security-opt seccomp=<a profile that allows unshare, clone, sethostname and mount>"
)
APPARMOR_FIX = (
    "AppArmor restricts unprivileged user namespaces (kernel.apparmor_restrict_unprivileged_userns = 1): "
    "on the host, sysctl -w kernel.apparmor_restrict_unprivileged_userns=0 (and a file in /etc/sysctl.d "
    "to keep it), or an AppArmor profile for /usr/bin/bwrap that allows 'userns,'"
)
DEBIAN_FIX = (
    "unprivileged user namespaces are off (kernel.unprivileged_userns_clone = 0): "
    "sysctl -w kernel.unprivileged_userns_clone=1"
)
MAX_USERNS_FIX = "user namespaces are limited to 0 (user.max_user_namespaces): sysctl -w user.max_user_namespaces=15000"

_WHY = "no sandbox can start"

# Run as the sandboxes' uid: what bwrap does first, one call at a time (a new user namespace, then new
# UTS and mount namespaces in it, their hostname, and making / private); prints the first call that
# fails and its errno, or "ok 0". Profiles that allow unshare often deny sethostname or mount.
_TRY_NAMESPACES = """
import ctypes
libc = ctypes.CDLL(None, use_errno=True)
steps = (
    ("unshare(CLONE_NEWUSER)", lambda: libc.unshare(0x10000000)),
    ("unshare(CLONE_NEWUTS|CLONE_NEWNS)", lambda: libc.unshare(0x04000000 | 0x00020000)),
    ("sethostname", lambda: libc.sethostname(b"probe", 5)),
    ("mount", lambda: libc.mount(b"none", b"/", None, 0x4000 | 0x40000, None)),
)
for name, call in steps:
    if call() != 0:
        print(name, ctypes.get_errno())
        break
else:
    print("ok 0")
"""


@dataclass(frozen=True, slots=True)
class UsernsFacts:
    unshare_errno: int | None  # of the first namespace call that failed as the sandboxes' uid (0: none did)
    seccomp: str  # this process's "Seccomp:" mode: "0" none, "1" strict, "2" a filter
    sysctls: dict[str, str]  # the ones above that exist here, by path under /proc/sys
    failed_call: str = "unshare(CLONE_NEWUSER)"  # which call ``unshare_errno`` is of


async def check_userns_policy(
    settings: Settings,
    *,
    probe_ok: bool,
    sysctl_dir: Path = Path("/proc/sys"),
    status: Path = Path("/proc/self/status"),
) -> Check:
    """The policy check: ``probe_ok`` is whether the doctor's probe sandbox started (``doctor.USERNS``)."""
    call, number = await _try_namespaces(settings)
    facts = UsernsFacts(number, _seccomp_mode(status), _read_sysctls(sysctl_dir), call)
    return explain(facts, probe_ok=probe_ok)


def explain(facts: UsernsFacts, *, probe_ok: bool) -> Check:
    """The check these facts make: every blocker found, each with its fix."""
    blockers = []
    failed = facts.unshare_errno not in (0, None)
    if facts.sysctls.get(DEBIAN_SYSCTL) == "0" and failed:
        blockers.append(DEBIAN_FIX)
    if facts.sysctls.get(MAX_USERNS_SYSCTL) == "0" and failed:
        blockers.append(MAX_USERNS_FIX)
    if facts.unshare_errno == errno.EPERM and facts.seccomp == "2" and not blockers:
        blockers.append(SECCOMP_FIX.format(call=facts.failed_call))
    apparmor = facts.sysctls.get(APPARMOR_SYSCTL) == "1"
    if apparmor and not probe_ok:
        blockers.append(APPARMOR_FIX)
    if blockers:
        return Check(USERNS_POLICY, False, "; ".join(blockers), _WHY)
    if failed and facts.unshare_errno is not None:
        name = errno.errorcode.get(facts.unshare_errno, str(facts.unshare_errno))
        return Check(USERNS_POLICY, False, f"{facts.failed_call} fails with {name}, cause unknown", _WHY)
    if apparmor:
        return Check(USERNS_POLICY, True, "AppArmor restricts user namespaces, but bwrap's are allowed here", _WHY)
    if facts.unshare_errno is None:
        return Check(USERNS_POLICY, probe_ok, "not tried (no /usr/bin/python3 to try it with)", _WHY)
    return Check(USERNS_POLICY, True, "no seccomp filter, AppArmor or sysctl forbids them", _WHY)


_PYTHON = "/usr/bin/python3"  # Debian's: reachable by any uid, unlike a venv under /root


async def _try_namespaces(settings: Settings) -> tuple[str, int | None]:
    """(the first call that failed, its errno) as the sandboxes' kind of uid; errno 0: none failed, None:
    could not try. Root may create namespaces whatever the sysctls say, hence the uid switch."""
    if not os.access(_PYTHON, os.X_OK):
        return "", None
    argv = [_PYTHON, "-I", "-S", "-c", _TRY_NAMESPACES]
    if os.geteuid() == 0:
        uid = settings.sandbox.uid_base + PROBE_SLOT
        argv = setpriv_argv(uid, uid, argv)
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL, env={}, cwd="/"
        )
        out, _ = await asyncio.wait_for(proc.communicate(), timeout=30)
    except (OSError, TimeoutError):
        return "", None
    call, _, number = out.decode().strip().rpartition(" ")
    try:
        return ("", 0) if call == "ok" else (call, int(number))
    except ValueError:
        return "", None


def _seccomp_mode(status: Path) -> str:
    try:
        for line in status.read_text().splitlines():
            if line.startswith("Seccomp:"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "?"


def _read_sysctls(sysctl_dir: Path) -> dict[str, str]:
    found = {}
    for name in (APPARMOR_SYSCTL, DEBIAN_SYSCTL, MAX_USERNS_SYSCTL):
        try:
            found[name] = (sysctl_dir / name).read_text().strip()
        except OSError:
            continue
    return found
