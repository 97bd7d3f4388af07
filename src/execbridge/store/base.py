"""What the gateway keeps between restarts, as small protocols: one per kind of record.

``Store`` groups them (``store.containers``, ``store.files``, ``store.keys``), so a server database
can replace SQLite without touching callers.
Records are frozen dataclasses with UTC-aware datetimes; nothing here knows SQL or wire formats.

Invariants: every method is async and safe to call from the event loop (implementations keep
blocking I/O off it); a missing record is ``None`` or a no-op, never an exception.
"""

from __future__ import annotations

import builtins
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal, Protocol


@dataclass(frozen=True, slots=True)
class ContainerRecord:
    """A container's persistent facts. ``slot`` picks its host uid and its disk/cgroup names; it is
    unique among existing containers and reused only after the container is deleted. ``memory_mb`` is
    its own memory limit when it has one below the sandbox's per-container limit (None: that limit)."""

    id: str
    owner: str
    slot: int
    created_at: datetime
    last_used_at: datetime
    memory_mb: int | None = None


class ContainerStore(Protocol):
    async def insert(self, record: ContainerRecord) -> None: ...

    async def get(self, container_id: str) -> ContainerRecord | None: ...

    async def list(self, owner: str | None = None) -> list[ContainerRecord]:
        """Every container (of ``owner`` when given), most recently used first."""
        ...

    async def touch(self, container_id: str, last_used_at: datetime) -> None: ...

    async def delete(self, container_id: str) -> None: ...

    async def unused_since(self, cutoff: datetime) -> builtins.list[ContainerRecord]:  # ``list`` is a method here
        """Containers whose last use is before ``cutoff`` (candidates for deletion)."""
        ...


@dataclass(frozen=True, slots=True)
class FileRecord:
    """A Files-API file's metadata; its bytes live beside the store (``files.py`` owns them).

    ``downloadable`` is true only for files the sandbox produced; client uploads are never served back
    (docs/protocol.md §2.10). ``created_at`` keeps microseconds exactly: with ``id`` it is the list order.
    ``expires_at`` (from the upload's ``expires_in_seconds``; None: never) is when the file is gone.
    ``purpose`` is set for (and only for) OpenAI Files API files (``file-…`` ids): each API lists its own.
    """

    id: str
    owner: str
    filename: str
    mime_type: str
    size_bytes: int
    created_at: datetime
    downloadable: bool
    expires_at: datetime | None = None
    purpose: str | None = None

    def expired(self, now: datetime) -> bool:
        return self.expires_at is not None and self.expires_at <= now

    @property
    def cursor(self) -> tuple[datetime, str]:
        """The record's place in a listing (newest first; ``id`` breaks ties)."""
        return (self.created_at, self.id)


class FileStore(Protocol):
    """File metadata scoped by owner (another owner's file is ``None``), and where uploads were put.

    Listings are newest first. ``after`` returns the records that come after a cursor in that order
    (older ones); ``before`` the ones that come before it (newer), the ``limit`` nearest, still newest
    first. With ``now``, the reading methods leave out records that expired at or before it. ``list``
    gives Anthropic's files (no ``purpose``), or with ``openai`` OpenAI's (of ``purpose`` when given).
    """

    async def insert(self, record: FileRecord) -> None: ...

    async def get(self, file_id: str, owner: str, *, now: datetime | None = None) -> FileRecord | None: ...

    async def get_many(self, file_ids: Sequence[str], owner: str, *, now: datetime | None = None) -> list[FileRecord]:
        """The owner's records among ``file_ids`` (unknown ids are left out), newest first."""
        ...

    async def known(self, file_ids: Sequence[str]) -> set[str]:
        """Which of ``file_ids`` have a row, whoever owns them and expired or not (crash recovery)."""
        ...

    async def list(
        self,
        owner: str,
        *,
        limit: int,
        after: tuple[datetime, str] | None = None,
        before: tuple[datetime, str] | None = None,
        now: datetime | None = None,
        openai: bool = False,
        purpose: str | None = None,
    ) -> list[FileRecord]: ...

    async def bytes_of(self, owner: str) -> int:
        """The sum of ``size_bytes`` of the owner's records, expired ones included (one indexed query)."""
        ...

    async def expired(self, now: datetime, *, limit: int) -> builtins.list[FileRecord]:  # ``list`` is a method here
        """Up to ``limit`` records of any owner that expired at or before ``now``, oldest expiry first."""
        ...

    async def delete(self, file_id: str, owner: str) -> bool:
        """Remove the record; False when the owner has no such file."""
        ...

    async def placements(self, container_id: str) -> dict[str, str]:
        """``file_id → path`` of the uploads already put into a container."""
        ...

    async def add_placement(self, container_id: str, file_id: str, path: str, placed_at: datetime) -> None: ...

    async def forget_placements(self, placed_before: datetime) -> int:
        """Drop the rows of uploads placed before ``placed_before``; how many."""
        ...


@dataclass(frozen=True, slots=True)
class ApiKeyRecord:
    """A gateway API key. The secret itself is never stored: only its SHA-256 (``secret_hash``), and
    ``id``, which ``keys.key_id`` derives from the secret (it is also the owner of what the key makes)."""

    id: str
    name: str | None
    secret_hash: str
    created_at: datetime
    last_used_at: datetime | None = None
    revoked_at: datetime | None = None

    @property
    def active(self) -> bool:
        return self.revoked_at is None


class KeyStore(Protocol):
    async def insert(self, record: ApiKeyRecord) -> None: ...

    async def get(self, key_id: str) -> ApiKeyRecord | None: ...

    async def list(self) -> list[ApiKeyRecord]:
        """Every key, revoked ones included, newest first."""
        ...

    async def revoke(self, key_id: str, revoked_at: datetime) -> bool:
        """Mark the key revoked; False when there is no such active key."""
        ...

    async def touch(self, key_id: str, last_used_at: datetime) -> None: ...

    async def count(self, *, include_revoked: bool = False) -> int: ...


ThreadClaim = Literal["claimed", "not_found", "continued", "in_flight"]


@dataclass(frozen=True, slots=True)
class ThreadTurn:
    """One response held for a message thread (api/threads.py): the messages it added to the conversation
    (the request's new ones, then the response as an assistant message), as the client's JSON.

    ``parent_id`` is the response it continued (``None`` for the thread's first); ``fingerprint`` holds
    the fields a continue must not change, as JSON; ``expires_at`` moves with the thread's newest turn.
    """

    message_id: str
    owner: str
    parent_id: str | None
    messages: bytes
    fingerprint: bytes
    container_id: str | None
    created_at: datetime
    expires_at: datetime


class ThreadStore(Protocol):
    async def claim(self, message_id: str, owner: str, now: datetime) -> ThreadClaim:
        """Mark ``owner``'s unexpired response ``message_id`` as being continued, atomically: only one of
        concurrent claims gets ``claimed``; the others learn why not."""
        ...

    async def release(self, message_id: str) -> None:
        """A claimed continue failed: ``message_id`` may be continued again."""
        ...

    async def chain(self, message_id: str) -> list[ThreadTurn]:
        """The turns from the thread's first to ``message_id``, oldest first; empty if one is gone."""
        ...

    async def record(self, turn: ThreadTurn, *, continues: str | None) -> None:
        """Hold ``turn``; mark ``continues`` as continued and give the whole thread ``turn``'s expiry, in
        one transaction."""
        ...

    async def sweep(self, now: datetime, *, limit: int) -> int:
        """Forget up to ``limit`` expired turns; how many."""
        ...


@dataclass(frozen=True, slots=True)
class PendingCall:
    """A client tool call that a suspended REPL cell waits for (programmatic tool calling).

    The cell itself waits in the sandbox; these rows say which ``toolu_`` ids it waits for, in which
    container, for which owner, so any gateway process can take the client's answers and resume it
    and no other owner can. ``expires_at`` is when the cell stops waiting (``ptc_call_timeout_s``).
    """

    tool_use_id: str
    cell_id: str
    container_id: str
    owner: str
    name: str
    created_at: datetime
    expires_at: datetime


class PendingCallStore(Protocol):
    async def add(self, calls: Sequence[PendingCall]) -> None: ...

    async def of_cell(self, cell_id: str, owner: str) -> builtins.list[PendingCall]:
        """``owner``'s calls that the cell ``cell_id`` waits for (expired ones included)."""
        ...

    async def of_container(self, container_id: str, owner: str, now: datetime) -> builtins.list[PendingCall]:
        """``owner``'s calls that a cell of ``container_id`` still waits for at ``now``."""
        ...

    async def clear(self, cell_id: str) -> None:
        """The cell was resumed (or is gone): it waits for none of its calls any more."""
        ...

    async def sweep(self, now: datetime, *, limit: int) -> int:
        """Forget up to ``limit`` calls expired before ``now``; how many."""
        ...


@dataclass(frozen=True, slots=True)
class OpenAIContainerRecord:
    """A container of OpenAI's Containers API (``cntr_…``), over a sandbox container (``sandbox_id``).

    ``memory_limit`` is the tier as requested (``1g``…``64g``); ``expires_after_minutes`` counts from
    ``last_active_at``. ``sandbox_id`` is None once the container expired: its files are gone, its
    metadata stays (status ``expired``).
    """

    id: str
    owner: str
    name: str
    memory_limit: str
    expires_after_minutes: int
    sandbox_id: str | None
    created_at: datetime
    last_active_at: datetime

    def expires_at(self) -> datetime:
        return self.last_active_at + timedelta(minutes=self.expires_after_minutes)

    def expired(self, now: datetime) -> bool:
        return self.sandbox_id is None or self.expires_at() <= now

    @property
    def cursor(self) -> tuple[datetime, str]:
        return (self.created_at, self.id)


ContainerFileSource = Literal["user", "assistant"]


@dataclass(frozen=True, slots=True)
class ContainerFileRecord:
    """The id a file in an OpenAI container has (``cfile_…``): one per ``path`` (relative to the
    workspace) in its container, kept until the file is gone. ``source`` is ``user`` for uploads
    through the Containers API, ``assistant`` for files code made."""

    id: str
    container_id: str
    path: str
    source: ContainerFileSource
    created_at: datetime

    @property
    def cursor(self) -> tuple[datetime, str]:
        return (self.created_at, self.id)


class OpenAIContainerStore(Protocol):
    """OpenAI containers scoped by owner (another owner's is ``None``), and the ids of their files.

    ``list`` is oldest first with ``ascending``, else newest first, each strictly past ``after`` in
    that order; ``name`` filters by exact name.
    """

    async def insert(self, record: OpenAIContainerRecord) -> None: ...

    async def get(self, container_id: str, owner: str) -> OpenAIContainerRecord | None: ...

    async def list(
        self,
        owner: str,
        *,
        limit: int,
        ascending: bool = False,
        after: tuple[datetime, str] | None = None,
        name: str | None = None,
    ) -> list[OpenAIContainerRecord]: ...

    async def touch(self, container_id: str, last_active_at: datetime) -> None: ...

    async def mark_expired(self, container_id: str) -> None:
        """Forget the sandbox container (it was deleted): the container reads as expired from now on."""
        ...

    async def delete(self, container_id: str, owner: str) -> bool:
        """Remove the container and its file ids; False when the owner has no such container."""
        ...

    async def add_file(self, record: ContainerFileRecord) -> ContainerFileRecord:
        """Record ``record``, or return the one its container already has for its ``path``."""
        ...

    async def files(self, container_id: str) -> builtins.list[ContainerFileRecord]:
        """Every file id of the container (callers check the owner first), in no particular order."""
        ...

    async def remove_files(self, container_id: str, file_ids: Sequence[str]) -> None: ...


@dataclass(frozen=True, slots=True)
class StoredResponse:
    """One response of OpenAI's Responses API kept for ``GET /v1/responses/{id}`` and for later
    requests that name it as ``previous_response_id`` (api/responses.py).

    ``input_items`` is the request's own input (a JSON list of items, ids assigned); ``response`` the
    Response object as JSON, tool outputs always included (a client that did not ask for them gets
    them left out when it is rendered). ``previous_id`` links the conversation: the context of a
    response is its chain's inputs and outputs, oldest first.
    """

    id: str
    owner: str
    previous_id: str | None
    input_items: bytes
    response: bytes
    created_at: datetime


class ResponseStore(Protocol):
    """Stored responses, scoped by owner: another owner's response is ``None``, like an unknown id."""

    async def insert(self, record: StoredResponse) -> None: ...

    async def get(self, response_id: str, owner: str) -> StoredResponse | None: ...

    async def chain(self, response_id: str, owner: str) -> builtins.list[StoredResponse]:
        """The responses from the conversation's first to ``response_id``, oldest first; empty when
        ``response_id`` or one of its ancestors is unknown, deleted or another owner's."""
        ...

    async def delete(self, response_id: str, owner: str) -> bool:
        """Remove the record; False when the owner has no such response."""
        ...


@dataclass(frozen=True, slots=True)
class UsageRecord:
    """What one owner (a gateway key's id, or a passed-through key's digest) has used.

    Requests, tokens and code-execution seconds are counted as requests finish (``UsageStore.add``);
    ``files`` and ``file_bytes`` are what the owner keeps in the Files API now.
    """

    owner: str
    requests: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    code_execution_s: float = 0.0
    files: int = 0
    file_bytes: int = 0
    last_used_at: datetime | None = None


class UsageStore(Protocol):
    async def add(
        self, owner: str, *, requests: int, input_tokens: int, output_tokens: int, code_execution_s: float, at: datetime
    ) -> None:
        """Add to ``owner``'s totals (made on first use)."""
        ...

    async def list(self) -> list[UsageRecord]:
        """Every owner with any use or any stored file, most input tokens first."""
        ...

    async def files_total(self) -> tuple[int, int]:
        """Files kept in the Files API, all owners together: (count, bytes)."""
        ...


class Store(Protocol):
    @property
    def containers(self) -> ContainerStore: ...

    @property
    def pending_calls(self) -> PendingCallStore: ...

    @property
    def files(self) -> FileStore: ...

    @property
    def threads(self) -> ThreadStore: ...

    @property
    def keys(self) -> KeyStore: ...

    @property
    def openai_containers(self) -> OpenAIContainerStore: ...

    @property
    def responses(self) -> ResponseStore: ...

    @property
    def usage(self) -> UsageStore: ...

    async def close(self) -> None: ...
