"""Workspace images: fresh, capped, owned by the container uid, in no shared mount table, one loop
device per image, cleaned up."""

from __future__ import annotations

import asyncio
import errno
import os
import stat
import subprocess
from pathlib import Path

import pytest

from execbridge.errors import SandboxError
from execbridge.sandbox import loopdev
from execbridge.sandbox.disk import WorkspaceDisks, mounts_under
from execbridge.sandbox.launch import MOUNT_SCRIPT

UID = 401_234


@pytest.fixture
async def disks(workdir: Path):
    d = WorkspaceDisks(workdir / "disks", workdir / "run" / "mnt", 16 << 20)
    d.prepare()
    yield d
    left = d.keys()
    for key in left:
        await d.delete(key)


def _in_mount_table(disks: WorkspaceDisks) -> list[str]:
    """Lines of this thread's mount table that show one of ``disks``' images or mount points."""
    devices = {f"/dev/{n}" for names in loopdev.holders(disks.images_dir).values() for n in names}
    lines = Path("/proc/thread-self/mountinfo").read_text().splitlines()
    return [line for line in lines if str(disks.mounts_dir) in line or any(f" {d} " in line for d in devices)]


async def _released(disks: WorkspaceDisks, key: str) -> bool:
    """Whether no loop device holds ``key``'s image, waiting (bounded) for the kernel's autoclear."""
    for _ in range(200):
        if str(disks.image(key)) not in loopdev.holders(disks.images_dir):
            return True
        await asyncio.sleep(0.01)
    return False


async def test_create_gives_an_empty_private_capped_workspace(disks: WorkspaceDisks):
    await disks.create("1", UID, UID)
    assert _in_mount_table(disks) == []  # mounted nowhere the host (or another sandbox) can see
    assert disks.mountpoint("1").is_dir()  # the empty directory a sandbox mounts it on
    assert stat.S_IMODE(disks.image("1").stat().st_mode) == 0o600
    assert stat.S_IMODE(disks.mounts_dir.stat().st_mode) == 0o711
    # Sparse: a 16 MiB cap costs far less real disk.
    assert disks.image("1").stat().st_blocks * 512 < 8 << 20
    assert disks.template.stat().st_blocks * 512 < 8 << 20
    assert disks.keys() == {"1"}  # the template is no container's image
    with disks.pinned("1") as device, loopdev.detached_mount(device) as root:
        st = os.fstat(root)
        # Root's and private until a sandbox mounts it and gives it to the container (see below).
        assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (0, 0, 0o700)
        assert os.listdir(root) == []  # no lost+found
        # The cap is hard: writing past it fails with ENOSPC.
        fd = os.open("fill", os.O_WRONLY | os.O_CREAT, 0o600, dir_fd=root)
        try:
            with pytest.raises(OSError) as raised:
                for _ in range(64):
                    os.write(fd, bytes(1 << 20))
                os.fsync(fd)
            assert raised.value.errno == errno.ENOSPC
        finally:
            os.close(fd)


async def test_a_sandbox_mount_options_and_invisibility(disks: WorkspaceDisks):
    """What the launch chain does: mount the pinned device in a mount namespace of its own."""
    await disks.create("6", UID, UID)
    point = await disks.mount("6")
    with disks.pinned("6") as device:
        show = ["sh", "-c", f'stat -c %u:%g:%a {point}; grep " {point} " /proc/self/mountinfo']
        inside = subprocess.run(
            ["unshare", "--mount", "--propagation", "private", "sh", "-c", MOUNT_SCRIPT, "execbridge-mount",
             device, str(point), f"{UID}:{UID}", *show],
            capture_output=True, text=True, check=True,
        ).stdout  # fmt: skip
    assert inside.startswith(f"{UID}:{UID}:700\n")  # the workspace's root is the container's, 0700
    assert "nosuid" in inside and "nodev" in inside and "noatime" in inside
    assert _in_mount_table(disks) == []  # gone with that namespace
    assert await _released(disks, "6")  # and the loop device let go of the image by itself


async def test_files_survive_between_uses_and_one_device_per_image(disks: WorkspaceDisks):
    await disks.create("2", UID, UID)
    with disks.pinned("2") as device, loopdev.detached_mount(device) as root:
        fd = os.open("kept.txt", os.O_WRONLY | os.O_CREAT, 0o600, dir_fd=root)
        os.write(fd, b"still here")
        os.close(fd)
        with disks.pinned("2") as again:
            assert again == device  # the device still holding the image is used again, not a second one
    assert await _released(disks, "2")
    await disks.unmount("2")
    await disks.mount("2")
    with disks.pinned("2") as device, loopdev.detached_mount(device) as root:
        fd = os.open("kept.txt", os.O_RDONLY, dir_fd=root)
        assert os.read(fd, 100) == b"still here"
        os.close(fd)


async def test_create_over_an_old_image_starts_empty(disks: WorkspaceDisks):
    await disks.create("3", UID, UID)
    with disks.pinned("3") as old_device, loopdev.detached_mount(old_device) as root:
        os.close(os.open("secret", os.O_WRONLY | os.O_CREAT, 0o600, dir_fd=root))
        # Even while the old image is still attached (a sandbox being torn down), a new one is a new
        # file: the old device keeps only the old, deleted inode.
        await disks.create("3", UID + 1, UID + 1)
        with disks.pinned("3") as device, loopdev.detached_mount(device) as fresh:
            assert device != old_device
            assert os.listdir(fresh) == []


async def test_delete_and_stale_mount_cleanup(disks: WorkspaceDisks):
    await disks.create("4", UID, UID)
    await disks.create("5", UID, UID)
    # An older version mounted workspaces in the host's table; a crash left them there.
    for key in ("4", "5"):
        subprocess.run(["mount", "-o", "loop", str(disks.image(key)), str(disks.mountpoint(key))], check=True)
    assert len(mounts_under(disks.mounts_dir)) == 2
    assert await disks.clean_stale_mounts() >= 2  # as after a crash: nothing is live at start
    assert mounts_under(disks.mounts_dir) == []
    await disks.delete("4")
    assert disks.keys() == {"5"}
    assert not disks.mountpoint("4").exists()
    with pytest.raises(SandboxError):
        await disks.mount("4")
