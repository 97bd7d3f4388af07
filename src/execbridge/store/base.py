"""What the gateway keeps between restarts, as small protocols: one per kind of record.

``Store`` groups them (containers now; files and API keys join as ``store.files`` / ``store.keys``
when those features land), so a server database can replace SQLite without touching callers.
Records are frozen dataclasses with UTC-aware datetimes; nothing here knows SQL or wire formats.

Invariants: every method is async and safe to call from the event loop (implementations keep
blocking I/O off it); a missing record is ``None`` or a no-op, never an exception.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Protocol


@dataclass(frozen=True, slots=True)
class ContainerRecord:
    """A container's persistent facts. ``slot`` picks its host uid and its disk/cgroup names; it is
    unique among existing containers and reused only after the container is deleted."""

    id: str
    owner: str
    slot: int
    created_at: datetime
    last_used_at: datetime


class ContainerStore(Protocol):
    async def insert(self, record: ContainerRecord) -> None: ...

    async def get(self, container_id: str) -> ContainerRecord | None: ...

    async def list(self, owner: str | None = None) -> list[ContainerRecord]:
        """Every container (of ``owner`` when given), most recently used first."""
        ...

    async def touch(self, container_id: str, last_used_at: datetime) -> None: ...

    async def delete(self, container_id: str) -> None: ...

    async def unused_since(self, cutoff: datetime) -> list[ContainerRecord]:
        """Containers whose last use is before ``cutoff`` (candidates for deletion)."""
        ...


class Store(Protocol):
    @property
    def containers(self) -> ContainerStore: ...

    async def close(self) -> None: ...
