"""``ContainerEntry``: the in-memory state of one container the manager has touched since start.

Job: hold what the manager knows about one container between leases — its stored record, the lock
that makes a lease exclusive, its live sandbox (if any), its persistent Python REPL (if one was
started: a sandbox of its own), whether its workspace is mounted, the path its workspace has
inside the sandbox, and a REPL cell suspended while the client answers its tool calls.

Must not: do anything. The manager changes entries (under their lock); a ``LeasedSession`` only
reads ``live`` and ``record`` of the entry it was leased, and asks the manager (through the callables
it was given) for everything else.

Invariants:
- ``workspace`` is the one source of the container's workspace path: the sandbox's bind mount and
  working directory, the executor's ``--workspace``, ``HOME``, and ``ContainerInfo.workspace``.
- ``users`` counts leases holding or waiting for ``lock``; the janitor leaves such entries alone.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import datetime

from execbridge.sandbox.base import DEFAULT_WORKSPACE, ExecutionResult
from execbridge.sandbox.live import LiveSandbox
from execbridge.sandbox.waiting import WaitingCell
from execbridge.store.base import ContainerRecord


@dataclass(eq=False)
class ContainerEntry:
    """In-memory state of one container touched since start."""

    record: ContainerRecord
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    live: LiveSandbox | None = None
    mounted: bool = False
    stored_last_used: datetime | None = None
    deleted: bool = False
    users: int = 0  # leases holding or waiting for the lock; the janitor leaves such entries alone
    workspace: str = DEFAULT_WORKSPACE  # the workspace's path inside the sandbox
    repl: LiveSandbox | None = None  # the REPL's sandbox (executor in --repl mode), started by the first cell
    repl_note: str | None = None  # why the last REPL's state was lost, for the next cell's result
    # A cell suspended while the client answers the client tools it awaits (``sandbox/waiting.py``),
    # and the results of cells that ended without their answers (by cell id), for answers that come late.
    waiting: WaitingCell | None = None
    settled: dict[str, ExecutionResult] = field(default_factory=dict)

    @property
    def slot(self) -> int:
        return self.record.slot

    def evictable(self) -> bool:
        """No lease holds or waits for it, and no cell of it waits for a client's tool results: it may be
        stopped to make room (its files stay)."""
        return not self.users and not self.lock.locked() and not self.deleted and self.waiting is None

    def forgettable(self) -> bool:
        """Nothing holds or runs it: no lease, no live sandbox, no mounted workspace.

        A method, not an expression at the call site: the janitor asks again after awaiting, when a
        lease may have come, and a type checker would take the second check for the first.
        """
        return not self.users and self.live is None and self.repl is None and not self.mounted and not self.waiting
