"""Shared fixtures for sandbox tests: small limits, a private data dir, one doctor report per session.

These tests need what production needs (root, bubblewrap, cgroups, loop devices): when something is
missing they FAIL with the doctor's explanation rather than skip — a machine that cannot sandbox
must not look green.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from execbridge.config import Settings, load_settings
from execbridge.sandbox.doctor import DoctorReport, diagnose

if TYPE_CHECKING:
    from execbridge.sandbox.manager import ContainerManager
    from execbridge.sandbox.session import LeasedSession

BASELINE_PROCS = 3  # a live sandbox's own processes: bwrap (host side), bwrap (namespace init), the executor

# Host uids for test containers; far from the default range a real gateway on this machine uses.
TEST_UID_BASE = 400_000 + (os.getpid() % 50) * 1000


def small_settings(data_dir: Path, **sandbox: object) -> Settings:
    limits: dict[str, object] = {
        "memory_mb": 256,
        "pids": 64,
        "disk_mb": 64,
        "tmp_mb": 32,
        "cpus": 1.0,
        "command_timeout_s": 20.0,
        "kill_grace_s": 3.0,
        "output_limit_bytes": 64 * 1024,
        "spare_containers": 1,
        "uid_base": TEST_UID_BASE,
        "idle_evict_s": 3600.0,
    }
    limits.update(sandbox)
    return load_settings(None, data_dir=data_dir, sandbox=limits)


@pytest.fixture(scope="session")
def doctor_report(tmp_path_factory: pytest.TempPathFactory) -> DoctorReport:
    report = asyncio.run(diagnose(small_settings(tmp_path_factory.mktemp("doctor"))))
    assert report.ok, "sandbox protections missing on this machine:\n" + report.render()
    return report


@pytest.fixture(scope="session")
def base_dir() -> Path:
    """A world-searchable scratch directory (container uids must traverse to their workspaces;
    pytest's own tmp dirs are 0700)."""
    import shutil
    import tempfile

    path = Path(tempfile.mkdtemp(prefix="execbridge-test-", dir="/tmp"))
    os.chmod(path, 0o711)
    yield path
    leftover = _release_everything_under(path)
    shutil.rmtree(path, ignore_errors=True)
    assert not leftover, f"tests left workspaces mounted: {leftover}"


def _release_everything_under(path: Path) -> list[str]:
    """Unmount workspaces whose images live under ``path`` (wherever they are mounted) and remove
    the cgroups and runtime dirs of the data dirs there; returns what was still mounted."""
    import hashlib
    import subprocess

    devices = {}
    for backing in Path("/sys/block").glob("loop*/loop/backing_file"):
        try:
            name = backing.read_text().strip()
        except OSError:
            continue
        if name.startswith(str(path)):
            devices[f"/dev/{backing.parent.parent.name}"] = name
    mounted = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        left, _, right = line.partition(" - ")
        fields, rfields = left.split(), right.split()
        if len(rfields) > 1 and rfields[1] in devices:
            mounted.append(fields[4])
    for point in mounted:
        subprocess.run(["umount", "-l", point], check=False)
    for lock in path.rglob("sandbox/lock"):
        instance = hashlib.sha256(str(lock.parent.parent.resolve()).encode()).hexdigest()[:12]
        for group in Path("/sys/fs/cgroup").glob(f"*/execbridge/{instance}"):
            for child in group.iterdir():
                if child.is_dir():
                    with contextlib.suppress(OSError):
                        child.rmdir()
            with contextlib.suppress(OSError):
                group.rmdir()
        run = Path("/run/execbridge") / instance
        for child in (run / "mnt").glob("*"):
            with contextlib.suppress(OSError):
                child.rmdir()
        for d in (run / "mnt", run):
            with contextlib.suppress(OSError):
                d.rmdir()
    return mounted


@pytest.fixture
def workdir(base_dir: Path, request: pytest.FixtureRequest) -> Path:
    """A fresh directory for one test inside ``base_dir``."""
    import tempfile

    path = Path(tempfile.mkdtemp(prefix=request.node.name[:40] + "-", dir=base_dir))
    os.chmod(path, 0o711)
    return path


@contextlib.asynccontextmanager
async def open_manager(data_dir: Path, report: DoctorReport, *, check_clean: bool = True, **sandbox: object):
    """A started ``ContainerManager`` over a SQLite store in ``data_dir`` (closed on exit)."""
    from execbridge.sandbox.manager import ContainerManager
    from execbridge.store.sqlite import SqliteStore

    settings = small_settings(data_dir, **sandbox)
    store = await SqliteStore.open(settings.database_path)
    try:
        async with ContainerManager(settings, store, report=report) as manager:
            yield manager
    finally:
        await store.close()
    if not check_clean:
        return
    # A closed manager leaves nothing running or mounted: no cgroup, no runtime directory.
    leftovers = [p for p in Path("/sys/fs/cgroup").glob(f"*/execbridge/{manager.instance}") if p.exists()]
    assert leftovers == [] and not manager.run_dir.exists(), (leftovers, manager.run_dir)


def private_dir(base_dir: Path, prefix: str) -> Path:
    """A data directory of its own under ``base_dir``, searchable by the container uids."""
    path = Path(tempfile.mkdtemp(prefix=prefix, dir=base_dir))
    os.chmod(path, 0o711)
    return path


@contextlib.asynccontextmanager
async def container(m: ContainerManager, owner: str = "attacker") -> AsyncIterator[LeasedSession]:
    """A new container of ``owner``, leased for the block and deleted after it."""
    info = await m.create(owner)
    try:
        async with m.lease(info.id, owner) as session:
            yield session
    finally:
        await m.delete(info.id, owner)


def sandbox_pids(m: ContainerManager, session: LeasedSession) -> set[int]:
    """Host pids of every process in the leased container's sandbox (its cgroup)."""
    live = m._entries[session.info.id].live
    assert live is not None
    return live.pids()
