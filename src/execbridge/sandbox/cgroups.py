"""Per-container cgroups: memory, process count and CPU limits, and killing everything inside.

Two drivers behind one small interface: cgroup v1 (one hierarchy per controller:
``/sys/fs/cgroup/{memory,pids,cpu}/<parent>/<name>``) and v2 (one unified tree, ``cgroup.kill``).
``detect()`` picks what the machine has; ``None`` means no usable cgroups (the doctor reports it).

How processes get in, race-free: the sandbox is launched through ``join_argv()``, a tiny
``/bin/sh -c`` that writes its own pid into each ``cgroup.procs`` and then ``exec``\\ s the real command.
Every process the sandbox ever creates descends from it, so nothing runs outside the limits, not even
for a moment. If a write fails the shell exits 125 and nothing runs (fail closed).

A container's persistent Python REPL gets a child cgroup of the container's (``<slot>/repl`` in each
hierarchy: it shares the container's limits) plus a freezer (v1: ``freezer/<parent>/repl-<slot>``; v2:
the child's own ``cgroup.freeze``), so the gateway can freeze it between cells (``create_repl``).

This module must not decide policy (sizes come from the caller) and must not touch cgroups outside
its parent directory. Invariants: a ``ContainerCgroup`` is removed only after it is empty;
``kill_all`` returns only when no process is left (or raises ``TimeoutError``).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import signal
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

CGROUP_ROOT = Path("/sys/fs/cgroup")
_V1_CONTROLLERS = ("memory", "pids", "cpu")
_CPU_PERIOD_US = 100_000

# $1 = how many cgroup.procs files follow; then the files; then the command. ``ulimit -c 0``: a crash
# must not write a core file into the workspace. ``-p``: RLIMIT_NPROC as a second fence behind
# pids.max (the kernel enforces it because the sandbox runs under a non-root host uid).
_JOIN_SCRIPT = (
    'n=$1; shift; nproc=$1; shift; ulimit -c 0; [ "$nproc" -gt 0 ] && { ulimit -p "$nproc" || exit 125; }; '
    'while [ "$n" -gt 0 ]; do echo $$ > "$1" || exit 125; shift; n=$((n-1)); done; exec "$@"'
)


@dataclass(frozen=True, slots=True)
class CgroupLimits:
    memory_bytes: int
    pids: int
    cpus: float | None  # None: no CPU quota (the parent of all containers has none, so no child can exceed it)


@dataclass(frozen=True, slots=True)
class ContainerCgroup:
    """One container's cgroup (one directory per v1 controller, or one v2 directory)."""

    version: Literal[1, 2]
    dirs: tuple[Path, ...]  # v1: one per controller (memory first); v2: exactly one
    freezer: Path | None = None  # v1: the freezer hierarchy's directory; v2: the cgroup itself (cgroup.freeze)

    @property
    def procs_files(self) -> tuple[Path, ...]:
        extra = (self.freezer,) if self.freezer is not None and self.version == 1 else ()
        return tuple(d / "cgroup.procs" for d in (*self.dirs, *extra))

    def freeze(self) -> None:
        """Freeze every process here (asynchronous: the kernel stops them at their next chance)."""
        self._set_frozen(True)

    def thaw(self) -> None:
        self._set_frozen(False)

    def _set_frozen(self, frozen: bool) -> None:
        if self.freezer is None:
            return
        if self.version == 1:
            _write(self.freezer / "freezer.state", "FROZEN" if frozen else "THAWED")
        else:
            _write(self.freezer / "cgroup.freeze", "1" if frozen else "0")

    def frozen(self) -> bool:
        """Whether every process here is frozen now."""
        if self.freezer is None:
            return False
        if self.version == 1:
            return (self.freezer / "freezer.state").read_text().strip() == "FROZEN"
        events = (self.freezer / "cgroup.events").read_text().split()
        return "frozen" in events and events[events.index("frozen") + 1] == "1"

    def join_argv(self, command: list[str], *, nproc: int = 0) -> list[str]:
        """``command`` wrapped so that it starts inside this cgroup (see the module docstring)."""
        files = [str(p) for p in self.procs_files]
        return ["/bin/sh", "-c", _JOIN_SCRIPT, "execbridge-join", str(len(files)), str(nproc), *files, *command]

    def pids(self) -> set[int]:
        found: set[int] = set()
        for procs in self.procs_files:
            with contextlib.suppress(FileNotFoundError):
                found.update(int(line) for line in procs.read_text().split())
        return found

    def oom_kills(self) -> int:
        """How many processes the kernel killed here for lack of memory (0 when unknown)."""
        try:
            if self.version == 2:
                text = (self.dirs[0] / "memory.events").read_text()
            else:
                text = (self.dirs[0] / "memory.oom_control").read_text()
        except OSError:
            return 0
        for line in text.splitlines():
            key, _, value = line.partition(" ")
            if key == "oom_kill":
                return int(value)
        return 0

    def memory_peak(self) -> int | None:
        name = "memory.peak" if self.version == 2 else "memory.max_usage_in_bytes"
        try:
            return int((self.dirs[0] / name).read_text())
        except (OSError, ValueError):
            return None

    def signal_all(self, sig: int = signal.SIGKILL, *, keep: Iterable[int] = ()) -> int:
        """Send ``sig`` to every process here except ``keep``; returns how many were signalled."""
        spared = set(keep)
        count = 0
        for pid in self.pids() - spared:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
                count += 1
        return count

    async def kill_all(self, *, timeout: float = 5.0) -> None:
        """SIGKILL everything and wait until the cgroup is empty."""
        # A frozen process dies of SIGKILL only once thawed.
        with contextlib.suppress(OSError):
            self.thaw()
        if self.version == 2:
            with contextlib.suppress(FileNotFoundError):
                (self.dirs[0] / "cgroup.kill").write_text("1")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        delay = 0.001
        while True:
            # Re-read each round: a fork bomb may have forked between our read and our kill.
            if self.signal_all(signal.SIGKILL) == 0 and not self.pids():
                return
            if loop.time() > deadline:
                raise TimeoutError(f"processes left in {(*self.dirs, self.freezer)[0]}")
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.05)

    def remove(self) -> None:
        """rmdir the cgroup; it must be empty (call ``kill_all`` first).

        A directory that still has a child cgroup (the container's REPL, stopped separately) stays.
        """
        for d in (*self.dirs, *((self.freezer,) if self.freezer is not None and self.version == 1 else ())):
            if _has_child_cgroup(d):
                continue
            try:
                d.rmdir()
            except FileNotFoundError:
                pass
            except OSError as exc:
                if exc.errno != errno.EBUSY:
                    raise
                raise OSError(exc.errno, f"cgroup not empty: {d}") from exc


@dataclass(frozen=True, slots=True)
class Cgroups:
    """The cgroup driver for this machine, rooted at ``<controller>/<parent>``."""

    version: Literal[1, 2]
    parent: str  # e.g. "execbridge/3fa2b1c0"; relative to each hierarchy's root
    roots: tuple[Path, ...]  # hierarchy roots: v1 memory, pids, cpu mounts; v2 the unified root
    controllers: frozenset[str]
    freezer_root: Path | None = None  # v1: the freezer hierarchy's mount, if any (v2 has cgroup.freeze)

    def _parent_dirs(self) -> tuple[Path, ...]:
        return tuple(root / self.parent for root in self.roots)

    def prepare(self, total: CgroupLimits | None = None) -> None:
        """Create the parent directories (and, on v2, delegate the controllers down to them).

        ``total`` caps all containers together: per-container limits alone would let many busy
        containers add up to more memory or processes than the host has.
        """
        for d in self._parent_dirs():
            d.mkdir(parents=True, exist_ok=True)
        if self.freezer_root is not None:
            (self.freezer_root / self.parent).mkdir(parents=True, exist_ok=True)
        if self.version == 2:
            enable = " ".join(f"+{c}" for c in sorted(self.controllers & set(_V1_CONTROLLERS)))
            root = self.roots[0]
            node = root
            for part in Path(self.parent).parts:
                _write(node / "cgroup.subtree_control", enable)
                node = node / part
            _write(node / "cgroup.subtree_control", enable)
        if total is not None:
            if self.version == 1:
                _set_v1_limits(self._parent_dirs(), total)
            else:
                _set_v2_limits(self._parent_dirs()[0], total, self.controllers)

    def create(self, name: str, limits: CgroupLimits) -> ContainerCgroup:
        """Make (or reuse) the cgroup ``name`` with ``limits``; costs ≈ 0.1 ms on v1."""
        dirs = tuple(d / name for d in self._parent_dirs())
        made: list[Path] = []
        try:
            for d in dirs:
                if not d.is_dir():
                    d.mkdir()
                    made.append(d)
            if self.version == 1:
                _set_v1_limits(dirs, limits)
            else:
                _set_v2_limits(dirs[0], limits, self.controllers)
        except OSError:
            # A hierarchy gone read-only or removed under us: leave no half-made cgroup behind (one
            # controller's directory without the others' would hold a stale limit for the next user).
            for d in reversed(made):
                with contextlib.suppress(OSError):
                    d.rmdir()
            raise
        return ContainerCgroup(self.version, dirs)

    def create_repl(self, name: str) -> ContainerCgroup:
        """The REPL's cgroup inside container ``name``'s (which must exist): its limits are the
        container's, shared; its freezer is its own (see the module docstring)."""
        dirs = tuple(d / name / _REPL for d in self._parent_dirs())
        for d in dirs:
            d.mkdir(exist_ok=True)
        if self.version == 2:
            return ContainerCgroup(2, dirs, dirs[0])
        freezer = None
        if self.freezer_root is not None:
            freezer = self.freezer_root / self.parent / f"{_REPL}-{name}"
            freezer.mkdir(exist_ok=True)
        return ContainerCgroup(1, dirs, freezer)

    def existing(self) -> Iterator[ContainerCgroup]:
        """Cgroups left under our parent (e.g. by a gateway that crashed); a REPL's before its container's."""
        parents = self._parent_dirs()
        names: set[str] = set()
        for p in parents:
            with contextlib.suppress(FileNotFoundError):
                names.update(child.name for child in p.iterdir() if child.is_dir())
        freezers: set[str] = set()
        if self.freezer_root is not None:
            with contextlib.suppress(FileNotFoundError):
                freezers.update(c.name for c in (self.freezer_root / self.parent).iterdir() if c.is_dir())
        for name in sorted(names):
            repl_dirs = tuple(p / name / _REPL for p in parents)
            if any(d.is_dir() for d in repl_dirs):
                freezer = None
                if self.version == 2:
                    freezer = repl_dirs[0]
                elif f"{_REPL}-{name}" in freezers:
                    freezer = self.freezer_root / self.parent / f"{_REPL}-{name}" if self.freezer_root else None
                    freezers.discard(f"{_REPL}-{name}")
                yield ContainerCgroup(self.version, repl_dirs, freezer)
            yield ContainerCgroup(self.version, tuple(p / name for p in parents))
        for orphan in sorted(freezers):  # a REPL freezer whose container's cgroup is gone already
            if self.freezer_root is not None:
                yield ContainerCgroup(self.version, (), self.freezer_root / self.parent / orphan)

    def total_memory(self) -> int | None:
        """The memory limit of all containers together (the parent's), or None when there is none."""
        name = "memory.limit_in_bytes" if self.version == 1 else "memory.max"
        try:
            text = (self._parent_dirs()[0] / name).read_text().strip()
        except OSError:
            return None
        # v1 says "no limit" with a huge number (PAGE_COUNTER_MAX pages), v2 with "max".
        return None if text == "max" or int(text) >= 1 << 62 else int(text)

    def total_memory_usage(self) -> int | None:
        """Memory all containers use together now (one read of the parent's counter)."""
        name = "memory.usage_in_bytes" if self.version == 1 else "memory.current"
        try:
            return int((self._parent_dirs()[0] / name).read_text())
        except (OSError, ValueError):
            return None

    def remove_parent(self) -> None:
        """Remove our (empty) parent directories, e.g. when the service stops; busy ones stay."""
        freezer = (self.freezer_root / self.parent,) if self.freezer_root is not None else ()
        for d in (*self._parent_dirs(), *freezer):
            with contextlib.suppress(OSError):
                d.rmdir()

    async def clean_stale(self) -> int:
        """Kill and remove every cgroup under our parent; returns how many there were."""
        count = 0
        for cg in list(self.existing()):
            await cg.kill_all()
            cg.remove()
            count += 1
        return count


def host_totals(memory_mb: int | None, pids: int | None) -> CgroupLimits:
    """Limits for all containers together: the given values, or a share of what the host has."""
    if memory_mb is None:
        meminfo = Path("/proc/meminfo").read_text().splitlines()
        host_kib = next(int(line.split()[1]) for line in meminfo if line.startswith("MemTotal:"))
        memory_bytes = host_kib * 1024 * 4 // 5  # the rest is for the gateway and the host itself
    else:
        memory_bytes = memory_mb << 20
    if pids is None:
        pids = max(64, int(Path("/proc/sys/kernel/threads-max").read_text()) // 2)
    return CgroupLimits(memory_bytes, pids, None)


_REPL = "repl"


def _has_child_cgroup(d: Path) -> bool:
    try:
        return any(child.is_dir() for child in d.iterdir())
    except OSError:
        return False


def _write(path: Path, value: str) -> None:
    with open(path, "w") as f:
        f.write(value)


def _set_v1_limits(dirs: tuple[Path, ...], limits: CgroupLimits) -> None:
    memory, pids, cpu = dirs
    _write(memory / "memory.limit_in_bytes", str(limits.memory_bytes))
    # Swap would let a container exceed its memory limit; memsw = memory forbids it (when compiled in).
    memsw = memory / "memory.memsw.limit_in_bytes"
    if memsw.exists():
        _write(memsw, str(limits.memory_bytes))
    with contextlib.suppress(OSError):
        _write(memory / "memory.swappiness", "0")
    _write(pids / "pids.max", str(limits.pids))
    if limits.cpus is not None:
        _write(cpu / "cpu.cfs_period_us", str(_CPU_PERIOD_US))
        _write(cpu / "cpu.cfs_quota_us", str(max(1000, int(limits.cpus * _CPU_PERIOD_US))))


def _set_v2_limits(d: Path, limits: CgroupLimits, controllers: frozenset[str]) -> None:
    _write(d / "memory.max", str(limits.memory_bytes))
    swap = d / "memory.swap.max"
    if swap.exists():
        _write(swap, "0")
    _write(d / "pids.max", str(limits.pids))
    if "cpu" in controllers and limits.cpus is not None:
        _write(d / "cpu.max", f"{max(1000, int(limits.cpus * _CPU_PERIOD_US))} {_CPU_PERIOD_US}")


def _cgroup_mounts() -> list[tuple[str, Path, set[str]]]:
    """(fstype, mount point, super options) of every cgroup mount, from /proc/self/mountinfo."""
    mounts: list[tuple[str, Path, set[str]]] = []
    try:
        text = Path("/proc/self/mountinfo").read_text()
    except OSError:
        return mounts
    for line in text.splitlines():
        left, _, right = line.partition(" - ")
        fields = left.split()
        rfields = right.split()
        if len(fields) < 5 or len(rfields) < 3:
            continue
        fstype = rfields[0]
        if fstype in ("cgroup", "cgroup2"):
            mounts.append((fstype, Path(fields[4]), set(rfields[2].split(","))))
    return mounts


def detect(parent: str) -> Cgroups | None:
    """The usable cgroup driver, preferring v2 when it has memory and pids, else v1; else None."""
    mounts = _cgroup_mounts()
    for fstype, point, _opts in mounts:
        if fstype != "cgroup2":
            continue
        try:
            controllers = frozenset((point / "cgroup.controllers").read_text().split())
        except OSError:
            continue
        if {"memory", "pids"} <= controllers:
            return Cgroups(2, parent, (point,), controllers)
    v1: dict[str, Path] = {}
    for fstype, point, opts in mounts:
        if fstype == "cgroup":
            for c in _V1_CONTROLLERS:
                if c in opts and c not in v1:
                    v1[c] = point
    if all(c in v1 for c in _V1_CONTROLLERS):
        freezer = next((point for fstype, point, opts in mounts if fstype == "cgroup" and "freezer" in opts), None)
        return Cgroups(1, parent, tuple(v1[c] for c in _V1_CONTROLLERS), frozenset(v1), freezer)
    return None
