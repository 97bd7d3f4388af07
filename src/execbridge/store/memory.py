"""An in-memory ``Store`` for tests of code around the store; nothing survives the process."""

from __future__ import annotations

import builtins
from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime

from execbridge.store.base import (
    ApiKeyRecord,
    ContainerFileRecord,
    ContainerRecord,
    FileRecord,
    OpenAIContainerRecord,
    PendingCall,
    StoredResponse,
    ThreadClaim,
    ThreadTurn,
    UsageRecord,
)


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

    async def unused_since(self, cutoff: datetime) -> builtins.list[ContainerRecord]:  # ``list`` is a method here
        return sorted((r for r in self.records.values() if r.last_used_at < cutoff), key=lambda r: r.last_used_at)


class MemoryFileStore:
    def __init__(self) -> None:
        self.records: dict[str, FileRecord] = {}
        self.placed: dict[str, dict[str, str]] = {}
        self.placed_at: dict[tuple[str, str], datetime] = {}

    async def insert(self, record: FileRecord) -> None:
        if record.id in self.records:
            raise ValueError(f"duplicate file id: {record.id}")
        self.records[record.id] = record

    async def get(self, file_id: str, owner: str, *, now: datetime | None = None) -> FileRecord | None:
        record = self.records.get(file_id)
        if record is None or record.owner != owner or (now is not None and record.expired(now)):
            return None
        return record

    async def known(self, file_ids: Sequence[str]) -> set[str]:
        return {i for i in file_ids if i in self.records}

    def _newest_first(self, owner: str, now: datetime | None) -> list[FileRecord]:
        mine = (r for r in self.records.values() if r.owner == owner and (now is None or not r.expired(now)))
        return sorted(mine, key=lambda r: r.cursor, reverse=True)

    async def get_many(self, file_ids: Sequence[str], owner: str, *, now: datetime | None = None) -> list[FileRecord]:
        wanted = set(file_ids)
        return [r for r in self._newest_first(owner, now) if r.id in wanted]

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
    ) -> list[FileRecord]:
        found = [
            r
            for r in self._newest_first(owner, now)
            if (r.purpose is not None) == openai and (purpose is None or r.purpose == purpose)
        ]
        if after is not None:
            found = [r for r in found if r.cursor < after]
        if before is not None:
            return [r for r in found if r.cursor > before][-limit:]
        return found[:limit]

    async def bytes_of(self, owner: str) -> int:
        return sum(r.size_bytes for r in self.records.values() if r.owner == owner)

    async def expired(self, now: datetime, *, limit: int) -> builtins.list[FileRecord]:  # ``list`` is a method here
        found = sorted((r for r in self.records.values() if r.expired(now)), key=lambda r: r.expires_at or now)
        return found[:limit]

    async def delete(self, file_id: str, owner: str) -> bool:
        if await self.get(file_id, owner) is None:
            return False
        del self.records[file_id]
        return True

    async def placements(self, container_id: str) -> dict[str, str]:
        return dict(self.placed.get(container_id, {}))

    async def add_placement(self, container_id: str, file_id: str, path: str, placed_at: datetime) -> None:
        if file_id not in self.placed.setdefault(container_id, {}):
            self.placed[container_id][file_id] = path
            self.placed_at[(container_id, file_id)] = placed_at

    async def forget_placements(self, placed_before: datetime) -> int:
        old = [key for key, when in self.placed_at.items() if when < placed_before]
        for container_id, file_id in old:
            del self.placed_at[(container_id, file_id)]
            del self.placed[container_id][file_id]
        return len(old)


class MemoryKeyStore:
    def __init__(self) -> None:
        self.records: dict[str, ApiKeyRecord] = {}

    async def insert(self, record: ApiKeyRecord) -> None:
        if record.id in self.records:
            raise ValueError(f"duplicate key id: {record.id}")
        self.records[record.id] = record

    async def get(self, key_id: str) -> ApiKeyRecord | None:
        return self.records.get(key_id)

    async def list(self) -> list[ApiKeyRecord]:
        return sorted(self.records.values(), key=lambda r: r.created_at, reverse=True)

    async def revoke(self, key_id: str, revoked_at: datetime) -> bool:
        record = self.records.get(key_id)
        if record is None or not record.active:
            return False
        self.records[key_id] = replace(record, revoked_at=revoked_at)
        return True

    async def touch(self, key_id: str, last_used_at: datetime) -> None:
        if key_id in self.records:
            self.records[key_id] = replace(self.records[key_id], last_used_at=last_used_at)

    async def count(self, *, include_revoked: bool = False) -> int:
        return sum(1 for r in self.records.values() if include_revoked or r.active)


class MemoryThreadStore:
    def __init__(self) -> None:
        self.turns: dict[str, ThreadTurn] = {}
        self.states: dict[str, str] = {}

    async def claim(self, message_id: str, owner: str, now: datetime) -> ThreadClaim:
        turn = self.turns.get(message_id)
        if turn is None or turn.owner != owner or turn.expires_at <= now:
            return "not_found"
        state = self.states[message_id]
        if state == "open":
            self.states[message_id] = "continuing"
            return "claimed"
        return "continued" if state == "continued" else "in_flight"

    async def release(self, message_id: str) -> None:
        if self.states.get(message_id) == "continuing":
            self.states[message_id] = "open"

    def _ancestry(self, message_id: str) -> builtins.list[ThreadTurn]:
        found: builtins.list[ThreadTurn] = []
        next_id: str | None = message_id
        while next_id is not None and next_id in self.turns:
            found.append(self.turns[next_id])
            next_id = self.turns[next_id].parent_id
        return found[::-1] if next_id is None else []

    async def chain(self, message_id: str) -> builtins.list[ThreadTurn]:
        return self._ancestry(message_id)

    async def record(self, turn: ThreadTurn, *, continues: str | None) -> None:
        self.turns[turn.message_id] = turn
        self.states[turn.message_id] = "open"
        if continues is not None:
            self.states[continues] = "continued"
            for earlier in self._ancestry(continues):
                self.turns[earlier.message_id] = replace(earlier, expires_at=turn.expires_at)

    async def sweep(self, now: datetime, *, limit: int) -> int:
        expired = [i for i, t in self.turns.items() if t.expires_at <= now][:limit]
        for message_id in expired:
            del self.turns[message_id]
            del self.states[message_id]
        return len(expired)


class MemoryPendingCallStore:
    def __init__(self) -> None:
        self.calls: dict[str, PendingCall] = {}

    async def add(self, calls: Sequence[PendingCall]) -> None:
        self.calls.update((c.tool_use_id, c) for c in calls)

    async def of_cell(self, cell_id: str, owner: str) -> builtins.list[PendingCall]:
        return [c for c in self.calls.values() if c.cell_id == cell_id and c.owner == owner]

    async def of_container(self, container_id: str, owner: str, now: datetime) -> builtins.list[PendingCall]:
        return [
            c for c in self.calls.values() if c.container_id == container_id and c.owner == owner and c.expires_at > now
        ]

    async def clear(self, cell_id: str) -> None:
        for key in [k for k, c in self.calls.items() if c.cell_id == cell_id]:
            del self.calls[key]

    async def sweep(self, now: datetime, *, limit: int) -> int:
        expired = [k for k, c in self.calls.items() if c.expires_at <= now][:limit]
        for key in expired:
            del self.calls[key]
        return len(expired)


class MemoryOpenAIContainerStore:
    def __init__(self) -> None:
        self.records: dict[str, OpenAIContainerRecord] = {}
        self.file_records: dict[str, ContainerFileRecord] = {}

    async def insert(self, record: OpenAIContainerRecord) -> None:
        if record.id in self.records:
            raise ValueError(f"duplicate container id: {record.id}")
        self.records[record.id] = record

    async def get(self, container_id: str, owner: str) -> OpenAIContainerRecord | None:
        record = self.records.get(container_id)
        return record if record is not None and record.owner == owner else None

    async def list(
        self,
        owner: str,
        *,
        limit: int,
        ascending: bool = False,
        after: tuple[datetime, str] | None = None,
        name: str | None = None,
    ) -> builtins.list[OpenAIContainerRecord]:
        mine = sorted(
            (r for r in self.records.values() if r.owner == owner and (name is None or r.name == name)),
            key=lambda r: r.cursor,
            reverse=not ascending,
        )
        if after is not None:
            mine = [r for r in mine if (r.cursor > after if ascending else r.cursor < after)]
        return mine[:limit]

    async def touch(self, container_id: str, last_active_at: datetime) -> None:
        if container_id in self.records:
            self.records[container_id] = replace(self.records[container_id], last_active_at=last_active_at)

    async def mark_expired(self, container_id: str) -> None:
        if container_id in self.records:
            self.records[container_id] = replace(self.records[container_id], sandbox_id=None)

    async def delete(self, container_id: str, owner: str) -> bool:
        if await self.get(container_id, owner) is None:
            return False
        del self.records[container_id]
        for file_id in [i for i, f in self.file_records.items() if f.container_id == container_id]:
            del self.file_records[file_id]
        return True

    async def add_file(self, record: ContainerFileRecord) -> ContainerFileRecord:
        for known in self.file_records.values():
            if known.container_id == record.container_id and known.path == record.path:
                return known
        self.file_records[record.id] = record
        return record

    async def files(self, container_id: str) -> builtins.list[ContainerFileRecord]:
        return [f for f in self.file_records.values() if f.container_id == container_id]

    async def remove_files(self, container_id: str, file_ids: Sequence[str]) -> None:
        for file_id in file_ids:
            known = self.file_records.get(file_id)
            if known is not None and known.container_id == container_id:
                del self.file_records[file_id]


class MemoryResponseStore:
    def __init__(self) -> None:
        self.records: dict[str, StoredResponse] = {}

    async def insert(self, record: StoredResponse) -> None:
        if record.id in self.records:
            raise ValueError(f"duplicate response id: {record.id}")
        self.records[record.id] = record

    async def get(self, response_id: str, owner: str) -> StoredResponse | None:
        record = self.records.get(response_id)
        return record if record is not None and record.owner == owner else None

    async def chain(self, response_id: str, owner: str) -> builtins.list[StoredResponse]:
        found: builtins.list[StoredResponse] = []
        next_id: str | None = response_id
        while next_id is not None:
            record = await self.get(next_id, owner)
            if record is None:
                return []
            found.append(record)
            next_id = record.previous_id
        return found[::-1]

    async def delete(self, response_id: str, owner: str) -> bool:
        if await self.get(response_id, owner) is None:
            return False
        del self.records[response_id]
        return True


class MemoryUsageStore:
    def __init__(self, files: MemoryFileStore) -> None:
        self.records: dict[str, UsageRecord] = {}
        self._files = files

    async def add(
        self, owner: str, *, requests: int, input_tokens: int, output_tokens: int, code_execution_s: float, at: datetime
    ) -> None:
        old = self.records.get(owner, UsageRecord(owner))
        self.records[owner] = replace(
            old,
            requests=old.requests + requests,
            input_tokens=old.input_tokens + input_tokens,
            output_tokens=old.output_tokens + output_tokens,
            code_execution_s=old.code_execution_s + code_execution_s,
            last_used_at=at,
        )

    async def list(self) -> builtins.list[UsageRecord]:
        kept: dict[str, tuple[int, int]] = {}
        for record in self._files.records.values():
            count, size = kept.get(record.owner, (0, 0))
            kept[record.owner] = (count + 1, size + record.size_bytes)
        owners = set(self.records) | set(kept)
        found = [
            replace(
                self.records.get(o, UsageRecord(o)), files=kept.get(o, (0, 0))[0], file_bytes=kept.get(o, (0, 0))[1]
            )
            for o in owners
        ]
        return sorted(found, key=lambda r: (-r.input_tokens, r.owner))

    async def files_total(self) -> tuple[int, int]:
        records = self._files.records.values()
        return len(records), sum(r.size_bytes for r in records)


class MemoryStore:
    def __init__(self) -> None:
        self._pending_calls = MemoryPendingCallStore()
        self._containers = MemoryContainerStore()
        self._files = MemoryFileStore()
        self._keys = MemoryKeyStore()
        self._threads = MemoryThreadStore()
        self._openai_containers = MemoryOpenAIContainerStore()
        self._responses = MemoryResponseStore()
        self._usage = MemoryUsageStore(self._files)

    @property
    def containers(self) -> MemoryContainerStore:
        return self._containers

    @property
    def files(self) -> MemoryFileStore:
        return self._files

    @property
    def pending_calls(self) -> MemoryPendingCallStore:
        return self._pending_calls

    @property
    def keys(self) -> MemoryKeyStore:
        return self._keys

    @property
    def threads(self) -> MemoryThreadStore:
        return self._threads

    @property
    def openai_containers(self) -> MemoryOpenAIContainerStore:
        return self._openai_containers

    @property
    def responses(self) -> MemoryResponseStore:
        return self._responses

    @property
    def usage(self) -> MemoryUsageStore:
        return self._usage

    async def close(self) -> None:
        return None
