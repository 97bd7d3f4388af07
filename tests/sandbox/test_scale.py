"""Many live containers (issue 15), with a real sandbox, real processes and about 50 containers:
- after ``kill -9`` of a sandbox host, the next start reclaims every loop device, mount and cgroup;
- ``execbridge sandbox gc`` removes a dead instance's leftovers and never touches a live instance's;
- near a small live budget the least recently used idle containers are stopped early, files kept;
- no sandbox's mount table shows another container's workspace, and the table a new sandbox gets
  does not grow with the number of live containers.

No timing assertions: waits are for a condition, with a generous bound.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from execbridge.config import load_settings
from execbridge.sandbox import instances, loopdev
from execbridge.sandbox.doctor import DoctorReport
from execbridge.sandbox.host_client import SandboxHostClient, host_answers

from .conftest import TEST_UID_BASE, open_manager

OWNER = "scale"
HOST_CONTAINERS = 50


def _host_mounts(fragment: str) -> list[str]:
    """Lines of the host's own mount table (init's, whatever namespace this thread is in) that name
    ``fragment``."""
    return [line for line in Path("/proc/1/mountinfo").read_text().splitlines() if fragment in line]


def _processes_in(instance: str) -> int:
    return sum(len(instances._procs(d)) for d in instances._cgroup_dirs(instance))


async def _until(condition, what: str, bound_s: float = 60.0) -> None:  # type: ignore[no-untyped-def]
    """Wait for ``condition()`` (the kernel tears namespaces and loop devices down asynchronously)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + bound_s
    while not condition():
        if loop.time() > deadline:
            pytest.fail(f"still not true after {bound_s:.0f} s: {what}")
        await asyncio.sleep(0.05)


@pytest.fixture
def scratch() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="execbridge-scale-", dir="/tmp"))
    os.chmod(path, 0o711)
    yield path
    shutil.rmtree(path, ignore_errors=True)


class _Host:
    """A real ``execbridge sandbox-host`` on ``data_dir``, started and stopped (or killed) by a test."""

    def __init__(self, data_dir: Path, uid_base: int) -> None:
        self.data_dir = data_dir
        self.socket = data_dir.parent / f"{data_dir.name}.sock"
        self.settings = load_settings(None, data_dir=data_dir)
        self.env = {
            **os.environ,
            "EXECBRIDGE_SANDBOX__UID_BASE": str(uid_base),
            "EXECBRIDGE_SANDBOX__MEMORY_MB": "256",
            "EXECBRIDGE_SANDBOX__DISK_MB": "32",
            "EXECBRIDGE_SANDBOX__PIDS": "64",
            "EXECBRIDGE_SANDBOX__SPARE_CONTAINERS": "0",
        }
        self.process: subprocess.Popen[bytes] | None = None

    async def start(self) -> None:
        command = [sys.executable, "-m", "execbridge", "--data-dir", str(self.data_dir), "sandbox-host"]
        log = (self.data_dir.parent / f"{self.data_dir.name}.log").open("ab")
        self.process = subprocess.Popen([*command, "--socket", str(self.socket)], env=self.env, stdout=log, stderr=log)
        log.close()
        while not await host_answers(self.socket):
            if self.process.poll() is not None:
                pytest.fail(f"the sandbox host did not start (status {self.process.returncode})")
            await asyncio.sleep(0.05)

    @contextlib.asynccontextmanager
    async def client(self) -> AsyncIterator[SandboxHostClient]:
        client = SandboxHostClient(self.socket, output_limits=(1 << 20, 32, 64 << 20))
        try:
            yield client
        finally:
            await client.aclose()

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(60)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(120)

    @property
    def instance(self) -> str:
        return self.settings.instance

    @property
    def images(self) -> Path:
        return self.data_dir / "sandbox" / "disks"


async def _fill(host: _Host, n: int, *, repl_every: int = 10) -> list[str]:
    """``n`` live containers, each with a file; every ``repl_every``-th with a (frozen) REPL too."""
    made = []
    async with host.client() as client:
        for i in range(n):
            info = await client.create(OWNER)
            async with client.lease(info.id, OWNER) as s:
                r = await s.run_bash(f"echo {i} > mine")
                assert r.return_code == 0, r
                if i % repl_every == 0:
                    assert (await s.run_cell("x = 1")).return_code == 0
            made.append(info.id)
    return made


async def test_the_next_start_reclaims_everything_a_killed_host_left(scratch: Path):
    host = _Host(scratch / "data", TEST_UID_BASE + 700)
    await host.start()
    try:
        made = await _fill(host, HOST_CONTAINERS)
        assert len(loopdev.holders(host.images)) == HOST_CONTAINERS
        host.kill()
        # What the dead host leaves at first: cgroups, and the REPLs' frozen processes (a frozen
        # process does not die of its parent's death). No workspace is in the host's mount table.
        assert _processes_in(host.instance) > 0
        assert _host_mounts(f"/run/execbridge/{host.instance}/") == []
        await host.start()
        # The restarted host killed and removed every stale cgroup; the loop devices let go as the
        # old sandboxes' namespaces went.
        await _until(lambda: not loopdev.holders(host.images), "loop devices still hold workspace images")
        assert _processes_in(host.instance) == 0
        assert [d for d in instances._cgroup_dirs(host.instance) if d.name != host.instance] == []
        assert _host_mounts(f"/run/execbridge/{host.instance}/") == []
        # The containers' files are all there.
        async with host.client() as client:
            for i in (0, 17, HOST_CONTAINERS - 1):
                async with client.lease(made[i], OWNER) as s:
                    assert (await s.run_bash("cat mine")).stdout == f"{i}\n"
    finally:
        host.stop()


async def test_gc_removes_a_dead_instances_leftovers_and_never_a_live_ones(
    scratch: Path, workdir: Path, doctor_report: DoctorReport
):
    dead = _Host(scratch / "dead", TEST_UID_BASE + 800)
    await dead.start()
    try:
        await _fill(dead, 6, repl_every=2)
    finally:
        dead.kill()
    assert _processes_in(dead.instance) > 0  # frozen REPLs
    async with open_manager(workdir, doctor_report, spare_containers=0) as live:
        info = await live.create(OWNER)
        async with live.lease(info.id, OWNER) as s:
            await s.run_bash("echo alive > f")
            await s.run_cell("y = 2")  # a frozen REPL in the live instance too
        live_cgroups = instances._cgroup_dirs(live.instance)
        live_processes = _processes_in(live.instance)
        assert live_processes > 0
        states = {i.name: i.state for i in instances.scan()}
        assert (states[live.instance], states[dead.instance]) == ("live", "dead")

        gc = [sys.executable, "-m", "execbridge", "sandbox", "gc"]
        result = subprocess.run(
            [*gc, "--instance", live.instance, "--instance", dead.instance], capture_output=True, text=True, check=True
        )
        assert f"{live.instance}: live" in result.stdout and f"{dead.instance}: removed" in result.stdout

        assert instances._cgroup_dirs(dead.instance) == []
        assert not (instances.RUN_ROOT / dead.instance).exists()
        await _until(lambda: not loopdev.holders(dead.images), "the dead instance's loop devices")
        # The live instance: every cgroup and process still there, and its container works.
        assert instances._cgroup_dirs(live.instance) == live_cgroups
        assert _processes_in(live.instance) == live_processes
        async with live.lease(info.id, OWNER) as s:
            assert (await s.run_bash("cat f")).stdout == "alive\n"
            assert (await s.run_cell("print(y)")).stdout == "2\n"


async def test_near_a_small_budget_the_least_recently_used_idle_containers_stop_early(
    workdir: Path, doctor_report: DoctorReport
):
    async with open_manager(
        workdir, doctor_report, spare_containers=0, max_live_containers=8, evict_early_fraction=0.5
    ) as m:
        assert m.budget is not None and m.budget.describe().startswith("8 live containers")
        made = []
        for i in range(8):
            info = await m.create(OWNER)
            async with m.lease(info.id, OWNER) as s:
                await s.run_bash(f"echo {i} > f")
            made.append(info.id)
        # Never refused: the evictor kept live containers under half the budget, in the background.
        await _until(lambda: (m.usage() or pytest.fail("not started")).containers <= 4, "live containers above")
        active = [(await m.get(cid, OWNER)).active for cid in made]
        assert active[-1] and not any(active[:4])  # the least recently used went first
        async with m.lease(made[0], OWNER) as s:  # files kept; the next use restarts it
            assert (await s.run_bash("cat f")).stdout == "0\n"


async def test_no_sandbox_sees_another_workspace_and_its_mount_table_does_not_grow(
    workdir: Path, doctor_report: DoctorReport
):
    async with open_manager(workdir, doctor_report, spare_containers=0) as m:

        async def table_of_a_new_container() -> list[str]:
            info = await m.create(OWNER)
            async with m.lease(info.id, OWNER) as s:
                return (await s.run_bash("cat /proc/self/mountinfo")).stdout.splitlines()

        first = await table_of_a_new_container()
        fds = len(os.listdir("/proc/self/fd"))
        for _ in range(20):
            await table_of_a_new_container()
        # Two descriptors per live container in the process that runs them: the executor's channel
        # (one socket for its stdin and stdout) and its stderr.
        assert len(os.listdir("/proc/self/fd")) - fds <= 2 * 20 + 4
        last = await table_of_a_new_container()
        assert len(last) == len(first)  # 22 live containers: the same table as with one
        workspaces = [line for line in last if " /workspace " in line]
        assert len(workspaces) == 1  # its own, and no other container's
        assert not any(str(m.run_dir) in line for line in last)
        # Nor does the host's table hold any of them.
        assert _host_mounts(str(m.run_dir)) == []
