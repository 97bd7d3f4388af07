"""An in-memory ``Store`` for tests of code around the store; nothing survives the process."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime

from execbridge.store.base import ContainerRecord


class MemoryContainerStore:
    def __init__(self) -> None:
        self.records: dict[str, ContainerRecord] = {}

    async def insert(self, record: ContainerRecord) -> None:
        if record.id in self.records or any(r.slot == record.slot for r in self.records.values()):
            raise ValueError(f"duplicate container id or slot: {record.id} / {record.slot}")
        self.records[record.id] = record

    async def get(self, container_id: str) -> ContainerRecord | None:
        return self.records.get(container_id)

    async def list(self, owner: str | None = None) -> list[ContainerRecord]:
        found = [r for r in self.records.values() if owner is None or r.owner == owner]
        return sorted(found, key=lambda r: r.last_used_at, reverse=True)

    async def touch(self, container_id: str, last_used_at: datetime) -> None:
        if container_id in self.records:
            self.records[container_id] = replace(self.records[container_id], last_used_at=last_used_at)

    async def delete(self, container_id: str) -> None:
        self.records.pop(container_id, None)

    async def unused_since(self, cutoff: datetime) -> list[ContainerRecord]:
        return sorted((r for r in self.records.values() if r.last_used_at < cutoff), key=lambda r: r.last_used_at)


class MemoryStore:
    def __init__(self) -> None:
        self._containers = MemoryContainerStore()

    @property
    def containers(self) -> MemoryContainerStore:
        return self._containers

    async def close(self) -> None:
        return None
