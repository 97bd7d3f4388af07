"""``container_upload``: which uploaded files a request needs in its container, where they go, putting them.

Rules (docs/protocol.md §2.10: Anthropic says only that the file becomes "available in the container"; the rest is
ours, documented in docs/architecture.md):
- A file goes to ``<workspace>/<name>`` (the container's workspace path, ``/workspace`` by default),
  ``<name>`` being its filename made into one safe path component; a second upload with the same
  name in the same container becomes ``<stem>-2<ext>``.
- Each file id is put into a given container once, the first time a request names it there; the
  placement (file id → path) is recorded with the container. Later requests — continuations, or a
  conversation resent with its history — never put it again, so they never overwrite what the model
  did to the file, and the model is told the same path every time.
- Only files that still have to be put must exist: an unknown id (or another key's) is a 400 naming
  it, raised before any container is created or anything runs.

Must not: read anything in the workspace (the executor writes the file inside the sandbox, and
links there resolve only within the sandbox's own view), or know any wire format.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from execbridge.errors import InvalidRequest, NotFound
from execbridge.files import FileService
from execbridge.sandbox.base import ContainerInfo, ContainerService, Owner
from execbridge.store.base import FileRecord
from execbridge.types import ContainerUpload, Message

_MAX_NAME_BYTES = 200  # well under NAME_MAX (255), leaving room for a "-N" suffix
_FALLBACK_NAME = "upload"


def upload_ids(messages: Iterable[Message]) -> tuple[str, ...]:
    """Every file id a ``container_upload`` block names, in conversation order, each once."""
    found = (p.file_id for m in messages for p in m.parts if isinstance(p, ContainerUpload))
    return tuple(dict.fromkeys(found))


def container_filename(filename: str) -> str:
    """``filename`` as one safe path component: no directories, control characters or leading dash.

    A leading ``-`` would make the file read as an option in the model's shell commands.
    """
    name = filename.replace("\\", "/").rsplit("/", 1)[-1]
    name = "".join(ch for ch in name if ch.isprintable()).strip()
    if name.startswith("-"):
        name = "_" + name[1:]
    if name in ("", ".", ".."):
        return _FALLBACK_NAME
    if len(name.encode()) > _MAX_NAME_BYTES:
        stem, ext = _split(name)
        ext = ext if len(ext.encode()) <= 16 else ""
        budget = _MAX_NAME_BYTES - len(ext.encode())
        stem = stem.encode()[:budget].decode("utf-8", "ignore")
        name = stem + ext
    return name


def unique_name(name: str, taken: set[str]) -> str:
    """``name``, or ``<stem>-2<ext>``, ``-3``, … — the first not in ``taken``."""
    if name not in taken:
        return name
    stem, ext = _split(name)
    n = 2
    while f"{stem}-{n}{ext}" in taken:
        n += 1
    return f"{stem}-{n}{ext}"


def _split(name: str) -> tuple[str, str]:
    dot = name.rfind(".")
    if dot <= 0:  # no extension, or a dotfile such as ".env"
        return name, ""
    return name[:dot], name[dot:]


async def records_to_put(files: FileService | None, owner: str, file_ids: Sequence[str]) -> list[FileRecord]:
    """The files behind ``file_ids``, in order; any unknown id is a 400 naming it."""
    if not file_ids:
        return []
    if files is None:
        raise InvalidRequest("container_upload: this gateway has no Files API configured")
    found = await files.find(owner, file_ids)
    unknown = [i for i in file_ids if i not in found]
    if unknown:
        shown = ", ".join(f"'{i}'" for i in unknown[:5]) + (", …" if len(unknown) > 5 else "")
        noun = "file" if len(unknown) == 1 else "files"
        raise InvalidRequest(f"container_upload: {noun} {shown} not found")
    return [found[i] for i in file_ids]


async def put_uploads(
    files: FileService,
    containers: ContainerService,
    container: ContainerInfo,
    owner: Owner,
    records: Sequence[FileRecord],
    placed: dict[str, str],
) -> dict[str, str]:
    """Put ``records`` into the container and record where; returns every placement (file id → path)."""
    placed = dict(placed)
    taken = {path.rsplit("/", 1)[-1] for path in placed.values()}
    async with containers.lease(container.id, owner) as session:
        workspace = session.info.workspace
        for record in records:
            name = unique_name(container_filename(record.filename), taken)
            try:
                data = await files.read(record)
            except NotFound:  # deleted since it was checked
                raise InvalidRequest(f"container_upload: file '{record.id}' not found") from None
            await session.put_file(name, data)
            del data  # uploads can be large; do not keep one alive while putting the next
            path = f"{workspace}/{name}"
            await files.add_placement(container.id, record.id, path)
            placed[record.id] = path
            taken.add(name)
    return placed
