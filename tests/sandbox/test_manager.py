"""ContainerManager: ownership, leases, persistence of files, spare pool, eviction and revival,
retention, deletion, executor death, restart of the gateway, and the refusal to run unprotected."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from pathlib import Path

import pytest

from execbridge.errors import NotFound, SandboxError, SandboxUnavailable
from execbridge.sandbox import doctor, loopdev
from execbridge.sandbox.disk import mounts_under
from execbridge.sandbox.doctor import DoctorReport

from .conftest import open_manager


async def test_create_get_and_ownership(workdir: Path, doctor_report: DoctorReport):
    async with open_manager(workdir, doctor_report) as m:
        info = await m.create("alice")
        assert info.id.startswith("container_011C") and len(info.id) > 30
        assert info.active
        assert info.expires_at > info.last_used_at  # rolling: last use + retention
        got = await m.get(info.id, "alice")
        assert got.id == info.id and got.owner == "alice"
        messages = []
        for cid, owner in ((info.id, "bob"), ("container_011Cnope", "alice")):
            with pytest.raises(NotFound) as exc:
                await m.get(cid, owner)
            messages.append(exc.value.message.replace(cid, "ID"))
            with pytest.raises(NotFound):
                async with m.lease(cid, owner):
                    pass
            with pytest.raises(NotFound):
                await m.delete(cid, owner)
        assert messages[0] == messages[1]  # another owner's id looks exactly like an unknown one
        assert [i.id async for i in m.list("alice")] == [info.id]
        assert [i.id async for i in m.list("bob")] == []


async def test_files_persist_across_leases_and_commands(workdir: Path, doctor_report: DoctorReport):
    async with open_manager(workdir, doctor_report) as m:
        info = await m.create("alice")
        async with m.lease(info.id, "alice") as s:
            r = await s.run_bash("echo hello > note.txt && pwd")
            assert (r.stdout, r.return_code) == ("/workspace\n", 0)
            await s.put_file("uploads/data.csv", b"a,b\n1,2\n")
        async with m.lease(info.id, "alice") as s:
            r = await s.run_python(
                # numpy: the one library of the minimal test runtime (scripts/install.sh --runtime minimal)
                "import numpy as np; print(open('note.txt').read().strip(), "
                "int(np.loadtxt('uploads/data.csv', delimiter=',', skiprows=1)[1]))"
            )
            assert r.stdout == "hello 2\n", r.stderr
            view = await s.view("note.txt")
            assert view.content == "hello\n"


async def test_leases_are_exclusive_per_container_and_concurrent_across(workdir: Path, doctor_report: DoctorReport):
    # Ordered by events, not by the clock: a lease that wrongly waited for another would deadlock into
    # the wait_for timeout, and a lease that wrongly did not wait would break the recorded order.
    async with open_manager(workdir, doctor_report, spare_containers=2) as m:
        a, b = await m.create("o"), await m.create("o")
        holding_a, release_a = asyncio.Event(), asyncio.Event()
        order: list[str] = []

        async def hold_a() -> None:
            async with m.lease(a.id, "o") as s:
                order.append("first lease of a")
                holding_a.set()
                await release_a.wait()
                assert (await s.run_bash("echo a")).stdout == "a\n"
                order.append("first lease of a ends")

        async def second_lease_of_a() -> None:
            async with m.lease(a.id, "o") as s:
                order.append("second lease of a")
                assert (await s.run_bash("echo again")).stdout == "again\n"

        holder = asyncio.create_task(hold_a())
        await holding_a.wait()
        waiter = asyncio.create_task(second_lease_of_a())
        # Another container is served while a's lease is held: the two run side by side.
        async with asyncio.timeout(60), m.lease(b.id, "o") as s:
            assert (await s.run_bash("echo b")).stdout == "b\n"
        order.append("b served")
        release_a.set()
        async with asyncio.timeout(60):
            await asyncio.gather(holder, waiter)
        # One container: one lease at a time, the second only after the first ended.
        assert order == ["first lease of a", "b served", "first lease of a ends", "second lease of a"]


async def test_spare_pool_makes_the_first_command_fast_and_refills(workdir: Path, doctor_report: DoctorReport):
    async with open_manager(workdir, doctor_report, spare_containers=1) as m:
        assert m.pool is not None
        await m.pool.wait_full()
        info = await m.create("o")
        assert len(m.pool) == 0  # the new container took the one spare (how fast that is: bench_sandbox.py)
        async with m.lease(info.id, "o") as s:
            r = await s.run_python("print(1)")
        assert r.stdout == "1\n"
        await m.pool.wait_full()  # refilled in the background


async def test_idle_eviction_keeps_files_and_revives(workdir: Path, doctor_report: DoctorReport):
    async with open_manager(workdir, doctor_report, idle_evict_s=0.3, spare_containers=0) as m:
        info = await m.create("o")
        async with m.lease(info.id, "o") as s:
            await s.run_bash("echo kept > f; sleep 1000 &")
        for _ in range(400):  # the janitor's pace depends on how busy the machine is
            await asyncio.sleep(0.05)
            # Eviction stops the processes, and with them goes the only mount of the workspace (in their
            # own namespace); then the loop device lets go of the image: wait until both are done.
            if not (await m.get(info.id, "o")).active and not loopdev.holders(m.root / "disks"):
                break
        assert not (await m.get(info.id, "o")).active
        assert not loopdev.holders(m.root / "disks")  # workspace unmounted everywhere, processes gone
        assert mounts_under(m.run_dir) == []
        async with m.lease(info.id, "o") as s:
            assert s.info.active
            r = await s.run_bash("cat f; ps -e -o comm= | grep -c sleep")
            assert r.stdout.split() == ["kept", "0"]


async def test_retention_deletes_unused_containers(workdir: Path, doctor_report: DoctorReport):
    async with open_manager(workdir, doctor_report, retention_s=0.5, idle_evict_s=0.2, spare_containers=0) as m:
        info = await m.create("o")
        images = set((m.root / "disks").glob("*.img"))
        assert len(images) == 1
        await asyncio.sleep(0.7)
        with pytest.raises(NotFound):
            await m.get(info.id, "o")
        for _ in range(100):
            await asyncio.sleep(0.05)
            if not any((m.root / "disks").glob("*.img")):
                break
        assert not any((m.root / "disks").glob("*.img"))  # the janitor removed its image
        assert [i async for i in m.list()] == []


async def test_delete_removes_everything(workdir: Path, doctor_report: DoctorReport):
    async with open_manager(workdir, doctor_report, spare_containers=0) as m:
        info = await m.create("o")
        async with m.lease(info.id, "o") as s:
            # Links planted by sandboxed code must not steer the gateway's clean-up anywhere.
            await s.run_bash("ln -s /etc etc_link; ln -s / root_link; echo x > f")
        await m.delete(info.id, "o")
        with pytest.raises(NotFound):
            await m.get(info.id, "o")  # at once
        await m.settle()  # the rest goes in the background
        assert not any((m.root / "disks").glob("*.img"))
        assert mounts_under(m.run_dir) == []
        assert Path("/etc/passwd").exists()


async def test_delete_during_a_command_ends_it(workdir: Path, doctor_report: DoctorReport):
    async with open_manager(workdir, doctor_report, spare_containers=0) as m:
        info = await m.create("o")

        async def long_command():
            async with m.lease(info.id, "o") as s:
                return await s.run_bash("sleep 30")

        task = asyncio.create_task(long_command())
        await asyncio.sleep(0.3)
        await asyncio.wait_for(m.delete(info.id, "o"), 10)
        r = await asyncio.wait_for(task, 10)
        assert r.error_code == "unavailable"


async def test_executor_death_is_reported_and_the_next_command_restarts(workdir: Path, doctor_report: DoctorReport):
    async with open_manager(workdir, doctor_report, spare_containers=0) as m:
        info = await m.create("o")
        async with m.lease(info.id, "o") as s:
            await s.run_bash("echo kept > f")
            # The executor is this command's parent: kill it from user code.
            r = await asyncio.wait_for(s.run_bash("kill -9 $PPID; sleep 5"), 20)
            assert r.error_code == "unavailable" and r.stderr
            r = await s.run_bash("cat f")
            assert (r.stdout, r.error_code) == ("kept\n", None)


async def test_cancelled_command_does_not_wedge_the_container(workdir: Path, doctor_report: DoctorReport):
    async with open_manager(workdir, doctor_report, spare_containers=0) as m:
        info = await m.create("o")

        async def long_command():
            async with m.lease(info.id, "o") as s:
                return await s.run_bash("sleep 30")

        task = asyncio.create_task(long_command())
        await asyncio.sleep(0.3)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        async with m.lease(info.id, "o") as s:
            r = await asyncio.wait_for(s.run_bash("echo ok; ps -e -o comm= | grep -c sleep"), 10)
            assert r.stdout.split() == ["ok", "0"]


async def test_state_survives_a_gateway_crash(workdir: Path, doctor_report: DoctorReport):
    stale = []
    info = None
    try:
        async with open_manager(workdir, doctor_report, spare_containers=1, check_clean=False) as m:
            await m.pool.wait_full()
            info = await m.create("o")
            async with m.lease(info.id, "o") as s:
                await s.run_bash("echo survived > f; sleep 1000 &")
            await m.pool.wait_full()
            # Crash: the process "dies" without any clean-up (sandboxes, mounts and cgroups stay behind).
            for task in m._tasks:
                task.cancel()
            m._release_lock()
            m.close = _noop  # type: ignore[method-assign]
            stale = [e.live for e in m._entries.values() if e.live] + list(m.pool._ready)
            assert len(loopdev.holders(m.root / "disks")) == 2  # the container's and the spare's images
            assert mounts_under(m.run_dir) == []  # though mounted in no table of ours
    finally:
        # The restarted gateway; it runs even if the part above failed, so nothing stays mounted.
        async with open_manager(workdir, doctor_report, spare_containers=0) as m2:
            assert mounts_under(m2.run_dir) == []  # reconciled: nothing is live after a restart
            assert all(live.proc.returncode is not None or not live.pids() for live in stale)
            assert len(list((m2.root / "disks").glob("*.img"))) == 1  # the spare's image is gone, the container's kept
            assert info is not None
            async with m2.lease(info.id, "o") as s:
                r = await s.run_bash("cat f; ps -e -o comm= | grep -c sleep")
                assert r.stdout.split() == ["survived", "0"]
        for live in stale:
            await live.stop()


async def _noop() -> None:
    return None


async def test_one_manager_per_data_dir(workdir: Path, doctor_report: DoctorReport):
    async with open_manager(workdir, doctor_report, spare_containers=0):
        with pytest.raises(SandboxError, match="another execbridge process"):
            async with open_manager(workdir, doctor_report, spare_containers=0):
                pass


def _without(report: DoctorReport, *names: str) -> DoctorReport:
    return DoctorReport(
        tuple(dataclasses.replace(c, ok=False, detail="(test)") if c.name in names else c for c in report.checks)
    )


async def test_the_workspace_is_also_at_mnt_data(workdir: Path, doctor_report: DoctorReport):
    """OpenAI's code writes /mnt/data/…; the Containers API lists the workspace (sandbox.base.DATA_ALIAS)."""
    async with open_manager(workdir, doctor_report) as m:
        info = await m.create("alice")
        async with m.lease(info.id, "alice") as s:
            r = await s.run_python("open('/mnt/data/plot.txt', 'w').write('drawn')")
            assert r.return_code == 0, r.stderr
            r = await s.run_bash("cat /workspace/plot.txt; echo; ls -l /mnt/data | tail -n +2 | wc -l")
            assert r.stdout.split() == ["drawn", "1"], r.stderr
            view = await s.view("/mnt/data/plot.txt")
            assert view.content == "drawn"


async def test_a_container_may_have_a_smaller_memory_limit_of_its_own(workdir: Path, doctor_report: DoctorReport):
    """OpenAI's memory tiers: a limit below the sandbox's is enforced (the container starts cold, not
    from the pool); one above it is clamped; both survive eviction and revival."""
    grab = "b = bytearray(160 << 20); print(len(b) >> 20)"
    async with open_manager(workdir, doctor_report, memory_mb=256) as m:
        small = await m.create("alice", memory_mb=96)
        big = await m.create("alice", memory_mb=1 << 20)
        assert (small.memory_mb, big.memory_mb) == (96, 256)
        async with m.lease(big.id, "alice") as s:
            r = await s.run_python(grab)
            assert (r.return_code, r.stdout) == (0, "160\n"), r.stderr
        for _ in range(2):  # as created, then revived after eviction with its own limit again
            async with m.lease(small.id, "alice") as s:
                r = await s.run_python(grab)
                assert r.return_code != 0 and "out of memory" in r.stderr and "96 MiB" in r.stderr, (r, r.stderr)
            entry = m._entries[small.id]
            async with entry.lock:
                await m._evict(entry)
        assert (await m.get(small.id, "alice")).memory_mb == 96


async def test_refuses_to_start_when_a_protection_is_missing(workdir: Path, doctor_report: DoctorReport):
    weak = _without(doctor_report, doctor.CG_PIDS)
    with pytest.raises(SandboxUnavailable, match="cgroup pids"):
        async with open_manager(workdir, weak):
            pass


async def test_weak_isolation_when_allowed_says_so_loudly(workdir: Path, doctor_report: DoctorReport, caplog):
    weak = _without(doctor_report, doctor.CG_MEMORY, doctor.CG_PIDS, doctor.CG_CPU, doctor.DISK)
    caplog.set_level(logging.WARNING)
    async with open_manager(workdir, weak, allow_weak_isolation=True, spare_containers=0) as m:
        assert set(m.weakened) == {doctor.CG_MEMORY, doctor.CG_PIDS, doctor.CG_CPU, doctor.DISK}
        info = await m.create("o")
        async with m.lease(info.id, "o") as s:
            r = await s.run_bash("echo works; df --output=target /workspace | tail -1")
            assert r.stdout.split() == ["works", "/workspace"]
    text = caplog.text
    assert "WEAK ISOLATION" in text and "cgroup memory" in text and "workspace disk cap" in text
    # A missing bubblewrap cannot be waved through.
    with pytest.raises(SandboxUnavailable):
        async with open_manager(workdir, _without(doctor_report, doctor.BWRAP), allow_weak_isolation=True):
            pass
