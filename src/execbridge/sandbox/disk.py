"""Workspace disks: one sparse ext4 image per container, mounted only inside that container's sandboxes.

The image gives a hard cap on the workspace (quotas are not available on these kernels): a program
that fills it gets ENOSPC and the host's disk is untouched. Images are sparse, so an empty 5 GiB
workspace costs a few MiB of real disk.

Where the file system is mounted: nowhere the host or other sandboxes can see. Each sandbox starts in
a mount namespace of its own (``launch``: ``unshare --mount`` → ``mount /dev/loopN <point>`` → bwrap),
so the host's mount table never holds a workspace. It used to: every live container's workspace was
a mount in the host's table, every new sandbox's namespace copied the whole table (bwrap start 4 →
26 ms with 800 mounts here), and a killed gateway left every mount and loop device behind. Now a
workspace's mounts live and die with its sandboxes, and its loop device (``LO_FLAGS_AUTOCLEAR``)
detaches itself when the last of them is gone. The container's main sandbox and its REPL mount the
same loop device, which the kernel serves with one super block: one file system on one file.

Layout: images in ``images_dir`` (``<data_dir>/sandbox/disks/<key>.img``, root-only: 0700 dir, 0600
files); mount points in ``mounts_dir`` (``/run/execbridge/<instance>/mnt/<key>`` by default: empty
directories on the host, covered only inside each sandbox's namespace). bubblewrap runs as the
container's host uid and must traverse to the mount point, so every parent of ``mounts_dir`` is
searchable by others, ``mounts_dir`` is 0711 (reachable, not listable) and each workspace root is
0700, owned by its container's uid. The data directory itself can stay private.

Invariants:
- The gateway never reads or walks a workspace: it only removed the template's ``lost+found`` and
  set its root's mode (through a detached mount), and each sandbox's launch chain gives the root to
  the container's uid right after mounting it, before any sandboxed code runs. Everything else
  happens inside the sandbox.
- An image is always fresh: a sparse copy of a template formatted once by ``prepare`` and never
  mounted by a sandbox (mkfs per container cost ≈ 8 ms and a process; the copy ≈ 1 ms), made as a new
  file (a new inode), so a reused key can never expose an earlier container's files.
- At most one loop device holds an image: the device attached last is remembered and used again while
  it still holds the image (checked by device and inode number); a new one is attached only once it
  has let go, and it lets go only after its file system was unmounted everywhere.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from execbridge.errors import SandboxError
from execbridge.sandbox import loopdev

log = logging.getLogger(__name__)

# How a sandbox mounts its workspace (``launch``); the same as the detached mount ``create`` uses.
MOUNT_OPTIONS = "nosuid,nodev,noatime"


async def _run(*argv: str) -> None:
    proc = await asyncio.create_subprocess_exec(
        *argv, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE
    )
    _, err = await proc.communicate()
    if proc.returncode != 0:
        raise SandboxError(f"{Path(argv[0]).name} failed ({proc.returncode}): {err.decode(errors='replace')[:300]}")


def _copy_sparse(source: Path, target: Path) -> None:
    """Copy ``source`` to a new file ``target`` (0600), data extents only: holes stay holes."""
    src = os.open(source, os.O_RDONLY | os.O_CLOEXEC)
    try:
        dst = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        try:
            size = os.fstat(src).st_size
            os.ftruncate(dst, size)
            offset = 0
            while offset < size:
                try:
                    start = os.lseek(src, offset, os.SEEK_DATA)
                except OSError as exc:
                    if exc.errno == errno.ENXIO:  # nothing but a hole from here on
                        break
                    raise
                end = os.lseek(src, start, os.SEEK_HOLE)
                while start < end:
                    copied = os.copy_file_range(src, dst, end - start, start, start)
                    if copied == 0:
                        raise OSError(errno.EIO, f"{source} ended early")
                    start += copied
                offset = end
        finally:
            os.close(dst)
    finally:
        os.close(src)


def mounts_under(directory: Path) -> list[Path]:
    """Mount points at or below ``directory`` in the calling thread's mount namespace, deepest first."""
    prefix = str(directory).rstrip("/") + "/"
    points: list[Path] = []
    try:
        text = Path("/proc/thread-self/mountinfo").read_text()
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
    """Creates and deletes workspace images under ``images_dir``; pins their loop devices for a spawn."""

    images_dir: Path
    mounts_dir: Path
    size_bytes: int
    # key → the loop device attached last for its image (it may have detached itself since).
    _devices: dict[str, str] = field(default_factory=dict, repr=False)

    def image(self, key: str) -> Path:
        return self.images_dir / f"{key}.img"

    def mountpoint(self, key: str) -> Path:
        return self.mounts_dir / key

    def prepare(self) -> None:
        self.images_dir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.images_dir, 0o700)
        make_reachable(self.mounts_dir)
        try:
            self._make_template()
        except OSError as exc:
            raise SandboxError(f"cannot make the workspace template in {self.images_dir}: {exc}") from exc

    def exists(self, key: str) -> bool:
        return self.image(key).exists()

    async def create(self, key: str, uid: int, gid: int) -> None:
        """Make a fresh, empty image for ``key`` (≈ 1 ms): a sparse copy of the pristine template
        ``prepare`` formatted. ``uid:gid`` get its root when a sandbox mounts it (see ``launch``)."""
        image = self.image(key)
        with contextlib.suppress(FileNotFoundError):
            image.unlink()  # a loop device still on the old file keeps only that (deleted) inode
        self._devices.pop(key, None)
        try:
            # The root stays root's (0700) until a sandbox mounts it: the launch chain gives it to the
            # container's uid right after mounting (``launch``), so no mount is needed here.
            _copy_sparse(self.template, image)
            self.mountpoint(key).mkdir(mode=0o700, exist_ok=True)
        except OSError as exc:
            await self.delete(key)
            raise SandboxError(f"cannot create workspace image {key}: {exc}") from exc
        except BaseException:
            await self.delete(key)
            raise

    @property
    def template(self) -> Path:
        """The empty file system every workspace starts as (not ``*.img``: no container's image)."""
        return self.images_dir / f"template-{self.size_bytes}.ext4"

    def _make_template(self) -> None:
        """Format the template once (mkfs, then remove ``lost+found`` and make the root 0700 through a
        detached mount); it is never mounted by a sandbox, so every copy of it is as fresh as mkfs."""
        if self.template.exists():
            return
        for old in self.images_dir.glob("template-*"):
            old.unlink()  # another size, or one a crash left half made
        partial = self.images_dir / f"template-{self.size_bytes}.partial"
        fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        try:
            os.ftruncate(fd, self.size_bytes)
        finally:
            os.close(fd)
        mkfs = ["mkfs.ext4", "-q", "-F", "-O", "^has_journal", "-m", "0", str(partial)]
        done = subprocess.run(mkfs, stdin=subprocess.DEVNULL, capture_output=True, check=False)
        if done.returncode != 0:
            partial.unlink()
            raise SandboxError(f"mkfs.ext4 failed ({done.returncode}): {done.stderr.decode(errors='replace')[:300]}")
        name, pin = loopdev.attach(partial)
        try:
            with loopdev.detached_mount(f"/dev/{name}") as root:
                with contextlib.suppress(OSError):
                    os.rmdir("lost+found", dir_fd=root)
                os.fchmod(root, 0o700)
        finally:
            os.close(pin)
        os.rename(partial, self.template)

    async def mount(self, key: str) -> Path:
        """Make ``key`` ready for its sandboxes (each mounts it in its own namespace); returns the mount
        point they use."""
        if not self.image(key).exists():
            raise SandboxError(f"workspace image {key} is missing")
        point = self.mountpoint(key)
        point.mkdir(mode=0o700, exist_ok=True)
        return point

    async def unmount(self, key: str) -> None:
        """Once ``key``'s sandboxes are stopped: its mounts were in their namespaces only and went with
        them, and the loop device lets go of the image by itself (it is checked before the next use).
        Only the empty mount point is left to remove."""
        with contextlib.suppress(OSError):
            self.mountpoint(key).rmdir()

    async def delete(self, key: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.image(key).unlink()
        self._devices.pop(key, None)
        with contextlib.suppress(OSError):
            self.mountpoint(key).rmdir()

    @contextlib.contextmanager
    def pinned(self, key: str) -> Iterator[str]:
        """The loop device holding ``key``'s image (``/dev/loopN``), attached if none does; it cannot
        detach while the block runs (a sandbox being spawned mounts it meanwhile)."""
        image = self.image(key)
        name = self._devices.get(key)
        fd = loopdev.open_if_backing(name, image) if name is not None else None
        if fd is None:
            try:
                name, fd = loopdev.attach(image)
            except OSError as exc:
                raise SandboxError(f"cannot attach workspace image {key}: {exc}") from exc
            self._devices[key] = name
        try:
            yield f"/dev/{name}"
        finally:
            os.close(fd)

    def keys(self) -> set[str]:
        """Keys of every image on disk."""
        try:
            return {p.name.removesuffix(".img") for p in self.images_dir.iterdir() if p.name.endswith(".img")}
        except FileNotFoundError:
            return set()

    async def clean_stale_mounts(self) -> int:
        """After a crash: unmount what an older version mounted under ``mnt/`` in the host's table, and
        remember which loop devices still hold our images (their sandboxes are dying), so that no
        second device is attached to one of them. One pass over the loop devices, not one per image."""
        points = mounts_under(self.mounts_dir)
        for point in points:
            log.info("unmounting stale workspace %s", point)
            await _run("umount", "-l", str(point))
        held = loopdev.holders(self.images_dir)
        for backing, names in held.items():
            key = Path(backing).name.removesuffix(".img")
            self._devices[key] = names[-1]
        return len(points) + len(held)
