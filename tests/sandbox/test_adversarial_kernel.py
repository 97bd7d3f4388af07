"""The adversarial suite, kernel side: socket families, denied syscalls, and what ``/proc`` tells
about the host — each tried through the full stack (manager → live sandbox → executor), several
variants per test.

Nothing here leaves the machine: sockets are only created (never connected or bound), and the one
family that could reach beyond it (vsock, the VM host's hypervisor) must not even be created.
"""

from __future__ import annotations

import json
import os
import platform
import re
import signal
from collections.abc import AsyncIterator
from pathlib import Path

import pyseccomp as sc
import pytest
import pytest_asyncio

from execbridge.sandbox.bwrap import proc_masks
from execbridge.sandbox.doctor import DoctorReport
from execbridge.sandbox.manager import ContainerManager
from execbridge.sandbox.seccomp import ALLOWED_FAMILIES
from execbridge.sandbox.session import LeasedSession

from .conftest import container, open_manager, private_dir

pytestmark = [pytest.mark.adversarial, pytest.mark.asyncio(loop_scope="module")]

AF_INET, AF_INET6, AF_NETLINK, AF_VSOCK, AF_PACKET = 2, 10, 16, 40, 17
SOCK_PACKET = 10
# Syscall numbers of this machine's native ABI, for calls Python has no wrapper for.
NR = {
    name: sc.resolve_syscall(sc.Arch.NATIVE, name)
    for name in (
        "socket",
        "socketpair",
        "modify_ldt",
        "memfd_secret",
        "move_pages",
        "migrate_pages",
        "process_madvise",
        "io_uring_setup",
    )
}


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def m(base_dir: Path, doctor_report: DoctorReport) -> AsyncIterator[ContainerManager]:
    data = private_dir(base_dir, "adversarial-kernel-")
    async with open_manager(data, doctor_report, spare_containers=1, command_timeout_s=10.0) as manager:
        yield manager


async def run_json(s: LeasedSession, code: str) -> dict[str, object]:
    r = await s.run_python(code)
    assert r.return_code == 0, r.stderr
    out: dict[str, object] = json.loads(r.stdout)
    return out


# Runs inside: ``attempt(fn)`` is "OPEN" or the errno's name.
_ATTEMPT = r"""
import ctypes, errno, json, os, socket, subprocess, sys
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
def attempt(fn):
    try:
        made = fn()
    except OSError as exc:
        return errno.errorcode.get(exc.errno, str(exc.errno))
    for s in made if isinstance(made, (tuple, list)) else [made]:
        s.close()
    return "OPEN"
def raw(name, *args):
    rc = libc.syscall(ctypes.c_long(NR[name]), *(ctypes.c_long(a) for a in args))
    if rc < 0:
        return errno.errorcode.get(ctypes.get_errno(), str(ctypes.get_errno()))
    if name in ("socket", "memfd_secret", "io_uring_setup"):
        os.close(rc)
    return "OK"
"""


def script(body: str) -> str:
    return f"NR = {json.dumps(NR)}\n{_ATTEMPT}\n{body}"


async def test_every_family_but_unix_inet_inet6_netlink_is_refused(m: ContainerManager):
    code = script(
        """
kinds = (socket.SOCK_STREAM, socket.SOCK_DGRAM, socket.SOCK_RAW, socket.SOCK_SEQPACKET,
         socket.SOCK_DGRAM | socket.SOCK_NONBLOCK | socket.SOCK_CLOEXEC)
out = {}
for family in [*range(0, 64), 255, 4096, 0x7FFFFFFF]:
    for kind in kinds:
        out[f"socket {family} {kind}"] = attempt(lambda: socket.socket(family, kind))
    for kind in kinds[:2]:
        out[f"socketpair {family} {kind}"] = attempt(lambda: socket.socketpair(family, kind))
out["vsock device"] = [p for p in ("/dev/vsock", "/dev/vhost-vsock") if os.path.exists(p)]
out["unix pair works"] = attempt(lambda: socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM))
out["interfaces"] = sorted(name for _, name in socket.if_nameindex())  # netlink (route) still works
print(json.dumps(out))
"""
    )
    async with container(m) as s:
        out = await run_json(s, code)
    assert out.pop("vsock device") == [] and out.pop("interfaces") == ["lo"]
    assert out.pop("unix pair works") == "OPEN"
    for key, answer in out.items():
        family = int(key.split()[1])
        if family in ALLOWED_FAMILIES:
            assert answer != "EAFNOSUPPORT", key  # the kernel decides (it may not support the type)
        else:
            assert answer == "EAFNOSUPPORT", (key, answer)
    for family in (1, AF_INET, AF_INET6):
        assert out[f"socket {family} 1"] == "OPEN"  # unix, inet, inet6 stream sockets open
    assert out["socketpair 1 1"] == "OPEN"


async def test_family_filter_tricks_fail(m: ContainerManager):
    high = 1 << 32  # the kernel reads the low 32 bits of the family; the filter must not be fooled
    code = script(
        f"""
out = {{
    "vsock high bits": raw("socket", {high} | {AF_VSOCK}, 1, 0),
    "packet high bits": raw("socket", {high} | {AF_PACKET}, 3, 0),
    "vsock negative": raw("socket", -1 << 32 | {AF_VSOCK}, 1, 0),
    "pair vsock high bits": raw("socketpair", {high} | {AF_VSOCK}, 1, 0, 0),
    "netlink proto high bits": raw("socket", {AF_NETLINK}, 3, {high}),
}}
# (AF_INET, SOCK_PACKET): the kernel turns it into AF_PACKET after the filter looked at AF_INET
for kind in ({SOCK_PACKET}, {SOCK_PACKET} | socket.SOCK_NONBLOCK | socket.SOCK_CLOEXEC):
    out[f"inet packet {{kind}}"] = attempt(lambda: socket.socket(socket.AF_INET, kind, 0x0300))
    out[f"inet packet pair {{kind}}"] = attempt(lambda: socket.socketpair(socket.AF_INET, kind))
# netlink: only NETLINK_ROUTE (0); audit, uevents, sock_diag, netfilter, xfrm, generic, crypto… refused
out["netlink route"] = attempt(lambda: socket.socket({AF_NETLINK}, socket.SOCK_RAW, 0))
for proto in range(1, 32):
    for kind in (socket.SOCK_RAW, socket.SOCK_DGRAM):
        out[f"netlink {{proto}} {{kind}}"] = attempt(lambda: socket.socket({AF_NETLINK}, kind, proto))
# Allowed families, privileged kinds: no capability in the sandbox
out["inet raw icmp"] = attempt(lambda: socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP))
out["inet raw raw"] = attempt(lambda: socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW))
out["inet6 raw icmp"] = attempt(lambda: socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6))
out["inet ping"] = attempt(lambda: socket.socket(socket.AF_INET, socket.SOCK_DGRAM, socket.IPPROTO_ICMP))
# io_uring could create sockets (IORING_OP_SOCKET) out of the filter's sight: no ring at all
out["io_uring"] = raw("io_uring_setup", 1, 0)
print(json.dumps(out))
"""
    )
    async with container(m) as s:
        out = await run_json(s, code)
    for key in ("vsock high bits", "packet high bits", "vsock negative", "pair vsock high bits"):
        assert out.pop(key) == "EAFNOSUPPORT", key
    assert out.pop("netlink proto high bits") == "EPROTONOSUPPORT"
    assert out.pop("netlink route") == "OPEN"
    for key in [k for k in out if k.startswith("inet packet")]:
        assert out.pop(key) == "EAFNOSUPPORT", key
    for key in [k for k in out if k.startswith("netlink ")]:
        assert out.pop(key) == "EPROTONOSUPPORT", key
    assert out.pop("inet ping") in ("EACCES", "EPERM")  # ping_group_range is "1 0" in a new netns
    assert out.pop("io_uring") == "EPERM"
    assert out == {"inet raw icmp": "EPERM", "inet raw raw": "EPERM", "inet6 raw icmp": "EPERM"}


@pytest.mark.skipif(platform.machine() != "x86_64", reason="machine code and ABIs of x86_64")
async def test_foreign_abis_cannot_open_a_vsock_socket(m: ContainerManager):
    # i386 socket(AF_VSOCK, SOCK_STREAM, 0) through int 0x80 (syscall 359), and the x32 socket call:
    # without the filter the first one opens a vsock socket; with it, the process is killed (SIGSYS).
    # push rbx; mov eax, 359; mov ebx, 40; mov ecx, 1; xor edx, edx; int 0x80; pop rbx; ret
    machine_code = [0x53, 0xB8, 0x67, 1, 0, 0, 0xBB, 40, 0, 0, 0, 0xB9, 1, 0, 0, 0, 0x31, 0xD2, 0xCD, 0x80, 0x5B, 0xC3]
    i386 = (
        "import ctypes, mmap\n"
        f"code = bytes({machine_code!r})\n"
        "buf = mmap.mmap(-1, mmap.PAGESIZE, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)\n"
        "buf.write(code)\n"
        "print('RETURNED', ctypes.CFUNCTYPE(ctypes.c_int)(ctypes.addressof(ctypes.c_char.from_buffer(buf)))())\n"
    )
    x32 = (
        "import ctypes\n"
        "libc = ctypes.CDLL(None, use_errno=True)\n"
        f"print('RETURNED', libc.syscall(ctypes.c_long(0x40000000 | {NR['socket']}), 40, 1, 0))\n"
    )
    code = f"""
import json, subprocess, sys
out = {{}}
for name, child in (("i386", {i386!r}), ("x32", {x32!r})):
    r = subprocess.run([sys.executable, "-c", child], capture_output=True, text=True)
    out[name] = [r.returncode, r.stdout]
print(json.dumps(out))
"""
    async with container(m) as s:
        out = await run_json(s, code)
    assert out == {"i386": [-signal.SIGSYS, ""], "x32": [-signal.SIGSYS, ""]}


async def test_denied_syscalls_answer_eperm(m: ContainerManager):
    code = script(
        """
buf = ctypes.create_string_buffer(64)
out = {
    "modify_ldt read": raw("modify_ldt", 0, ctypes.addressof(buf), 64),
    "modify_ldt write": raw("modify_ldt", 1, ctypes.addressof(buf), 16),
    "memfd_secret": raw("memfd_secret", 0),
    "memfd_secret cloexec": raw("memfd_secret", os.O_CLOEXEC),
    "move_pages self": raw("move_pages", 0, 0, 0, 0, 0, 0),
    "move_pages init": raw("move_pages", 1, 0, 0, 0, 0, 0),
    "migrate_pages self": raw("migrate_pages", 0, 64, ctypes.addressof(buf), ctypes.addressof(buf)),
    "process_madvise": raw("process_madvise", 0, 0, 0, 0, 0),
}
print(json.dumps(out))
"""
    )
    async with container(m) as s:
        out = await run_json(s, code)
    assert set(out.values()) == {"EPERM"}, out


async def test_host_proc_entries_read_as_empty(m: ContainerManager):
    files, dirs = proc_masks()
    assert "/proc/cmdline" in files and Path("/proc/cmdline").read_bytes()  # the host's is not empty
    code = f"""
import json, os
files, dirs = {list(files)!r}, {list(dirs)!r}
out = {{"files": {{}}, "dirs": {{}}, "aliases": {{}}, "writes": {{}}}}
for path in files:
    with open(path, "rb") as f:
        out["files"][path] = f.read().decode(errors="replace")
for path in dirs:
    out["dirs"][path] = os.listdir(path)
for alias in ("/proc/self/root/proc/cmdline", "/proc/thread-self/root/proc/cmdline", "/proc/../proc/cmdline"):
    try:
        out["aliases"][alias] = open(alias, "rb").read().decode(errors="replace")
    except OSError as exc:
        out["aliases"][alias] = exc.strerror
for path in dirs:
    try:
        open(os.path.join(path, "planted"), "w").close()
        out["writes"][path] = "WROTE"
    except OSError as exc:
        out["writes"][path] = exc.strerror
    try:
        os.chmod(path, 0o777)
        out["writes"][path + " chmod"] = "CHANGED"
    except OSError as exc:
        out["writes"][path + " chmod"] = exc.strerror
# what programs need from /proc still works
out["cpus"] = os.cpu_count()
out["meminfo"] = open("/proc/meminfo").read().startswith("MemTotal:")
out["stat"] = open("/proc/stat").read().startswith("cpu ")
print(json.dumps(out))
"""
    async with container(m) as s:
        out = await run_json(s, code)
        unmount = await s.run_bash("umount /proc/cmdline 2>&1; umount -l /proc/fs 2>&1; wc -c < /proc/cmdline")
    assert out["files"] == dict.fromkeys(files, "")
    assert out["dirs"] == {path: [] for path in dirs}
    assert set(out["aliases"].values()) <= {"", "Permission denied"}, out["aliases"]
    assert set(out["writes"].values()) == {"Read-only file system"}, out["writes"]
    assert out["cpus"] == os.cpu_count() and out["meminfo"] and out["stat"]
    assert unmount.stdout.splitlines()[-1] == "0", unmount.stdout


async def test_host_paths_and_uids_stay_out_of_proc(m: ContainerManager):
    code = """
import glob, json, os
out = {}
for pattern in ("/proc/[0-9]*/cmdline", "/proc/[0-9]*/environ", "/proc/self/mountinfo", "/proc/self/mounts",
                "/proc/1/mountinfo", "/proc/self/uid_map", "/proc/self/gid_map", "/proc/self/status",
                "/proc/1/status", "/proc/self/cgroup", "/proc/self/loginuid"):
    for path in glob.glob(pattern):
        try:
            out[path] = open(path, "rb").read().decode(errors="replace")
        except OSError:
            pass  # the executor is not dumpable: its /proc files are closed to user code
out["fds"] = {}
for path in glob.glob("/proc/[0-9]*/fd/*"):
    try:
        out["fds"][path] = os.readlink(path)
    except OSError:
        pass
print(json.dumps(out))
"""
    async with container(m) as s:
        entry = m._entries[s.info.id]
        live = entry.live
        assert live is not None
        host_uid = {os.stat(f"/proc/{pid}").st_uid for pid in live.pids()}
        out = await run_json(s, code)
    assert len(host_uid) == 1
    uid = str(host_uid.pop())
    fds = out.pop("fds")
    assert not any("memfd:" in target for target in fds.values()), fds  # no payload fd left open
    assert "/proc/1/cmdline" in out and "/proc/self/mountinfo" in out  # really read
    pid1 = out["/proc/1/cmdline"].split("\0")
    assert pid1[1] == "--args" and pid1[2].isdigit() and pid1[3] == "--"  # bwrap's options are not there
    host_paths = [str(m.run_dir), str(m.root), str(m.settings.data_dir), "/run/execbridge", m.instance]
    as_number = re.compile(rf"(?<![0-9]){uid}(?![0-9])")
    for path, text in out.items():
        for host in host_paths:
            assert host not in text, (path, host)
        if path.endswith("status"):  # only its ids: its memory figures are numbers of any size
            text = "".join(line for line in text.splitlines(keepends=True) if line.startswith(("Uid", "Gid")))
        if path.endswith(("mountinfo", "mounts")):
            # The one place the host uid shows: tmpfs reports its owner's uid in the init namespace
            # (uid=/gid= mount options) — a kernel fact bwrap cannot change (docs/sandbox.md).
            text = text.replace(f"uid={uid},gid={uid}", "")
        assert not as_number.search(text), (path, uid, text)
