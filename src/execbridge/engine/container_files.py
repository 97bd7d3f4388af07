"""The files of an OpenAI container (``cfile_…``), as the Containers API shows them.

Job: list, find, put, read and remove the files in a container's workspace, and give each a stable
``cfile_…`` id (``OpenAIContainerStore.add_file``: one per path, kept while the file exists). The
workspace is the truth: files the client uploaded (``source: "user"``) and files code wrote
(``assistant``) are found by scanning it inside the sandbox, so a file that code under ``/mnt/data``
(the workspace's second path, ``sandbox.base.DATA_ALIAS``) wrote is listed without anyone
registering it.

Must not: read the workspace from the gateway. Everything runs inside the sandbox through a leased
session: the scan is a small Python program, a download is a copy into the command's
``$OUTPUT_DIR``, whose bytes the executor streams out as for any output file (their limits apply),
and a deletion is ``rm``. Paths reach the shell quoted (``shlex.quote``); links are never followed.
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Final

from execbridge import ids
from execbridge.errors import InvalidRequest, NotFound, SandboxError
from execbridge.files import OutputBatch
from execbridge.sandbox.base import DATA_ALIAS, ContainerSession
from execbridge.store.base import ContainerFileRecord, ContainerFileSource, OpenAIContainerStore

__all__ = ["MAX_SCANNED_FILES", "ContainerFile", "ContainerFiles", "Scanned", "api_path", "sorted_page"]

MAX_SCANNED_FILES: Final = 5000  # a listing shows at most this many (the scan's answer stays < 1 MiB)

# Run inside the sandbox (``python -c``): the regular files under the workspace (or one of them), as
# JSON ``[[relative path, size, mtime], …]``; links are neither followed nor listed, and names that are
# not UTF-8 are left out (they cannot be named in JSON or the store).
_SCAN: Final = """
import json, os, stat
root, only, limit = {root!r}, {only!r}, {limit!r}
found = []
def add(rel):
    try:
        rel.encode("utf-8")
        st = os.lstat(os.path.join(root, rel))
    except (OSError, UnicodeEncodeError):
        return
    if stat.S_ISREG(st.st_mode):
        found.append([rel, st.st_size, st.st_mtime])
if only is not None:
    add(only)
else:
    for top, dirs, names in os.walk(root):
        dirs.sort()
        for name in sorted(names):
            if len(found) < limit:
                add(os.path.relpath(os.path.join(top, name), root))
print(json.dumps(found))
"""


def api_path(relative: str) -> str:
    """Where the Containers API says a file is: under ``/mnt/data``, the workspace's OpenAI path."""
    return f"{DATA_ALIAS}/{relative}"


@dataclass(frozen=True, slots=True)
class Scanned:
    size: int
    modified: datetime


@dataclass(frozen=True, slots=True)
class ContainerFile:
    """A file of an OpenAI container as the Containers API shows it."""

    id: str
    container_id: str
    path: str  # ``/mnt/data/…``
    source: ContainerFileSource
    bytes: int
    created_at: datetime

    @property
    def cursor(self) -> tuple[datetime, str]:
        return (self.created_at, self.id)


def _view(record: ContainerFileRecord, scanned: Scanned) -> ContainerFile:
    return ContainerFile(
        record.id, record.container_id, api_path(record.path), record.source, scanned.size, record.created_at
    )


class ContainerFiles:
    """The files of OpenAI containers; every method takes a session already leased for the container."""

    def __init__(self, store: OpenAIContainerStore, clock: Callable[[], datetime]) -> None:
        self._store = store
        self._now = clock

    async def scan(self, session: ContainerSession, only: str | None = None) -> dict[str, Scanned]:
        """Relative path → size and modification time of the workspace's regular files (or of ``only``)."""
        code = _SCAN.format(root=session.info.workspace, only=only, limit=MAX_SCANNED_FILES)
        result = await session.run_python(code)
        if result.return_code != 0 or result.error_code is not None:
            raise SandboxError(f"could not list the container's files ({result.error_code or result.return_code})")
        try:
            rows = json.loads(result.stdout)
            return {str(p): Scanned(int(size), datetime.fromtimestamp(float(m), UTC)) for p, size, m in rows}
        except (ValueError, TypeError) as exc:
            raise SandboxError("the container's file listing was not readable") from exc

    async def all(self, container_id: str, session: ContainerSession) -> list[ContainerFile]:
        """Every file in the container, oldest first; files seen for the first time get their ids now
        (``assistant``: only Containers API uploads are recorded as ``user`` when made)."""
        scanned = await self.scan(session)
        known = await self._store.files(container_id)
        gone = [r.id for r in known if r.path not in scanned]
        if gone:
            await self._store.remove_files(container_id, gone)
        by_path = {r.path: r for r in known if r.path in scanned}
        now = self._now()
        for path, seen in scanned.items():
            if path not in by_path:
                first = ContainerFileRecord(
                    ids.container_file_id(), container_id, path, "assistant", min(seen.modified, now)
                )
                by_path[path] = await self._store.add_file(first)
        return sorted((_view(r, scanned[p]) for p, r in by_path.items()), key=lambda f: f.cursor)

    async def record_of(self, container_id: str, file_id: str) -> ContainerFileRecord:
        for record in await self._store.files(container_id):
            if record.id == file_id:
                return record
        raise NotFound(f"No file found with id '{file_id}' in container '{container_id}'.")

    async def ids_for(
        self, container_id: str, paths: Sequence[str], *, written: Sequence[str] = ()
    ) -> dict[str, ContainerFileRecord]:
        """The ids of the files at ``paths`` (relative to the workspace) that have one, or that are among
        ``written`` (files code just wrote, known to exist: they get their ``assistant`` id now). For
        ``/v1/responses``' citations, which must not lease the container the engine holds."""
        known = {r.path: r for r in await self._store.files(container_id)}
        found: dict[str, ContainerFileRecord] = {}
        for path in paths:
            if path in known:
                found[path] = known[path]
            elif path in written:
                record = ContainerFileRecord(ids.container_file_id(), container_id, path, "assistant", self._now())
                found[path] = known[path] = await self._store.add_file(record)
        return found

    async def one(self, container_id: str, file_id: str, session: ContainerSession) -> ContainerFile:
        record = await self.record_of(container_id, file_id)
        scanned = (await self.scan(session, record.path)).get(record.path)
        if scanned is None:  # removed by code since it was listed
            await self._store.remove_files(container_id, [record.id])
            raise NotFound(f"No file found with id '{file_id}' in container '{container_id}'.")
        return _view(record, scanned)

    async def put(
        self, container_id: str, session: ContainerSession, relative: str, data: bytes, source: ContainerFileSource
    ) -> ContainerFile:
        """Write ``data`` at ``relative`` in the workspace and give it an id (the path's, if it had one)."""
        await session.put_file(relative, data)
        record = ContainerFileRecord(ids.container_file_id(), container_id, relative, source, self._now())
        record = await self._store.add_file(record)
        return _view(record, Scanned(len(data), record.created_at))

    async def remove(self, container_id: str, file_id: str, session: ContainerSession) -> None:
        record = await self.record_of(container_id, file_id)
        target = shlex.quote(f"{session.info.workspace}/{record.path}")
        result = await session.run_bash(f"rm -f -- {target}")
        if result.return_code != 0:
            raise SandboxError(f"could not delete the file: {result.stderr.strip()[:200]}")
        await self._store.remove_files(container_id, [record.id])

    async def copy_out(self, record: ContainerFileRecord, session: ContainerSession, batch: OutputBatch) -> Path:
        """The file's bytes, copied out of the sandbox into a temporary of ``batch`` (the caller discards it)."""
        source = shlex.quote(f"{session.info.workspace}/{record.path}")
        result = await session.run_bash(f'cp -P -- {source} "$OUTPUT_DIR/content"', spool=batch)
        if result.error_code == "output_file_too_large" or result.files_too_large:
            raise InvalidRequest(
                f"file '{record.id}' is larger than the gateway's download limit for container files",
                code="file_too_large",
            )
        copied = [f for f in result.files if f.path is not None]
        if result.return_code != 0 or not copied:
            raise NotFound(f"No file found with id '{record.id}' in container '{record.container_id}'.")
        path = copied[0].path
        assert path is not None
        return path


def sorted_page(
    items: Sequence[ContainerFile], *, limit: int, after: str | None, ascending: bool
) -> tuple[list[ContainerFile], bool]:
    """One page of ``items`` (oldest first) in the asked order, strictly after the item ``after``."""
    ordered = list(items) if ascending else list(reversed(items))
    if after is not None:
        position = next((i for i, f in enumerate(ordered) if f.id == after), None)
        if position is None:
            raise InvalidRequest(f"after: no file '{after}' in this container", param="after")
        ordered = ordered[position + 1 :]
    return ordered[:limit], len(ordered) > limit
