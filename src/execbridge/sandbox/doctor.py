"""Which sandbox protections work on this machine, each checked by *using* it.

``diagnose(settings)`` returns a ``DoctorReport``: one ``Check`` per protection, each ok or missing
with what that means. Most checks are real: a probe sandbox is started exactly as containers are
(unprivileged uid, all namespaces, seccomp) and reports from inside what it sees; a cgroup is
created with limits; a tiny workspace image is made and mounted. The container service refuses to
start on a report with anything missing unless ``allow_weak_isolation`` is set.

This module must not change the machine beyond what it cleans up itself (a probe cgroup, a temp
image and directory), and must not raise for a missing protection: absence is data.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import grp
import json
import os
import pwd
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from execbridge.config import SandboxSettings, Settings
from execbridge.sandbox import cgroups as cg
from execbridge.sandbox import loopdev
from execbridge.sandbox.base import DEFAULT_WORKSPACE
from execbridge.sandbox.bwrap import BWRAP as BWRAP_PATH
from execbridge.sandbox.bwrap import EXECUTOR_PATH, Payloads, SandboxSpec, proc_masks
from execbridge.sandbox.disk import WorkspaceDisks
from execbridge.sandbox.gateway_user import GatewayUser, SplitError, check_gateway_can_run
from execbridge.sandbox.launch import LaunchOptions, spawn
from execbridge.sandbox.seccomp import SeccompProgram, build_program

PROBE_SLOT = 0  # host uid uid_base + 0 belongs to the doctor; containers use slots from 1

# Runs inside the probe sandbox (stdlib only) and prints one JSON line of facts. Its arguments: the
# masked /proc paths, each of which must read as empty.
_PROBE = r"""
import ctypes, json, os, socket, sys
libc = ctypes.CDLL(None, use_errno=True)
status = dict(l.split(":", 1) for l in open("/proc/self/status") if ":" in l)
def err(rc):
    return ctypes.get_errno() if rc != 0 else 0
def family(number, kind=socket.SOCK_STREAM, pair=False):
    try:
        socks = socket.socketpair(number, kind) if pair else [socket.socket(number, kind)]
    except OSError as exc:
        return exc.errno
    for s in socks:
        s.close()
    return 0
def size(path):
    try:
        return len(os.listdir(path)) if os.path.isdir(path) else len(open(path, "rb").read())
    except OSError as exc:
        return -exc.errno
facts = {
    "uid": os.getuid(),
    "ifaces": sorted(name for _, name in socket.if_nameindex()),
    "seccomp": status.get("Seccomp", "").strip(),
    "capeff": status.get("CapEff", "").strip(),
    "nnp": status.get("NoNewPrivs", "").strip(),
    "ptrace_errno": err(libc.ptrace(0, 0, 0, 0)),
    "unshare_user_errno": err(libc.unshare(0x10000000)),
    "python": sys.version.split()[0],
    "families": {
        "AF_UNIX": family(1),
        "AF_UNIX pair": family(1, pair=True),
        "AF_VSOCK": family(40),
        "AF_VSOCK pair": family(40, pair=True),
        "AF_PACKET": family(17, socket.SOCK_RAW),
        "AF_BLUETOOTH": family(31),
    },
    "masked": {path: size(path) for path in sys.argv[1:]},
    "pid1": open("/proc/1/cmdline", "rb").read().decode(errors="replace"),
}
try:
    import numpy
    facts["numpy"] = numpy.__version__
except Exception as exc:
    facts["numpy_error"] = repr(exc)
print(json.dumps(facts))
"""


@dataclass(frozen=True, slots=True)
class Check:
    name: str
    ok: bool
    detail: str  # what was found (ok) or what is wrong (missing)
    consequence: str  # what running without it means

    def line(self) -> str:
        state = "ok     " if self.ok else "MISSING"
        text = self.detail if self.ok else f"{self.detail} — {self.consequence}"
        return f"{state}  {self.name:<22} {text}"


@dataclass(frozen=True, slots=True)
class DoctorReport:
    checks: tuple[Check, ...]

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks)

    @property
    def missing(self) -> tuple[Check, ...]:
        return tuple(c for c in self.checks if not c.ok)

    def has(self, name: str) -> bool:
        return any(c.ok for c in self.checks if c.name == name)

    def render(self) -> str:
        return "\n".join(c.line() for c in self.checks)


# Names of the checks, used by the container service to decide what to switch off.
BWRAP = "bubblewrap"
USERNS = "user namespaces"
NETNS = "network namespace"
SECCOMP = "seccomp filter"
CAPS = "no capabilities"
UID = "unprivileged host uid"
CG_MEMORY = "cgroup memory"
CG_PIDS = "cgroup pids"
CG_CPU = "cgroup cpu"
DISK = "workspace disk cap"
RUNTIME = "runtime interpreter"
RUNTIME_VERSION = "runtime python version"
FAMILIES = "socket families"
PROC_MASKS = "masked /proc"
UID_RANGE = "host uid range"
PRIVILEGE_SPLIT = "privilege split"
QUOTAS = "quotas"

# Families the probe tries; each must answer EAFNOSUPPORT (vsock is the one that matters on a VM host).
_REFUSED_FAMILIES = ("AF_VSOCK", "AF_VSOCK pair", "AF_PACKET", "AF_BLUETOOTH")


async def diagnose(settings: Settings) -> DoctorReport:
    sb = settings.sandbox
    checks: list[Check] = []
    checks.append(_bwrap_check())
    is_root = os.geteuid() == 0
    setpriv = Path("/usr/bin/setpriv").exists()
    if is_root and setpriv:
        uid_detail = f"root; containers run as host uids {sb.uid_base + 1}…"
    else:
        uid_detail = "setpriv missing (util-linux)" if is_root else "not running as root"
    uid_why = "all containers share the gateway's uid: no per-container process limit, files shared"
    checks.append(Check(UID, is_root and setpriv, uid_detail, uid_why))
    runtime_ok = sb.python.exists() and os.access(sb.python, os.X_OK)
    checks.append(Check(RUNTIME, runtime_ok, str(sb.python), "no executor can start (run scripts/install.sh)"))

    seccomp_error: str | None = None
    try:
        program = build_program()
    except Exception as exc:  # boundary: a missing libseccomp is a finding, not a crash
        program = None
        seccomp_error = f"libseccomp unusable: {exc}"

    facts, probe_error = await _probe(
        settings, program.bpf if program else b"", switch_uid=is_root and setpriv, python=_probe_python(sb)
    )
    if facts is not None and not runtime_ok:
        facts["python"] = "none (runtime missing)"  # the probe ran on the system interpreter
    if facts is None:
        why = f"probe sandbox failed: {probe_error}"
        checks += [
            Check(USERNS, False, why, "no sandbox can start"),
            Check(NETNS, False, why, "sandboxed code could reach the network"),
            Check(SECCOMP, False, seccomp_error or why, "the kernel's whole syscall surface is exposed"),
            Check(FAMILIES, False, seccomp_error or why, _FAMILIES_WHY),
            Check(CAPS, False, why, "sandboxed code may hold capabilities"),
            Check(PROC_MASKS, False, why, _MASKS_WHY),
        ]
    else:
        checks += _probe_checks(facts, program, seccomp_error)
    checks += _check_cgroups()
    checks.append(await _check_disk(settings))
    checks.append(check_uid_range(settings))
    return DoctorReport(tuple(checks))


def _bwrap_check() -> Check:
    """The bubblewrap sandboxes start with (``bwrap.BWRAP``), executable: not just any ``bwrap`` on $PATH."""
    why = "no sandbox can start at all"
    if not (Path(BWRAP_PATH).is_file() and os.access(BWRAP_PATH, os.X_OK)):
        elsewhere = shutil.which("bwrap")
        found = f" (there is one at {elsewhere})" if elsewhere and elsewhere != BWRAP_PATH else ""
        return Check(BWRAP, False, f"{BWRAP_PATH} missing or not executable{found}; apt-get install bubblewrap", why)
    return Check(BWRAP, True, BWRAP_PATH, why)


def check_uid_range(settings: Settings) -> Check:
    """The budgets bound the host uids containers run as (``max_containers`` slots, plus the spares and
    the doctor's slot 0); none of them may be a real user's or group's, or a container would share
    that account's process limit and own its files."""
    sb = settings.sandbox
    first, last = sb.uid_base + PROBE_SLOT, sb.uid_base + sb.max_containers + sb.spare_containers
    taken = sorted(
        {f"user {u.pw_name} ({u.pw_uid})" for u in pwd.getpwall() if first <= u.pw_uid <= last}
        | {f"group {g.gr_name} ({g.gr_gid})" for g in grp.getgrall() if first <= g.gr_gid <= last}
    )
    why = "a container would run as an existing account: its process limit and its files"
    if last >= 2**32 - 2:
        return Check(UID_RANGE, False, f"uids {first}-{last} pass the largest uid", why)
    if taken:
        return Check(UID_RANGE, False, f"uids {first}-{last} include {', '.join(taken[:3])}", why)
    return Check(UID_RANGE, True, f"uids {first}-{last}, no host account among them", why)


def check_privilege_split(settings: Settings) -> Check:
    """Whether ``serve`` started as root would run the HTTP gateway unprivileged (``cli/supervisor.py``).

    Not among ``diagnose``'s checks: those decide whether containers may run at all, and a sandbox
    host started with the split off must still be able to."""
    why = "the process that parses requests from the network runs as root"
    if os.geteuid() != 0:
        return Check(PRIVILEGE_SPLIT, True, f"not root (uid {os.geteuid()}): the gateway holds no privilege", why)
    if settings.sandbox_host is not None:
        return Check(PRIVILEGE_SPLIT, True, f"containers in the sandbox host at {settings.sandbox_host}", why)
    if not settings.privilege_split:
        return Check(PRIVILEGE_SPLIT, False, "off (privilege_split = false)", why)
    try:
        user = GatewayUser.named(settings.gateway_user)
        check_gateway_can_run(user)
    except SplitError as exc:
        return Check(PRIVILEGE_SPLIT, False, str(exc), why + " (serve refuses to start)")
    return Check(
        PRIVILEGE_SPLIT,
        True,
        f"serve runs the gateway as {user.name!r} (uid {user.uid}); containers in a root sandbox host at "
        f"{settings.sandbox_socket_path}",
        why,
    )


def check_quotas(settings: Settings) -> Check:
    """The budgets that keep one client from taking the host, and whether the disk is above its floor."""
    sb = settings.sandbox
    probe = settings.data_dir if settings.data_dir.exists() else Path(settings.data_dir.anchor)
    free_mb = shutil.disk_usage(probe).free >> 20
    detail = (
        f"live containers ≤ {sb.max_live_containers} (≤ {sb.max_live_per_owner} per key), containers ≤ "
        f"{sb.max_containers}, outputs ≤ {sb.output_total_limit_bytes >> 20} MiB per command, files ≤ "
        f"{settings.max_file_bytes_per_owner >> 20} MiB per key, disk floor {sb.min_free_disk_mb} MiB "
        f"({free_mb} MiB free)"
    )
    if free_mb < sb.min_free_disk_mb:
        return Check(QUOTAS, False, detail, "below the disk floor: no new container is made until space is freed")
    return Check(QUOTAS, True, detail, "")


_FAMILIES_WHY = "sandboxed code can open sockets of any family: vsock reaches the hypervisor of a VM host"
_MASKS_WHY = "sandboxed code reads the host's kernel command line, disks, devices and host paths"


def _probe_checks(facts: dict[str, Any], program: SeccompProgram | None, seccomp_error: str | None) -> list[Check]:
    """The checks the probe sandbox's facts prove (or disprove)."""
    checks = [Check(USERNS, True, f"probe ran as uid {facts['uid']} in its own user namespace", "")]
    ifaces = facts.get("ifaces", [])
    net_detail = f"interfaces inside: {', '.join(ifaces)}"
    checks.append(Check(NETNS, ifaces == ["lo"], net_detail, "sandboxed code can reach the network"))
    sec_ok = (
        program is not None
        and facts.get("seccomp") == "2"
        and facts.get("ptrace_errno") == 1
        and facts.get("unshare_user_errno") in (1, 28)
    )
    sec_detail = (
        f"{len(program.denied)} syscalls denied"
        if sec_ok and program
        else seccomp_error or f"filter not active (Seccomp: {facts.get('seccomp')})"
    )
    checks.append(Check(SECCOMP, sec_ok, sec_detail, "the kernel's whole syscall surface is exposed"))
    checks.append(_families_check(facts, sec_ok, sec_detail))
    # The executor ships as bytecode compiled by the gateway's interpreter (fast start-up), so
    # the sandbox's interpreter must be the same major.minor version.
    runtime_version = str(facts.get("python", "?"))
    gateway_version = f"{sys.version_info.major}.{sys.version_info.minor}"
    checks.append(
        Check(
            RUNTIME_VERSION,
            runtime_version.split(".")[:2] == gateway_version.split("."),
            f"sandbox {runtime_version}, gateway {sys.version.split()[0]}",
            f"the executor's bytecode is for Python {gateway_version}; run the gateway on that version",
        )
    )
    capeff = facts.get("capeff", "")
    checks.append(Check(CAPS, capeff and int(capeff, 16) == 0, f"CapEff {capeff}", "sandboxed code holds capabilities"))
    checks.append(_masks_check(facts))
    return checks


def _families_check(facts: dict[str, Any], seccomp_ok: bool, seccomp_detail: str) -> Check:
    """socket()/socketpair() of vsock, packet and bluetooth refused (EAFNOSUPPORT); unix ones work."""
    if not seccomp_ok:
        return Check(FAMILIES, False, seccomp_detail, _FAMILIES_WHY)
    seen: dict[str, int] = facts.get("families", {})
    refused = [name for name in _REFUSED_FAMILIES if seen.get(name) == errno.EAFNOSUPPORT]
    unix_ok = seen.get("AF_UNIX") == 0 and seen.get("AF_UNIX pair") == 0
    if len(refused) == len(_REFUSED_FAMILIES) and unix_ok:
        return Check(FAMILIES, True, "AF_VSOCK, AF_PACKET, AF_BLUETOOTH refused; AF_UNIX works", _FAMILIES_WHY)
    got = ", ".join(f"{name}: {errno.errorcode.get(n, n) if n else 'opened'}" for name, n in seen.items())
    return Check(FAMILIES, False, f"probe saw {got}", _FAMILIES_WHY)


def _masks_check(facts: dict[str, Any]) -> Check:
    """Every masked /proc path reads as empty inside, and bwrap's command line (/proc/1/cmdline inside)
    does not name the probe's host workspace."""
    files, dirs = proc_masks()
    expected = [*files, *dirs]
    seen: dict[str, int] = facts.get("masked", {})
    shown = sorted(path for path in expected if seen.get(path) != 0)
    host_path_shown = str(facts.get("workdir")) in str(facts.get("pid1", ""))
    if shown or host_path_shown:
        what = [f"not empty inside: {', '.join(shown)}"] if shown else []
        what += ["the host workspace path is in /proc/1/cmdline"] if host_path_shown else []
        return Check(PROC_MASKS, False, "; ".join(what), _MASKS_WHY)
    return Check(PROC_MASKS, True, f"{len(expected)} host entries read empty; no host path in /proc/1/cmdline", "")


def _probe_python(sb: SandboxSettings) -> Path:
    """The probe's interpreter: the runtime's, or, when that is gone, the system's (under /usr, which every
    sandbox sees), so that a missing runtime is reported as itself and not as missing namespaces."""
    if sb.python.exists() and os.access(sb.python, os.X_OK):
        return sb.python
    system = Path(f"/usr/bin/python{sys.version_info.major}.{sys.version_info.minor}")
    return system if system.exists() else sb.python


async def _probe(
    settings: Settings, bpf: bytes, *, switch_uid: bool, python: Path
) -> tuple[dict[str, Any] | None, str]:
    sb = settings.sandbox
    uid = sb.uid_base + PROBE_SLOT
    # /tmp, not $TMPDIR: the probe's uid must be able to traverse to it.
    workdir = Path(tempfile.mkdtemp(prefix="execbridge-doctor-", dir="/tmp"))
    try:
        if switch_uid:
            os.chown(workdir, uid, uid)
        spec = SandboxSpec(
            host_uid=uid,
            host_gid=uid,
            workspace=workdir,
            workspace_path=DEFAULT_WORKSPACE,
            command=(str(python), "-I", "-S", EXECUTOR_PATH, *(p for group in proc_masks() for p in group)),
            runtime_dir=sb.runtime_dir if sb.runtime_dir and sb.runtime_dir.exists() else None,
            tmp_bytes=16 << 20,
        )
        payloads = Payloads(executor=_PROBE.encode(), seccomp=bpf)
        try:
            proc = await spawn(
                spec,
                payloads,
                cgroup=None,
                nproc=0,
                options=LaunchOptions(switch_uid=switch_uid, seccomp=bool(bpf)),
            )
            out, err = await asyncio.wait_for(proc.communicate(), timeout=30)
        except (OSError, TimeoutError) as exc:
            return None, str(exc)
        if proc.returncode != 0:
            return None, err.decode(errors="replace").strip()[-300:] or f"exit {proc.returncode}"
        try:
            facts: dict[str, Any] = json.loads(out.decode().strip().splitlines()[-1])
        except (ValueError, IndexError):
            return None, f"unexpected probe output: {out[-200:]!r}"
        facts["workdir"] = str(workdir)  # the host path that must not show inside
        return facts, ""
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def _check_cgroups() -> list[Check]:
    consequences = {
        CG_MEMORY: "a container can use all the host's memory",
        CG_PIDS: "a fork bomb can exhaust the host's process table",
        CG_CPU: "a container can use every CPU",
    }
    driver = cg.detect(f"execbridge/doctor-{os.getpid()}")
    if driver is None:
        return [Check(name, False, "no usable cgroup v1/v2 hierarchy", why) for name, why in consequences.items()]
    error = ""
    try:
        driver.prepare()
        group = driver.create("probe", cg.CgroupLimits(64 << 20, 16, 0.5))
        group.remove()
    except OSError as exc:
        error = f"cannot create cgroups: {exc}"
    finally:
        driver.remove_parent()
    checks = []
    for name, why in consequences.items():
        controller = name.split()[-1]
        present = controller in driver.controllers
        ok = present and not error
        detail = f"cgroup v{driver.version}" if ok else (error or f"controller {controller} not available")
        checks.append(Check(name, ok, detail, why))
    return checks


async def _check_disk(settings: Settings) -> Check:
    why = "a container can fill the host's disk"
    if os.geteuid() != 0:
        return Check(DISK, False, "needs root to mount loop images", why)
    for tool in ("mkfs.ext4", "mount", "umount"):
        if shutil.which(tool) is None and not Path(f"/usr/sbin/{tool}").exists():
            return Check(DISK, False, f"{tool} not found (e2fsprogs/util-linux)", why)
    if not Path("/dev/loop-control").exists():
        return Check(DISK, False, "/dev/loop-control missing (no loop devices)", why)
    root = Path(tempfile.mkdtemp(prefix="execbridge-doctor-disk-", dir="/tmp"))
    os.chmod(root, 0o711)
    disks = WorkspaceDisks(root / "disks", root / "mnt", 16 << 20)
    try:
        disks.prepare()
        await disks.create("probe", settings.sandbox.uid_base, settings.sandbox.uid_base)
        with disks.pinned("probe") as device, loopdev.detached_mount(device):
            pass  # a loop device and an ext4 mount, as each sandbox's launch makes them
        await disks.delete("probe")
    except Exception as exc:  # boundary: any failure here is the finding
        return Check(DISK, False, f"loop-mounted ext4 image failed: {exc}", why)
    finally:
        with contextlib.suppress(Exception):
            await disks.delete("probe")
        shutil.rmtree(root, ignore_errors=True)
    return Check(DISK, True, "ext4 loop image per container", why)
