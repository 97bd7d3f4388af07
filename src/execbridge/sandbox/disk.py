"""Workspace disks: one sparse ext4 image per container, loop-mounted while the container is live.

The image gives a hard cap on the workspace (quotas are not available on these kernels): a program
that fills it gets ENOSPC and the host's disk is untouched. Images are sparse, so an empty 5 GiB
workspace costs a few MiB of real disk.

Layout: images in ``images_dir`` (``<data_dir>/sandbox/disks/<key>.img``, root-only: 0700 dir, 0600
files); mount points in ``mounts_dir`` (``/run/execbridge/<instance>/mnt/<key>`` by default: runtime
state, gone after a reboot like the mounts themselves). bubblewrap runs as the container's host uid
and must traverse to the mount point, so every parent of ``mounts_dir`` is searchable by others,
``mounts_dir`` is 0711 (reachable, not listable) and each workspace root is 0700, owned by its
container's uid. The data directory itself can stay private.

Invariants:
- The gateway never reads or walks a workspace: after ``mkfs`` it only removes ``lost+found`` and
  sets the root's mode, before any sandboxed code has run. Everything else happens inside the sandbox.
- An image is always formatted fresh (``create`` unlinks any old file first), so a reused key can
  never expose an earlier container's files.
- An image is never mounted twice: ``mount`` refuses while a loop device still holds the file, and
  ``unmount`` waits for the loop device to let go.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from execbridge.errors import SandboxError

log = logging.getLogger(__name__)

_MOUNT_OPTIONS = "loop,nosuid,nodev,noatime"


async def _run(*argv: str) -> None:
    proc = await asyncio.create_subprocess_exec(
        *argv, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE
    )
    _, err = await proc.communicate()
    if proc.returncode != 0:
        raise SandboxError(f"{Path(argv[0]).name} failed ({proc.returncode}): {err.decode(errors='replace')[:300]}")


def _loop_devices_holding(image: Path) -> list[str]:
    """Loop devices whose backing file is ``image`` (from sysfs; no subprocess)."""
    target = str(image)
    found: list[str] = []
    try:
        entries = os.listdir("/sys/block")
    except OSError:
        return found
    for name in entries:
        if not name.startswith("loop"):
            continue
        try:
            backing = Path(f"/sys/block/{name}/loop/backing_file").read_text().strip()
        except OSError:
            continue
        # A deleted backing file reads as "<path> (deleted)".
        if backing == target or backing == f"{target} (deleted)":
            found.append(name)
    return found


def mounts_under(directory: Path) -> list[Path]:
    """Mount points at or below ``directory`` in this mount namespace, deepest first."""
    prefix = str(directory).rstrip("/") + "/"
    points: list[Path] = []
    try:
        text = Path("/proc/self/mountinfo").read_text()
    except OSError:
        return points
    for line in text.splitlines():
        fields = line.split()
        if len(fields) > 4:
            # mountinfo escapes spaces etc. as octal; our own paths never contain them.
            point = fields[4]
            if point.startswith(prefix):
                points.append(Path(point))
    return sorted(points, key=lambda p: len(p.parts), reverse=True)


def make_reachable(directory: Path, *, setting: str = "sandbox.run_dir") -> None:
    """Create ``directory`` (0711) so that any uid can traverse into it, or explain why it cannot be."""
    missing = [p for p in (directory, *directory.parents) if not p.exists()]
    directory.mkdir(parents=True, exist_ok=True)
    for created in missing:
        os.chmod(created, 0o711)
    os.chmod(directory, 0o711)
    for parent in directory.parents:
        mode = parent.stat().st_mode
        if mode & 0o001 == 0:
            raise SandboxError(
                f"{parent} is not searchable by other users (mode {oct(mode & 0o777)}), so container uids "
                f"cannot reach their workspaces under {directory}; set {setting} to a path under "
                "world-searchable directories"
            )


@dataclass(frozen=True, slots=True)
class WorkspaceDisks:
    """Creates, mounts, unmounts and deletes workspace images under ``root``."""

    images_dir: Path
    mounts_dir: Path
    size_bytes: int

    def image(self, key: str) -> Path:
        return self.images_dir / f"{key}.img"

    def mountpoint(self, key: str) -> Path:
        return self.mounts_dir / key

    def prepare(self) -> None:
        self.images_dir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.images_dir, 0o700)
        make_reachable(self.mounts_dir)

    def exists(self, key: str) -> bool:
        return self.image(key).exists()

    def is_mounted(self, key: str) -> bool:
        return os.path.ismount(self.mountpoint(key))

    async def create(self, key: str, uid: int, gid: int) -> None:
        """Make a fresh, empty image for ``key`` whose root belongs to ``uid:gid`` (≈ 10 ms)."""
        image = self.image(key)
        if self.is_mounted(key) or _loop_devices_holding(image):
            raise SandboxError(f"workspace image {key} is in use")
        with contextlib.suppress(FileNotFoundError):
            image.unlink()
        fd = os.open(image, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        try:
            os.ftruncate(fd, self.size_bytes)
        finally:
            os.close(fd)
        try:
            await _run(
                "mkfs.ext4",
                "-q",
                "-F",
                "-O",
                "^has_journal",
                "-m",
                "0",
                "-E",
                f"root_owner={uid}:{gid}",
                str(image),
            )
            # lost+found and a 0755 root are mkfs defaults; fix both once, before anyone else can look.
            await self.mount(key)
            point = self.mountpoint(key)
            with contextlib.suppress(OSError):
                (point / "lost+found").rmdir()
            os.chmod(point, 0o700)
        except BaseException:
            await self.delete(key)
            raise

    async def mount(self, key: str) -> Path:
        """Mount ``key``'s image (idempotent); returns the mount point."""
        point = self.mountpoint(key)
        if self.is_mounted(key):
            return point
        image = self.image(key)
        if not image.exists():
            raise SandboxError(f"workspace image {key} is missing")
        if _loop_devices_holding(image):
            # Still held by a sandbox that is going away; mounting again would put two file systems
            # on one file.
            await self._wait_released(image)
        point.mkdir(mode=0o700, exist_ok=True)
        await _run("mount", "-t", "ext4", "-o", _MOUNT_OPTIONS, str(image), str(point))
        return point

    async def unmount(self, key: str) -> None:
        """Unmount (idempotent) and wait until the loop device has released the image."""
        point = self.mountpoint(key)
        if self.is_mounted(key):
            await _run("umount", str(point))
        await self._wait_released(self.image(key))
        with contextlib.suppress(OSError):
            point.rmdir()

    async def delete(self, key: str) -> None:
        await self.unmount(key)
        with contextlib.suppress(FileNotFoundError):
            self.image(key).unlink()

    async def _wait_released(self, image: Path, timeout: float = 5.0) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while _loop_devices_holding(image):
            if loop.time() > deadline:
                raise SandboxError(f"loop device still holds {image.name}")
            await asyncio.sleep(0.005)

    def keys(self) -> set[str]:
        """Keys of every image on disk."""
        try:
            return {p.name.removesuffix(".img") for p in self.images_dir.iterdir() if p.name.endswith(".img")}
        except FileNotFoundError:
            return set()

    async def clean_stale_mounts(self) -> int:
        """Unmount everything under ``mnt/`` (left by a gateway that stopped without cleaning up)."""
        points = mounts_under(self.mounts_dir)
        for point in points:
            log.info("unmounting stale workspace %s", point)
            await _run("umount", "-l", str(point))
        for key in self.keys():
            await self._wait_released(self.image(key))
        return len(points)
