"""Per-container cgroups on this machine (v1 here; v2 where present): limits, joining before exec,
kill-all, stale cleanup."""

from __future__ import annotations

import asyncio
import os
import subprocess

from execbridge.sandbox.cgroups import CgroupLimits, detect


def driver(name: str):
    d = detect(f"execbridge/test-{os.getpid()}-{name}")
    assert d is not None, "no usable cgroup v1/v2 hierarchy with memory, pids and cpu"
    d.prepare()
    return d


async def test_limits_are_written():
    d = driver("limits")
    cg = d.create("1", CgroupLimits(256 << 20, 64, 0.5))
    try:
        if cg.version == 1:
            memory, pids, cpu = cg.dirs
            assert int((memory / "memory.limit_in_bytes").read_text()) == 256 << 20
            if (memory / "memory.memsw.limit_in_bytes").exists():
                assert int((memory / "memory.memsw.limit_in_bytes").read_text()) == 256 << 20
            assert (pids / "pids.max").read_text().strip() == "64"
            assert (cpu / "cpu.cfs_quota_us").read_text().strip() == "50000"
        else:
            (group,) = cg.dirs
            assert int((group / "memory.max").read_text()) == 256 << 20
            assert (group / "pids.max").read_text().strip() == "64"
    finally:
        cg.remove()
        d.remove_parent()


async def test_join_before_exec_kill_all_and_remove():
    d = driver("join")
    cg = d.create("1", CgroupLimits(256 << 20, 64, 1.0))
    argv = cg.join_argv(["/bin/sh", "-c", "setsid sleep 60 & sleep 60 & grep memory /proc/self/cgroup; wait"])
    proc = await asyncio.create_subprocess_exec(*argv, stdout=asyncio.subprocess.PIPE)
    assert proc.stdout is not None
    first = await proc.stdout.readline()
    assert f"{d.parent}/1".encode() in first
    await asyncio.sleep(0.05)
    assert len(cg.pids()) >= 3  # the shell and both sleeps, including the one that left the session
    await cg.kill_all()
    assert cg.pids() == set()
    await proc.wait()
    cg.remove()
    assert not any(x.exists() for x in cg.dirs)
    d.remove_parent()


async def test_failed_join_runs_nothing():
    d = driver("failclosed")
    cg = d.create("1", CgroupLimits(256 << 20, 64, 1.0))
    cg.remove()  # the cgroup is gone: joining must fail, and the command must not run
    r = subprocess.run(cg.join_argv(["/bin/echo", "RAN"]), capture_output=True)
    assert r.returncode == 125 and b"RAN" not in r.stdout
    d.remove_parent()


async def test_clean_stale_kills_and_removes_everything():
    d = driver("stale")
    cgs = [d.create(str(i), CgroupLimits(256 << 20, 64, 1.0)) for i in range(3)]
    procs = [subprocess.Popen(cg.join_argv(["sleep", "60"])) for cg in cgs]
    await asyncio.sleep(0.05)
    assert await d.clean_stale() == 3
    assert list(d.existing()) == []
    for p in procs:
        assert p.wait(timeout=5) == -9
    d.remove_parent()


async def test_total_limits_cap_all_containers_together():
    d = detect(f"execbridge/test-{os.getpid()}-total")
    assert d is not None
    d.prepare(CgroupLimits(512 << 20, 300, None))
    try:
        parents = [root / d.parent for root in d.roots]
        if d.version == 1:
            memory, pids, cpu = parents
            assert int((memory / "memory.limit_in_bytes").read_text()) == 512 << 20
            assert (pids / "pids.max").read_text().strip() == "300"
            assert (cpu / "cpu.cfs_quota_us").read_text().strip() == "-1"  # no CPU cap on the parent
        else:
            (group,) = parents
            assert int((group / "memory.max").read_text()) == 512 << 20
            assert (group / "pids.max").read_text().strip() == "300"
    finally:
        d.remove_parent()
