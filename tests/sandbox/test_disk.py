"""Workspace images: fresh, capped, owned by the container uid, never mounted twice, cleaned up."""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

import pytest

from execbridge.errors import SandboxError
from execbridge.sandbox.disk import WorkspaceDisks, _loop_devices_holding, mounts_under

UID = 401_234


@pytest.fixture
async def disks(workdir: Path):
    d = WorkspaceDisks(workdir / "disks", workdir / "run" / "mnt", 16 << 20)
    d.prepare()
    yield d
    left = d.keys()
    for key in left:
        await d.delete(key)


async def test_create_gives_an_empty_private_capped_workspace(disks: WorkspaceDisks):
    await disks.create("1", UID, UID)
    point = disks.mountpoint("1")
    assert disks.is_mounted("1")
    st = point.stat()
    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (UID, UID, 0o700)
    assert os.listdir(point) == []  # no lost+found
    assert stat.S_IMODE(disks.image("1").stat().st_mode) == 0o600
    assert stat.S_IMODE(disks.mounts_dir.stat().st_mode) == 0o711
    # Sparse: a 16 MiB cap costs far less real disk.
    assert disks.image("1").stat().st_blocks * 512 < 8 << 20
    # The cap is hard: writing past it fails with ENOSPC.
    r = subprocess.run(["dd", "if=/dev/zero", f"of={point}/fill", "bs=1M", "count=64"], capture_output=True)
    assert r.returncode != 0 and b"No space left" in r.stderr
    mount_line = next(line for line in Path("/proc/self/mounts").read_text().splitlines() if str(point) in line)
    assert "nosuid" in mount_line and "nodev" in mount_line


async def test_unmount_keeps_files_and_remount_restores_them(disks: WorkspaceDisks):
    await disks.create("2", UID, UID)
    (disks.mountpoint("2") / "kept.txt").write_text("still here")
    await disks.unmount("2")
    assert not disks.is_mounted("2")
    assert not _loop_devices_holding(disks.image("2"))  # the loop device was released
    point = await disks.mount("2")
    assert (point / "kept.txt").read_text() == "still here"
    assert await disks.mount("2") == point  # idempotent


async def test_create_over_an_old_image_starts_empty(disks: WorkspaceDisks):
    await disks.create("3", UID, UID)
    (disks.mountpoint("3") / "secret").write_text("previous owner")
    await disks.unmount("3")
    await disks.create("3", UID + 1, UID + 1)
    assert os.listdir(disks.mountpoint("3")) == []
    with pytest.raises(SandboxError):
        await disks.create("3", UID, UID)  # refuses while mounted


async def test_delete_and_stale_mount_cleanup(disks: WorkspaceDisks):
    await disks.create("4", UID, UID)
    await disks.create("5", UID, UID)
    assert len(mounts_under(disks.mounts_dir)) == 2
    assert await disks.clean_stale_mounts() == 2  # as after a crash: nothing is live at start
    assert mounts_under(disks.mounts_dir) == []
    await disks.delete("4")
    assert disks.keys() == {"5"}
    with pytest.raises(SandboxError):
        await disks.mount("4")
