"""``execbridge doctor`` names what refuses user namespaces, and the flag or setting that fixes it: a
seccomp filter like Docker's default profile (a real filter, installed around a real doctor run) and
Ubuntu's AppArmor restriction (its sysctl read through an injectable directory)."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
from pathlib import Path

import pytest

from execbridge.config import Settings
from execbridge.sandbox.userns_policy import (
    APPARMOR_FIX,
    APPARMOR_SYSCTL,
    DEBIAN_FIX,
    DEBIAN_SYSCTL,
    MAX_USERNS_FIX,
    MAX_USERNS_SYSCTL,
    SECCOMP_FIX,
    UsernsFacts,
    check_userns_policy,
    explain,
)

# What Docker's default profile does to a container without CAP_SYS_ADMIN: clone and unshare with
# CLONE_NEWUSER fail with EPERM, clone3 with ENOSYS (so that glibc falls back to clone). Installed in
# this small launcher, then inherited by the doctor it execs and by every process the doctor starts.
_UNDER_DOCKERS_FILTER = """
import errno, os, sys
import pyseccomp as sc
f = sc.SyscallFilter(sc.ALLOW)
f.add_rule(sc.ERRNO(errno.ENOSYS), "clone3")
for name in ("clone", "unshare"):
    f.add_rule(sc.ERRNO(errno.EPERM), name, sc.Arg(0, sc.MASKED_EQ, 0x10000000, 0x10000000))
f.load()
os.execv(sys.executable, [sys.executable, "-m", "execbridge", *sys.argv[1:]])
"""


@pytest.mark.skipif(os.geteuid() != 0, reason="the doctor's probe runs as an unprivileged host uid")
def test_doctor_names_a_seccomp_filter_that_denies_user_namespaces_and_its_fix(tmp_path: Path) -> None:
    doctor = subprocess.run(
        [sys.executable, "-c", _UNDER_DOCKERS_FILTER, "--data-dir", str(tmp_path), "doctor"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert doctor.returncode == 1
    lines = doctor.stdout.splitlines()
    assert any(line.startswith("MISSING  user namespaces ") for line in lines), doctor.stdout
    policy = next(line for line in lines if "user namespace policy" in line)
    assert policy.startswith("MISSING  user namespace policy"), policy
    assert SECCOMP_FIX.format(call="unshare(CLONE_NEWUSER)") in policy and "--cap-add SYS_ADMIN" in policy
    assert "AppArmor" not in policy  # not on this machine: only what is found is named


@pytest.mark.skipif(os.geteuid() != 0, reason="tries unshare as an unprivileged host uid")
async def test_the_apparmor_restriction_is_named_with_its_sysctl_when_namespaces_fail(tmp_path: Path) -> None:
    sysctls = tmp_path / "sys"
    (sysctls / "kernel").mkdir(parents=True)
    (sysctls / APPARMOR_SYSCTL).write_text("1\n")
    settings = Settings(data_dir=tmp_path / "data")

    # Ubuntu's restriction lets unshare() itself succeed (it is what follows that fails), so only the
    # sysctl tells; when the probe sandbox failed, the check says so and how to lift it.
    refused = await check_userns_policy(settings, probe_ok=False, sysctl_dir=sysctls)
    assert not refused.ok
    assert refused.detail == APPARMOR_FIX
    assert "sysctl -w kernel.apparmor_restrict_unprivileged_userns=0" in refused.line()

    # With the probe sandbox working (a profile allows bwrap), the restriction is noted, not missing.
    allowed = await check_userns_policy(settings, probe_ok=True, sysctl_dir=sysctls)
    assert allowed.ok and "AppArmor" in allowed.detail

    (sysctls / APPARMOR_SYSCTL).write_text("0\n")
    lifted = await check_userns_policy(settings, probe_ok=True, sysctl_dir=sysctls)
    assert lifted.ok and lifted.detail == "no seccomp filter, AppArmor or sysctl forbids them"


@pytest.mark.parametrize(
    ("facts", "probe_ok", "ok", "detail"),
    [
        (UsernsFacts(errno.EPERM, "2", {}), False, False, SECCOMP_FIX.format(call="unshare(CLONE_NEWUSER)")),
        # podman's default profile lets unshare through and stops bwrap at sethostname
        (
            UsernsFacts(errno.EPERM, "2", {}, "sethostname"),
            False,
            False,
            SECCOMP_FIX.format(call="sethostname"),
        ),
        # a sysctl that explains the EPERM is named instead of the filter that may merely be there
        (UsernsFacts(errno.EPERM, "2", {DEBIAN_SYSCTL: "0"}), False, False, DEBIAN_FIX),
        (UsernsFacts(errno.ENOSPC, "0", {MAX_USERNS_SYSCTL: "0"}), False, False, MAX_USERNS_FIX),
        (
            UsernsFacts(errno.EPERM, "2", {APPARMOR_SYSCTL: "1"}),
            False,
            False,
            f"{SECCOMP_FIX.format(call='unshare(CLONE_NEWUSER)')}; {APPARMOR_FIX}",
        ),
        (UsernsFacts(errno.EPERM, "0", {}), False, False, "unshare(CLONE_NEWUSER) fails with EPERM, cause unknown"),
        (UsernsFacts(0, "2", {DEBIAN_SYSCTL: "1"}), True, True, "no seccomp filter, AppArmor or sysctl forbids them"),
    ],
)
def test_each_blocker_found_is_named_with_its_fix(facts: UsernsFacts, probe_ok: bool, ok: bool, detail: str) -> None:
    check = explain(facts, probe_ok=probe_ok)
    assert (check.ok, check.detail) == (ok, detail)
