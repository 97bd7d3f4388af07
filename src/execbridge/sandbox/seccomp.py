"""The sandbox's seccomp filter: a BPF program that bubblewrap loads with ``--seccomp FD``.

Default *allow*, and deny (``EPERM``) the syscalls a sandboxed program has no business making and that
widen the kernel's attack surface: tracing other processes, mounting, kernel keyrings, eBPF, perf,
userfaultfd, io_uring, module loading, reboot/kexec, swap, accounting, quotas, new namespaces
(``unshare``/``setns``/``clone`` with a ``CLONE_NEW*`` flag), personality changes that turn ASLR
off, LDT changes, secret memory and page migration. ``clone3`` answers ``ENOSYS`` instead: its flags
sit in a struct the filter cannot read, and glibc falls back to ``clone`` (whose flags the filter
*can* read) on ``ENOSYS``. Syscalls of a foreign ABI (i386 via ``int 0x80``, x32) kill the process:
the filter only speaks the native one.

Sockets: ``socket``/``socketpair`` take only the families in ``ALLOWED_FAMILIES`` (unix, inet, inet6,
netlink); any other family — vsock above all, which no network namespace confines and which reaches
the hypervisor of a VM host — answers ``EAFNOSUPPORT``, as if the kernel had no such family (so no
protocol module is auto-loaded either). ``(AF_INET, SOCK_PACKET)``, the kernel's obsolete spelling
of ``AF_PACKET``, is refused the same way, and netlink only speaks ``NETLINK_ROUTE`` (what
``if_nameindex``/``getifaddrs`` and ``ip`` use; other protocols answer ``EPROTONOSUPPORT``).
An argument with bits above the low 32 set never matches an allowed value, so it is refused too.

This module must not load the filter into the gateway itself; it only *builds* the program.
Building costs ≈ 1 ms, so callers build it once and keep the bytes (``SeccompProgram``).
Invariant: numpy, pandas, subprocess and threads keep working under the filter (tested).
"""

from __future__ import annotations

import errno
import os
from dataclasses import dataclass
from typing import Any

# Denied outright (EPERM). Names unknown to this libseccomp are skipped (older libraries).
DENIED_SYSCALLS: tuple[str, ...] = (
    # debugging / reading other processes' memory
    "ptrace",
    "process_vm_readv",
    "process_vm_writev",
    "process_madvise",
    "kcmp",
    "pidfd_getfd",
    # filesystems and mount namespaces
    "mount",
    "umount2",
    "pivot_root",
    "chroot",
    "move_mount",
    "open_tree",
    "fsopen",
    "fsconfig",
    "fsmount",
    "fspick",
    "mount_setattr",
    "name_to_handle_at",
    "open_by_handle_at",
    # namespaces
    "setns",
    # kernel keyrings
    "keyctl",
    "add_key",
    "request_key",
    # eBPF, perf, userfaultfd, io_uring: large kernel attack surface
    "bpf",
    "perf_event_open",
    "userfaultfd",
    "io_uring_setup",
    "io_uring_enter",
    "io_uring_register",
    # the machine itself
    "kexec_load",
    "kexec_file_load",
    "init_module",
    "finit_module",
    "delete_module",
    "reboot",
    "swapon",
    "swapoff",
    "acct",
    "quotactl",
    "quotactl_fd",
    "lookup_dcookie",
    "syslog",
    "settimeofday",
    "clock_settime",
    "clock_adjtime",
    "adjtimex",
    "vhangup",
    "iopl",
    "ioperm",
    "nfsservctl",
    "uselib",
    "_sysctl",
    "fanotify_init",
    # rarely needed, and each a source of kernel bugs: 16-bit segments (Wine, DOS emulators), memory
    # the kernel itself cannot see, moving pages between NUMA nodes
    "modify_ldt",
    "memfd_secret",
    "move_pages",
    "migrate_pages",
)

# Address families socket(2)/socketpair(2) may use; every other one answers EAFNOSUPPORT.
AF_UNIX = 1
AF_INET = 2
AF_INET6 = 10
AF_NETLINK = 16
ALLOWED_FAMILIES: tuple[int, ...] = (AF_UNIX, AF_INET, AF_INET6, AF_NETLINK)
NETLINK_ROUTE = 0  # the only netlink protocol allowed (interfaces and addresses of the own namespace)
_SOCK_PACKET = 10
_SOCK_TYPE_MASK = 0xF  # the type without SOCK_NONBLOCK / SOCK_CLOEXEC

# Namespace flags of clone(2)/unshare(2). CLONE_NEWTIME (0x80) is only valid for unshare: for clone
# the same bit is part of the exit signal, so it is only checked on unshare.
_CLONE_NEWNS = 0x00020000
_CLONE_NEWCGROUP = 0x02000000
_CLONE_NEWUTS = 0x04000000
_CLONE_NEWIPC = 0x08000000
_CLONE_NEWUSER = 0x10000000
_CLONE_NEWPID = 0x20000000
_CLONE_NEWNET = 0x40000000
_CLONE_NEWTIME = 0x00000080
_CLONE_NS_FLAGS = (
    _CLONE_NEWNS,
    _CLONE_NEWCGROUP,
    _CLONE_NEWUTS,
    _CLONE_NEWIPC,
    _CLONE_NEWUSER,
    _CLONE_NEWPID,
    _CLONE_NEWNET,
)
_ADDR_NO_RANDOMIZE = 0x0040000
_PERSONALITY_QUERY = 0xFFFFFFFF


@dataclass(frozen=True, slots=True)
class SeccompProgram:
    """A compiled filter: raw BPF (``struct sock_filter`` array) as bubblewrap reads it from an fd."""

    bpf: bytes
    denied: tuple[str, ...]  # the syscall names this libseccomp knew and the filter denies


def build_program() -> SeccompProgram:
    """Build the filter with libseccomp (through ``pyseccomp``) and export it as BPF bytes.

    Raises ``OSError``/``RuntimeError`` when libseccomp is missing; the doctor reports that.
    """
    import pyseccomp as sc  # imported here: a missing libseccomp must not break importing the package

    f = sc.SyscallFilter(sc.ALLOW)
    # A foreign ABI has no rules of ours: kill rather than let it bypass them.
    f.set_attr(sc.Attr.ACT_BADARCH, sc.KILL_PROCESS)
    eperm = sc.ERRNO(errno.EPERM)
    denied: list[str] = []
    for name in DENIED_SYSCALLS:
        try:
            f.add_rule(eperm, name)
        except (OSError, ValueError):
            continue  # unknown to this libseccomp/arch
        denied.append(name)
    denied += _namespace_rules(sc, f)
    denied += _family_rules(sc, f)

    fd = os.memfd_create("execbridge-seccomp", os.MFD_CLOEXEC)
    try:
        with os.fdopen(os.dup(fd), "wb") as out:
            f.export_bpf(out)
        size = os.lseek(fd, 0, os.SEEK_END)
        bpf = os.pread(fd, size, 0)
    finally:
        os.close(fd)
    if not bpf or len(bpf) % 8:
        raise RuntimeError("libseccomp exported an empty or malformed BPF program")
    return SeccompProgram(bpf=bpf, denied=tuple(denied))


def _namespace_rules(sc: Any, f: Any) -> list[str]:
    """clone3, namespace flags of clone/unshare, and personality(ADDR_NO_RANDOMIZE)."""
    eperm = sc.ERRNO(errno.EPERM)
    # clone3 hides its flags in memory; make glibc fall back to clone, which we can inspect.
    f.add_rule(sc.ERRNO(errno.ENOSYS), "clone3")
    for flag in _CLONE_NS_FLAGS:
        f.add_rule(eperm, "clone", sc.Arg(0, sc.MASKED_EQ, flag, flag))
    for flag in (*_CLONE_NS_FLAGS, _CLONE_NEWTIME):
        f.add_rule(eperm, "unshare", sc.Arg(0, sc.MASKED_EQ, flag, flag))

    # personality(ADDR_NO_RANDOMIZE | …) turns ASLR off for the next exec. The query value 0xffffffff
    # also has that bit, so deny "bit set and at least one other low bit clear" — one rule per bit
    # (rules for one syscall OR together; one rule cannot compare the same argument twice).
    for bit in range(32):
        mask = 1 << bit
        if mask == _ADDR_NO_RANDOMIZE:
            continue
        f.add_rule(
            eperm,
            "personality",
            sc.Arg(0, sc.MASKED_EQ, _ADDR_NO_RANDOMIZE | mask, _ADDR_NO_RANDOMIZE),
        )
    return ["clone3", "clone(CLONE_NEW*)", "unshare(CLONE_NEW*)", "personality(ADDR_NO_RANDOMIZE)"]


def _family_rules(sc: Any, f: Any) -> list[str]:
    """socket/socketpair: every family outside ``ALLOWED_FAMILIES`` answers EAFNOSUPPORT.

    One rule cannot compare an argument twice, so "not in the set" is spelled as one rule per refused
    value below the largest allowed one, and one "greater than it" (which also catches any value with
    high bits set: the kernel would only read the low 32).
    """
    refuse = sc.ERRNO(errno.EAFNOSUPPORT)
    top = max(ALLOWED_FAMILIES)
    for syscall in ("socket", "socketpair"):
        for family in range(top):
            if family not in ALLOWED_FAMILIES:
                f.add_rule(refuse, syscall, sc.Arg(0, sc.EQ, family))
        f.add_rule(refuse, syscall, sc.Arg(0, sc.GT, top))
        # The kernel turns (AF_INET, SOCK_PACKET) into an AF_PACKET socket after seccomp has looked.
        packet = sc.Arg(1, sc.MASKED_EQ, _SOCK_TYPE_MASK, _SOCK_PACKET)
        f.add_rule(refuse, syscall, sc.Arg(0, sc.EQ, AF_INET), packet)
    f.add_rule(sc.ERRNO(errno.EPROTONOSUPPORT), "socket", sc.Arg(0, sc.EQ, AF_NETLINK), sc.Arg(2, sc.NE, NETLINK_ROUTE))
    return [
        "socket(family not unix/inet/inet6/netlink)",
        "socketpair(family not unix/inet/inet6/netlink)",
        "socket(AF_INET, SOCK_PACKET)",
        "socket(AF_NETLINK, not NETLINK_ROUTE)",
    ]
