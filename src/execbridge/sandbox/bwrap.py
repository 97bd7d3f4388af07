"""The bubblewrap command line for one sandbox: what a sandboxed program can see and do.

The sandbox gets: every namespace of its own (no network at all: an empty loopback), a new session,
no capabilities, no nested user namespaces, a seccomp filter, a cleared environment (only
``sandbox_env``), the host's ``/usr`` and the runtime venv read-only, a curated read-only subset of
``/etc`` plus a generated ``passwd``/``group``/``hosts``, its own ``/proc`` and minimal ``/dev``,
size-capped private ``/tmp`` and ``/dev/shm``, and its workspace read-write at the container's
workspace path (``SandboxSpec.workspace_path``; ``base.DEFAULT_WORKSPACE`` unless the container says
otherwise), which is also the working directory and ``HOME``, and again at ``base.DATA_ALIAS``
(``/mnt/data``, OpenAI's path for a container's files).
The root is a read-only tmpfs; nothing else of the host exists inside (not ``/root``, ``/home``,
``/sys``, ``/var``, the gateway's data directory, other workspaces). The ``/proc`` entries that
describe the host rather than the sandbox (``MASKED_PROC_FILES``, ``MASKED_PROC_DIRS``: the kernel's
command line, disks, interrupts, other containers' file systems, …) read as empty.

bwrap's options travel through a memfd (``--args FD``, see ``options_fd``), not its command line:
bwrap is the sandbox's init, so its command line is ``/proc/1/cmdline`` inside, and the options name
host paths (the workspace's mount point).

bubblewrap itself runs under an unprivileged host uid per container (``setpriv``), so the sandbox's
files belong to that uid on the host, it holds no host capabilities, and RLIMIT_NPROC applies.

This module only *builds* argv and the small files passed by fd; it starts nothing. Invariant: no
value from the gateway's own environment ever reaches the argv or the sandbox (the spawner also
passes ``SPAWN_ENV``, never ``os.environ``).
"""

from __future__ import annotations

import functools
import os
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from execbridge.sandbox.base import DATA_ALIAS, DEFAULT_WORKSPACE

SANDBOX_UID = 1000
SANDBOX_GID = 1000
SANDBOX_USER = "user"
BWRAP = "/usr/bin/bwrap"
EXECUTOR_PATH = "/opt/execbridge/executor.py"
HOSTNAME = "sandbox"

# Environment of setpriv/bwrap on the host side: nothing of the gateway's (credentials live there).
SPAWN_ENV: Mapping[str, str] = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8"}

# Read-only pieces of the host's /etc that programs need; everything else of /etc stays out (it may
# hold secrets: pip.conf, gitconfig, ssh, ssl/private, machine-id, resolv.conf, …).
ETC_ALLOWLIST: tuple[str, ...] = (
    "ld.so.cache",
    "ld.so.conf",
    "ld.so.conf.d",
    "alternatives",  # libblas/liblapack for numpy resolve through here
    "localtime",
    "timezone",
    "fonts",
    "matplotlibrc",
    "ssl/certs",
    "ssl/openssl.cnf",
    "ca-certificates",
    "mime.types",
    "magic",
    "magic.mime",
    "bash.bashrc",
    "profile",
    "inputrc",
    "terminfo",
    "protocols",
    "services",
    "gai.conf",
    "host.conf",
    "locale.alias",
    "os-release",
    "debian_version",
    "python3",
    "python3.11",
    "papersize",
)

# /proc entries that show the host, not the sandbox: bound over by /dev/null (files) or an empty
# read-only tmpfs (directories), as Docker masks them; only those this kernel has (``proc_masks``).
MASKED_PROC_FILES: tuple[str, ...] = (
    "cmdline",  # the host kernel's command line (on a VM: the hypervisor's init arguments, vsock ports)
    "partitions",  # the host's disks
    "diskstats",  # … and their I/O, everyone's
    "swaps",  # host paths of swap files
    "interrupts",  # per-device interrupt counts: a timing side channel (Docker masks it too)
    "kallsyms",  # kernel symbols and module names
    "config.gz",  # the kernel's build configuration
    "modules",
    "keys",  # kernel keys and per-uid key quotas (host uids)
    "key-users",
    "kcore",
    "latency_stats",
    "timer_list",
    "timer_stats",
    "sched_debug",
    "iomem",  # the host's hardware layout
    "ioports",
    "mtrr",
)
MASKED_PROC_DIRS: tuple[str, ...] = (
    "acpi",
    "asound",
    "scsi",
    "bus",  # PCI and input devices
    "driver",
    "fs",  # per-device file system state: the host's disks and every container's workspace image
    "irq",  # the host's interrupt lines, named after its devices
)

# Merged-/usr symlinks. Where the host has a real directory instead, it is bound read-only.
_USR_LINKS: tuple[str, ...] = ("bin", "lib", "lib32", "lib64", "libx32", "sbin")


def _passwd(home: str) -> bytes:
    return (
        "root:x:0:0:root:/root:/usr/sbin/nologin\n"
        f"{SANDBOX_USER}:x:{SANDBOX_UID}:{SANDBOX_GID}:{SANDBOX_USER}:{home}:/bin/bash\n"
        "nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n"
    ).encode()


def _group() -> bytes:
    return f"root:x:0:\n{SANDBOX_USER}:x:{SANDBOX_GID}:\nnogroup:x:65534:\n".encode()


_HOSTS = f"127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n127.0.1.1\t{HOSTNAME}\n".encode()
# No "systemd"/"db" sources: only the files we provide (no resolv.conf: DNS has nowhere to go).
_NSSWITCH = b"passwd: files\ngroup: files\nshadow: files\nhosts: files dns\nnetworks: files\n"


def sandbox_env(runtime_dir: Path | None, home: str) -> dict[str, str]:
    """The whole environment of the executor (and, through it, of user programs); ``home``: the workspace."""
    path = "/usr/local/bin:/usr/bin:/bin"
    env = {
        "PATH": f"{runtime_dir}/bin:{path}" if runtime_dir else path,
        "HOME": home,
        "USER": SANDBOX_USER,
        "LOGNAME": SANDBOX_USER,
        "SHELL": "/bin/bash",
        "LANG": "C.UTF-8",
        "LC_ALL": "C.UTF-8",
        "TERM": "dumb",
        "TMPDIR": "/tmp",
        # Caches go to the private /tmp, not into the user's workspace.
        "XDG_CACHE_HOME": "/tmp/.cache",
        "MPLCONFIGDIR": "/tmp/.config/matplotlib",
        "MPLBACKEND": "Agg",
        "PYTHONUNBUFFERED": "1",
    }
    if runtime_dir:
        env["VIRTUAL_ENV"] = str(runtime_dir)
    return env


@dataclass(frozen=True, slots=True)
class Payloads:
    """Files handed to bubblewrap through file descriptors (the same for every sandbox).

    ``/etc/passwd`` is not among them: the user's home is the sandbox's workspace, which
    ``payload_fds`` is told.
    """

    executor: bytes
    seccomp: bytes
    etc: Mapping[str, bytes] = field(
        default_factory=lambda: {
            "group": _group(),
            "hosts": _HOSTS,
            "hostname": f"{HOSTNAME}\n".encode(),
            "nsswitch.conf": _NSSWITCH,
        }
    )


@dataclass(frozen=True, slots=True)
class SandboxSpec:
    """What differs between sandboxes."""

    host_uid: int
    host_gid: int
    workspace: Path  # host path, bound read-write at ``workspace_path``
    workspace_path: str  # inside the sandbox: the container's workspace (working directory, HOME)
    command: tuple[str, ...]  # what runs inside (the executor: its interpreter, script, options)
    runtime_dir: Path | None  # bound read-only at the same path when set
    tmp_bytes: int  # size cap of /tmp and of /dev/shm (tmpfs also counts against memory)
    etc_dir: Path = Path("/etc")  # the host /etc to pick the allowlist from (tests)


@dataclass(frozen=True, slots=True)
class PayloadFds:
    seccomp: int
    executor: int
    etc: Mapping[str, int]

    def all(self) -> tuple[int, ...]:
        return (self.seccomp, self.executor, *self.etc.values())


@contextmanager
def payload_fds(payloads: Payloads, *, home: str = DEFAULT_WORKSPACE) -> Iterator[PayloadFds]:
    """memfds holding the payloads, open for the span of one spawn (each sandbox reads its own copy),
    and an ``/etc/passwd`` whose user lives in ``home`` (the sandbox's workspace path).

    A fresh memfd per spawn keeps each reader's file offset private; creating one costs microseconds.
    """
    opened: list[int] = []

    def memfd(name: str, data: bytes) -> int:
        fd = _memfd(name, data)
        opened.append(fd)
        return fd

    try:
        yield PayloadFds(
            seccomp=memfd("seccomp", payloads.seccomp),
            executor=memfd("executor", payloads.executor),
            etc={name: memfd(name, data) for name, data in {"passwd": _passwd(home), **payloads.etc}.items()},
        )
    finally:
        for fd in opened:
            os.close(fd)


@contextmanager
def options_fd(options: Sequence[str]) -> Iterator[int]:
    """A memfd holding bwrap's ``options`` (NUL-separated) for ``--args FD``, open for one spawn.

    bwrap reads and closes it before anything runs inside, so the options appear nowhere in the
    sandbox: ``/proc/1/cmdline`` (bwrap itself) shows ``bwrap --args N -- <command>`` only.
    """
    fd = _memfd("args", b"".join(arg.encode() + b"\0" for arg in options))
    try:
        yield fd
    finally:
        os.close(fd)


def _memfd(name: str, data: bytes) -> int:
    fd = os.memfd_create(f"execbridge-{name}", os.MFD_CLOEXEC)
    try:
        _write_all(fd, data)
        os.lseek(fd, 0, os.SEEK_SET)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _usr_args() -> list[str]:
    args = ["--ro-bind", "/usr", "/usr"]
    for name in _USR_LINKS:
        host = Path("/") / name
        if host.is_symlink():
            args += ["--symlink", os.readlink(host), f"/{name}"]
        elif host.is_dir():
            args += ["--ro-bind", str(host), f"/{name}"]
    return args


def _etc_args(etc_dir: Path) -> list[str]:
    args: list[str] = []
    for name in ETC_ALLOWLIST:
        args += ["--ro-bind-try", str(etc_dir / name), f"/etc/{name}"]
    return args


@functools.cache
def proc_masks() -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The masked /proc files and directories this kernel has (``/proc/<name>`` paths).

    bwrap cannot mount over an entry that does not exist; /proc's global entries are the same in every
    PID namespace, so the gateway's own /proc tells.
    """
    # "exists and not a directory": where the gateway itself runs masked, the file may be /dev/null
    files = tuple(f"/proc/{n}" for n in MASKED_PROC_FILES if _is_non_dir(f"/proc/{n}"))
    dirs = tuple(f"/proc/{n}" for n in MASKED_PROC_DIRS if os.path.isdir(f"/proc/{n}"))
    return files, dirs


def _is_non_dir(path: str) -> bool:
    return os.path.lexists(path) and not os.path.isdir(path)


def _proc_args() -> list[str]:
    """A fresh /proc, with the host's entries masked. /dev/null is bound with device access (reads
    are empty, writes vanish — Docker's way); a read-only bind would be ``nodev``, and opening it would
    fail instead of reading nothing."""
    args = ["--proc", "/proc"]
    files, dirs = proc_masks()
    for path in files:
        args += ["--dev-bind", "/dev/null", path]
    for path in dirs:
        args += ["--perms", "0555", "--tmpfs", path, "--remount-ro", path]
    return args


def bwrap_argv(spec: SandboxSpec, fds: PayloadFds, *, bwrap: str = BWRAP) -> list[str]:
    """The bubblewrap invocation (without the host-side uid switch and cgroup join), all on the command
    line: what ``spawn`` runs is ``bwrap --args FD -- <command>``, with ``bwrap_options`` in the fd."""
    return [bwrap, *bwrap_options(spec, fds), "--", *spec.command]


def bwrap_options(spec: SandboxSpec, fds: PayloadFds) -> list[str]:
    """bubblewrap's options: everything between ``bwrap`` and ``--`` (the sandboxed command)."""
    argv = [
        "--unshare-all",  # user, ipc, pid, net, uts, cgroup: net → no network, own loopback
        "--unshare-user",
        "--disable-userns",  # no nested user namespaces (seccomp denies them too)
        "--die-with-parent",
        "--new-session",  # no TIOCSTI into a terminal outside
        "--cap-drop",
        "ALL",
        "--hostname",
        HOSTNAME,
        "--uid",
        str(SANDBOX_UID),
        "--gid",
        str(SANDBOX_GID),
        "--clearenv",
    ]
    for key, value in sandbox_env(spec.runtime_dir, spec.workspace_path).items():
        argv += ["--setenv", key, value]
    argv += _usr_args()
    # bwrap creates missing parents 0700; these are ordinary, listable directories.
    argv += ["--perms", "0755", "--dir", "/etc", "--perms", "0755", "--dir", "/etc/ssl"]
    argv += ["--perms", "0755", "--dir", "/opt", "--perms", "0755", "--dir", "/opt/execbridge"]
    argv += _etc_args(spec.etc_dir)
    for name, fd in fds.etc.items():
        argv += ["--perms", "0444", "--ro-bind-data", str(fd), f"/etc/{name}"]
    if spec.runtime_dir is not None:
        argv += ["--ro-bind", str(spec.runtime_dir), str(spec.runtime_dir)]
    argv += ["--perms", "0444", "--ro-bind-data", str(fds.executor), EXECUTOR_PATH]
    argv += [*_proc_args(), "--dev", "/dev"]
    argv += ["--size", str(spec.tmp_bytes), "--perms", "1777", "--tmpfs", "/dev/shm"]
    argv += ["--size", str(spec.tmp_bytes), "--perms", "1777", "--tmpfs", "/tmp"]
    argv += ["--bind", str(spec.workspace), spec.workspace_path, "--chdir", spec.workspace_path]
    if spec.workspace_path != DATA_ALIAS:
        # OpenAI's path for the same files (a second bind, not a symlink: ``ls -l /mnt/data`` lists them).
        argv += ["--perms", "0755", "--dir", os.path.dirname(DATA_ALIAS), "--bind", str(spec.workspace), DATA_ALIAS]
    argv += ["--remount-ro", "/"]
    argv += ["--seccomp", str(fds.seccomp)]
    return argv


def setpriv_argv(host_uid: int, host_gid: int, command: list[str]) -> list[str]:
    """``command`` run as the unprivileged host uid (no supplementary groups, no new privileges)."""
    return [
        "/usr/bin/setpriv",
        "--reuid",
        str(host_uid),
        "--regid",
        str(host_gid),
        "--clear-groups",
        "--no-new-privs",
        "--",
        *command,
    ]
