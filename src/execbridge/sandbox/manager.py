"""``ContainerManager``: the ``ContainerService`` the gateway uses — containers with owners, leases,
a spare pool, idle eviction, retention, and state that survives a restart.

Lifecycle of a container:

    create ── (spare or cold start) ──► live ──(idle ≥ idle_evict_s)──► evicted ──(lease)──► live …
                                          └────────(unused ≥ retention_s, or delete)─────► gone

- *live*: workspace mounted, cgroup set, bwrap + executor running.
- *evicted*: processes killed, cgroup removed, workspace unmounted but kept; the next lease revives
  it transparently (only in-memory state such as running processes is lost, as after Anthropic's
  checkpointing).
- ``expires_at`` = ``last_used_at + retention_s``: a rolling expiry (like Anthropic's), the moment after
  which the id stops working. Eviction is invisible to clients, so it is not reported.

Invariants:
- One ``asyncio.Lock`` per container: a lease is exclusive; many containers run concurrently.
- An unknown id, another owner's id and an expired id all raise the same ``NotFound``.
- After a restart nothing is live: the start-up reconciliation kills stale cgroups, unmounts stale
  workspaces, deletes images no record owns and containers past retention.
- One manager per data directory (an exclusive ``flock`` on ``sandbox/lock``).
- Every background task (spare refill, janitor, evictor, teardowns) is owned here; ``close()`` cancels
  the loops and finishes the teardowns.
- Deleting and evicting are off the request path: ``delete`` makes the id unknown at once (record
  gone) and a background teardown stops the sandboxes and removes the image; the evictor stops the
  least recently used idle containers when live ones near a budget (``eviction``), so a request
  waits for an eviction only at a hard limit.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import logging
import os
import time
from collections.abc import AsyncIterator, Coroutine
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from types import TracebackType
from typing import Any

from execbridge import ids
from execbridge.config import Settings
from execbridge.errors import NotFound, QuotaExceeded, SandboxError, StoreBusy
from execbridge.sandbox import capacity, doctor, instances, mountns, shutdown, waiting
from execbridge.sandbox.base import DEFAULT_WORKSPACE, ContainerInfo, Owner, owner_id
from execbridge.sandbox.cgroups import Cgroups
from execbridge.sandbox.entry import ContainerEntry
from execbridge.sandbox.eviction import LiveBudget, LiveUsage
from execbridge.sandbox.evictor import Evictor
from execbridge.sandbox.live import LiveSandbox
from execbridge.sandbox.pool import SparePool
from execbridge.sandbox.provision import Provisioner
from execbridge.sandbox.session import LeasedSession
from execbridge.sandbox.slots import SlotAllocator
from execbridge.store.base import ContainerRecord, Store
from execbridge.telemetry import OFF, Telemetry

log = logging.getLogger(__name__)

# How long a client is asked to wait when every live container is in use (commands last seconds).
_BUSY_RETRY_AFTER_S = 5.0
_PERSIST_EVERY_S = 1.0  # last_used_at is written at most this often per container (it is a retention clock)


class ContainerManager:
    """``async with ContainerManager(settings, store) as containers: ...`` (or ``start()``/``close()``)."""

    def __init__(
        self,
        settings: Settings,
        store: Store,
        *,
        report: doctor.DoctorReport | None = None,
        telemetry: Telemetry = OFF,
    ) -> None:
        self.settings = settings
        self._telemetry = telemetry
        self._sb = settings.sandbox
        self._store = store
        self._report = report
        self._entries: dict[str, ContainerEntry] = {}
        # Why a forgotten entry's REPL lost its state (idle eviction): said by the container's next cell.
        self._repl_notes: dict[str, str] = {}
        self._slots = SlotAllocator()
        self._tasks: list[asyncio.Task[None]] = []
        # Deletions and evictions under way (``delete``, ``_stop_to_completion``); ``close`` waits for them.
        self._teardowns: set[asyncio.Task[None]] = set()
        self._evictor: Evictor | None = None  # early eviction near the live budgets
        self._lock_fd: int | None = None
        self._run_lock_fd: int | None = None  # the instance's lock (``instances``): held while we run
        self._provisioner: Provisioner | None = None
        self._pool: SparePool | None = None
        self._cgroups: Cgroups | None = None
        self.root = settings.sandbox_dir
        self.instance = settings.instance
        self.run_dir = settings.sandbox_run_dir
        self.weakened: tuple[str, ...] = ()

    # ------------------------------------------------------------ lifetime

    async def __aenter__(self) -> ContainerManager:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def start(self) -> None:
        report = self._report or await doctor.diagnose(self.settings)
        self.weakened = capacity.enforce_protections(report, allow_weak=self._sb.allow_weak_isolation)
        mountns.enter_private_if_root()  # sandboxes copy their spawner's mount table: keep ours small
        self.root.mkdir(parents=True, exist_ok=True)
        os.chmod(self.root, 0o700)  # images and the lock: the gateway's alone
        self._take_lock()
        try:
            self._start_components(report)
            await self._reconcile()
        except BaseException:
            self._release_lock()
            raise
        self._evictor = Evictor(self._sb, self._cgroups, self._entries.values, self._stop_to_completion)
        if self._pool is not None:
            self._spawn_task(self._pool.run(), "spare-pool")
        self._spawn_task(self._janitor(), "janitor")
        self._spawn_task(self._evictor.run(), "evictor")

    @property
    def budget(self) -> LiveBudget | None:
        """The live budgets, once started (``doctor`` and tests report them)."""
        return self._evictor.budget if self._evictor is not None else None

    def usage(self) -> LiveUsage | None:
        """What live containers hold now, against ``budget``."""
        return self._evictor.usage() if self._evictor is not None else None

    def _poke_evictor(self) -> None:
        if self._evictor is not None:
            self._evictor.poke()

    def _start_components(self, report: doctor.DoctorReport) -> None:
        self._provisioner = Provisioner.from_report(
            self.settings, report, instance=self.instance, root=self.root, run_dir=self.run_dir
        )
        self._cgroups = self._provisioner.cgroups
        if self._sb.spare_containers > 0:
            self._pool = SparePool(self._sb.spare_containers, self._make_spare, self._discard_spare)

    async def _reconcile(self) -> None:
        """Bring the machine in line with the store after a restart (or a crash)."""
        prov = self._prov
        if self._cgroups is not None:
            stale = await self._cgroups.clean_stale()
            if stale:
                log.info("removed %d stale container cgroups", stale)
        unmounted = await prov.workspaces.clean_stale_mounts()
        if unmounted:
            log.info("unmounted %d stale workspaces", unmounted)
        records = await self._store.containers.list()
        # Spares hold slots too: the limit counts containers, and the pool comes on top.
        self._slots = SlotAllocator(
            (r.slot for r in records), limit=self._sb.max_containers + self._sb.spare_containers
        )
        owned = {str(r.slot) for r in records}
        for key in prov.workspaces.keys() - owned:
            # A spare, or a create that never reached the store: nobody's data.
            await prov.workspaces.delete(key)
        await self._delete_expired()

    async def close(self) -> None:
        for entry in self._entries.values():
            if entry.waiting is not None and entry.waiting.timer is not None:
                entry.waiting.timer.cancel()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
        try:
            entries = list(self._entries.values())
            pool = self._pool.drain() if self._pool is not None else asyncio.sleep(0)
            await shutdown.stop_all(entries, self._evict, under_way=list(self._teardowns), drain_pool=pool)
            for entry in entries:
                await self._persist_last_used(entry, force=True)
            self._entries.clear()
            if self._cgroups is not None:
                self._cgroups.remove_parent()
            if self._run_lock_fd is not None:
                instances.release(self._run_lock_fd, self.run_dir)
                self._run_lock_fd = None
            for leftover in (self.run_dir / "mnt", self.run_dir):
                with contextlib.suppress(OSError):  # only when empty: a failed unmount stays visible
                    leftover.rmdir()
        finally:
            self._release_lock()

    def _spawn_task(self, coro: Coroutine[Any, Any, None], name: str) -> None:
        task = asyncio.get_running_loop().create_task(coro, name=f"execbridge-{name}")
        self._tasks.append(task)

    def _take_lock(self) -> None:
        self._lock_fd, self._run_lock_fd = instances.take_data_dir(self.root, self.run_dir, self.settings.data_dir)

    def _release_lock(self) -> None:
        instances.close_fds(self._run_lock_fd, self._lock_fd)  # the files stay: a later start finds them free
        self._lock_fd = self._run_lock_fd = None

    @property
    def _prov(self) -> Provisioner:
        if self._provisioner is None:
            raise SandboxError("the container manager is not started")
        return self._provisioner

    @property
    def pool(self) -> SparePool | None:
        return self._pool

    def counts(self) -> tuple[int, int]:
        """Containers with running processes, and how many of those no request uses (for metrics)."""
        live = [e for e in self._entries.values() if e.live is not None]
        return len(live), sum(1 for e in live if not e.users)

    # ------------------------------------------------------------ ContainerService

    async def create(self, owner: Owner, *, memory_mb: int | None = None) -> ContainerInfo:
        owner = owner_id(owner)
        own_memory = capacity.own_memory(memory_mb, self._sb.memory_mb)
        capacity.require_free_disk(self.root, self._sb.min_free_disk_mb)
        await self._make_room(owner)
        # Spares run with the sandbox's memory limit: a container with one of its own starts cold.
        live = self._pool.take() if self._pool is not None and own_memory is None else None
        if live is None:
            live = await self._make_spare(own_memory)
        now = datetime.now(UTC)
        record = ContainerRecord(ids.container_id(), owner, live.slot, now, now, memory_mb=own_memory)
        try:
            await self._store.containers.insert(record)
        except BaseException:
            await self._discard_spare(live)
            raise
        # A spare's workspace is at the default path (see ``_make_spare``).
        entry = ContainerEntry(record, live=live, mounted=True, stored_last_used=now, workspace=DEFAULT_WORKSPACE)
        self._entries[record.id] = entry
        self._poke_evictor()  # one more live container: the evictor looks at the budgets
        self._telemetry.container_created()
        return self._info(entry)

    async def get(self, container_id: str, owner: Owner) -> ContainerInfo:
        return self._info(await self._entry(container_id, owner))

    @asynccontextmanager
    async def lease(self, container_id: str, owner: Owner) -> AsyncIterator[LeasedSession]:
        entry = await self._entry(container_id, owner)
        entry.users += 1
        try:
            async with entry.lock:
                if entry.deleted:
                    raise _not_found(container_id)
                try:
                    await self._ensure_live(entry)
                except SandboxError as exc:
                    # Not the caller's fault: the session retries on its first command and answers
                    # "unavailable" if the sandbox still cannot start.
                    log.error("container %s could not be started: %s", container_id, exc.message)
                self._touch(entry)
                session = LeasedSession(
                    entry,
                    revive=functools.partial(self._restart, entry),
                    info=functools.partial(self._info, entry),
                    repl=functools.partial(self._ensure_repl, entry),
                    watch=functools.partial(self._watch_waiting, entry),
                    call_timeout_s=self._sb.ptc_call_timeout_s,
                )
                try:
                    yield session
                finally:
                    session.closed = True
                    self._touch(entry)
                    await self._persist_last_used(entry)
        finally:
            entry.users -= 1

    async def list(self, owner: Owner | None = None) -> AsyncIterator[ContainerInfo]:
        cutoff = self._cutoff()
        for record in await self._store.containers.list(None if owner is None else owner_id(owner)):
            entry = self._entries.get(record.id) or ContainerEntry(record)
            if not entry.deleted and entry.record.last_used_at >= cutoff:
                yield self._info(entry)

    async def delete(self, container_id: str, owner: Owner) -> None:
        """The id stops working at once (its record goes now); the sandboxes and the image go in the
        background (``settle`` waits for that). A restart in between finds an image no record owns
        and removes it."""
        entry = await self._entry(container_id, owner)
        entry.deleted = True
        await self._store.containers.delete(entry.record.id)
        self._entries.pop(entry.record.id, None)
        self._repl_notes.pop(entry.record.id, None)
        task = asyncio.get_running_loop().create_task(self._tear_down(entry), name="execbridge-teardown")
        self._teardowns.add(task)
        task.add_done_callback(self._teardowns.discard)

    async def _tear_down(self, entry: ContainerEntry) -> None:
        try:
            for running in (entry.live, entry.repl):
                if running is not None:
                    # Ends a command that is running right now (it answers "unavailable") so the lock frees.
                    await running.stop()
            async with entry.lock:
                await self._evict(entry)
                await self._prov.destroy_workspace(entry.slot)
            self._slots.release(entry.slot)
        except (OSError, SandboxError) as exc:  # the slot stays taken; the next start removes the image
            log.error("tearing down deleted container %s failed: %s", entry.record.id, exc)

    async def settle(self) -> None:
        """Wait until every deletion in progress is done (tests, benchmarks)."""
        while self._teardowns:
            await asyncio.gather(*self._teardowns)

    # ------------------------------------------------------------ internals

    async def _entry(self, container_id: str, owner: Owner) -> ContainerEntry:
        owner = owner_id(owner)
        entry = self._entries.get(container_id)
        if entry is None:
            record = await self._store.containers.get(container_id)
            if record is None:
                raise _not_found(container_id)
            entry = self._entries.setdefault(
                container_id,
                ContainerEntry(
                    record, stored_last_used=record.last_used_at, repl_note=self._repl_notes.pop(container_id, None)
                ),
            )
        if entry.deleted or entry.record.owner != owner or entry.record.last_used_at < self._cutoff():
            raise _not_found(container_id)
        return entry

    async def _restart(self, entry: ContainerEntry) -> LiveSandbox:
        """Replace a dead (or killed) sandbox (a session's ``revive``); the caller holds the entry's lock."""
        if entry.live is not None:
            await self._prov.stop(entry.live)
            entry.live = None
        if entry.deleted:
            raise _not_found(entry.record.id)
        return await self._ensure_live(entry)

    async def _ensure_repl(self, entry: ContainerEntry) -> LiveSandbox:
        """The container's REPL, started on first use or after it died (a session's ``repl``); the
        caller holds the entry's lock and the container is live (its workspace mounted)."""
        if entry.repl is not None and entry.repl.alive:
            return entry.repl
        if entry.deleted:
            raise _not_found(entry.record.id)
        if entry.repl is not None:
            dead, entry.repl = entry.repl, None
            entry.repl_note = f"the REPL's sandbox stopped: {dead.death_reason()}"
            await self._prov.stop(dead)
        if not entry.mounted:
            await self._ensure_live(entry)
        entry.repl = repl = await self._prov.start_repl(entry.slot, entry.workspace, entry.record.memory_mb)
        return repl

    def _watch_waiting(self, entry: ContainerEntry) -> None:
        """A cell of ``entry`` now waits for its client's tool results: time the wait out (``waiting.watch``)."""
        waiting.watch(entry, self._sb.ptc_call_timeout_s, on_settled=self._touch)

    async def _ensure_live(self, entry: ContainerEntry) -> LiveSandbox:
        if entry.live is not None and entry.live.alive:
            return entry.live
        prov = self._prov
        if entry.live is not None:
            await prov.stop(entry.live)
            entry.live = None
        await self._make_room(entry.record.owner)
        if not entry.mounted:
            await prov.open_workspace(entry.slot)
            entry.mounted = True
        began = time.perf_counter()
        entry.live = live = await prov.start(entry.slot, entry.workspace, entry.record.memory_mb)
        self._telemetry.sandbox_started(time.perf_counter() - began)
        self._poke_evictor()
        return live

    async def _make_room(self, owner: str) -> None:
        """Before a container of ``owner`` goes live: keep within the live budgets (in all, and per
        owner) by stopping the least recently used idle containers; ``QuotaExceeded`` if every live
        container that would have to go is in use. Stopped containers keep their files.

        The evictor keeps live containers under ``evict_early_fraction`` of the budgets in the
        background, so the stops here (on the request path) happen only at a hard limit."""
        live = [e for e in self._entries.values() if e.live is not None and not e.deleted]
        mine = [e for e in live if e.record.owner == owner]
        for budget, group in ((self._sb.max_live_per_owner, mine), (self._sb.max_live_containers, live)):
            excess = len(group) - budget + 1
            if excess <= 0:
                continue
            idle = sorted((e for e in group if e.evictable()), key=lambda e: e.record.last_used_at)
            for entry in idle:
                if excess <= 0:
                    break
                # Asked again just before taking the lock (taken at once when free): a lease may have
                # come while earlier ones were being stopped.
                if not entry.evictable() or entry.live is None:
                    continue
                async with entry.lock:
                    await self._evict(entry, "its processes were stopped to make room for other containers")
                    await self._persist_last_used(entry, force=True)
                excess -= 1
            if excess > 0:
                whose = "of this key" if group is mine else "on this gateway"
                raise QuotaExceeded(
                    f"every live container {whose} is in use ({budget} at most); retry when one is done",
                    code="live_container_limit",
                    retry_after=_BUSY_RETRY_AFTER_S,
                )

    def _touch(self, entry: ContainerEntry) -> None:
        entry.record = dataclasses.replace(entry.record, last_used_at=datetime.now(UTC))

    async def _persist_last_used(self, entry: ContainerEntry, *, force: bool = False) -> None:
        last = entry.record.last_used_at
        stored = entry.stored_last_used
        if entry.deleted or (stored is not None and not force and (last - stored).total_seconds() < _PERSIST_EVERY_S):
            return
        if stored == last:
            return
        try:
            await self._store.containers.touch(entry.record.id, last)
        except StoreBusy as exc:
            # Only retention reads it, and the next lease writes it again: the command that just ran
            # must not fail because a backup holds the store's lock.
            log.warning("container %s: last use not saved: %s", entry.record.id, exc.message)
            return
        entry.stored_last_used = last

    def _info(self, entry: ContainerEntry) -> ContainerInfo:
        r = entry.record
        return ContainerInfo(
            id=r.id,
            owner=r.owner,
            created_at=r.created_at,
            last_used_at=r.last_used_at,
            expires_at=r.last_used_at + timedelta(seconds=self._sb.retention_s),
            active=entry.live is not None and entry.live.alive,
            workspace=entry.workspace,
            memory_mb=r.memory_mb or self._sb.memory_mb,
        )

    def _cutoff(self) -> datetime:
        return datetime.now(UTC) - timedelta(seconds=self._sb.retention_s)

    async def _make_spare(self, memory_mb: int | None = None) -> LiveSandbox:
        """A live sandbox on a new workspace: a spare for the pool, or (with ``memory_mb``, a limit of
        its own) a new container's, started cold."""
        prov = self._prov
        if self._teardowns and len(self._slots) >= self._sb.max_containers + self._sb.spare_containers:
            await self.settle()  # at the container limit, a deletion in progress frees the slot wanted
        slot = self._slots.take()
        live: LiveSandbox | None = None
        try:
            await prov.create_workspace(slot)
            # Spares are for new containers, whose workspace is at the default path.
            began = time.perf_counter()
            live = await prov.start(slot, DEFAULT_WORKSPACE, memory_mb)
            self._telemetry.sandbox_started(time.perf_counter() - began)
            # One round trip: the executor then loads ``site`` while it waits, so the container's
            # first Python command does not pay for it.
            await live.client.ping()
            return live
        except BaseException:
            with contextlib.suppress(Exception):
                if live is not None:
                    await prov.stop(live)
                await prov.destroy_workspace(slot)
            self._slots.release(slot)
            raise

    async def _discard_spare(self, live: LiveSandbox) -> None:
        prov = self._prov
        await prov.stop(live)
        await prov.destroy_workspace(live.slot)
        self._slots.release(live.slot)

    async def _evict(self, entry: ContainerEntry, why: str = "the gateway stopped the container") -> None:
        """Stop the container's processes and unmount its workspace; keep its files.

        ``why`` its REPL (if any) stopped, for the note in the container's next cell.
        """
        prov = self._prov
        if entry.waiting is not None:  # a cell waiting for a client's tool results ends with its REPL
            if entry.waiting.timer is not None:
                entry.waiting.timer.cancel()
            entry.waiting = None
        if entry.repl is not None:  # first: its cgroup lives inside the container's
            repl, entry.repl = entry.repl, None
            await prov.stop(repl)
            entry.repl_note = why
        if entry.live is not None:
            live, entry.live = entry.live, None
            await prov.stop(live)
            if not entry.deleted:
                self._telemetry.container_evicted()
        if entry.mounted:
            await prov.close_workspace(entry.slot)
            entry.mounted = False

    async def _destroy(self, entry: ContainerEntry) -> None:
        """Everything of the container goes: processes, workspace, record, slot."""
        entry.deleted = True
        await self._evict(entry)
        await self._prov.destroy_workspace(entry.slot)
        await self._store.containers.delete(entry.record.id)
        self._slots.release(entry.slot)
        self._entries.pop(entry.record.id, None)
        self._repl_notes.pop(entry.record.id, None)

    async def _delete_expired(self) -> None:
        for record in await self._store.containers.unused_since(self._cutoff()):
            entry = self._entries.get(record.id)
            if entry is None:
                entry = self._entries.setdefault(
                    record.id, ContainerEntry(record, stored_last_used=record.last_used_at)
                )
            if entry.users or entry.record.last_used_at >= self._cutoff():
                continue  # in use right now (its in-memory clock is newer than the store's)
            log.info("deleting container %s: unused for %.0f s", record.id, self._sb.retention_s)
            try:
                async with entry.lock:
                    await self._destroy(entry)
            except (OSError, SandboxError) as exc:  # left for the next pass; the others still go
                log.error("deleting expired container %s failed: %s", record.id, exc)

    async def _janitor(self) -> None:
        """Evict idle containers and delete expired ones, forever (until cancelled)."""
        loop = asyncio.get_running_loop()
        interval = max(0.05, min(self._sb.idle_evict_s / 4, 30.0))
        expiry_every = max(interval, min(60.0, self._sb.retention_s / 4))
        next_expiry_check = loop.time() + expiry_every
        while True:
            await asyncio.sleep(interval)
            await self._evict_idle()
            if loop.time() >= next_expiry_check:
                next_expiry_check = loop.time() + expiry_every
                try:
                    await self._delete_expired()
                except Exception as exc:  # boundary: the janitor must outlive one bad pass
                    log.error("deleting expired containers failed: %s", exc)

    async def _stop_to_completion(self, entry: ContainerEntry, why: str) -> None:
        """Evict ``entry`` (under its lock) in a task of its own that ``close`` waits for: cancelling
        the janitor or the evictor mid-way must not leave a killed sandbox's cgroup behind."""

        async def stop() -> None:
            async with entry.lock:
                await self._evict(entry, why)
                await self._persist_last_used(entry, force=True)

        task = asyncio.get_running_loop().create_task(stop(), name="execbridge-evict")
        self._teardowns.add(task)
        task.add_done_callback(self._teardowns.discard)
        await asyncio.shield(task)

    async def _evict_idle(self) -> None:
        idle_before = datetime.now(UTC) - timedelta(seconds=self._sb.idle_evict_s)
        for entry in list(self._entries.values()):
            if entry.users or entry.lock.locked() or entry.deleted or entry.waiting is not None:
                continue  # a cell waiting for its client's tool results keeps the container until it times out
            if entry.record.last_used_at >= idle_before:
                continue
            if entry.live is not None or entry.mounted:
                try:
                    idle = f"the container was idle for over {self._sb.idle_evict_s:g} s and was stopped"
                    await self._stop_to_completion(entry, idle)
                    log.info("stopped idle container %s (its files stay)", entry.record.id)
                except Exception as exc:  # boundary: one bad container must not stop the janitor
                    log.error("evicting container %s failed: %s", entry.record.id, exc)
                    continue
            if entry.forgettable():  # asked again: a lease may have come during the awaits above
                # Forget it; the next lease loads the record again (its last use is stored).
                self._entries.pop(entry.record.id, None)
                if entry.repl_note is not None:
                    self._repl_notes[entry.record.id] = entry.repl_note


def _not_found(container_id: str) -> NotFound:
    return NotFound(f"container '{container_id}' not found", code="not_found")
