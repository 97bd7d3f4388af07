"""``LiveSandbox``: one running bubblewrap sandbox with its warm executor, seen from the gateway.

It owns the process (the gateway's direct child is bubblewrap), the ``ExecutorClient`` talking to
the executor over the process's stdin/stdout, and a small task that keeps the tail of the
executor's stderr log for diagnostics (logged at debug level only: it never carries program output).

The executor enforces each command's time limit itself; the gateway adds a backstop: if no answer
arrives by the limit plus ``kill_grace_s``, the whole sandbox is killed and the command ends with
``execution_time_exceeded``. If the executor dies (memory limit, killed by user code, …) the
command ends with ``unavailable`` and an explanation in stderr; the next command on the container
starts a fresh sandbox (``LeasedSession``). Nothing here ever waits without a deadline.

Invariant: after ``stop()`` no process of this sandbox is left (bubblewrap's PID-namespace init is
killed, which takes every process of the namespace with it; the cgroup sweep is the backstop).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal, TypeVar

from execbridge.errors import SandboxError
from execbridge.sandbox.base import ExecutionResult, OutputSpool
from execbridge.sandbox.bwrap import Payloads, SandboxSpec
from execbridge.sandbox.cgroups import ContainerCgroup
from execbridge.sandbox.client import ExecutorClient, ExecutorLimits
from execbridge.sandbox.launch import LaunchOptions, Spawned, spawn_with_channel
from execbridge.types import CreateOutcome, StrReplaceOutcome, ToolFailure, ViewOutcome

log = logging.getLogger(__name__)
T = TypeVar("T")

_STDERR_TAIL_LINES = 40


@dataclass(frozen=True, slots=True)
class CommandLimits:
    executor: ExecutorLimits  # sent with each request; includes the client's own reply deadlines
    kill_grace_s: float  # the gateway's backstop on top of the client's deadline
    memory_mb: int  # only to explain an out-of-memory death


class LiveSandbox:
    def __init__(
        self,
        slot: int,
        spawned: Spawned,
        cgroup: ContainerCgroup | None,
        limits: CommandLimits,
    ) -> None:
        self.slot = slot
        self.proc = spawned.proc
        self.cgroup = cgroup
        self.limits = limits
        self.started_at = time.monotonic()
        self.client = ExecutorClient(spawned.reader, spawned.writer, limits=limits.executor)
        self._stderr_tail: deque[str] = deque(maxlen=_STDERR_TAIL_LINES)
        self._stderr_task = asyncio.get_running_loop().create_task(self._drain_stderr())
        self._oom_seen = cgroup.oom_kills() if cgroup is not None else 0  # OOM kills already explained
        self._stopped = False

    @classmethod
    async def start(
        cls,
        *,
        slot: int,
        spec: SandboxSpec,
        payloads: Payloads,
        cgroup: ContainerCgroup | None,
        nproc: int,
        options: LaunchOptions,
        limits: CommandLimits,
        start_timeout: float,
        device: str | None = None,
    ) -> LiveSandbox:
        """``device``: the workspace's block device, mounted at ``spec.workspace`` in the sandbox's own
        mount namespace (``launch``); the caller keeps it attached until this returns."""
        try:
            spawned = await spawn_with_channel(
                spec, payloads, cgroup=cgroup, nproc=nproc, options=options, device=device
            )
        except OSError as exc:
            raise SandboxError(f"cannot start the sandbox: {exc}") from exc
        live = cls(slot, spawned, cgroup, limits)
        try:
            await live.client.ready(timeout=start_timeout)
        except SandboxError as exc:
            await live.stop()
            tail = live.stderr_tail()
            raise SandboxError(f"the sandbox did not start ({exc.message}){': ' + tail if tail else ''}") from None
        except BaseException:
            await live.stop()
            raise
        return live

    # ------------------------------------------------------------ state

    @property
    def alive(self) -> bool:
        return not self._stopped and self.proc.returncode is None and self.client.failure is None

    def stderr_tail(self) -> str:
        return "\n".join(self._stderr_tail)[-2000:]

    async def _drain_stderr(self) -> None:
        stream = self.proc.stderr
        with contextlib.suppress(ValueError, ConnectionError):  # an over-long line: stop keeping the tail
            async for raw in stream:
                line = raw.decode("utf-8", "replace").rstrip()
                self._stderr_tail.append(line)
                log.debug("sandbox %d: %s", self.slot, line)

    def death_reason(self) -> str:
        """Why the sandbox is gone, in words a model can act on."""
        if self.cgroup is not None and self.cgroup.oom_kills() > self._oom_seen:
            return (
                f"the sandbox ran out of memory (the container's limit is {self.limits.memory_mb} MiB) and was "
                "stopped; files in the workspace are kept, running processes are not"
            )
        return (
            f"the sandbox stopped unexpectedly ({self.client.failure or 'exit status ' + str(self.proc.returncode)}); "
            "it restarts on the next command, with the workspace's files kept"
        )

    # ------------------------------------------------------------ commands

    async def run(
        self,
        kind: Literal["bash", "python", "cell"],
        source: str,
        timeout: float | None,
        spool: OutputSpool | None = None,
        *,
        tools: Sequence[str] = (),
    ) -> ExecutionResult:
        """A command, or (``cell``, in a REPL's sandbox) a cell, whose cgroup is thawed only meanwhile.

        ``tools``: the client tools a cell's code may await (a cell that awaits them answers with
        ``calls``, suspended: ``resume`` runs it on)."""
        client = self.client
        if kind == "cell":
            return await self._guarded(
                True, timeout, lambda t: client.run_cell(source, timeout=t, spool=spool, tools=tools)
            )
        call = client.run_bash if kind == "bash" else client.run_python
        return await self._guarded(False, timeout, lambda t: call(source, timeout=t, spool=spool))

    async def resume(
        self, replies: Sequence[Mapping[str, Any]], timeout: float | None, spool: OutputSpool | None = None
    ) -> ExecutionResult:
        """Run a suspended cell on with the ``replies`` to its calls; ``timeout``: its whole limit."""
        return await self._guarded(True, timeout, lambda t: self.client.resume_cell(replies, timeout=t, spool=spool))

    async def _guarded(
        self, cell: bool, timeout: float | None, call: Callable[[float], Awaitable[ExecutionResult]]
    ) -> ExecutionResult:
        limit = self.limits.executor.command_timeout_s
        if timeout is not None:
            limit = min(timeout, limit)
        started = time.monotonic()
        backstop = limit + self.limits.executor.reply_margin_s + self.limits.kill_grace_s
        try:
            if cell:
                self._set_frozen(False)
            try:
                # The client gives up after limit + reply_margin_s; the outer deadline is the last word.
                async with asyncio.timeout(backstop):
                    result = await call(limit)
            finally:
                if cell and self.alive:
                    # The interpreter is stopped already (SIGSTOP, by its supervisor); frozen, nothing of
                    # the REPL's sandbox runs until the next cell, the supervisor included.
                    self._set_frozen(True)
        except (SandboxError, TimeoutError, OSError) as exc:
            elapsed = time.monotonic() - started
            if isinstance(exc, SandboxError) and self.client.failure is None and self.proc.returncode is None:
                # The executor stayed in sync but could not run this one (an internal error).
                return ExecutionResult("", exc.message, -1, elapsed * 1000, error_code="unavailable")
            out_of_memory = self.cgroup is not None and self.cgroup.oom_kills() > self._oom_seen
            await self._died()
            if elapsed >= limit and not out_of_memory:
                log.warning("sandbox %d: no answer after the time limit; sandbox killed", self.slot)
                return ExecutionResult(
                    stdout="",
                    stderr=f"the command exceeded its time limit of {limit:g} s and was killed with its sandbox",
                    return_code=137,
                    duration_ms=elapsed * 1000,
                    error_code="execution_time_exceeded",
                )
            log.info("sandbox %d lost during a command: %s", self.slot, exc)
            return ExecutionResult("", self.death_reason(), 137, elapsed * 1000, error_code="unavailable")
        if result.return_code == 137 and self._oom_killed_since_last_look():
            # SIGKILL from the kernel's OOM killer looks like any other kill; say which it was.
            note = f"\nKilled: the process ran out of memory (the container's limit is {self.limits.memory_mb} MiB)\n"
            result = replace(result, stderr=result.stderr + note)
        return result

    def _set_frozen(self, frozen: bool) -> None:
        if self.cgroup is not None and self.cgroup.freezer is not None:
            if frozen:
                self.cgroup.freeze()
            else:
                self.cgroup.thaw()

    def _oom_killed_since_last_look(self) -> bool:
        if self.cgroup is None:
            return False
        count = self.cgroup.oom_kills()
        killed, self._oom_seen = count > self._oom_seen, count
        return killed

    async def view(self, path: str) -> ViewOutcome | ToolFailure:
        return await self._editor(self.client.view(path))

    async def create(self, path: str, file_text: str) -> CreateOutcome | ToolFailure:
        return await self._editor(self.client.create(path, file_text))

    async def str_replace(self, path: str, old_str: str, new_str: str) -> StrReplaceOutcome | ToolFailure:
        return await self._editor(self.client.str_replace(path, old_str, new_str))

    async def put_file(self, path: str, data: bytes) -> None:
        try:
            await self.client.put_file(path, data)
        except SandboxError:
            if self.client.failure is not None:
                await self._died()
            raise

    async def _editor(self, call: Awaitable[T]) -> T | ToolFailure:
        try:
            return await call
        except SandboxError as exc:
            if self.client.failure is None:
                return ToolFailure("unavailable", exc.message)
            await self._died()
            return ToolFailure("unavailable", self.death_reason())

    # ------------------------------------------------------------ teardown

    async def _died(self) -> None:
        """The executor is gone or out of sync: make sure nothing of this sandbox is left."""
        await self.stop()

    def kill_now(self) -> None:
        """SIGKILL the sandbox without waiting (shutdown: ``stop`` reaps it afterwards). Thawed
        first: a frozen process dies of SIGKILL only once thawed."""
        if self.cgroup is not None:
            with contextlib.suppress(OSError):
                self.cgroup.thaw()
        if self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()

    async def stop(self) -> None:
        """SIGKILL the sandbox (idempotent) and reap it; the provisioner then removes the cgroup.

        Killing bubblewrap takes its PID-namespace init with it (``--die-with-parent``), and the
        kernel kills every process of a namespace whose init dies; the cgroup sweep is the backstop.
        """
        self._stopped = True
        if self.cgroup is not None:
            with contextlib.suppress(OSError):
                self.cgroup.thaw()  # a frozen process dies of SIGKILL only once thawed
        if self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()
        with contextlib.suppress(Exception):
            async with asyncio.timeout(5):
                await self.proc.wait()
        if self.cgroup is not None:
            with contextlib.suppress(OSError, TimeoutError):
                await self.cgroup.kill_all(timeout=5)
        with contextlib.suppress(Exception):
            await self.client.aclose()
        self._stderr_task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._stderr_task
        self.proc.close_stderr()

    def pids(self) -> set[int]:
        """Host pids of every process of this sandbox (bwrap included)."""
        if self.cgroup is not None:
            return self.cgroup.pids()
        return {self.proc.pid} if self.proc.returncode is None else set()
