"""Where workspaces live on the host: capped disk images (``disk.WorkspaceDisks``) or, when loop
devices are unavailable and weak isolation was allowed, plain directories with no size cap.

Both speak ``Workspaces``; the manager does not care which one it has. Like the disks, the plain
directories are never read or walked by the gateway, only created, chowned (empty) and removed.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
from collections.abc import Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from execbridge.sandbox.disk import make_reachable


class Workspaces(Protocol):
    def prepare(self) -> None: ...

    def mountpoint(self, key: str) -> Path: ...

    def exists(self, key: str) -> bool: ...

    def keys(self) -> set[str]: ...

    async def create(self, key: str, uid: int, gid: int) -> None:
        """A fresh, empty workspace for ``key``, ready to use (mounted)."""
        ...

    async def mount(self, key: str) -> Path: ...

    async def unmount(self, key: str) -> None: ...

    async def delete(self, key: str) -> None: ...

    def pinned(self, key: str) -> AbstractContextManager[str | None]:
        """The block device a sandbox of ``key`` mounts at ``mountpoint(key)`` in its own mount
        namespace, held for the spawn; None when the mount point is a plain directory to bind."""
        ...

    async def clean_stale_mounts(self) -> int: ...


@dataclass(frozen=True, slots=True)
class PlainWorkspaces:
    """Uncapped directories under ``base`` (weak isolation only: a container can fill the disk).

    They hold user files, so ``base`` is persistent (under the data directory); every parent of it
    must be searchable by the container uids.
    """

    base: Path

    def prepare(self) -> None:
        make_reachable(self.base, setting="data_dir")

    def mountpoint(self, key: str) -> Path:
        return self.base / key

    def exists(self, key: str) -> bool:
        return self.mountpoint(key).is_dir()

    def keys(self) -> set[str]:
        try:
            return {p.name for p in self.base.iterdir()}
        except FileNotFoundError:
            return set()

    async def create(self, key: str, uid: int, gid: int) -> None:
        path = self.mountpoint(key)
        await self.delete(key)
        path.mkdir(mode=0o700)
        os.chown(path, uid, gid)

    async def mount(self, key: str) -> Path:
        return self.mountpoint(key)

    async def unmount(self, key: str) -> None:
        return None

    async def delete(self, key: str) -> None:
        path = self.mountpoint(key)
        if path.exists():
            # rmtree never follows symlinks inside the tree (it unlinks them), so planted links are safe.
            await asyncio.to_thread(shutil.rmtree, path, True)

    @contextlib.contextmanager
    def pinned(self, key: str) -> Iterator[str | None]:
        yield None

    async def clean_stale_mounts(self) -> int:
        return 0
