"""SIGTERM to a real ``execbridge sandbox-host`` while a command runs in one of its containers, a REPL
cell in another and a third lease sits idle: the host stops at once (the commands are ended, not
waited for), exits 0, answers each command ``unavailable``, and leaves nothing of its instance behind:
no sandboxed process, mount or cgroup. (A host once seemed to ignore SIGTERM; this pins that it does not.)"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from execbridge import ids
from execbridge.config import Settings
from execbridge.sandbox.base import ExecutionResult
from execbridge.sandbox.host_client import SandboxHostClient, host_answers
from execbridge.types import Caller

from .conftest import TEST_UID_BASE

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="a sandbox host runs as root")

LIMITS = (1 << 20, 8, 4 << 20)
BASH_MARKER = "600.0613"  # sleeps no other test runs
CELL_MARKER = "600.0614"


@pytest.fixture
def scratch() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="execbridge-sigterm-", dir="/tmp"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def test_sigterm_stops_a_busy_sandbox_host_at_once_and_leaves_nothing(scratch: Path) -> None:
    socket_path = scratch / "run" / "sandbox.sock"
    data_dir = scratch / "data"
    env = {
        **os.environ,
        "EXECBRIDGE_SANDBOX__UID_BASE": str(TEST_UID_BASE + 950),
        "EXECBRIDGE_SANDBOX__DISK_MB": "64",
        "EXECBRIDGE_SANDBOX__SPARE_CONTAINERS": "1",
        "EXECBRIDGE_SANDBOX__COMMAND_TIMEOUT_S": "900",
        "EXECBRIDGE_SANDBOX__REPL_CELL_TIMEOUT_S": "900",
    }
    log_path = scratch / "host.log"
    with log_path.open("wb") as log:
        host = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "execbridge",
                "--data-dir",
                str(data_dir),
                "sandbox-host",
                "--socket",
                str(socket_path),
            ],
            env=env,
            stdout=log,
            stderr=log,
        )
    instance = Settings(data_dir=data_dir).instance
    try:
        results, exit_code = asyncio.run(_scenario(host, socket_path))
    finally:
        if host.poll() is None:
            host.kill()
            host.wait()
    log = log_path.read_text()
    assert exit_code == 0, log
    assert "Traceback" not in log, log
    for result in results:
        assert result.error_code == "unavailable", result
        assert "the sandbox host was lost during the command" in result.stderr
    assert not _running(f"sleep {BASH_MARKER}")
    mounts = Path("/proc/self/mountinfo").read_text()
    assert f"/run/execbridge/{instance}" not in mounts and str(data_dir) not in mounts
    assert not list(Path("/sys/fs/cgroup").glob(f"*/execbridge/{instance}/*/cgroup.procs"))


async def _scenario(host: subprocess.Popen[bytes], socket_path: Path) -> tuple[list[ExecutionResult], int]:
    async with asyncio.timeout(120):  # the host starts, however slow the machine
        while not await host_answers(socket_path):
            assert host.poll() is None, "the sandbox host did not start"
            await asyncio.sleep(0.05)
    client = SandboxHostClient(socket_path, output_limits=LIMITS)
    caller = Caller(owner=ids.key_id("sk-sigterm"), key="sk-sigterm")
    try:
        bash_box, cell_box, idle_box = [await client.create(caller) for _ in range(3)]
        held = asyncio.Event()

        async def bash() -> ExecutionResult:
            async with client.lease(bash_box.id, caller) as session:
                return await session.run_bash(f"touch bash-started; sleep {BASH_MARKER}")

        async def cell() -> ExecutionResult:
            async with client.lease(cell_box.id, caller) as session:
                return await session.run_cell(
                    f"import time\nopen('cell-started', 'w').close()\ntime.sleep({CELL_MARKER})"
                )

        async def idle() -> None:
            async with client.lease(idle_box.id, caller) as session:
                await session.run_bash("true")
                held.set()
                await asyncio.Event().wait()  # holds the lease until the host goes

        commands = [asyncio.create_task(bash()), asyncio.create_task(cell())]
        idler = asyncio.create_task(idle())
        async with asyncio.timeout(120):  # both commands are running, and the idle lease is held
            await held.wait()
            # Each command leaves a mark in its workspace as it starts.
            while not (_started(host.pid, "bash-started") and _started(host.pid, "cell-started")):  # noqa: ASYNC110 (another process's state: polled)
                await asyncio.sleep(0.05)
        host.send_signal(signal.SIGTERM)
        # Far below the commands' own 600 s: a host that waited for them (or ignored the signal) fails here.
        exit_code = await asyncio.wait_for(asyncio.to_thread(host.wait), timeout=120)
        results = list(await asyncio.gather(*commands))
        idler.cancel()
        await asyncio.gather(idler, return_exceptions=True)
        return results, exit_code
    finally:
        await client.aclose()


def _running(command_line: str) -> bool:
    return subprocess.run(["pgrep", "-f", f"^{command_line}$"], capture_output=True).returncode == 0


def _started(host_pid: int, mark: str) -> bool:
    """Whether a sandbox of the host ``host_pid`` holds ``mark`` in its workspace. Workspaces are mounted
    only inside each sandbox's own mount namespace: they are looked at through the host's descendants'
    roots (``/proc/PID/root``)."""
    pending = [host_pid]
    while pending:
        pid = pending.pop()
        with contextlib.suppress(OSError):
            if (Path(f"/proc/{pid}/root") / "workspace" / mark).exists():
                return True
        for task in Path(f"/proc/{pid}/task").glob("*"):
            with contextlib.suppress(OSError):
                pending += [int(child) for child in (task / "children").read_text().split()]
    return False
