"""Instances on this machine, live or dead, and what dead ones left behind (``execbridge sandbox gc``).

An *instance* is one data directory's container manager: its cgroups are ``execbridge/<instance>`` in
each hierarchy, its runtime directory ``/run/execbridge/<instance>``. A manager holds an exclusive
``flock`` on ``/run/execbridge/<instance>/lock`` for as long as it runs (``hold``); the kernel drops
it when the process dies, however it dies. So:

- **live**: the lock is held. Nothing of it is ever touched here.
- **dead**: the lock file is there and free (the manager was killed), or there is no lock file (an
  older version, or a stop that left cgroups behind) and no process runs in its cgroups.
- what a dead instance leaves: cgroups (a REPL's frozen processes in them too: a frozen process does
  not die of its parent's death), and, from versions that mounted workspaces in the host's table,
  mounts under its runtime directory with their loop devices. Workspace mounts of this version live in
  each sandbox's own mount namespace and go with it; their loop devices detach themselves.

``collect`` takes the dead instance's lock itself while it works, so a manager starting on that data
directory waits for it rather than racing it (``hold`` blocks).

Must not: touch a live instance's anything, or anything outside ``execbridge/<instance>`` cgroups and
``/run/execbridge/<instance>``.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import signal
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from execbridge.errors import SandboxError
from execbridge.sandbox.mountns import RUN_ROOT

log = logging.getLogger(__name__)

CGROUP_ROOT = Path("/sys/fs/cgroup")
LOCK_NAME = "lock"
_KILL_TIMEOUT_S = 5.0


def hold(run_dir: Path, data_dir: Path) -> int:
    """Take the instance's lock for this process's lifetime (waits while ``collect`` holds it);
    returns the fd to close at the end. The file says who holds it, for people reading it."""
    run_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(run_dir / LOCK_NAME, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        os.ftruncate(fd, 0)
        os.write(fd, f"pid {os.getpid()}\ndata_dir {data_dir}\n".encode())
    except BaseException:
        os.close(fd)
        raise
    return fd


def hold_if_root(run_dir: Path, data_dir: Path) -> int | None:
    """``hold`` for the container manager: ``SandboxError`` if root cannot take the lock; without root
    (weak isolation: no cgroups or mounts to collect anyway) a warning and None."""
    try:
        return hold(run_dir, data_dir)
    except OSError as exc:
        if os.geteuid() != 0:
            log.warning("no instance lock in %s (%s): `sandbox gc` cannot tell this instance is live", run_dir, exc)
            return None
        raise SandboxError(f"cannot lock the instance's runtime directory {run_dir}: {exc}") from exc


def release(fd: int, run_dir: Path) -> None:
    """End of the instance: the lock file goes first (so the directory can go), then the lock."""
    with contextlib.suppress(OSError):
        (run_dir / LOCK_NAME).unlink()
    os.close(fd)


def take_data_dir(root: Path, run_dir: Path, data_dir: Path) -> tuple[int, int | None]:
    """The locks of a manager that runs: ``root/lock`` (one process per data directory; ``SandboxError``
    when another holds it) and, as root, the instance's run lock that marks it live for ``sandbox gc``.
    Both descriptors are returned for ``close_fds``."""
    fd = os.open(root / "lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise SandboxError(f"another execbridge process is using {data_dir} (containers need exactly one)") from None
    try:
        return fd, hold_if_root(run_dir, data_dir)
    except SandboxError:
        os.close(fd)
        raise


def close_fds(*fds: int | None) -> None:
    for fd in fds:
        if fd is not None:
            os.close(fd)


@dataclass
class Instance:
    name: str
    state: Literal["live", "dead"]
    cgroups: list[Path] = field(default_factory=list)  # deepest first
    processes: int = 0
    mounts: list[str] = field(default_factory=list)  # in this mount namespace, deepest first
    holder: str = ""  # what the lock file says

    def leftovers(self) -> str:
        return f"{len(self.cgroups)} cgroups, {self.processes} processes, {len(self.mounts)} mounts"


def _cgroup_dirs(name: str) -> list[Path]:
    """Every cgroup directory of instance ``name`` in every hierarchy, deepest first."""
    tops = [CGROUP_ROOT / "execbridge" / name] + [h / "execbridge" / name for h in _hierarchies()]
    found: list[Path] = []
    for top in tops:
        if top.is_dir():
            for directory, _subdirs, _files in os.walk(top):
                found.append(Path(directory))
    return sorted(set(found), key=lambda p: len(p.parts), reverse=True)


def _hierarchies() -> list[Path]:
    try:
        return [p for p in CGROUP_ROOT.iterdir() if p.is_dir()]
    except OSError:
        return []


def _procs(directory: Path) -> list[int]:
    try:
        return [int(x) for x in (directory / "cgroup.procs").read_text().split()]
    except (OSError, ValueError):
        return []


def _mounts(name: str) -> list[str]:
    prefix = f"{RUN_ROOT}/{name}/"
    try:
        lines = Path("/proc/thread-self/mountinfo").read_text().splitlines()
    except OSError:
        return []
    points = [f[4] for f in (line.split() for line in lines) if len(f) > 4 and f[4].startswith(prefix)]
    return sorted(points, key=len, reverse=True)


def _lock_state(run_dir: Path) -> tuple[Literal["held", "free", "none"], str]:
    path = run_dir / LOCK_NAME
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return "none", ""
    try:
        holder = os.read(fd, 512).decode(errors="replace").strip().replace("\n", ", ")
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return "held", holder
        return "free", holder
    finally:
        os.close(fd)


def scan() -> list[Instance]:
    """Every instance with cgroups or a runtime directory on this machine, live or dead."""
    names: set[str] = set()
    for top in [CGROUP_ROOT / "execbridge"] + [h / "execbridge" for h in _hierarchies()]:
        with contextlib.suppress(OSError):
            names.update(p.name for p in top.iterdir() if p.is_dir())
    with contextlib.suppress(OSError):
        names.update(p.name for p in RUN_ROOT.iterdir() if p.is_dir())
    found = []
    for name in sorted(names):
        lock, holder = _lock_state(RUN_ROOT / name)
        cgroups = _cgroup_dirs(name)
        processes = sum(len(_procs(d)) for d in cgroups)
        live = lock == "held" or (lock == "none" and processes > 0)
        found.append(Instance(name, "live" if live else "dead", cgroups, processes, _mounts(name), holder))
    return found


async def collect(instance: Instance) -> Instance:
    """Remove what dead ``instance`` left: kill its processes (thawed first), remove its cgroups,
    lazily unmount its old-style workspace mounts (their loop devices then detach themselves) and
    its runtime directory. Returns what could not be removed (empty lists when all went)."""
    run_dir = RUN_ROOT / instance.name
    fd = None
    if (run_dir / LOCK_NAME).exists():
        fd = os.open(run_dir / LOCK_NAME, os.O_RDWR | os.O_CLOEXEC)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:  # it came back to life meanwhile: not ours to touch
            os.close(fd)
            return Instance(instance.name, "live")
    try:
        left = Instance(instance.name, "dead")
        directories = _cgroup_dirs(instance.name)
        if not await _empty(directories):
            left.processes = sum(len(_procs(d)) for d in directories)
        for directory in directories:
            try:
                directory.rmdir()
            except FileNotFoundError:
                pass
            except OSError:
                left.cgroups.append(directory)
        for point in _mounts(instance.name):
            proc = await asyncio.create_subprocess_exec("umount", "-l", point, stderr=asyncio.subprocess.DEVNULL)
            if await proc.wait() != 0:
                left.mounts.append(point)
        if fd is not None:
            with contextlib.suppress(OSError):
                (run_dir / LOCK_NAME).unlink()
        for directory in sorted(
            (p for p in run_dir.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True
        ):
            with contextlib.suppress(OSError):
                directory.rmdir()
        with contextlib.suppress(OSError):
            run_dir.rmdir()
        return left
    finally:
        if fd is not None:
            os.close(fd)


async def _empty(directories: list[Path]) -> bool:
    """Thaw every one of ``directories`` (a frozen process dies of SIGKILL only once thawed; a v1
    freezer is a hierarchy of its own), then SIGKILL what runs in them until nothing does (bounded)."""
    for directory in directories:
        for name, value in (("freezer.state", "THAWED"), ("cgroup.freeze", "0")):
            with contextlib.suppress(OSError):
                (directory / name).write_text(value)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + _KILL_TIMEOUT_S
    while pids := {pid for d in directories for pid in _procs(d)}:
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        if loop.time() > deadline:
            return False
        await asyncio.sleep(0.01)
    return True
